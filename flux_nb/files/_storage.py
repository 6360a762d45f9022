"""The output folder: one image file per generation, recipe embedded, written atomically; the
input images those recipes name by hash beside them, in `.inputs/` (inputs.InputStore)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..core import _processes as processes
from ..core._atomic_write import PARTIAL, write_atomically
from ..core._errors import FluxError, StorageError
from ..core._recipe import Recipe
from ._infotext import format_parameters
from ._inputs import INPUTS_DIR, InputStore
from ._metadata import NoRoom, embed_recipe, sidecar_path, sniff_format

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
STALE_PARTIAL_SECONDS = 24 * 3600
EXTENSIONS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:length].rstrip("-") or "image"


class OutputFolder:
    """Where results live. Names are made from prompt, seed and generation id, so a result can
    never be saved twice under two names."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.inputs = InputStore(self.path / INPUTS_DIR)

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.path)!r})"

    def filename(self, recipe: Recipe, generation_id: str, data: bytes) -> str:
        ext = sniff_format(data) or EXTENSIONS.get(recipe.output_format, "png")
        return f"{slug(recipe.prompt)}_seed{recipe.seed}_{_id_part(generation_id)}.{ext}"

    def find(self, generation_id: str) -> Path | None:
        """The image already saved for this generation id, if any (a kernel may have died after
        writing it and before journalling it)."""
        try:
            for path in self.path.glob(f"*_{_id_part(generation_id)}.*"):
                if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                    return path
        except OSError:
            pass
        return None

    def sweep_partials(self) -> int:
        """Delete half-written files left by processes that died while saving; returns how many.
        A file of a live process (another kernel saving into this folder) is left alone."""
        removed = 0
        leftovers = []
        for folder in (self.path, self.inputs.folder):
            try:
                leftovers += [p for p in folder.iterdir() if p.name.startswith(PARTIAL)]
            except OSError:
                continue
        for path in leftovers:
            pid = path.name[len(PARTIAL) :].partition("-")[0]
            try:
                stale = time.time() - path.stat().st_mtime > STALE_PARTIAL_SECONDS
                if stale or (pid.isdigit() and not processes.alive(int(pid))):
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def save(self, data: bytes, recipe: Recipe, generation_id: str, extra: dict[str, str]) -> Path:
        """Write the image with its recipe embedded; an existing file for this id is kept as is."""
        target = self.path / self.filename(recipe, generation_id, data)
        if target.exists():
            return target
        sidecar = None
        try:
            payload = embed_recipe(
                data,
                recipe.output_format,
                recipe.to_json(),
                extra,
                parameters=format_parameters(recipe, _size(data)),
            )
        except FluxError as exc:
            # A file whose metadata cannot take the recipe (a JPEG recipe over one segment, a
            # WebP's own XMP packet, damaged bytes) keeps the rest (NoRoom.data) or the server's
            # bytes, with the recipe beside it: never lose an image over metadata.
            payload = exc.data if isinstance(exc, NoRoom) else data
            sidecar = sidecar_path(target)

        def write_sidecar() -> None:
            if sidecar is not None:
                sidecar.write_text(json.dumps({"recipe": recipe.to_dict(), **extra}), "utf-8")

        try:
            write_atomically(target, payload, write_sidecar)
        except OSError as exc:
            raise StorageError(
                f"Could not save {target.name} in {self.path} ({exc.strerror or exc}); the image is"
                f" kept in memory."
            ) from None
        return target

    def images(self) -> list[Path]:
        """Saved images, newest first."""
        try:
            files = [
                p
                for p in self.path.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            ]
        except OSError:
            return []
        return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def _size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header (Pillow reads no pixels for this)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


def _id_part(generation_id: str) -> str:
    """The id's first 12 letters and digits: the id comes from a server and must never be able to
    put a separator or '..' into a file name."""
    return re.sub(r"[^0-9A-Za-z]", "", generation_id)[:12] or "noid"
    return True
