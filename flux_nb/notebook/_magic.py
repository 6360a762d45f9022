"""The %%flux cell magic and the %flux line magic.

They parse, call flux_nb's Python API once, and show cards (_cards.py): everything here can be
done with flux_nb.generate(...). Errors come out as one UsageError line: IPython prints
"UsageError: <message>" without a traceback and the cell counts as failed, so Run All stops there.
"""

from __future__ import annotations

import contextlib
import keyword
import sys
import threading
import time
from typing import Any

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Float, Int, Unicode

from ..core import _errors as errors
from ..core import _options as options
from ..core._recipe import OPTION_PARAMETERS
from ..core._status import SUCCEEDED
from ..jobs import _sessions as _session

# `from . import session` could give the package's session() function: take the module itself.

OPTIONS = options.summary(options.MAGIC)
SUBCOMMANDS = (
    "wait [TIMEOUT], status, cancel [ID|all], history [N], reproduce [--input FILE] [--lineage"
    " [--yes]] PATH_OR_ID, lineage PATH_OR_ID, backend [local [--engine E --model M]|hosted],"
    " resume, copy [ID], panel, price"
)


def _option_arguments(func):
    """The %%flux options of the table (core/_options.py), as magic_arguments decorations in
    order."""
    for option in reversed(options.for_surface(options.MAGIC)):
        flags, kwargs = option.argument(options.MAGIC)
        func = argument(*flags, **kwargs)(func)
    return func


@magics_class
class FluxMagics(Magics):
    """%%flux makes images from the cell text in the background; %flux manages them.
    Settings: %config FluxMagics.thumbnail_size = 384,
    %config FluxMagics.default_options = '-a 1:1', %config FluxMagics.max_cell_cost = 1.0."""

    thumbnail_size = Int(320, help="Longest side, in pixels, of the previews on cards.").tag(
        config=True
    )
    default_options = Unicode(
        "", help="Options put before every %%flux line's own, e.g. '--aspect 1:1 --steps 8'."
    ).tag(config=True)
    max_cell_cost = Float(
        1.0,
        help="Most a %%flux cell may cost on a paid backend (the account's currency) before it"
        " needs --yes; checked against the model's per-image price before anything is sent.",
    ).tag(config=True)

    # -- %%flux ---------------------------------------------------------------------------------

    @magic_arguments(name="%flux")  # usage reads %%flux
    @_option_arguments
    @cell_magic("flux")  # type: ignore[arg-type]  # IPython types the magic's argument as Never
    def flux_cell(self, line: str, cell: str):
        """Make images of the cell's text (stripped) in the background; the cell returns at once
        with a live card per image (a grid when -n > 1). Each image is its own enqueue with its
        own seed: with --seed S and -n 4 the seeds are S, S+1, S+2, S+3. `_flux` holds the last
        Generation (or list); {var} and $var in the line are replaced by Python values.
        Sweeps: --sweep NAME=V1,V2,... and {a|b|c} in the prompt make one image per combination
        (same seed in each) in a labelled grid; `_flux` is then a Sweep (see flux_nb.sweep).
        On a paid backend the cost is checked first against FluxMagics.max_cell_cost.
        """
        args = self._parse(line)
        if args.name is not None and (not args.name.isidentifier() or keyword.iskeyword(args.name)):
            raise UsageError(
                f"--name {args.name!r} is not a Python variable name (letters, digits and _)."
            )
        params = {k: v for k in OPTION_PARAMETERS if (v := getattr(args, k)) is not None}
        images = [source for token in args.image for source in self._image_sources(token)]
        if images:
            params["input_image"] = images
        from ..jobs._sweeps import has_alternatives

        sess = _session.session()
        try:
            if args.sweep or has_alternatives(cell):
                self._sweep(sess, cell, args, params)
                return
            recipes = sess.recipes(cell, args.n, **params)
            check = self._check_cost(sess, recipes, args.yes)
            gens = sess.submit(recipes, check=check)
        except errors.FluxError as exc:
            raise UsageError(str(exc)) from None
        self._bind(gens if args.n > 1 else gens[0], args.name)
        self._show(gens)

    def _sweep(self, sess, cell: str, args, params: dict[str, Any]) -> None:
        from ..jobs._sweeps import parse_axis, plan, start
        from ._cards import sweep_final_bundle, sweep_view
        from ._settled_output import show

        if args.n != 1:
            raise UsageError(
                "%%flux: -n does not combine with a sweep; sweep the seed instead (--sweep"
                " seed=1,2,3)."
            )
        axes = []
        for text in args.sweep:
            try:
                axes.append(parse_axis(_unquote(text), sess.schema))
            except errors.ValidationError as exc:
                raise UsageError(f"%%flux --sweep: {exc}") from None
        todo = plan(cell, axes, sess.schema, **params)
        check = self._check_cost(sess, list(todo.recipes), args.yes)
        grid = start(sess, todo, check=check)
        self._bind(grid, args.name)
        view = sweep_view(grid, on_new=self._bind, thumbnail_size=min(self.thumbnail_size, 256))
        show(view, grid.generations, lambda: sweep_final_bundle(grid, view))

    def _check_cost(self, sess, recipes: list, confirmed: bool):
        """On a paid backend: one line with the cost, or refuse the cell over max_cell_cost.
        While the price is still being read (a session's first cell), the cell does not wait:
        the check it returns runs before the enqueue instead."""
        from ..api._pricing import check_cell, deferred_check

        price = sess.price_now()
        if price is None:
            if confirmed:
                print("flux: cost: the price is still being read; --yes sends it whatever it is.")
                return None
            print(
                "flux: cost: the price is still being read; it is checked against"
                " FluxMagics.max_cell_cost before anything is sent."
            )
            return deferred_check(lambda: sess.price, recipes, self.max_cell_cost)
        line = check_cell(price, recipes, self.max_cell_cost, confirmed)
        if line:
            print(line)
        return None

    def _parse(self, line: str):
        if self.default_options:
            line = f"{self.default_options} {line}"
        try:
            return parse_argstring(self.flux_cell, line)
        except UsageError as exc:
            raise UsageError(f"%%flux: {exc}. Options: {OPTIONS} (see %%flux?).") from None

    def _image_sources(self, token: str) -> list[Any]:
        """A variable's value when the token names one; otherwise the path or URL as written."""
        token = _unquote(token)
        if token.isidentifier() and token in self._user_ns:
            value = self._user_ns[token]
            return list(value) if isinstance(value, (list, tuple)) else [value]
        return [token]

    @property
    def _user_ns(self) -> dict[str, Any]:
        """The notebook's variables (the magics are made with a shell: load_ipython_extension)."""
        assert self.shell is not None
        return self.shell.user_ns

    def _bind(self, result: Any, name: str | None = None) -> None:
        self._user_ns["_flux"] = result
        if name:
            self._user_ns[name] = result

    def _show(self, gens: list) -> None:
        """The cards, as an output that settles to the final text and picture
        (_settled_output.py)."""
        from ._cards import card_stack, stack_final_bundle
        from ._settled_output import show

        view = card_stack(gens, on_new=self._bind, thumbnail_size=self.thumbnail_size)
        show(view, gens, lambda: stack_final_bundle(gens, view))

    # -- %flux ----------------------------------------------------------------------------------

    @line_magic("flux")  # type: ignore[arg-type]  # as for cell_magic above
    def flux_line(self, line: str):
        """%flux SUBCOMMAND: wait [TIMEOUT] (block until every image of the session is done),
        status, cancel [ID|all] (default all), history [N], reproduce PATH_OR_ID (--lineage: the
        whole chain of edits, parents first; --input FILE: an uploaded image the chain starts from;
        --yes: over FluxMagics.max_cell_cost on a paid backend), lineage PATH_OR_ID (how an edit
        was made, step by step), backend [local|hosted] (show or switch; local takes --engine
        flux2-klein --model M --device D --dtype T --memory P --quantize PART=LEVEL for FLUX.2
        Klein on this machine),
        resume (collect what an earlier kernel sent), copy [ID] (a %%flux cell below that remakes
        a generation; default the last), panel, price (what an image costs on this backend)."""
        words = [_unquote(w) for w in line.split(None, 1)]
        command, rest = (
            (words[0].lower(), words[1].strip() if len(words) > 1 else "")
            if words
            else ("status", "")
        )
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(f"%flux: unknown subcommand {command!r}. Use one of: {SUBCOMMANDS}.")
        try:
            return handler(_unquote(rest))
        except errors.FluxError as exc:
            raise UsageError(str(exc)) from None

    def _cmd_wait(self, rest: str) -> None:
        timeout = _number(rest, "wait TIMEOUT (seconds)") if rest else None
        from ._cards import resend_settled, wait_settled
        from ._settled_output import flush

        start = time.monotonic()
        gens = _session.session().wait_all(timeout)
        wait_settled(
            None if timeout is None else max(0.0, timeout - (time.monotonic() - start)) + 1.0
        )
        resend_settled()  # inside this cell, so a notebook saved by nbclient keeps every preview
        flush()  # and every %%flux output its final text and picture
        counts = _count(gens)
        print(
            f"flux: all {len(gens)} generation(s) finished: {counts}."
            if gens
            else "flux: nothing to wait for."
        )

    def _cmd_status(self, rest: str) -> None:
        sess = _session.session()
        running = sess.pending()
        print(
            f"flux: {sess.backend} backend at {sess.base_url} · {len(running)} running,"
            f" {_count([g for g in sess.history if g.done]) or 'none done'} · output"
            f" {sess.output.path}"
        )
        note = sess.runner.stream_note()
        if note:
            print(f"flux: {note}.")
        for gen in running:
            step = f" step {gen.progress[0]}/{gen.progress[1]}" if gen.progress else ""
            print(
                f"  {gen.id or 'unsent'}  {gen.status}{step}  {gen.elapsed:.0f} s  seed {gen.seed}"
                f"  {gen.prompt[:50]!r}"
            )

    def _cmd_cancel(self, rest: str) -> None:
        sess = _session.session()
        if rest in ("", "all"):
            print(f"flux: cancelling {sess.cancel_all()} generation(s).")
            return
        gen = self._find(rest)
        gen.cancel()
        print(
            f"flux: cancelling {gen.id or gen.key[:8]}."
            if not gen.done
            else f"flux: {gen.id} already {gen.status}."
        )

    def _cmd_history(self, rest: str) -> None:
        count = int(_number(rest, "history N")) if rest else 10
        history = _session.session().history[-count:] if count > 0 else []
        if not history:
            print("flux: no generations yet in this session.")
        for gen in history:
            where = f"  {gen.path}" if gen.path else f"  {gen.reason}" if gen.reason else ""
            print(
                f"{gen.id or 'unsent'}  {gen.status}  seed {gen.seed}  {gen.prompt[:50]!r}{where}"
            )

    def _cmd_reproduce(self, rest: str) -> None:
        words = rest.split()
        if not {"--lineage", "--input", "--yes"} & set(words):
            target, lineage, inputs, yes = rest, False, list[str](), False
        else:
            target, lineage, inputs, yes = self._reproduce_options(rest)
        if not target:
            raise UsageError(
                "%flux reproduce needs a saved image's path or a generation id (see %flux history)."
            )
        if not lineage:
            gen = _session.session().reproduce(self._source(target), inputs=inputs)
            self._bind(gen)
            self._show([gen])
            return
        from ..jobs._lineage import remake

        sess, made = _session.session(), list[Any]()
        remake(
            sess,
            self._source(target),
            inputs,
            on_step=made.append,
            before_send=lambda recipes: self._check_cost(sess, recipes, yes),
        )
        if len(made) > 1:
            print(f"flux: made {len(made) - 1} earlier step(s) again first, then the last one.")
        self._bind(made[-1])
        self._show(made)

    def _reproduce_options(self, rest: str) -> tuple[str, bool, list[str], bool]:
        import shlex

        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise UsageError(f"%flux reproduce: {exc}.") from None
        target: list[str] = []
        lineage, inputs, yes = False, list[str](), False
        while words:
            word = words.pop(0)
            if word == "--lineage":
                lineage = True
            elif word == "--yes":
                yes = True
            elif word == "--input":
                if not words:
                    raise UsageError("%flux reproduce --input needs a file after it.")
                inputs.append(words.pop(0))
            elif word.startswith("--"):
                raise UsageError(
                    f"%flux reproduce: unknown option {word!r} (allowed: --lineage,"
                    f" --input FILE, --yes)."
                )
            else:
                target.append(word)
        if len(target) > 1:
            raise UsageError(
                f"%flux reproduce: give one image, not {len(target)}"
                f" (quote a path that has spaces)."
            )
        if yes and not lineage:
            raise UsageError("%flux reproduce --yes goes with --lineage.")
        return (target[0] if target else ""), lineage, inputs, yes

    def _cmd_lineage(self, rest: str) -> None:
        if not rest:
            raise UsageError(
                "%flux lineage needs a saved image's path or a generation (see %flux history)."
            )
        from ..jobs._lineage import view

        display(view(_session.session(), self._source(rest)))

    def _source(self, text: str) -> Any:
        """A Generation named by a variable of the notebook, else the text (a path or an id)."""
        value = self._user_ns.get(text) if text.isidentifier() else None
        return value if hasattr(value, "recipe") and hasattr(value, "lineage") else text

    def _cmd_backend(self, rest: str) -> None:
        from ..core._config import ApiKey
        from ..jobs._sessions import Session, set_session

        words = rest.split()
        choice = words[0].lower() if words else ""
        if choice == "":
            print(_session.session().describe())
            return
        if choice == "local":
            new = Session("local", announce=None, **_local_options(words[1:]))
        elif len(words) > 1:
            raise UsageError(f"%flux backend {rest!r}: engine options go with local only.")
        elif choice == "hosted":
            new = Session("hosted", api_key=_ask_key(ApiKey), announce=None)
        else:
            raise UsageError(f"%flux backend {rest!r}: choose local or hosted.")
        set_session(new)
        print(new.describe())

    def _cmd_resume(self, rest: str) -> None:
        sess = _session.session()
        gens = sess.resume()
        for note in sess.resume_notes:
            print(f"flux: not resumed: {note}")
        if not gens:
            print("flux: nothing to resume: every generation sent by an earlier kernel was saved.")
            return
        self._bind(gens if len(gens) > 1 else gens[0])
        self._show(gens)

    def _cmd_copy(self, rest: str) -> None:
        from ._cards import magic_line

        recipe = self._find(rest).recipe if rest else _last(self._user_ns.get("_flux")).recipe
        assert self.shell is not None  # as in _user_ns
        self.shell.set_next_input(magic_line(recipe), replace=False)

    def _cmd_price(self, rest: str) -> None:
        sess = _session.session()
        print(f"flux: {sess.backend} backend: {sess.price.describe()}.")

    def _cmd_panel(self, rest: str) -> None:
        try:
            from ._panel import Panel
        except ModuleNotFoundError as exc:
            if exc.name != "flux_nb.notebook._panel":
                raise
            print(
                "flux: the panel is not part of this version of flux-nb yet"
                " (flux_nb.notebook._panel is missing)."
            )
            return
        display(Panel())

    def _find(self, text: str):
        """A generation of this session by id, key prefix or saved path."""
        for gen in reversed(_session.session().history):
            if text in (gen.id, str(gen.path)) or gen.key.startswith(text):
                return gen
        raise UsageError(f"%flux: no generation {text!r} in this session (see %flux history).")


def _local_options(words: list[str]) -> dict[str, Any]:
    """`%flux backend local` options (--engine, --model, --device, --dtype, --offload) as the
    Session's engine; what is left out comes from FLUX_NB_ENGINE and FLUX_NB_MODEL."""
    import argparse

    from ..core._config import Settings

    parser = argparse.ArgumentParser(
        prog="%flux backend local", add_help=False, exit_on_error=False
    )
    for flag in ("--engine", "--model", "--device", "--dtype", "--memory"):
        parser.add_argument(flag, default=None)
    parser.add_argument("--offload", action="store_true")
    parser.add_argument("--quantize", action="append", default=None)
    try:
        found, extra = parser.parse_known_args([_unquote(w) for w in words])
    except argparse.ArgumentError as exc:
        raise UsageError(f"%flux backend local: {exc}") from None
    if extra:
        raise UsageError(
            f"%flux backend local: unknown option {extra[0]!r} (use --engine, --model, --device,"
            " --dtype, --memory, --quantize, --offload)."
        )
    options = {k: v for k, v in vars(found).items() if v not in (None, False)}
    if "quantize" in options:
        from ..server.engines._plan import parse_quantize

        try:
            options["quantize"] = tuple(parse_quantize(options["quantize"]).items())
        except ValueError as exc:
            raise UsageError(f"%flux backend local: {exc}") from None
    return {"engine": _session.local_engine(settings=Settings.from_env(), **options)}


def _ask_key(api_key_class):
    """The hosted key: OXEN_API_KEY, else Colab's secret of that name, else a getpass prompt;
    held only by the session's ApiKey."""
    import getpass
    import os

    from ..core._config import colab_secret

    value = os.environ.get("OXEN_API_KEY", "").strip() or colab_secret("OXEN_API_KEY")
    if not value:
        try:
            value = getpass.getpass("Oxen.ai API key (not stored, not echoed): ").strip()
        except (StdinNotImplementedError, EOFError, OSError):
            value = ""
    if not value:
        raise errors.AuthError(
            "The hosted backend needs an API key and none was given.",
            hint=(
                "Set OXEN_API_KEY in the kernel's environment (in Colab: a secret of that name,"
                " with this notebook given access), or type it at the prompt of %flux backend"
                " hosted."
            ),
        )
    return api_key_class(value)


def _last(value: Any):
    value = getattr(value, "generations", value)  # a Sweep: its last cell
    if isinstance(value, list) and value:
        value = value[-1]
    if value is None or not hasattr(value, "recipe"):
        raise UsageError("%flux copy: no generation yet; give an id (see %flux history).")
    return value


def _count(gens: list) -> str:
    tally: dict[str, int] = {}
    for gen in gens:
        label = "saved" if gen.status == SUCCEEDED else gen.status
        tally[label] = tally.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in tally.items())


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"%flux {what}: {text!r} is not a number.") from None
    if value < 0:
        raise UsageError(f"%flux {what}: {text!r} must not be negative.")
    return value


def _unquote(text: str) -> str:
    """IPython splits magic lines keeping the quotes (shlex non-POSIX): drop a matching pair."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def load_ipython_extension(ipython) -> None:
    """Register the magics and start the session (the embedded server here, not in the first
    cell); print one line: the backend, and the hint to resume when an earlier kernel left work."""
    magics = FluxMagics(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    try:
        sess = _session._current or _session.session(announce=None)
        line = sess.describe()
        left = len(sess.journal_pending())
    except (errors.FluxError, OSError, RuntimeError) as exc:
        print(
            f"flux-nb: no session ({exc}); %flux backend local or hosted tries again.",
            file=sys.stderr,
        )
        return
    hint = f"{left} generation(s) from an earlier kernel were not collected: run %flux resume."
    _session.announce_once(line, hint if left else "")  # once per kernel, even after %reload_ext
    # ipywidgets takes about 75 ms to import: do it while the person types the first %%flux cell
    # (under Run All that cell waits for the import lock instead:
    # no slower than importing it there).
    threading.Thread(target=_warm_up, name="flux-nb-warmup", daemon=True).start()


def _warm_up() -> None:
    with contextlib.suppress(Exception):  # the first %%flux cell would report a real problem
        from . import _cards as cards  # noqa: F401  (it also registers the live card for displays)


def unload_ipython_extension(ipython) -> None:
    """Drop the magics (the session and its images stay)."""
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("flux", None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, FluxMagics)]


__all__ = ["FluxMagics", "load_ipython_extension", "unload_ipython_extension"]
