"""Sweeps (flux_nb.sweep): one generation per combination of values,
shown and saved as a labelled grid.

    %%flux --seed 7 --sweep steps=4,8,16 --sweep guidance=1,2,4
    a {red|blue|green} fox

Axes come from `{a|b|c}` alternatives in the prompt (first) and from `--sweep NAME=V1,V2,...`
(a flag name such as steps, or the API's parameter name), in the order written. The first axis
runs along the columns, the others down the rows. Every value is checked against the model's
schema and every cell's recipe is built before anything is sent. Every cell has the same seed
unless the seed is swept. Parsing and expansion here are pure; `Sweep` holds the Generations.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core._errors import FluxError, ValidationError
from ..core._options import FLAG_NAMES  # the magic's flag names (and a) for each parameter
from ..core._recipe import OPTION_PARAMETERS, Recipe, bundled_schema, check_value, draw_seed
from ..core._status import SUCCEEDED

if TYPE_CHECKING:
    from PIL import Image

    from ._generation import Generation

# What a label calls each parameter: the flag name people typed.
TITLES = {param: flag for flag, param in FLAG_NAMES.items() if len(flag) > 1}
MAX_CELLS = 256  # as many as one generate() may start
_ALTERNATIVES = re.compile(r"\{([^{}]*\|[^{}]*)\}")


@dataclasses.dataclass(frozen=True)
class Axis:
    """One swept dimension: a parameter (or 'prompt') and its values, with their labels."""

    name: str
    title: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]


def parameter_name(name: str) -> str:
    """The API parameter for a flag name or parameter name; one clear line otherwise."""
    key = name.strip().lstrip("-").lower().replace("-", "_")
    if key in OPTION_PARAMETERS:
        return key
    if key in FLAG_NAMES:
        return FLAG_NAMES[key]
    known = [*FLAG_NAMES, *OPTION_PARAMETERS]
    close = difflib.get_close_matches(key, known, n=1)
    tip = f" Did you mean {close[0]}?" if close else ""
    raise ValidationError(
        f"cannot sweep {name!r}: it is not an option.{tip}"
        f" Sweep one of: {', '.join(f for f in FLAG_NAMES if len(f) > 1)}.",
        field="sweep",
    )


def _coerce(text: str, spec: dict[str, Any], title: str) -> Any:
    kind = spec.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            value = float(text)
            return int(value) if value.is_integer() else value
    except ValueError:
        what = "a whole number" if kind == "integer" else "a number"
        raise ValidationError(
            f"{title}={text!r} is not {what}.", field=spec.get("title", title)
        ) from None
    return text


def _label(title: str, value: Any) -> str:
    return f"{title} {value:g}" if isinstance(value, float) else f"{title} {value}"


def make_axis(name: str, values: Any, schema: dict[str, Any] | None = None) -> Axis:
    """An axis for a parameter from a list of values (or a 'V1,V2,...' string), each checked
    against the schema: a bad one is named in one line before anything is sent."""
    schema = schema or bundled_schema()
    param = parameter_name(name)
    title = TITLES.get(param, param)
    spec = schema.get("properties", {}).get(param, {})
    if isinstance(values, str):
        values = [_coerce(v.strip(), spec, title) for v in values.split(",") if v.strip()]
    elif isinstance(values, (list, tuple, range)):
        values = list(values)
    else:
        raise ValidationError(
            f"{title}: give the values to sweep as a list, e.g. {title}=[1, 2, 3].", field=param
        )
    if not values:
        raise ValidationError(f"{title}: no values to sweep.", field=param)
    if len(set(map(repr, values))) != len(values):
        raise ValidationError(f"{title}: a value is given twice ({values!r}).", field=param)
    for value in values:
        check_value(title, value, spec)
    return Axis(param, title, tuple(values), tuple(_label(title, v) for v in values))


def parse_axis(text: str, schema: dict[str, Any] | None = None) -> Axis:
    """An axis from the magic's `--sweep NAME=V1,V2,...`."""
    name, sep, values = text.strip().strip("\"'").partition("=")
    if not sep or not name.strip():
        raise ValidationError(
            f"--sweep {text!r}: write NAME=V1,V2,... e.g. --sweep steps=4,8,16.", field="sweep"
        )
    return make_axis(name, values, schema)


def prompt_axes(prompt: str) -> list[Axis]:
    """One axis per `{a|b|c}` group of the prompt, in order (none when it has no group)."""
    groups = _ALTERNATIVES.findall(prompt)
    axes = []
    for i, group in enumerate(groups):
        options = tuple(o.strip() for o in group.split("|"))
        if len(set(options)) != len(options):
            raise ValidationError(
                f"the prompt's {{{group}}} gives an alternative twice.", field="prompt"
            )
        title = "prompt" if len(groups) == 1 else f"prompt {i + 1}"
        axes.append(Axis("prompt", title, options, tuple(o or "(none)" for o in options)))
    return axes


def has_alternatives(prompt: str) -> bool:
    return bool(_ALTERNATIVES.search(prompt))


def fill_prompt(prompt: str, choices: Sequence[str]) -> str:
    """The prompt with its k-th `{...}` group replaced by choices[k] (spaces kept single)."""
    it = iter(choices)
    text = _ALTERNATIVES.sub(lambda _: next(it), prompt)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a sweep will send, validated: its axes and one recipe per cell, row by row."""

    prompt: str
    axes: tuple[Axis, ...]
    recipes: tuple[Recipe, ...]
    fixed: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns): the first axis is the columns, the others make the rows."""
        cols = len(self.axes[0].values)
        return len(self.recipes) // cols, cols


def plan(
    prompt: str,
    sweeps: Sequence[Axis] = (),
    schema: dict[str, Any] | None = None,
    **fixed: Any,
) -> Plan:
    """The cells of a sweep: prompt alternatives, then `sweeps`, over the `fixed` parameters.
    The seed is the same in every cell (drawn once when none is given) unless it is swept."""
    schema = schema or bundled_schema()
    if not isinstance(prompt, str):
        raise ValidationError("the prompt must be text.", field="prompt")
    prompt = prompt.strip()
    axes = [*prompt_axes(prompt), *sweeps]
    if not axes:
        raise ValidationError(
            "a sweep needs something to vary: a {a|b} choice in the prompt, or values to sweep"
            " (steps=[4, 8, 16]; in %%flux: --sweep steps=4,8,16).",
            field="sweep",
        )
    names = [a.name for a in axes if a.name != "prompt"]
    for name in names:
        if names.count(name) > 1:
            raise ValidationError(f"{TITLES.get(name, name)} is swept twice.", field=name)
        if fixed.get(name) is not None:
            raise ValidationError(
                f"{TITLES.get(name, name)} is both set and swept: give it one way only.",
                field=name,
            )
    cells = 1
    for axis in axes:
        cells *= len(axis.values)
    if cells > MAX_CELLS:
        sizes = " x ".join(str(len(a.values)) for a in axes)
        raise ValidationError(
            f"this sweep makes {sizes} = {cells} images; at most {MAX_CELLS} at once.",
            field="sweep",
        )
    fixed = {k: v for k, v in fixed.items() if v is not None}
    if "seed" not in fixed and "seed" not in names:
        fixed["seed"] = draw_seed()
    if fixed.get("input_image") is not None:
        from ..files._inputs import to_input_url

        sources = fixed["input_image"]
        sources = sources if isinstance(sources, (list, tuple)) else [sources]
        fixed["input_image"] = [to_input_url(s) for s in sources]
    # Row by row: the first axis changes fastest (along a row), the last one slowest.
    recipes = []
    for combo in itertools.product(*(range(len(a.values)) for a in reversed(axes))):
        picks = {id(a): a.values[i] for a, i in zip(reversed(axes), combo, strict=True)}
        choices = [picks[id(a)] for a in axes if a.name == "prompt"]
        params = {**fixed, **{a.name: picks[id(a)] for a in axes if a.name != "prompt"}}
        text = fill_prompt(prompt, choices) if choices else prompt
        recipes.append(Recipe.build(text, schema=schema, **params))
    return Plan(prompt, tuple(axes), tuple(recipes), fixed)


def split_axes(
    kwargs: dict[str, Any], schema: dict[str, Any] | None = None
) -> tuple[list[Axis], dict[str, Any]]:
    """flux_nb.sweep's keywords: lists (tuples, ranges) are axes, anything else is fixed.
    input_image is always fixed: its list is the images of every cell."""
    axes, fixed = [], {}
    for name, value in kwargs.items():
        param = parameter_name(name) if name != "input_image" else name
        if param != "input_image" and isinstance(value, (list, tuple, range)):
            axes.append(make_axis(name, value, schema))
        else:
            if param in fixed:
                raise ValidationError(f"{name} is given twice.", field=param)
            fixed[param] = value
    return axes, fixed


class Sweep:
    """A grid of Generations: `sweep[row, col]`, iteration, wait(), cancel(), sheet(), save().

    In Jupyter it shows as a grid of live cards with the axis values along its edges; each cell
    is an ordinary Generation with its own recipe, Reproduce and the rest."""

    def __init__(self, plan: Plan, generations: Sequence[Generation]):
        self.plan = plan
        self.generations = list(generations)

    # -- shape and labels -------------------------------------------------------------------------

    @property
    def axes(self) -> tuple[Axis, ...]:
        return self.plan.axes

    @property
    def shape(self) -> tuple[int, int]:
        return self.plan.shape

    @property
    def column_labels(self) -> list[str]:
        return list(self.axes[0].labels)

    @property
    def row_labels(self) -> list[list[str]]:
        """For each row, one label per axis after the first (empty when there is one axis)."""
        rows = self.axes[1:]
        combos = itertools.product(*(range(len(a.values)) for a in reversed(rows)))
        return [
            [a.labels[i] for a, i in zip(rows, reversed(combo), strict=True)] for combo in combos
        ]

    @property
    def title(self) -> str:
        """The prompt as written, then what every cell shares."""
        fixed = self.generations[0].recipe if self.generations else None
        swept = {a.name for a in self.axes}
        parts = []
        if fixed is not None:
            for name, text in (
                ("seed", f"seed {fixed.seed}"),
                ("num_inference_steps", f"{fixed.num_inference_steps} steps"),
                ("guidance_scale", f"guidance {fixed.guidance_scale:g}"),
                ("aspect_ratio", fixed.aspect_ratio),
                ("output_quality", fixed.output_quality),
            ):
                if name not in swept:
                    parts.append(text)
            if fixed.input_image:
                parts.append(f"{len(fixed.input_image)} input image(s)")
        return f"{self.plan.prompt}\n{' · '.join(parts)}" if parts else self.plan.prompt

    # -- the generations --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.generations)

    def __iter__(self) -> Iterator[Generation]:
        return iter(self.generations)

    def __getitem__(self, key: int | tuple[int, int]) -> Generation:
        """sweep[i] (row by row) or sweep[row, col]."""
        if isinstance(key, tuple):
            row, col = key
            rows, cols = self.shape
            if not (-rows <= row < rows and -cols <= col < cols):
                raise IndexError(f"no cell {key} in a {rows} x {cols} sweep")
            return self.generations[(row % rows) * cols + col % cols]
        return self.generations[key]

    def rows(self) -> list[list[Generation]]:
        cols = self.shape[1]
        return [self.generations[i : i + cols] for i in range(0, len(self.generations), cols)]

    @property
    def done(self) -> bool:
        return all(g.done for g in self.generations)

    def wait(self, timeout: float | None = None) -> Sweep:
        """Block until every cell has ended (saved, failed or cancelled); returns the sweep.
        A failed cell does not raise: the grid shows it. Raises FluxError on timeout."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        for gen in self.generations:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not gen._done.wait(left):
                running = sum(not g.done for g in self.generations)
                raise FluxError(
                    f"{running} of the sweep's {len(self)} images"
                    f" still running after {timeout:g} s.",
                    hint="Call wait() again, or cancel() the sweep.",
                )
        return self

    def cancel(self) -> Sweep:
        for gen in self.generations:
            gen.cancel()
        return self

    # -- the contact sheet ------------------------------------------------------------------------

    def sheet(self, tile: int = 256, timeout: float | None = None) -> Image.Image:
        """The grid as one labelled image (waits for every cell): axis values along the top and
        left, the prompt and shared settings above. Failed cells show their status."""
        from ..files._sheet import draw_sheet

        self.wait(timeout)
        tiles = [
            [g.image if g.status == SUCCEEDED else g.status for g in row] for row in self.rows()
        ]
        return draw_sheet(tiles, self.column_labels, self.row_labels, self.title, tile)

    def save(self, path: str | Path, tile: int = 256, timeout: float | None = None) -> Path:
        """Write the contact sheet (PNG, JPEG or WebP by the suffix) once every cell is done,
        with the `parameters` text other image tools read (see parameters)."""
        import io

        from ..files._metadata import embed_parameters

        path = Path(path)
        image = self.sheet(tile, timeout)
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
        buf = io.BytesIO()
        image.save(buf, fmt, **({"quality": 90} if fmt != "PNG" else {"optimize": True}))
        data = embed_parameters(buf.getvalue(), self.parameters())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            from ..core._errors import StorageError

            raise StorageError(
                f"Could not save the sheet as {path} ({exc.strerror or exc})."
            ) from None
        return path

    def parameters(self) -> str:
        """The sheet's A1111 `parameters` text: its first finished cell's, as A1111 labels a grid,
        then a `Sheet` key naming the grid and what it sweeps."""
        from ..files._infotext import format_parameters

        done = [g for g in self.generations if g.status == SUCCEEDED]
        first = done[0] if done else self.generations[0]
        rows, cols = self.shape
        swept = "; ".join(f"{a.title} {'|'.join(map(str, a.values))}" for a in self.axes)
        more = {"Sheet": f"{cols}x{rows} grid of {swept}"}
        return format_parameters(first.recipe, _size(first) if done else None, more)

    # -- display ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """Plain text: the prompt, the axes, and how far the cells are."""
        rows, cols = self.shape
        axes = "; ".join(
            f"{a.title}: {' | '.join(str(v) if a.name != 'prompt' else v for v in a.values)}"
            for a in self.axes
        )
        finished = sum(g.done for g in self.generations)
        state = f"all {len(self)} done" if finished == len(self) else "running"
        return f"{rows} x {cols} sweep of {self.plan.prompt!r}\n{axes}\n{state}"

    def __repr__(self) -> str:
        return f"<flux_nb.Sweep {self.describe().replace(chr(10), ' · ')}>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ._display import sweep_bundle

        return sweep_bundle(self)


class Submits(Protocol):
    """What a sweep asks of a session (sessions.Session is one): the one way to send, with a
    check before each enqueue."""

    def submit(
        self, recipes: Iterable[Recipe], *, check: Callable[[], None] | None = None
    ) -> list[Generation]: ...


def start(session: Submits, plan: Plan, check: Callable[[], None] | None = None) -> Sweep:
    """Send every cell of the plan (each its own enqueue) and return the Sweep at once; check()
    runs before each enqueue (Runner.submit)."""
    return Sweep(plan, session.submit(plan.recipes, check=check))


def _size(gen: Generation) -> tuple[int, int]:
    """A finished image's size from its file's header (no pixels decoded), else from the image."""
    if gen.path is not None:
        from PIL import Image

        try:
            with Image.open(gen.path) as opened:
                return opened.size
        except OSError:
            pass
    return gen.image.size


__all__ = [
    "FLAG_NAMES",
    "MAX_CELLS",
    "Axis",
    "Plan",
    "Sweep",
    "has_alternatives",
    "make_axis",
    "parameter_name",
    "parse_axis",
    "plan",
    "prompt_axes",
    "split_axes",
    "start",
]
