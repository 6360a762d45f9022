"""The recipe: documented defaults, ranges, seeds always known, one clear error per violation."""

import copy
import json

import pytest

from flux_nb.core._errors import ValidationError
from flux_nb.core._recipe import MODEL_ID, Recipe, bundled_schema, validate


def test_defaults_follow_the_contract():
    r = Recipe.build("a red fox in snow")
    assert (r.aspect_ratio, r.output_quality, r.output_format) == ("16:9", "standard", "png")
    assert (r.num_inference_steps, r.guidance_scale) == (28, 2.0)
    assert r.model == MODEL_ID and r.input_image == ()


def test_seed_is_drawn_by_the_client_and_kept():
    seeds = {Recipe.build("x").seed for _ in range(20)}
    assert len(seeds) > 15 and all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert Recipe.build("x", seed=7).seed == 7
    assert Recipe.build("x", seed=7).request()["seed"] == 7


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"num_inference_steps": 0}, "num_inference_steps", "from 1 to 50"),
        ({"num_inference_steps": 51}, "num_inference_steps", "from 1 to 50"),
        ({"num_inference_steps": 2.5}, "num_inference_steps", "wrong type"),
        ({"guidance_scale": 10.5}, "guidance_scale", "from 0.0 to 10.0"),
        ({"guidance_scale": -0.1}, "guidance_scale", "from 0.0 to 10.0"),
        ({"aspect_ratio": "2:1"}, "aspect_ratio", "1:1, 16:9, 9:16, 4:3, 3:4"),
        ({"output_quality": "ultra"}, "output_quality", "standard, high"),
        ({"output_format": "gif"}, "output_format", "png, jpg, webp"),
        ({"seed": -1}, "seed", "out of range"),
        ({"seed": True}, "seed", "wrong type"),
        ({"input_image": [3]}, "input_image[0]", "wrong type"),
        ({"steps": 4}, "steps", "unknown parameter"),
    ],
)
def test_each_violation_names_field_value_and_allowed(params, field, words):
    with pytest.raises(ValidationError) as info:
        Recipe.build("a fox", **params)
    err = info.value
    assert err.field == field
    assert words in str(err)
    assert "\n" not in str(err)
    value = next(iter(params.values()))
    shown = value[0] if isinstance(value, list) else value
    assert f"={shown!r}" in str(err) or "unknown parameter" in str(err)


def test_unknown_parameter_suggests_the_close_name():
    with pytest.raises(ValidationError, match="Did you mean guidance_scale"):
        Recipe.build("a fox", guidance_scal=3)


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_prompt_is_required_and_not_empty(prompt):
    with pytest.raises(ValidationError, match="prompt"):
        Recipe.build(prompt)


def test_validation_follows_the_schema_it_is_given():
    schema = json.loads(json.dumps(bundled_schema()))
    schema["properties"]["num_inference_steps"]["maximum"] = 8
    validate({"prompt": "x", "num_inference_steps": 50})
    with pytest.raises(ValidationError, match="from 1 to 8"):
        Recipe.build("x", schema=schema, num_inference_steps=9)


def test_json_round_trip_and_with_seed():
    r = Recipe.build("a fox", seed=3, aspect_ratio="1:1", input_image=["https://example.org/a.png"])
    assert Recipe.from_json(r.to_json()) == r
    other = r.with_seed()
    assert other.seed != r.seed and other.replace(seed=3) == r


def test_repr_hides_data_uris():
    uri = "data:image/png;base64," + "A" * 5000
    r = Recipe.build("a fox", input_image=[uri])
    assert len(repr(r)) < 300 and "1 image(s)" in repr(r)


def test_inputs_by_reference_round_trip_and_show_their_own_hash():
    ref = "sha256:" + "ab12" * 16
    r = Recipe.build("a fox", seed=3, input_image=[ref, "https://example.org/a.png"])
    assert r.input_image == (ref, "https://example.org/a.png")
    assert Recipe.from_json(r.to_json()) == r and len(r.to_json()) < 400
    assert r.input_digests[0] == "ab12ab12ab12"


def test_a_recipe_written_with_a_data_uri_still_reads_back():
    """Older journals and files hold the image itself; the recipe keeps it until it is stored."""
    uri = "data:image/png;base64," + "A" * 5000
    old = {
        "model": "black-forest-labs-flux-2-klein-4b",
        "prompt": "a fox",
        "seed": 3,
        "input_image": [uri],
    }
    assert Recipe.from_dict(old).input_image == (uri,)


def test_a_parameter_only_a_live_schema_knows_is_refused_not_dropped():
    schema = copy.deepcopy(bundled_schema())
    schema["properties"]["negative_prompt"] = {"type": "string"}
    with pytest.raises(ValidationError, match="negative_prompt is in the model's schema") as info:
        Recipe.build("a fox", schema=schema, negative_prompt="blur")
    assert info.value.field == "negative_prompt"
