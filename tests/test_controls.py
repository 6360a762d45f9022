"""Panel controls made from a request schema (notebook/_controls.py): the widget each schema entry
calls for, with the schema's range, choices and default, and the option table's label and help."""

import ipywidgets
import pytest

from flux_nb.core._recipe import PARAMETERS, bundled_schema
from flux_nb.notebook._controls import NOT_CARRIED, make_controls, parameters
from flux_nb.notebook._widgets_compat import tooltip_of

pytestmark = pytest.mark.colab  # runs in Colab's package set too (.venv-colab)

SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "minLength": 1},
        "input_image": {"type": "array", "items": {"type": "string"}},
        "aspect_ratio": {"type": "string", "enum": ["1:1", "21:9"], "default": "21:9"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295},
        "num_inference_steps": {"type": "integer", "minimum": 2, "maximum": 12, "default": 6},
        "guidance_scale": {"type": "number", "minimum": 1.0, "maximum": 4.0, "multipleOf": 0.5},
        "strength": {"type": "number", "minimum": 0, "maximum": 1, "description": "How much."},
        "tile": {"type": "integer"},
        "shift": {"type": "number", "default": 3.0},
        "enhance": {"type": "boolean", "default": True},
        "negative_prompt": {"type": "string"},
        "masks": {"type": "array"},
    },
}


@pytest.fixture
def controls():
    return make_controls(SCHEMA, skip=("prompt", "seed"), carried=SCHEMA["properties"])


def test_each_kind_of_schema_entry_gets_its_widget(controls):
    kinds = {name: type(c.widget) for name, c in controls.items()}
    assert kinds == {
        "aspect_ratio": ipywidgets.Dropdown,
        "num_inference_steps": ipywidgets.IntSlider,
        "guidance_scale": ipywidgets.FloatSlider,
        "strength": ipywidgets.FloatSlider,
        "tile": ipywidgets.IntText,
        "shift": ipywidgets.FloatText,
        "enhance": ipywidgets.Checkbox,
        "negative_prompt": ipywidgets.Text,
    }  # arrays (input images, masks) get none; skipped names neither
    assert list(controls)[:3] == ["aspect_ratio", "num_inference_steps", "guidance_scale"]
    assert isinstance(controls["num_inference_steps"].box, ipywidgets.BoundedIntText)
    assert isinstance(controls["guidance_scale"].box, ipywidgets.BoundedFloatText)
    assert controls["num_inference_steps"].view.children == (
        controls["num_inference_steps"].widget,
        controls["num_inference_steps"].box,
    )


def test_ranges_choices_and_defaults_are_the_schemas(controls):
    aspect = controls["aspect_ratio"].widget
    assert aspect.options == (("1:1 square", "1:1"), ("21:9 landscape", "21:9"))
    assert aspect.value == "21:9"
    steps, box = controls["num_inference_steps"].widget, controls["num_inference_steps"].box
    assert (steps.min, steps.max, steps.value) == (2, 12, 6) == (box.min, box.max, box.value)
    guidance = controls["guidance_scale"].widget
    # This schema gives guidance no default: the bundled copy's 2.0 fills it in.
    assert (guidance.min, guidance.max, guidance.step, guidance.value) == (1.0, 4.0, 0.5, 2.0)
    assert controls["strength"].widget.step == 0.01  # about a hundred positions
    assert controls["shift"].widget.value == 3.0 and controls["enhance"].widget.value is True
    steps.value = 99  # clamped to the schema's range, and the box follows
    assert steps.value == 12 and box.value == 12
    box.value = 0
    assert steps.value == 2


def test_a_range_too_wide_to_slide_gets_a_bounded_box():
    (seed,) = make_controls(SCHEMA, skip=set(SCHEMA["properties"]) - {"seed"}).values()
    assert isinstance(seed.widget, ipywidgets.BoundedIntText)
    assert (seed.widget.min, seed.widget.max) == (0, 4294967295) and seed.box is None


def test_labels_come_from_the_option_table_and_help_from_the_schema(controls):
    assert controls["num_inference_steps"].widget.description == "Steps"
    assert controls["aspect_ratio"].widget.description == "Aspect ratio"
    assert controls["negative_prompt"].widget.description == "Negative prompt"
    assert tooltip_of(controls["strength"].widget) == "How much: 0 to 1"
    assert tooltip_of(controls["num_inference_steps"].widget) == "Steps: 2 to 12, default 6"
    assert tooltip_of(controls["aspect_ratio"].widget) == "Aspect ratio: default 21:9"
    assert tooltip_of(controls["tile"].widget) == "Tile"


def test_values_are_sent_as_the_api_names_them(controls):
    controls["guidance_scale"].widget.value = 2.3000000000000003
    assert controls["guidance_scale"].value == 2.3
    assert controls["negative_prompt"].value is None  # empty text: left out
    controls["negative_prompt"].widget.value = "blurry"
    assert controls["negative_prompt"].value == "blurry"
    assert controls["tile"].value == 0 and controls["enhance"].value is True


def test_a_parameter_the_recipe_cannot_carry_is_shown_disabled_never_dropped_silently():
    made = make_controls(SCHEMA, skip=("prompt", "seed"))
    extra = made["negative_prompt"]
    assert "negative_prompt" not in PARAMETERS
    assert extra.widget.disabled and NOT_CARRIED in tooltip_of(extra.widget) and extra.value is None
    steps = made["num_inference_steps"]
    assert not steps.widget.disabled and not steps.box.disabled and steps.value == 6


def test_a_live_entry_says_at_least_what_the_bundled_copy_says():
    live = {"properties": {"guidance_scale": {"type": "number", "maximum": 5.0}}}
    assert parameters(live) == {
        "guidance_scale": {**bundled_schema()["properties"]["guidance_scale"], "maximum": 5.0}
    }
    assert list(parameters({})) == list(PARAMETERS)  # no properties: the bundled copy
