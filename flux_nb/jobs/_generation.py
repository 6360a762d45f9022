"""The user's handle on one image being made:
status, wait(), cancel(), image, path, reproduce(), vary().

A Generation holds what people read (status, progress, error, path) and the callbacks of what shows
it. A finished one keeps what identifies it, not its picture: the bytes, `image` and thumbnails are
read from its file when asked, with a small cache of the last few (files/_recent.py), so a session
of thousands of images stays small. Only bytes no file holds (a save that failed) stay. The runner
(_runner.py) moves it on through `_update` and `_finish`; whatever the runner needs to schedule it
(polls, claims, cancels sent) is the runner's own record, not here. The handle reaches its runner
only through `Backend`, the few calls listed below.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core import _errors as errors
from ..core._recipe import Recipe
from ..core._status import ACTIVE, CANCELLED, ENDED_BADLY, FAILED, SUBMITTING, SUCCEEDED, Status
from ..files import _recent as recent
from ..files._storage import OutputFolder
from . import _display as display

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("flux_nb.generation")


# Where new work goes: the session's submit (recipes, each one's lineage), the one way to send.
Send = Callable[[list[Recipe], list[dict[str, Any] | None]], list["Generation"]]


class Backend(Protocol):
    """What a Generation asks of the runner that made it."""

    backend: str
    engine: str | None
    send: Send  # reproduce() and vary() go through it, as every other submission does

    def cancel(self, gen: Generation) -> None: ...

    def save(self, gen: Generation, data: bytes, folder: OutputFolder | None = None) -> Path: ...

    def stream_note(self) -> str | None: ...


class Generation:
    """A handle on one image being made:
    status, wait(), cancel(), image, path, reproduce(), vary()."""

    def __init__(
        self,
        recipe: Recipe,
        runner: Backend,
        *,
        key: str | None = None,
        lineage: dict[str, Any] | None = None,
    ):
        self.recipe = recipe
        # how its input images were made (_lineage.py), kept beside the recipe
        self.lineage = lineage
        self.key = key or uuid.uuid4().hex
        self.id: str | None = None
        self.status: Status = SUBMITTING
        self.progress: tuple[int, int] | None = None
        self.error: errors.FluxError | None = None
        self.save_error: errors.StorageError | None = None
        self.result_url: str | None = None
        self.path: Path | None = None
        self.data_length: int | None = None  # len(saved_bytes()): what using it as input sends
        self._unsaved: bytes | None = None  # the bytes, only while no file holds them
        self._embedded = False  # flux-nb saved its file, with the recipe: saved_bytes strips it
        self.created = time.time()
        self.finished: float | None = None
        self.backend = runner.backend
        self.engine: str | None = runner.engine  # what makes the image, when the backend says
        self._runner = runner
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Generation], None]] = []
        self._done_callbacks: list[Callable[[], object]] = []
        self._thumb: dict[int, bytes] | None = None  # the runner's, until it has finished
        self.thumbnail_sides: tuple[int, ...] = (320,)  # made once downloaded (want_thumbnail)

    # -- what people use ---------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def prompt(self) -> str:
        return self.recipe.prompt

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds from submission to the saved file (or until now, while it runs)."""
        return (self.finished or time.time()) - self.created

    @property
    def delivery_note(self) -> str | None:
        """While it runs: one line when its result is being polled for because the event stream
        is silent (a proxy that buffers it, say); None when the stream delivers."""
        return None if self.done else self._runner.stream_note()

    def wait(self, timeout: float | None = None) -> Generation:
        """Block until the image is saved; raise GenerationFailed/GenerationCancelled otherwise."""
        if not self._done.wait(timeout):
            raise errors.FluxError(
                f"Generation {self.id or self.key[:8]} is still {self.status} after {timeout:g} s.",
                hint="Call wait() again, or cancel() it.",
            )
        if self.status == FAILED:
            # The cause's own advice when it has some (a download that kept failing: resume()),
            # else GenerationFailed's (the server refused the recipe).
            hint = self.error.hint if self.error and self.error.hint else None
            why = self.reason.rstrip(".")
            raise errors.GenerationFailed(
                f"Generation {self.id or self.key[:8]} failed: {why}.", hint=hint
            )
        if self.status == CANCELLED:
            raise errors.GenerationCancelled(f"Generation {self.id or self.key[:8]} was cancelled.")
        return self

    def __await__(self):
        """`await g`: wait for the saved image without blocking the event loop (top-level await
        in a notebook, asyncio.run in a script); raises as wait() does. Cancelling the awaiting
        task stops the waiting only: the generation goes on unless g.cancel() is called."""
        return self._wait_async().__await__()

    async def _wait_async(self) -> Generation:
        import asyncio

        if not self.done:
            loop = asyncio.get_running_loop()
            settled: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not settled.done():
                    settled.set_result(None)

            self._when_done(lambda: loop.call_soon_threadsafe(wake))
            await settled
        return self.wait(0)

    def _when_done(self, callback: Callable[[], object]) -> None:
        """Call `callback()` once, as soon as the generation has ended (at once if it has)."""
        with self._lock:
            if not self.done:
                self._done_callbacks.append(callback)
                return
        callback()

    def cancel(self) -> Generation:
        """Ask the backend to stop this generation; the status turns 'cancelled' when it has."""
        if not self.done:
            self._runner.cancel(self)
        return self

    def reproduce(self) -> Generation:
        """The same recipe, seed included, again: the same pixels on a deterministic backend.
        Input images named by hash come from the output folder's store (inputs.MissingInput
        says which one is not there and how to give it again)."""
        return self._runner.send([self.recipe], [self.lineage])[0]

    def vary(self, seed: int | None = None) -> Generation:
        """The same recipe with a new seed."""
        return self._runner.send([self.recipe.with_seed(seed)], [self.lineage])[0]

    @property
    def reason(self) -> str:
        """Why it failed or was cancelled, in the server's words or ours."""
        return self.error.message if self.error else ""

    @property
    def image(self) -> Image.Image:
        """The full-size result as a PIL image (waits for it if needed), read from its file; the
        last few read are kept (recent.images)."""
        self.wait()
        found = recent.images.get(self.key)
        if found is None:
            from ..files._thumbnail import decode

            found = decode(self._unsaved if self._unsaved is not None else self._file_bytes())
            recent.images.put(self.key, found, found.width * found.height * len(found.getbands()))
        return found

    @property
    def data(self) -> bytes | None:
        """The image's bytes, read from its file (None before it succeeded, or if the file is
        gone: saved_bytes() says so)."""
        if self.status != SUCCEEDED:
            return None
        try:
            return self.saved_bytes()[0]
        except errors.FluxError:
            return None

    def saved_bytes(self) -> tuple[bytes, str]:
        """The image's bytes (waits for them) and a label naming it: what files/_inputs.py sends
        when this generation is an input image. Read from its file, less what flux-nb embedded there
        (recipe, id, time: strip_recipe), so the same pixels send the same bytes every time."""
        self.wait()
        label = f"generation {self.id}"
        if self._unsaved is not None:
            return self._unsaved, label
        data = self._file_bytes()
        if self._embedded:
            from ..files._metadata import strip_recipe

            data = strip_recipe(data)
        return data, label

    def _file_bytes(self) -> bytes:
        if self.path is None:  # cannot happen once succeeded: the bytes or the file are kept
            raise errors.FluxError(f"Generation {self.id or self.key[:8]} has no saved image.")
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise errors.FluxError(
                f"Generation {self.id or self.key[:8]}'s file {self.path} is gone"
                f" ({exc.strerror or type(exc).__name__}).",
                hint="g.reproduce() makes the same image again from its recipe and seed.",
            ) from None

    @property
    def file_gone(self) -> bool:
        """True when it was saved and its file is no longer there (moved or deleted)."""
        return self._unsaved is None and self.path is not None and not self.path.exists()

    def save(self, folder: str | Path | None = None) -> Path:
        """Save again after a StorageError (or into another folder); returns the path."""
        self.wait()
        data, _ = self.saved_bytes()
        return self._runner.save(self, data, OutputFolder(folder) if folder is not None else None)

    def thumbnail(self, max_side: int = 320) -> bytes:
        """A small picture of the result for previews, deterministic for the same image: a JPEG
        for a photograph, a PNG for flat art (thumbnail.make_thumbnail; mime_type says which)."""
        made = self.thumbnail_made(max_side)
        if made is None:
            from ..files._thumbnail import make_thumbnail

            made = make_thumbnail(self.image, max_side)
            recent.thumbnails.put((self.key, max_side), made, len(made))
        return made

    def want_thumbnail(self, max_side: int) -> None:
        """Have a thumbnail of this size made as soon as the image is downloaded, by the thread
        that downloads it (a view showing the generation asks for its size when it is made)."""
        if max_side not in self.thumbnail_sides:
            self.thumbnail_sides += (max_side,)

    def thumbnail_made(self, max_side: int = 320) -> bytes | None:
        """The thumbnail of this size if it is made already (never makes one): a view shows it
        as soon as the runner has it, before the file is saved; the last few made are kept
        (recent.thumbnails), the views keep their own copy."""
        held = self._thumb
        if held is not None and max_side in held:
            return held[max_side]
        return recent.thumbnails.get((self.key, max_side))

    def on_change(self, callback: Callable[[Generation], None]) -> None:
        """Call `callback(self)` (from a background thread) after every state change."""
        self._callbacks.append(callback)
        if self.done:
            self._safe_call(callback)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        if self.status == SUCCEEDED and self.file_gone:
            where += " (file gone: reproduce() makes it again)"
        why = f", reason={self.reason!r}" if self.error and self.status in ENDED_BADLY else ""
        return (
            f"<Generation {self.id or 'unsent'} {self.status} seed={self.seed}"
            f" prompt={self.prompt[:40]!r}{where}{why}>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None):
        return display.generation_bundle(self)

    # -- state changes, called by the runner -----------------------------------------------------

    def _safe_call(self, callback: Callable[[Generation], None]) -> None:
        try:
            callback(self)
        except Exception:  # a broken view must never stop the runner
            log.exception("a callback on generation %s failed", self.id)

    def _changed(self) -> None:
        for callback in list(self._callbacks):
            self._safe_call(callback)

    def _update(
        self, status: Status | None = None, progress: tuple[int, int] | None = None
    ) -> None:
        if self.done:
            return
        changed = False
        if status and status != self.status and status in ACTIVE:
            self.status, changed = status, True
        if progress and progress != self.progress:
            self.progress, changed = progress, True
        if changed:
            self._changed()

    def _keep_thumbnails(self, made: dict[int, bytes]) -> None:
        """Thumbnails the runner made from the downloaded bytes (thumbnail.thumbnails): the
        views are told at once, while the file is still being saved."""
        self._thumb = {**(self._thumb or {}), **made}
        self._changed()

    def _finish(self, status: Status, error: errors.FluxError | None = None) -> None:
        for side, thumb in (self._thumb or {}).items():  # the views took theirs: the last few
            recent.thumbnails.put((self.key, side), thumb, len(thumb))  # stay in reach
        self._thumb = None
        self.status = status
        self.error = error
        self.finished = time.time()
        with self._lock:
            self._done.set()
            waiting, self._done_callbacks = self._done_callbacks, []
        self._changed()
        for callback in waiting:
            try:
                callback()
            except Exception:  # an event loop closed meanwhile: nobody is waiting any more
                log.debug("a done-callback of generation %s failed", self.id, exc_info=True)
