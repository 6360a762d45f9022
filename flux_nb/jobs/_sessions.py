"""One session per kernel, the object users hold: it owns the runner, the output folder and the
history, and is the one way work is sent (submit). Its other jobs each have a module of their own:
which server (_backends.py), the model's schema and price (api/_catalog.py), where input images came
from (lineage.Origins), and collecting what a gone kernel left (_recovery.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..api._catalog import Catalog
from ..api._client import OxenClient
from ..core import _errors as errors
from ..core._config import ApiKey, RetryPolicy, Settings, Timeouts
from ..core._recipe import Recipe
from ..files._journal import Journal
from ..files._storage import OutputFolder
from ._backends import announce_once, choose

# notebook/_magic.py's %flux backend local reads it here
from ._backends import local_engine as local_engine
from ._generation import Generation
from ._runner import Runner

if TYPE_CHECKING:  # made or read on first use: %load_ext loads neither lineage nor pricing
    from ..api._pricing import Price
    from ._lineage import Origins

JOURNAL_NAME = ".flux_nb_journal.jsonl"


class Session:
    """Where generations go and land. `backend`: 'local' (the embedded server), 'hosted'
    (Oxen.ai, needs a key) or None to choose from the environment. `timeouts` and `retry` go to
    the client (timeouts.sse_read: how long a silent event stream is trusted before reconnecting);
    `http` an httpx.Client of your own (a proxy, or a test transport). `engine` and `model` choose
    the embedded server's engine (default: FLUX_NB_ENGINE and FLUX_NB_MODEL, else the offline
    preview engine; flux2-klein is FLUX.2 Klein via diffusers)."""

    def __init__(
        self,
        backend: str | None = None,
        *,
        api_key: str | ApiKey | None = None,
        base_url: str | None = None,
        output_dir: str | Path | None = None,
        step_delay: float | None = None,
        settings: Settings | None = None,
        announce: Callable[[str], None] | None = announce_once,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        http: Any = None,
        engine: Any = None,
        model: str | None = None,
    ):
        settings = settings or Settings.from_env()
        self._choice = choose(
            backend,
            settings,
            api_key=api_key,
            base_url=base_url,
            step_delay=step_delay,
            engine=engine,
            model=model,
        )
        self.backend, self.base_url = self._choice.backend, self._choice.url
        self.server = self._choice.server  # the embedded LocalServer, when local
        self.engine = (
            self._choice.engine
        )  # the local engine's label; None when another server draws
        self.output = OutputFolder(output_dir or settings.output_dir)
        self.journal = Journal(self.output.path / JOURNAL_NAME)
        self.client = OxenClient(
            self.base_url, self._choice.key, timeouts=timeouts, retry=retry, http=http
        )
        self.resume_notes: list[str] = []  # why some journalled work could not be resumed here
        self.runner = Runner(self.client, self.output, self.journal, backend=self.backend)
        self._origins: Origins | None = None  # made by .origins on first use
        self._origins_lock = threading.Lock()
        self.runner.engine = self.engine
        self.runner.send = self.submit  # reproduce() and vary() of its handles come back here
        # The model's schema and price, read in the background from the start (api/_catalog.py).
        self.catalog = Catalog(self.client, local=self.backend == "local")
        if self.backend != "local":  # the live schema re-checks each recipe before its enqueue
            self.runner.before_send = lambda gen: self.catalog.check(gen.recipe)
        if announce is not None:
            announce(self.describe())

    def __repr__(self) -> str:
        return f"<flux_nb.Session {self.backend} {self.base_url} output={str(self.output.path)!r}>"

    def describe(self) -> str:
        """One line: which backend makes the images, and how to switch."""
        return self._choice.describe()

    @property
    def history(self) -> list[Generation]:
        """Every Generation of this session, oldest first (reproduce() and vary() included)."""
        return self.runner.history

    def load(self, path: str | Path) -> Generation:
        """A finished Generation for an image saved earlier (reads the recipe in its file)."""
        return self.runner.load(path)

    # -- making images ----------------------------------------------------------------------------

    @property
    def schema(self) -> dict[str, Any]:
        """The model's request_schema: read from the backend when the session starts, the
        bundled copy until then (never waits)."""
        return self.catalog.schema

    @property
    def origins(self) -> Origins:
        """Where the input images this session sends came from (lineage.Origins), made on first
        use: a session that never sends an input image never imports lineage."""
        with self._origins_lock:
            if self._origins is None:
                from ._lineage import Origins

                self._origins = Origins(self.output.inputs, lambda: self.runner.history)
            return self._origins

    @property
    def price(self) -> Price:
        """What an image costs here (pricing.Price): free on the local backend, else read once
        from the model object's pricing; unknown (and asked again next time) when unreadable."""
        return self.catalog.price

    def price_now(self) -> Price | None:
        """The price when it is known without a network round trip; None while the model object
        is being read (a failed read is started again, and asked for again next time)."""
        return self.catalog.price_now()

    def recipes(self, prompt: str, n: int = 1, **params: Any) -> list[Recipe]:
        """Validated recipes for n images. With a seed and n > 1, seeds run seed, seed+1, ..."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256:
            raise errors.ValidationError(
                f"n={n!r} is out of range (allowed: 1 to 256 images at once).", field="n"
            )
        if params.get("input_image") is not None:
            from ..files._inputs import to_input_url

            sources = params["input_image"]
            if not isinstance(sources, (list, tuple)):
                sources = [sources]
            urls = [to_input_url(s) for s in sources]
            self.origins.note_sources(sources, urls)
            params["input_image"] = [
                self.output.inputs.keep(u) for u in urls
            ]  # by hash from here on
        first = Recipe.build(prompt, schema=self.schema, **params)
        if n == 1:
            return [first]
        if params.get("seed") is not None:
            return [first] + [first.replace(seed=(first.seed + i) % (2**32)) for i in range(1, n)]
        return [first] + [first.with_seed() for _ in range(1, n)]

    def generate(self, prompt: str, n: int = 1, **params: Any) -> Generation | list[Generation]:
        """Start n images in the background; returns a Generation (a list when n > 1) at once."""
        gens = self.submit(self.recipes(prompt, n, **params))
        return gens[0] if n == 1 else gens

    def submit(
        self,
        recipes: Iterable[Recipe],
        lineages: list[dict[str, Any] | None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> list[Generation]:
        """Send recipes; each one's lineage (how its input images were made) is worked out here
        unless given, and goes beside the recipe into the journal and the saved file. Input
        images go by hash (their bytes kept in <output>/.inputs/); one named by a hash that is
        not there stops everything before anything is sent (inputs.MissingInput). check() runs
        before each enqueue (a %%flux cell's cost, while the price was still being read)."""
        recipes = [self.output.inputs.intern(r) for r in recipes]
        if lineages is None:
            known: dict[tuple[str, ...], Any] = {}
            for r in recipes:
                if r.input_image not in known:
                    known[r.input_image] = self.lineage_record(r)
            lineages = [known[r.input_image] for r in recipes]
        return self.runner.submit(recipes, lineages, check)

    # -- lineage ----------------------------------------------------------------------------------

    def lineage_record(self, recipe: Recipe) -> dict[str, Any] | None:
        """The lineage record of a recipe about to be sent: for each data: input, the flux-nb
        recipe that made it (and so on up), or the note that it was uploaded (kept in .inputs/)."""
        return self.origins.record(recipe)

    def note_origin(self, key: str, origin: Any) -> None:
        """Remember how the image with this hash was made (see lineage.build)."""
        self.origins.note(key, origin)

    def run(self, prompt: str, **params: Any) -> Generation:
        """Generate one image and wait for it: for scripts."""
        return self.submit(self.recipes(prompt, 1, **params))[0].wait()

    def reproduce(
        self, source: Any, lineage: bool = False, inputs: Iterable[Any] = ()
    ) -> Generation:
        """Run again the recipe of a Generation, a saved image file or a generation id. Its input
        images, named by hash, are looked for in <output>/.inputs/, in the .inputs/ beside the
        file, and among `inputs` (paths, bytes, PIL images given again). With lineage=True, first
        make again every earlier step of an edit chain, parents first, each one's new image the
        input of the next (uploaded images the chain starts from are looked for the same way);
        returns the last one."""
        if lineage:
            from ._lineage import remake

            return remake(self, source, inputs)
        recipe = self.recipe_of(source)
        self._gather_inputs(recipe, source, inputs)
        return self.submit([recipe], [self._recorded_lineage(source, recipe)])[0]

    def _gather_inputs(self, recipe: Recipe, source: Any, inputs: Iterable[Any]) -> None:
        """Bring a recipe's hash-named input images into this output folder's store: the images
        given again, then those in the store beside a file from another output folder."""
        from ..files._inputs import is_ref, to_input_url

        store = self.output.inputs
        for given in inputs:
            store.keep(to_input_url(given))
        path = Path(str(source)).expanduser() if isinstance(source, (str, Path)) else None
        beside = [path.parent] if path is not None and path.is_file() else []
        for item in recipe.input_image:
            if is_ref(item):
                store.adopt(item, beside)

    def _recorded_lineage(self, source: Any, recipe: Recipe) -> dict[str, Any] | None:
        """The lineage a source already carries (a Generation's, a file's), else worked out."""
        from . import _lineage as lineage

        if isinstance(source, Generation):
            return source.lineage
        path = Path(str(source)).expanduser() if isinstance(source, (str, Path)) else None
        if path is not None and path.is_file():
            from ..files._metadata import read_recipe

            try:
                record = lineage.parse(read_recipe(path).get(lineage.FIELD))
            except errors.FluxError:  # another tool's file: its recipe came from `parameters`
                record = None
            if record is not None:
                return record
        for gen in reversed(self.history):
            if gen.recipe == recipe and gen.lineage:
                return gen.lineage
        return self.lineage_record(recipe)

    def recipe_of(self, source: Any) -> Recipe:
        if isinstance(source, Generation):
            return source.recipe
        if isinstance(source, Recipe):
            return source
        text = str(source)
        for gen in reversed(self.history):
            if gen.id == text or (gen.path and str(gen.path) == text):
                return gen.recipe
        path = Path(text).expanduser()
        if path.is_file():
            from ..files._infotext import recipe_from_file

            return recipe_from_file(path, self.schema)
        if self.backend != "local" or len(text) >= 32:
            try:
                return Recipe.from_dict(self.client.get_generation(text))
            except errors.NotFoundError:
                pass
        raise errors.FluxError(
            f"{text!r} is neither a saved image file nor a known generation id.",
            hint="Give the path of an image saved by flux-nb, or an id from %flux history.",
        )

    # -- the whole session ------------------------------------------------------------------------

    def pending(self) -> list[Generation]:
        return [g for g in self.history if not g.done]

    def wait_all(self, timeout: float | None = None) -> list[Generation]:
        """Block until every generation of this session has ended; returns them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for gen in list(self.history):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not gen._done.wait(left):
                raise errors.FluxError(
                    f"{len(self.pending())} generation(s) still running after {timeout:g} s."
                )
        return list(self.history)

    def cancel_all(self) -> int:
        pending = self.pending()
        for gen in pending:
            gen.cancel()
        return len(pending)

    def journal_pending(self) -> list[dict[str, Any]]:
        """Journalled generations not yet saved whose kernel is gone, and this kernel's own that
        failed before their end was journalled (a download that kept failing, an enqueue whose
        fate could not be read): work of another live kernel sharing this folder is left to it."""
        from ._recovery import unfinished

        return unfinished(self.journal, self.history)

    def resume(self) -> list[Generation]:
        """Collect what earlier (now gone) kernels sent and never saved, each from the server it
        was sent to. One sent to this server with a known id is fetched by id; one whose enqueue
        answer was lost is looked for in the queue (finished rows included) before anything is
        sent again, so nothing is paid for twice. Local work whose server is gone (an earlier
        kernel's embedded server) is made again here with the same seed: the same pixels. Work
        sent to another hosted server is left for a session pointed at it (see resume_notes).
        An image already on disk (the kernel died between writing and journalling it) is loaded."""
        self.output.sweep_partials()
        from ._recovery import collect

        gens, self.resume_notes = collect(self.runner, self.journal_pending())
        return gens

    def saved_images(self) -> list[Path]:
        return self.output.images()

    def close(self) -> None:
        self.runner.stop()
        self.client.close()
        self.journal.close()


_current: Session | None = None
_current_lock = threading.Lock()


def session(**kwargs: Any) -> Session:
    """The kernel's session, made on first use (the embedded default without OXEN_API_KEY)."""
    global _current
    with _current_lock:
        if _current is None or kwargs:
            _current = Session(**kwargs)
        return _current


def set_session(new: Session | None) -> Session | None:
    """Replace the current session (the old one finishes what it has in flight)."""
    global _current
    with _current_lock:
        old, _current = _current, new
    return old
