"""The option table: every flag of a `%%flux` line and of `flux-nb generate`, written once.

The magic's arguments (notebook/_magic.py), the CLI's `generate` arguments (cli.py), the one-line
option summary of the magic's errors, the sweep's flag names (jobs/_sweeps.py) and the "copy recipe"
line (cards.magic_line) are all made from OPTIONS. Imports nothing: `flux-nb --help` stays instant.

    OPTIONS                 every Option, in the order the help and the copied line show them
    RECIPE_OPTIONS          the ones that set a recipe parameter (seed ... format)
    for_surface(surface)    the options of "magic" or "cli", in order
    summary(surface)        "--seed N, --aspect/-a R, ..." for one-line errors
    FLAG_NAMES              flag name without dashes (and "a") -> recipe parameter
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

MAGIC = "magic"
CLI = "cli"


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: the attribute it sets on the parsed arguments (the API parameter for recipe
    options), its flags (the long one first), how its text is read, and what the help says."""

    dest: str
    flags: tuple[str, ...]
    metavar: str | None
    help: str
    type: Callable[[str], Any] | None = None  # None: the text as written
    action: str | None = None  # "append" (repeatable) or "store_true"
    default: Any = None
    recipe: bool = False  # sets a recipe parameter of the same name as dest
    surfaces: tuple[str, ...] = (MAGIC, CLI)
    cli_help: str | None = None  # where the CLI takes less than the magic (no notebook variables)
    # the panel's name for a recipe option's control (notebook/_controls.py)
    label: str | None = None

    def argument(self, surface: str) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The positional and keyword arguments of argparse's add_argument for this option."""
        kwargs: dict[str, Any] = {"dest": self.dest}
        help_text = self.cli_help if surface == CLI and self.cli_help else self.help
        kwargs["help"] = help_text.replace("%", "%%")  # argparse expands %(default)s
        if self.action == "store_true":
            kwargs["action"] = "store_true"
            return self.flags, kwargs
        if self.action == "append":
            kwargs["action"] = "append"
            kwargs["default"] = []
        else:
            kwargs["default"] = self.default
        if self.type is not None:
            kwargs["type"] = self.type
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        return self.flags, kwargs

    def spelled(self, value: Any) -> str:
        """`--flag VALUE` as the copied line writes it (floats with repr, so 3.25 stays 3.25)."""
        return f"{self.flags[0]} {value!r}" if self.type is float else f"{self.flags[0]} {value}"


OPTIONS: tuple[Option, ...] = (
    Option(
        "seed",
        ("--seed",),
        "N",
        "seed of the first image (0 to 4294967295); random when left out",
        type=int,
        recipe=True,
        label="Seed",
    ),
    Option(
        "aspect_ratio",
        ("--aspect", "-a"),
        "R",
        "aspect ratio: 1:1, 16:9, 9:16, 4:3 or 3:4",
        recipe=True,
        label="Aspect ratio",
    ),
    Option(
        "num_inference_steps",
        ("--steps",),
        "N",
        "inference steps, 1 to 50",
        type=int,
        recipe=True,
        label="Steps",
    ),
    Option(
        "guidance_scale",
        ("--guidance",),
        "G",
        "guidance scale, 0 to 10",
        type=float,
        recipe=True,
        label="Guidance",
    ),
    Option("output_quality", ("--quality",), "Q", "standard or high", recipe=True, label="Quality"),
    Option("output_format", ("--format",), "F", "png, jpg or webp", recipe=True, label="Format"),
    Option(
        "n", ("-n",), "N", "number of images (one enqueue each; default 1)", type=int, default=1
    ),
    Option(
        "image",
        ("--image",),
        "SRC",
        "input image to edit: a path, a URL, or the name of a variable holding a PIL image,"
        " bytes, a Generation or a list of them (repeatable)",
        action="append",
        cli_help="input image to edit: a path or URL (repeatable)",
    ),
    Option(
        "name",
        ("--name",),
        "VAR",
        "variable to bind the Generation to (the list when -n > 1)",
        surfaces=(MAGIC,),
    ),
    Option(
        "sweep",
        ("--sweep",),
        "NAME=V1,V2,...",
        "one image per value, in a labelled grid: e.g. --sweep steps=4,8,16 (any option, by"
        " flag or parameter name; repeatable: the first runs along the columns)",
        action="append",
        surfaces=(MAGIC,),
    ),
    Option(
        "yes",
        ("--yes",),
        None,
        "run even when the cell costs more than FluxMagics.max_cell_cost",
        action="store_true",
        surfaces=(MAGIC,),
    ),
)

RECIPE_OPTIONS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.recipe)

# The flag names (and -a) for each recipe parameter, without dashes: what --sweep accepts
# besides the parameter names.
FLAG_NAMES: dict[str, str] = {
    flag.lstrip("-"): option.dest for option in RECIPE_OPTIONS for flag in option.flags
}


def for_surface(surface: str) -> tuple[Option, ...]:
    """The options one surface ("magic" or "cli") takes, in the table's order."""
    return tuple(o for o in OPTIONS if surface in o.surfaces)


def summary(surface: str) -> str:
    """The options in one line, e.g. "--seed N, --aspect/-a R, ..., --yes", for usage errors."""
    parts = []
    for option in for_surface(surface):
        text = "/".join(option.flags) + (f" {option.metavar}" if option.metavar else "")
        parts.append(text + (" (repeatable)" if option.action == "append" else ""))
    return ", ".join(parts)


__all__ = [
    "CLI",
    "FLAG_NAMES",
    "MAGIC",
    "OPTIONS",
    "RECIPE_OPTIONS",
    "Option",
    "for_surface",
    "summary",
]
