"""The option table (core/_options.py): %%flux, `flux-nb generate` and the copied line agree with
it."""

import shlex

from IPython.core.magic_arguments import parse_argstring

from flux_nb.cli import build_parser
from flux_nb.core import _options as options
from flux_nb.core._recipe import OPTION_PARAMETERS, Recipe
from flux_nb.notebook._cards import magic_line
from flux_nb.notebook._magic import OPTIONS as MAGIC_SUMMARY
from flux_nb.notebook._magic import FluxMagics


def test_the_recipe_options_are_exactly_the_recipe_parameters():
    assert sorted(o.dest for o in options.RECIPE_OPTIONS) == sorted(OPTION_PARAMETERS)
    assert options.FLAG_NAMES == {
        "seed": "seed",
        "aspect": "aspect_ratio",
        "a": "aspect_ratio",
        "steps": "num_inference_steps",
        "guidance": "guidance_scale",
        "quality": "output_quality",
        "format": "output_format",
    }


def test_the_magic_and_the_cli_read_a_shared_line_alike():
    line = (
        "--seed 9 -a 16:9 --steps 6 --guidance 2.5 --quality high --format webp -n 2 --image a.png"
        " --image b.png"
    )
    magic = vars(parse_argstring(FluxMagics.flux_cell, line))
    cli = vars(build_parser().parse_args(["generate", "a fox", *shlex.split(line)]))
    shared = [o.dest for o in options.for_surface(options.CLI)]
    assert (
        {k: magic[k] for k in shared}
        == {k: cli[k] for k in shared}
        == {
            "seed": 9,
            "aspect_ratio": "16:9",
            "num_inference_steps": 6,
            "guidance_scale": 2.5,
            "output_quality": "high",
            "output_format": "webp",
            "n": 2,
            "image": ["a.png", "b.png"],
        }
    )
    assert (magic["name"], magic["sweep"], magic["yes"]) == (None, [], False)
    assert "name" not in cli and "sweep" not in cli and "yes" not in cli


def test_left_out_options_stay_unset_on_both():
    magic = vars(parse_argstring(FluxMagics.flux_cell, ""))
    cli = vars(build_parser().parse_args(["generate", "a fox"]))
    for args in (magic, cli):
        assert all(args[p] is None for p in OPTION_PARAMETERS)
        assert (args["n"], args["image"]) == (1, [])


def test_the_copied_line_parses_back_to_the_recipe():
    recipe = Recipe.build(
        "a {braced} $fox",
        seed=4242,
        aspect_ratio="9:16",
        num_inference_steps=7,
        guidance_scale=3.25,
        output_quality="high",
        output_format="webp",
        input_image=["https://example.com/in put.png"],
    )
    line, prompt = magic_line(recipe).split("\n", 1)
    assert prompt == recipe.prompt
    # IPython undoubles $$, {{ and }} before the magic sees the line; none occur in these values.
    args = parse_argstring(FluxMagics.flux_cell, line.removeprefix("%%flux "))
    assert {p: getattr(args, p) for p in OPTION_PARAMETERS} == {
        p: getattr(recipe, p) for p in OPTION_PARAMETERS
    }
    assert args.image == ['"https://example.com/in put.png"']  # the magic unquotes it (_unquote)


def test_the_usage_summary_lists_every_magic_flag():
    assert MAGIC_SUMMARY == (
        "--seed N, --aspect/-a R, --steps N, --guidance G, --quality Q, --format F, -n N,"
        " --image SRC (repeatable), --name VAR, --sweep NAME=V1,V2,... (repeatable), --yes"
    )
