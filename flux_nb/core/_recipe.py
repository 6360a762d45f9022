"""The recipe: every parameter that makes one image, validated against the model's request schema.

A recipe always carries a seed (drawn here when the user gives none), so every image can be made
again by submitting the same recipe. The server shares this module to validate requests.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import secrets
from functools import cache
from importlib import resources
from typing import Any

from ._errors import ValidationError

MODEL_ID = "black-forest-labs-flux-2-klein-4b"
SEED_MAX = 2**32 - 1

# The model's parameters, in the order people read them (prompt first, seed near the end).
PARAMETERS = (
    "prompt",
    "input_image",
    "aspect_ratio",
    "output_quality",
    "output_format",
    "seed",
    "num_inference_steps",
    "guidance_scale",
)

# The parameters an option line sets (%%flux, flux-nb generate): all but the prompt and inputs.
OPTION_PARAMETERS = tuple(p for p in PARAMETERS if p not in ("prompt", "input_image"))


@cache
def bundled_schema() -> dict[str, Any]:
    """The copy of the model's request_schema shipped with the package, for offline use."""
    # One part per joinpath: Python 3.10's Traversable.joinpath takes only one.
    folder = resources.files("flux_nb.core").joinpath("schema")
    text = folder.joinpath(f"{MODEL_ID}.json").read_text("utf-8")
    return json.loads(text)


def draw_seed() -> int:
    """A fresh random seed in the range every backend accepts."""
    return secrets.randbelow(SEED_MAX + 1)


def _allowed(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return "allowed: " + ", ".join(str(v) for v in spec["enum"])
    kind = spec.get("type", "value")
    kind = "number" if kind == "number" else kind
    lo, hi = spec.get("minimum"), spec.get("maximum")
    if lo is not None and hi is not None:
        return f"allowed: {kind} from {lo} to {hi}"
    if lo is not None:
        return f"allowed: {kind} of at least {lo}"
    if hi is not None:
        return f"allowed: {kind} up to {hi}"
    return f"allowed: {kind}"


def _type_ok(value: Any, kind: str | None) -> bool:
    if kind is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(field: str, value: Any, spec: dict[str, Any]) -> None:
    """Raise ValidationError naming the field, the bad value and what is allowed."""
    if not _type_ok(value, spec.get("type")):
        raise ValidationError(
            f"{field}={_short(value)} has the wrong type ({_allowed(spec)}).", field=field
        )
    if "enum" in spec and value not in spec["enum"]:
        raise ValidationError(
            f"{field}={_short(value)} is not valid ({_allowed(spec)}).", field=field
        )
    lo, hi = spec.get("minimum"), spec.get("maximum")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValidationError(
            f"{field}={_short(value)} is out of range ({_allowed(spec)}).", field=field
        )
    if spec.get("type") == "string" and len(value.strip()) < spec.get("minLength", 0):
        raise ValidationError(f"{field} is empty: give the text of the image to make.", field=field)
    if spec.get("type") == "array":
        item_spec = spec.get("items", {})
        for i, item in enumerate(value):
            check_value(f"{field}[{i}]", item, item_spec)


def validate(params: dict[str, Any], schema: dict[str, Any] | None = None) -> None:
    """Check request parameters against a request_schema; raise on the first violation."""
    schema = schema or bundled_schema()
    props: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if params.get(name) is None:
            raise ValidationError(f"{name} is required.", field=name)
    if schema.get("additionalProperties", True) is False:
        for name in params:
            if name not in props:
                close = difflib.get_close_matches(name, list(props), n=1)
                tip = f" Did you mean {close[0]}?" if close else ""
                raise ValidationError(
                    f"unknown parameter {name!r}.{tip} Allowed: {', '.join(props)}.", field=name
                )
    for name, value in params.items():
        if value is not None and name in props:
            check_value(name, value, props[name])


def _default(name: str, schema: dict[str, Any]) -> Any:
    return schema.get("properties", {}).get(name, {}).get("default")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that makes one image. Submitting the same recipe again gives the same image.

    input_image entries are http(s) URLs, `sha256:<hex>` references to bytes kept in the output
    folder (inputs.InputStore, which turns them back into what is sent), or, in recipes from
    older files and journals, the data: URIs themselves."""

    prompt: str
    input_image: tuple[str, ...] = ()
    aspect_ratio: str = "16:9"
    output_quality: str = "standard"
    output_format: str = "png"
    seed: int = 0
    num_inference_steps: int = 28
    guidance_scale: float = 2.0
    model: str = MODEL_ID

    @classmethod
    def build(
        cls, prompt: str | None, *, schema: dict[str, Any] | None = None, **params: Any
    ) -> Recipe:
        """Validate user parameters, fill the documented defaults
        and draw a seed if none is given."""
        schema = schema or bundled_schema()
        model = params.pop("model", MODEL_ID)
        if isinstance(params.get("input_image"), str):
            params["input_image"] = [params["input_image"]]
        given = {"prompt": prompt.strip() if isinstance(prompt, str) else prompt, **params}
        given = {k: v for k, v in given.items() if v is not None}
        validate(given, schema)
        # A live schema may name a parameter this version has no field for: say so, never drop it.
        uncarried = sorted(set(given) - {"prompt", *PARAMETERS})
        if uncarried:
            raise ValidationError(
                f"{uncarried[0]} is in the model's schema"
                f" but this version of flux-nb cannot send it"
                " yet: leave it out, or upgrade flux-nb.",
                field=uncarried[0],
            )
        values: dict[str, Any] = {}
        for name in PARAMETERS:
            if name in given:
                values[name] = given[name]
            elif (default := _default(name, schema)) is not None:
                values[name] = default
        values["input_image"] = tuple(values.get("input_image", ()))
        values["seed"] = given["seed"] if "seed" in given else draw_seed()
        if "guidance_scale" in values:
            values["guidance_scale"] = float(values["guidance_scale"])
        return cls(model=model, **values)

    def params(self) -> dict[str, Any]:
        """The model parameters as the API names them (input_image left out when empty)."""
        out = {name: getattr(self, name) for name in PARAMETERS}
        out["input_image"] = list(self.input_image)
        if not out["input_image"]:
            del out["input_image"]
        return out

    def request(self) -> dict[str, Any]:
        """The JSON body for the sync and queue endpoints: the model plus every parameter."""
        return {"model": self.model, **self.params()}

    def with_seed(self, seed: int | None = None) -> Recipe:
        """The same recipe with another seed (a fresh random one when none is given)."""
        return dataclasses.replace(self, seed=draw_seed() if seed is None else seed)

    def replace(self, **changes: Any) -> Recipe:
        """A validated copy with some parameters changed."""
        data = {**self.params(), **changes}
        data.setdefault("seed", self.seed)
        prompt = data.pop("prompt")
        return Recipe.build(prompt, model=self.model, **data)

    @property
    def input_digests(self) -> tuple[str, ...]:
        """Short hashes of the input images, for captions and comparisons: an image named by
        content hash (`sha256:<hex>`, see files/_inputs.py) shows its own, a URL the hash of its
        text."""
        return tuple(
            s[7:19] if s.startswith("sha256:") else hashlib.sha256(s.encode()).hexdigest()[:12]
            for s in self.input_image
        )

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **self.params()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Rebuild a recipe from to_dict() output or a queue row; unknown keys are ignored."""
        known = {k: data[k] for k in PARAMETERS if k in data and data[k] is not None}
        if "seed" not in known:
            raise ValidationError(
                "this recipe has no seed, so it cannot be reproduced.", field="seed"
            )
        prompt = known.pop("prompt", None)
        if prompt is None:
            raise ValidationError("this recipe has no prompt.", field="prompt")
        # a queue row names its model `model_name`; recipes and requests say `model`
        model = data.get("model") or data.get("model_name") or MODEL_ID
        return cls.build(prompt, model=model, **known)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """One line for captions: seed, steps, guidance, aspect, quality, format."""
        text = (
            f"seed {self.seed} · {self.num_inference_steps} steps · guidance"
            f" {self.guidance_scale:g} · {self.aspect_ratio} · {self.output_quality} ·"
            f" {self.output_format}"
        )
        if self.input_image:
            text += f" · {len(self.input_image)} input image(s)"
        return text

    def __repr__(self) -> str:
        images = f", input_image=<{len(self.input_image)} image(s)>" if self.input_image else ""
        return (
            f"Recipe(prompt={_short(self.prompt)}, seed={self.seed},"
            f" aspect_ratio={self.aspect_ratio!r}, num_inference_steps={self.num_inference_steps},"
            f" guidance_scale={self.guidance_scale:g}, output_quality={self.output_quality!r},"
            f" output_format={self.output_format!r}{images})"
        )


__all__ = [
    "MODEL_ID",
    "OPTION_PARAMETERS",
    "PARAMETERS",
    "Recipe",
    "bundled_schema",
    "draw_seed",
    "validate",
]
