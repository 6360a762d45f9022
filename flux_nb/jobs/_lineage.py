"""Lineage: how an edit's input images were made, kept beside its recipe, so a chain of edits can
be made again from its last file alone (`flux_nb.reproduce(path, lineage=True)`).

The recipe is what is sent to the API and stays as it is; the lineage record sits next to it (the
`lineage` field of the file's metadata, and the journal's submit entry):

    {"inputs": ["sha256:<hex>", ...],     this recipe's input images, by the hash of their bytes
     "steps": {"sha256:<hex>": {"recipe": {...}, "generation_id": "..."},   made by flux-nb
               "sha256:<hex>": {"upload": {"name": "photo.jpg", "bytes": 52311}}}}   not: needed

A step's recipe names its own inputs by hash as well, as the recipe itself does (files/_inputs.py),
so every image is held once, however deep the chain (http(s) inputs stay URLs). Chains deeper than
MAX_DEPTH are cut there: their oldest inputs are then needed like uploads. Input images are kept in
the output folder's store, `<output>/.inputs/` (inputs.InputStore), where a remake looks for them,
as it does among the files it is given.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core._errors import FluxError, InputImageError
from ..core._status import SUCCEEDED
from ..files._inputs import INPUTS_DIR, InputStore, give_again, ref_of, short, split_data_uri

if TYPE_CHECKING:
    from ..core._recipe import Recipe
    from ..files._storage import OutputFolder
    from ._generation import Generation

MAX_DEPTH = 16
FIELD = "lineage"  # the metadata field beside the recipe

Origin = tuple[
    dict[str, Any], dict[str, Any]
]  # (the step that made an image, that step's ancestors)


class Chains(Protocol):
    """What reading a chain asks of a session (sessions.Session is one): its results, its
    output folder, and how it reads the recipe of a file another tool made."""

    @property
    def history(self) -> list[Generation]: ...

    @property
    def output(self) -> OutputFolder: ...

    def recipe_of(self, source: Any) -> Recipe: ...


class Remakes(Chains, Protocol):
    """What making a chain again asks of a session, besides reading it: where the origins of
    its inputs are noted, and the one way to send."""

    @property
    def origins(self) -> Origins: ...

    def submit(self, recipes: Iterable[Recipe]) -> list[Generation]: ...


# -- hashes ----------------------------------------------------------------------------------------


# Lineage names images as recipes do (files/_inputs.py): 'sha256:<64 hex digits>', shown cut to 12.
digest = ref_of


def uri_bytes(url: str) -> bytes | None:
    """The bytes of a data: URI (None for an http(s) URL or anything unreadable)."""
    found = split_data_uri(url)
    return found[0] if found is not None else None


def ref(url: str) -> str:
    """An input as lineage names it: the hash of a data: URI's bytes, or the URL itself."""
    data = uri_bytes(url)
    return digest(data) if data is not None else url


_result_digests: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_digest_lock = threading.Lock()


def result_digest(gen: Generation) -> str | None:
    """The hash of a finished Generation's downloaded bytes (what using it as an input sends)."""
    if gen.status != SUCCEEDED:
        return None
    with _digest_lock:
        found = _result_digests.get(gen)
    if found is None:
        data = gen.data  # read from its file: None once the file is gone
        if data is None:
            return None
        found = digest(data)
        with _digest_lock:
            _result_digests[gen] = found
    return found


# -- records ---------------------------------------------------------------------------------------


def as_step(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe as a lineage step: its data: URI inputs replaced by their hashes."""
    step = dict(recipe)
    if step.get("input_image"):
        step["input_image"] = [ref(u) for u in step["input_image"]]
    return step


def made_by(recipe: Any, record: dict[str, Any] | None, generation_id: str | None = None) -> Origin:
    """The origin of a flux-nb result: the step that made it and the steps behind that one."""
    data = recipe if isinstance(recipe, dict) else recipe.to_dict()
    step: dict[str, Any] = {"recipe": as_step(data)}
    if generation_id:
        step["generation_id"] = str(generation_id)
    return step, dict((record or {}).get("steps") or {})


def uploaded(data: bytes, name: str | None = None) -> Origin:
    """The origin of an image flux-nb did not make: only its hash is kept, so it is needed later."""
    info: dict[str, Any] = {"bytes": len(data)}
    if name:
        info["name"] = name
    return {"upload": info}, {}


def in_file(data: bytes) -> Origin | None:
    """The origin an image's own bytes tell: a flux-nb file carries its recipe and lineage."""
    from ..files._metadata import read_recipe, sniff_format

    if sniff_format(data) is None:
        return None
    try:
        found = read_recipe(data)
    except FluxError:
        return None
    return made_by(found["recipe"], parse(found.get(FIELD)), found.get("generation_id"))


def build(
    input_urls: Sequence[str],
    origin_of: Callable[[str, bytes], Origin | None],
    bytes_of: Callable[[str], bytes | None] = uri_bytes,
) -> dict[str, Any] | None:
    """The record for a recipe with these input_image entries: each local input's origin (from
    origin_of(hash, bytes), else the bytes' own metadata, else an upload), cut at MAX_DEPTH.
    bytes_of gives an entry's bytes (a data: URI's; a sha256: reference's from the store).
    None when no input is local (nothing to record: URLs are in the recipe)."""
    inputs = [ref(u) for u in input_urls]
    steps: dict[str, Any] = {}
    for url, key in zip(input_urls, inputs, strict=True):
        data = bytes_of(url)
        if data is None or key in steps:
            continue
        step, ancestors = origin_of(key, data) or in_file(data) or uploaded(data)
        steps[key] = step
        for k, v in ancestors.items():
            steps.setdefault(k, v)
    if not steps:
        return None
    return {"inputs": inputs, "steps": _within_depth(inputs, steps)}


def _within_depth(inputs: list[str], steps: dict[str, Any]) -> dict[str, Any]:
    """The steps reachable from inputs in at most MAX_DEPTH hops (a file's record may be longer
    or even loop: it is read from a file, and files can be made by anyone)."""
    kept: dict[str, Any] = {}
    level = [k for k in inputs if k in steps]
    for _ in range(MAX_DEPTH):
        following = []
        for key in level:
            if key in kept:
                continue
            kept[key] = steps[key]
            following += [k for k in _step_inputs(steps[key]) if k in steps and k not in kept]
        level = following
        if not level:
            break
    return kept


def _step_inputs(step: Any) -> list[str]:
    recipe = step.get("recipe") if isinstance(step, dict) else None
    images = recipe.get("input_image") if isinstance(recipe, dict) else None
    return [i for i in images if isinstance(i, str)] if isinstance(images, list) else []


def parse(text: Any) -> dict[str, Any] | None:
    """A record read back from a file or the journal; None when absent or malformed (a damaged
    record must not stop the image itself from being reproduced)."""
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError:
            return None
    if not isinstance(text, dict):
        return None
    inputs, steps = text.get("inputs"), text.get("steps")
    if not isinstance(inputs, list) or not isinstance(steps, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in steps.items()):
        return None
    return {"inputs": [str(i) for i in inputs], "steps": steps}


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


# -- where a session's input images came from ------------------------------------------------------


class Origins:
    """How each input image a session sends was made, by hash: noted as inputs are turned into
    URLs (a Generation's recipe, a file's name) and as a chain is made again; an image that is a
    result of the session, used by its bytes, is found in its history. Gives each recipe its
    lineage record before it is sent."""

    def __init__(self, store: InputStore, history: Callable[[], Sequence[Generation]]):
        self._store = store
        self._history = history
        self._known: dict[str, Origin] = {}

    def note(self, key: str, origin: Origin) -> None:
        """Remember how the image with this hash was made (see build)."""
        self._known[key] = origin

    def forget(self) -> None:
        """Forget what was noted (results of the session are still found in its history)."""
        self._known.clear()

    def note_sources(self, sources: Sequence[Any], urls: Sequence[str]) -> None:
        """Note what each input was as it is turned into a URL: a Generation's recipe,
        a file's name."""
        from ._generation import Generation

        for source, url in zip(sources, urls, strict=True):
            data = uri_bytes(url)
            if data is None:
                continue
            key = digest(data)
            if isinstance(source, Generation) and source.status == SUCCEEDED:
                self._known[key] = made_by(source.recipe, source.lineage, source.id)
            elif isinstance(source, (str, Path)) and key not in self._known and url != str(source):
                # a file by path (a URL or data: URI given as text came back as itself)
                if in_file(data) is None:
                    self._known[key] = uploaded(data, Path(str(source)).name)

    def of(self, key: str, data: bytes) -> Origin | None:
        """How the image with this hash (and these bytes) was made, if this session knows."""
        if key in self._known:
            return self._known[key]
        for gen in reversed(self._history()):  # a result of the session, used by its bytes
            if gen.data_length == len(data) and result_digest(gen) == key:
                return made_by(gen.recipe, gen.lineage, gen.id)
        return None

    def record(self, recipe: Recipe) -> dict[str, Any] | None:
        """The lineage record of a recipe about to be sent: for each data: input, the flux-nb
        recipe that made it (and so on up), or the note that it was uploaded (kept in .inputs/)."""
        from ..files._inputs import is_ref

        if not any(u.startswith("data:") or is_ref(u) for u in recipe.input_image):
            return None
        store = self._store
        return build(
            recipe.input_image, self.of, lambda u: store.read(u) if is_ref(u) else uri_bytes(u)
        )


# -- uploaded images on disk -----------------------------------------------------------------------


def find_upload(key: str, folders: Iterable[Path]) -> tuple[Path, bytes] | None:
    """A file in one of the output folders' stores (`.inputs/`) whose bytes have this hash."""
    for folder in folders:
        store = InputStore(Path(folder) / INPUTS_DIR)
        path = store.find(key)
        data = store.read(key) if path is not None else None
        if path is not None and data is not None:
            return path, data
    return None


# -- the chain, parents first ---------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One image of a chain: the recipe that made it (inputs by hash) and where it stands."""

    key: str | None  # hash of the image it made as recorded by its child; None for the last one
    recipe: dict[str, Any]
    generation_id: str | None = None

    @property
    def inputs(self) -> list[str]:
        return [i for i in self.recipe.get("input_image") or [] if isinstance(i, str)]

    def line(self) -> str:
        r = self.recipe
        inputs = ", ".join(short(i) for i in self.inputs) or "none"
        prompt = str(r.get("prompt", ""))
        prompt = prompt if len(prompt) <= 50 else prompt[:49] + "…"
        return (
            f"seed {r.get('seed')} · {r.get('num_inference_steps')} steps · inputs {inputs} ·"
            f" {prompt!r}"
        )


@dataclasses.dataclass
class Chain:
    """A file's recipe and lineage, in the order to make them: steps[-1] is the file itself."""

    steps: list[Step]
    uploads: dict[str, dict[str, Any]]  # hash -> what is known of an image flux-nb did not make
    direct: dict[str, bytes]  # hash -> bytes of the last recipe's own data: inputs
    cut: bool = False  # the record was deeper than MAX_DEPTH (or unreadable): older inputs needed


def chain_of(recipe: dict[str, Any], record: dict[str, Any] | None) -> Chain:
    """Order the recorded steps parents first; list the inputs that no recorded step makes."""
    steps_known = (record or {}).get("steps") or {}
    direct = {}
    for url in recipe.get("input_image") or []:
        data = uri_bytes(url)
        if data is not None:
            direct[digest(data)] = data
    last = Step(None, as_step(recipe))
    ordered: list[Step] = []
    uploads: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    cut = False

    def visit(key: str, depth: int) -> None:
        nonlocal cut
        if key in done or not key.startswith("sha256:"):
            return
        done.add(key)
        entry = steps_known.get(key)
        recipe_of = entry.get("recipe") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(recipe_of, dict) or depth > MAX_DEPTH:
            info = entry.get("upload") if isinstance(entry, dict) else None
            uploads[key] = dict(info) if isinstance(info, dict) else {}
            # a parent the record leaves out was cut; an input of the file itself is just unrecorded
            cut = cut or info is None and key not in direct and depth > 1
            return
        step = Step(key, recipe_of, entry.get("generation_id"))
        for parent in step.inputs:
            visit(parent, depth + 1)
        ordered.append(step)

    for key in last.inputs:
        visit(key, 1)
    ordered.append(last)
    return Chain(ordered, uploads, direct, cut)


def read_chain(path: Path) -> Chain:
    """The chain recorded in a saved image file (one step for a file without lineage)."""
    from ..files._metadata import read_recipe

    found = read_recipe(path)
    chain = chain_of(found["recipe"], parse(found.get(FIELD)))
    chain.steps[-1].generation_id = found.get("generation_id") or None
    return chain


def source_chain(session: Chains, source: Any) -> tuple[Chain, Path | None]:
    """The chain of a Generation, a saved file or a generation id of this session."""
    from ._generation import Generation

    if not isinstance(source, Generation):
        text = str(source)
        for gen in reversed(session.history):
            if gen.id == text or (gen.path and str(gen.path) == text):
                source = gen
                break
    if isinstance(source, Generation):
        chain = chain_of(source.recipe.to_dict(), source.lineage)
        chain.steps[-1].generation_id = source.id
        return chain, Path(source.path) if source.path else None
    path = Path(str(source)).expanduser()
    if not path.is_file():
        raise FluxError(
            f"{str(source)!r} is neither a saved image file nor a generation of this session.",
            hint="Give the path of an image saved by flux-nb, or a Generation.",
        )
    try:
        return read_chain(path), path
    except FluxError:  # no flux-nb recipe: another tool's `parameters` text, else its own error
        return chain_of(session.recipe_of(path).to_dict(), None), path


def _given(inputs: Iterable[Any]) -> dict[str, bytes]:
    """hash -> bytes for images the user hands over: both the file's own hash and that of the
    bytes flux-nb would send for it (the same unless it had to be converted)."""
    from ..files._inputs import to_input_url

    found: dict[str, bytes] = {}
    for source in inputs:
        data = uri_bytes(to_input_url(source))
        if data is None:
            continue
        found[digest(data)] = data
        if isinstance(source, (str, Path)) and Path(source).is_file():
            found.setdefault(digest(Path(source).read_bytes()), data)
    return found


def _where_from(
    chain: Chain, folders: Sequence[Path], given: dict[str, bytes]
) -> dict[str, bytes | None]:
    """For each upload of the chain: its bytes if they are here, else None."""
    out: dict[str, bytes | None] = {}
    for key in chain.uploads:
        if key in chain.direct:
            out[key] = chain.direct[key]
        elif key in given:
            out[key] = given[key]
        else:
            found = find_upload(key, folders)
            out[key] = found[1] if found else None
    return out


def missing_line(chain: Chain, missing: list[str], folder: Path) -> str:
    names = []
    for key in missing:
        name = chain.uploads.get(key, {}).get("name")
        names.append(f"{name} ({short(key)})" if name else short(key))
    one = len(missing) == 1
    what = "an uploaded image that is" if one else f"{len(missing)} uploaded images that are"
    why = f" (the record stops after {MAX_DEPTH} steps)" if chain.cut else ""
    return (
        f"the chain starts from {what} not here{why}: {', '.join(names)} {'is' if one else 'are'}"
        f" needed. Put it in {folder / INPUTS_DIR}/, or pass it: {give_again(lineage=True)}"
    )


def remake(
    session: Remakes,
    source: Any,
    inputs: Iterable[Any] = (),
    *,
    on_step: Callable[[Generation], None] | None = None,
    before_send: Callable[[list[Recipe]], None] | None = None,
) -> Generation:
    """Make a file's whole chain again, parents first, each parent's new bytes the input of its
    child; returns the last Generation (still running). Every input that is needed is found and
    every recipe checked (then before_send(recipes) may refuse, e.g. over a cost limit) before
    anything is sent, so a chain that cannot finish costs nothing."""
    from ..core._recipe import Recipe

    chain, path = source_chain(session, source)
    folders = [session.output.path] + ([path.parent] if path else [])
    have = _where_from(chain, folders, _given(inputs))
    missing = [k for k, v in have.items() if v is None]
    if missing:
        raise InputImageError(
            missing_line(chain, missing, session.output.path), field="input_image"
        )
    recipes = [Recipe.from_dict(step.recipe) for step in chain.steps]  # all checked before sending
    if before_send is not None:
        before_send(recipes)
    for key, info in chain.uploads.items():
        session.origins.note(key, uploaded(have[key] or b"", info.get("name")))
    made: dict[str, bytes] = {k: v for k, v in have.items() if v is not None}
    gen: Generation | None = None
    for number, step in enumerate(chain.steps, 1):
        urls = [_as_url(i, made) for i in step.inputs]
        data = {k: v for k, v in step.recipe.items() if k != "input_image"}
        if urls:
            data["input_image"] = urls
        recipe = Recipe.from_dict(data)
        gen = session.submit([recipe])[0]
        if on_step is not None:
            on_step(gen)
        if step.key is None:
            break
        try:
            gen.wait()
        except FluxError as exc:
            raise FluxError(
                f"step {number} of {len(chain.steps)} ({step.recipe.get('prompt', '')[:40]!r}) did"
                f" not finish: {exc.message}; nothing after it was sent."
            ) from None
        made[step.key] = gen.saved_bytes()[0]
    assert gen is not None  # a chain ends with the file itself: one step at least
    return gen


def _as_url(key: str, made: dict[str, bytes]) -> str:
    from ..files._inputs import to_input_url

    if key in made:
        return to_input_url(made[key])
    return key  # an http(s) URL, as recorded


# -- %flux lineage ---------------------------------------------------------------------------------


@dataclasses.dataclass
class LineageView:
    """What `%flux lineage PATH` shows: a strip of thumbnails and one line per step."""

    title: str
    lines: list[str]
    thumbs: list[tuple[str, bytes | None]]  # label, thumbnail (None: not on this machine)
    steps: int
    needed: list[str]

    def __repr__(self) -> str:
        return "\n".join([self.title, *self.lines])

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        return {"text/plain": repr(self), "image/png": base64.b64encode(self.strip()).decode()}

    def strip(self) -> bytes:
        """The thumbnails in a row, oldest first, each labelled under it."""
        from PIL import Image, ImageDraw

        from ..core import _lettering as lettering
        from ..files._sheet import BACKGROUND, EMPTY, INK, MUTED, fit
        from ..files._thumbnail import palette_png

        side, gap, label = 128, 10, 14
        width = gap + len(self.thumbs) * (side + gap)
        canvas = Image.new("RGB", (width, side + label * 2 + gap), BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        for i, (text, png) in enumerate(self.thumbs):
            x = gap + i * (side + gap)
            if png is None:
                draw.rectangle((x, gap, x + side - 1, gap + side - 1), fill=EMPTY)
                word = "not here"
                lettering.draw(
                    canvas,
                    (x + (side - lettering.width(word, label)) // 2, gap + (side - label) // 2),
                    word,
                    label,
                    MUTED,
                )
            else:
                with Image.open(io.BytesIO(png)) as opened:
                    thumb = opened.convert("RGB")
                    thumb.thumbnail((side, side))
                    canvas.paste(
                        thumb, (x + (side - thumb.width) // 2, gap + (side - thumb.height) // 2)
                    )
            lettering.draw(canvas, (x, gap + side + 4), fit(text, side, label), label, INK)
        # 256 colours, as the contact sheets: photographs' JPEG thumbnails drawn in truecolour
        # made the strip in tutorial 03 26 KB instead of 8 KB
        return palette_png(canvas)


def view(session: Chains, source: Any) -> LineageView:
    """The chain of a file (or Generation) for people: thumbnails where the images are here."""
    chain, path = source_chain(session, source)
    folders = [session.output.path] + ([path.parent] if path else [])
    have = _where_from(chain, folders, {})
    made = len(chain.steps)
    name = path.name if path else f"generation {chain.steps[-1].generation_id or ''}".strip()
    title = f"lineage of {name}: {made} step{'s' if made != 1 else ''}, parents first"
    if chain.uploads:
        title += (
            f", from {len(chain.uploads)} image{'s' if len(chain.uploads) != 1 else ''}"
            f" flux-nb did not make"
        )
    lines: list[str] = []
    thumbs: list[tuple[str, bytes | None]] = []
    needed = []
    for key, info in chain.uploads.items():
        # {}: an input whose making is not recorded (an older file, or a chain cut at MAX_DEPTH)
        label = (
            f"{info.get('name') or 'an image'}, uploaded"
            if info
            else "how it was made is not recorded"
        )
        if have[key] is None:
            needed.append(key)
        where = "needed: not here" if have[key] is None else "here"
        lines.append(f"  input  {short(key)}  {label} · {where}")
        thumbs.append((f"input: {info.get('name') or short(key)}", _thumb(have[key])))
    for number, step in enumerate(chain.steps, 1):
        step_key, last = step.key, step.key is None
        made_key = "this file" if step_key is None else short(step_key)
        lines.append(f"  {number:>2}  {made_key:<19}  {step.line()}")
        data = None
        if step_key is None and path is not None:
            data = path.read_bytes()
        elif step_key is None:
            data = _gen_bytes(session, step.generation_id)
        else:
            data = chain.direct.get(step_key) or _saved_bytes(folders, step.generation_id)
        label = (
            f"{number} · seed {step.recipe.get('seed')}" if not last else f"{number} · this file"
        )
        thumbs.append((label, _thumb(data)))
    if needed:
        lines.append("  " + missing_line(chain, needed, session.output.path))
    return LineageView(title, lines, thumbs, made, needed)


def _thumb(data: bytes | None) -> bytes | None:
    if data is None:
        return None
    from PIL import Image

    from ..files._thumbnail import make_thumbnail

    try:
        with Image.open(io.BytesIO(data)) as image:
            return make_thumbnail(image, 128)
    except Exception:
        return None


def _gen_bytes(session: Chains, generation_id: str | None) -> bytes | None:
    for gen in reversed(session.history):
        if generation_id and gen.id == generation_id and gen.status == SUCCEEDED:
            return gen.data
    return None


def _saved_bytes(folders: Sequence[Path], generation_id: str | None) -> bytes | None:
    """The image a step made, when a file saved for its generation id is in one of the folders."""
    from ..files._storage import OutputFolder

    if not generation_id:
        return None
    for folder in folders:
        found = OutputFolder(folder).find(generation_id)
        if found is not None:
            try:
                return found.read_bytes()
            except OSError:
                continue
    return None


__all__ = [
    "FIELD",
    "MAX_DEPTH",
    "Chain",
    "LineageView",
    "Step",
    "build",
    "chain_of",
    "digest",
    "parse",
    "remake",
    "view",
]
