"""The output folder: one image file per generation, recipe embedded, written atomically."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from .errors import StorageError
from .metadata import embed_recipe, sniff_format
from .recipe import Recipe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EXTENSIONS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (words[:length].rstrip("-") or "image")


class OutputFolder:
    """Where results live. Names are made from prompt, seed and generation id, so a result can
    never be saved twice under two names."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.path)!r})"

    def filename(self, recipe: Recipe, generation_id: str, data: bytes) -> str:
        ext = sniff_format(data) or EXTENSIONS.get(recipe.output_format, "png")
        return f"{slug(recipe.prompt)}_seed{recipe.seed}_{generation_id.replace('-', '')[:12]}.{ext}"

    def save(self, data: bytes, recipe: Recipe, generation_id: str, extra: dict[str, str]) -> Path:
        """Write the image with its recipe embedded; an existing file for this id is kept as is."""
        target = self.path / self.filename(recipe, generation_id, data)
        if target.exists():
            return target
        payload = embed_recipe(data, recipe.output_format, recipe.to_json(), extra)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StorageError(
                f"Could not save {target.name} in {self.path} ({exc.strerror or exc}); the image is kept in memory."
            ) from None
        return target

    def images(self) -> list[Path]:
        """Saved images, newest first."""
        try:
            files = [p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        except OSError:
            return []
        return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)

