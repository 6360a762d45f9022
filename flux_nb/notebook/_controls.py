"""Panel controls made from the model's request schema: one widget per parameter, by its type.

The schema says each parameter's type, choices, range, default and description; the option table
that the magic and the CLI share (core/_options.py) gives the known ones their short labels. So a
parameter the schema adds gets a control with no code here:

    enum                                       Dropdown
    integer with minimum and maximum           IntSlider beside a BoundedIntText (one value)
      ... a range too wide to slide through    BoundedIntText
    number with minimum and maximum            FloatSlider beside a BoundedFloatText
    integer or number, not both bounds         IntText or FloatText
    boolean                                    Checkbox
    string                                     Text (left out of the request while empty)
    array, object                              no control (input images have the panel's own)

The bounded widgets clamp what a person types to the schema's range; a value that gets past them
(code that moves a widget's max) is still refused by the recipe's validation before anything is
sent. A parameter the Recipe cannot carry yet is shown disabled, saying so, never dropped silently.

    controls = make_controls(session.schema, skip=("prompt", "input_image", "seed"))
    controls["num_inference_steps"].widget.value = 8
    {name: c.value for name, c in controls.items()}     # what Generate sends (None: left out)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from ..core._options import RECIPE_OPTIONS
from ..core._recipe import PARAMETERS, bundled_schema
from ._widgets_compat import make, set_tooltip, tooltip_of

SLIDER_MAX_POSITIONS = 1000  # an integer range wider than this gets a number box alone
BOX_WIDTH = "64px"  # the number box beside a slider
NOT_CARRIED = "in the model's schema, but this flux-nb cannot send it yet"


def aspect_label(ratio: str) -> str:
    """'16:9 landscape', '1:1 square': the Dropdown's text for an aspect ratio."""
    try:
        w, h = (float(x) for x in str(ratio).split(":"))
    except ValueError:
        return str(ratio)
    shape = "square" if w == h else "landscape" if w > h else "portrait"
    return f"{ratio} {shape}"


# How a Dropdown shows the choices of a parameter, where its bare values say too little.
CHOICE_LABELS: dict[str, Callable[[Any], str]] = {"aspect_ratio": aspect_label}


@dataclass(eq=False)
class Control:
    """One parameter's control: `widget` holds the value, `view` is what the panel lays out (the
    widget, or a slider beside its number `box`, linked so that either one moves both)."""

    name: str
    spec: dict[str, Any]
    widget: widgets.ValueWidget
    view: widgets.Widget
    box: widgets.ValueWidget | None = None
    link: Any = None  # the kernel-side link between slider and box, kept alive with them
    carried: bool = True  # False: the Recipe has no field for it, so it is shown disabled

    @property
    def value(self) -> Any:
        """The value to send, as the API names it; None to leave the parameter out."""
        if not self.carried:
            return None
        value = self.widget.value
        if self.spec.get("type") == "number" and "enum" not in self.spec:
            return round(float(value), 6)  # a slider's 2.3000000000000003 is sent as 2.3
        if isinstance(value, str) and value == "" and "enum" not in self.spec:
            return None
        return value


def parameters(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each parameter's schema entry, the known ones first in the order people read them, then the
    rest in the schema's order; an entry says at least what the bundled copy says of it."""
    bundled = bundled_schema().get("properties", {})
    live: dict[str, Any] = schema.get("properties") or bundled
    names = [n for n in PARAMETERS if n in live] + [n for n in live if n not in PARAMETERS]
    return {name: {**bundled.get(name, {}), **live[name]} for name in names}


def label_for(name: str) -> str:
    """The option table's label for a parameter, or its name in words ('negative_prompt' ->
    'Negative prompt')."""
    for option in RECIPE_OPTIONS:
        if option.dest == name and option.label:
            return option.label
    return name.replace("_", " ").capitalize()


def help_for(name: str, spec: dict[str, Any]) -> str:
    """The tooltip: the schema's description (else the label) with the range and default it
    gives, e.g. 'Steps: 1 to 50, default 28'. Read from the schema, so it cannot go stale."""
    facts = []
    low, high = spec.get("minimum"), spec.get("maximum")
    if low is not None and high is not None:
        facts.append(f"{low} to {high}")
    elif low is not None:
        facts.append(f"at least {low}")
    elif high is not None:
        facts.append(f"up to {high}")
    if spec.get("default") is not None:
        facts.append(f"default {spec['default']}")
    text = str(spec.get("description") or label_for(name)).rstrip(".")
    return f"{text}: {', '.join(facts)}" if facts else text


def make_controls(
    schema: dict[str, Any],
    *,
    skip: Iterable[str] = (),
    carried: Collection[str] = PARAMETERS,
    style: dict[str, str] | None = None,
) -> dict[str, Control]:
    """A Control for every parameter of the schema that has a widget type, in parameters() order,
    except those in skip (the ones the caller builds itself)."""
    skipped = set(skip)
    made: dict[str, Control] = {}
    for name, spec in parameters(schema).items():
        if name in skipped:
            continue
        control = make_control(name, spec, style=style or {})
        if control is None:
            continue
        if name not in carried:
            control.carried = False
            for widget in (control.widget, control.box):
                if widget is not None:
                    widget.disabled = True
                    set_tooltip(widget, f"{tooltip_of(widget)} ({NOT_CARRIED})")
        made[name] = control
    return made


def make_control(name: str, spec: dict[str, Any], *, style: dict[str, str]) -> Control | None:
    """The widget the schema entry calls for (see the module docstring), or None for none."""
    common: dict[str, Any] = {
        "description": label_for(name),
        "tooltip": help_for(name, spec),
        "style": style,
    }
    kind = spec.get("type")
    low, high = spec.get("minimum"), spec.get("maximum")
    if "enum" in spec:
        return _single(name, spec, _dropdown(name, spec, common))
    if kind == "boolean":
        return _single(
            name, spec, make(widgets.Checkbox, value=bool(spec.get("default", False)), **common)
        )
    if kind == "string":
        text = make(widgets.Text, value=str(spec.get("default", "")), **common)
        text.layout = widgets.Layout(width="auto")
        return _single(name, spec, text)
    if kind not in ("integer", "number"):
        return None
    integer = kind == "integer"
    default = _number_default(spec, integer)
    if low is None or high is None:
        free = widgets.IntText if integer else widgets.FloatText
        return _single(
            name, spec, make(free, value=default, layout=widgets.Layout(width="auto"), **common)
        )
    if integer and high - low > SLIDER_MAX_POSITIONS:
        box = make(
            widgets.BoundedIntText,
            value=default,
            min=low,
            max=high,
            layout=widgets.Layout(width="auto"),
            **common,
        )
        return _single(name, spec, box)
    step = 1 if integer else spec.get("multipleOf") or _nice_step(high - low)
    slider_type = widgets.IntSlider if integer else widgets.FloatSlider
    box_type = widgets.BoundedIntText if integer else widgets.BoundedFloatText
    slider = make(
        slider_type,
        value=default,
        min=low,
        max=high,
        step=step,
        readout=False,
        continuous_update=False,
        layout=widgets.Layout(flex="1 1 auto", width="auto", min_width="150px"),
        **common,
    )
    box = make(
        box_type,
        value=default,
        min=low,
        max=high,
        step=step,
        layout=widgets.Layout(width=BOX_WIDTH),
        tooltip=common["description"],
    )
    view = widgets.HBox([slider, box], layout=widgets.Layout(width="auto", align_items="center"))
    # A kernel-side link, so code that sets either one (and tests) sees both move.
    link = widgets.link((slider, "value"), (box, "value"))
    return Control(name, spec, slider, view, box=box, link=link)


def _single(name: str, spec: dict[str, Any], widget: widgets.ValueWidget) -> Control:
    return Control(name, spec, widget, widget)


def _dropdown(name: str, spec: dict[str, Any], common: dict[str, Any]) -> widgets.Dropdown:
    choices = list(spec["enum"])
    label = CHOICE_LABELS.get(name, str)
    default = spec.get("default")
    return make(
        widgets.Dropdown,
        options=[(label(c), c) for c in choices],
        value=default if default in choices else (choices[0] if choices else None),
        layout=widgets.Layout(width="auto"),
        **common,
    )


def _number_default(spec: dict[str, Any], integer: bool) -> float:
    """The schema's default, else its minimum, else 0; inside the range either way."""
    value = spec.get("default", spec.get("minimum", 0))
    if spec.get("minimum") is not None:
        value = max(value, spec["minimum"])
    if spec.get("maximum") is not None:
        value = min(value, spec["maximum"])
    return int(value) if integer else float(value)


def _nice_step(span: float) -> float:
    """About a hundred slider positions over the span, at a round number: 0.1 for 0 to 10."""
    if span <= 0:
        return 1.0
    return float(10 ** math.floor(math.log10(span / 100)))


__all__ = [
    "CHOICE_LABELS",
    "Control",
    "aspect_label",
    "help_for",
    "label_for",
    "make_control",
    "make_controls",
    "parameters",
]
