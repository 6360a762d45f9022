"""A1111-style `parameters` text ("infotext"): the recipe in the form other image tools read.

    a red fox in snow
    Negative prompt: blurry            (other tools' files; flux-nb writes none)
    Steps: 28, Sampler: Euler, CFG scale: 2.0, Seed: 42, Size: 1344x768, Model: <model id>

A1111's PNG Info, Civitai, SD Prompt Reader and sd-parsers show it. The keys come in A1111's order,
ours after them; readers of that family want a `Sampler` (sd-parsers finds no A1111 text without
one). flux-nb writes it beside its own recipe and, for a file that holds only this text (made by
another tool), maps what FLUX.2 Klein accepts to a recipe and says in one line what it leaves out.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..core._errors import ValidationError
from ..core._recipe import MODEL_ID, SEED_MAX, Recipe, bundled_schema

# One "Key: value" of the last line; a value may be a quoted string holding commas
# (A1111's re_param).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
_NEGATIVE = "Negative prompt:"
# FLUX.2 Klein samples with flow-matching Euler (diffusers' FlowMatchEulerDiscreteScheduler); A1111
# and the tools that read its text call that sampler "Euler". A naming choice: the README says so.
SAMPLER = "Euler"


def format_parameters(
    recipe: Recipe, size: tuple[int, int] | None = None, more: dict[str, str] | None = None
) -> str:
    """The recipe as A1111 infotext; size is the image's own (width, height) when known, more
    holds our own keys, which go after A1111's."""
    fields = [
        f"Steps: {recipe.num_inference_steps}",
        f"Sampler: {SAMPLER}",
        f"CFG scale: {float(recipe.guidance_scale)}",
        f"Seed: {recipe.seed}",
    ]
    if size:
        fields.append(f"Size: {size[0]}x{size[1]}")
    fields.append(f"Model: {recipe.model}")
    if recipe.input_image:
        fields.append(f"Input images: {len(recipe.input_image)}")
    fields += [f"{key}: {_quoted(value)}" for key, value in (more or {}).items()]
    return f"{recipe.prompt}\n{', '.join(fields)}"


def _quoted(value: str) -> str:
    """A value as A1111 writes it: quoted as JSON when it holds a comma, colon or newline."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, {key: value}) from infotext, the way A1111 reads it: the last
    line holds the fields when it has at least three "Key: value" pairs."""
    lines = text.strip().replace("\r\n", "\n").split("\n")
    fields: dict[str, str] = {}
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        for key, value in _PARAM.findall(lines.pop()):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            fields[key.strip()] = value
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        if line.startswith(_NEGATIVE):
            negative.append(line[len(_NEGATIVE) :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    return "\n".join(prompt).strip(), "\n".join(negative).strip(), fields


def nearest_aspect(width: int, height: int, choices: list[str]) -> str:
    """The aspect ratio among choices ("16:9", ...) closest to width x height, on a log scale."""

    def distance(choice: str) -> float:
        a, b = (float(x) for x in choice.split(":"))
        return abs(math.log(width / height) - math.log(a / b))

    return min(choices, key=distance)


def recipe_from_parameters(text: str, schema: dict[str, Any] | None = None) -> tuple[Recipe, str]:
    """A recipe for FLUX.2 Klein from another tool's infotext, and one line saying what was
    ignored or adjusted (empty when nothing was). Raises ValidationError when it has no prompt."""
    schema = schema or bundled_schema()
    props = schema.get("properties", {})
    prompt, negative, fields = parse_parameters(text)
    if not prompt:
        raise ValidationError("its parameters text has no prompt.", field="prompt")
    params: dict[str, Any] = {}
    notes: list[str] = []
    ignored = ["negative prompt"] if negative else []

    def bounded(name: str, value: float, label: str) -> float:
        lo, hi = props.get(name, {}).get("minimum"), props.get(name, {}).get("maximum")
        clamped = min(max(value, lo if lo is not None else value), hi if hi is not None else value)
        if clamped != value:
            notes.append(f"{label} {value:g} taken as {clamped:g} (allowed {lo:g} to {hi:g})")
        return clamped

    for key, value in fields.items():
        lowered = key.lower()
        try:
            if lowered == "steps":
                params["num_inference_steps"] = int(bounded("num_inference_steps", int(value), key))
            elif lowered == "cfg scale":
                params["guidance_scale"] = float(bounded("guidance_scale", float(value), key))
            elif lowered == "seed":
                seed = int(value)
                if 0 <= seed <= SEED_MAX:
                    params["seed"] = seed
                else:
                    notes.append(f"Seed {seed} is not a usable seed: a random one is drawn")
            elif lowered == "size" and (match := _SIZE.match(value)):
                width, height = int(match[1]), int(match[2])
                choices = props.get("aspect_ratio", {}).get("enum") or ["1:1"]
                if width and height:
                    params["aspect_ratio"] = ratio = nearest_aspect(width, height, choices)
                    notes.append(f"Size {width}x{height} taken as aspect ratio {ratio}")
            elif (lowered == "model" and value == MODEL_ID) or (
                lowered == "sampler" and value == SAMPLER
            ):
                pass  # what FLUX.2 Klein runs anyway
            else:
                ignored.append(key if lowered != "model" else f"Model ({value})")
        except ValueError:
            ignored.append(f"{key} ({value!r} is not a number)")
    if "seed" not in params and not any(n.startswith("Seed") for n in notes):
        notes.append("no Seed: a random one is drawn")
    if ignored:
        notes.append("ignored: " + ", ".join(ignored))
    recipe = Recipe.build(prompt, schema=schema, **params)
    note = f"flux: from A1111 parameters; {'; '.join(notes)}." if notes else ""
    return recipe, note


def recipe_from_file(path: Any, schema: dict[str, Any] | None = None) -> Recipe:
    """The recipe of an image file: flux-nb's own when it has one, else one made from another
    tool's `parameters` text (printing the one line that says what was ignored)."""
    from ..core._errors import FluxError
    from ._metadata import read_parameters, read_recipe

    try:
        return Recipe.from_dict(read_recipe(path)["recipe"])
    except FluxError as own:
        try:
            text = read_parameters(path)
        except FluxError:
            text = None
        if not text:
            raise own from None
    recipe, note = recipe_from_parameters(text, schema)
    if note:
        print(note)
    return recipe


__all__ = [
    "SAMPLER",
    "format_parameters",
    "nearest_aspect",
    "parse_parameters",
    "recipe_from_file",
    "recipe_from_parameters",
]
