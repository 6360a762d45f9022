"""`flux-nb generate`, the README's main job: a saved image with its recipe, or one clear line."""

import os
import subprocess
import sys

import pytest

import flux_nb


def run(*args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OXEN_API_KEY", "FLUX_NB_BASE_URL")}
    env["FLUX_NB_STEP_DELAY"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "flux_nb", "generate", *args, "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_generate_saves_the_image_with_its_recipe(tmp_path):
    done = run(
        "a",
        "lighthouse",
        "at",
        "night",
        "--seed",
        "5",
        "-a",
        "1:1",
        "--steps",
        "4",
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "offline stand-in" in done.stderr
    path = done.stdout.split("\t")[0]
    recipe = flux_nb.read_recipe(path)
    assert (recipe.prompt, recipe.seed, recipe.aspect_ratio, recipe.num_inference_steps) == (
        "a lighthouse at night",
        5,
        "1:1",
        4,
    )


def test_bad_value_is_one_line_and_exit_1(tmp_path):
    done = run("a fox", "--guidance", "11", tmp_path=tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("flux-nb generate:")]
    assert errors == [
        "flux-nb generate: guidance_scale=11.0 is out of range (allowed: number from 0.0 to 10.0)."
    ]
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())


def test_generate_help_names_the_cell_magic_as_written(capsys):
    """argparse does not %-format a description: it shows %%flux as typed, never %%%%flux."""
    from flux_nb.cli import main

    with pytest.raises(SystemExit) as done:
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "with the same options as %%flux." in out and "%%%%" not in out


def test_serve_help_says_how_much_it_keeps_in_memory():
    from flux_nb import cli
    from flux_nb.server._results import MEMORY_BUDGET

    assert cli.RESULTS_IN_MEMORY_MB * 2**20 == MEMORY_BUDGET
    shown = subprocess.run(
        [sys.executable, "-m", "flux_nb", "serve", "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0
    assert f"in memory up to {cli.RESULTS_IN_MEMORY_MB} MB" in " ".join(shown.stdout.split())


def test_serve_has_a_flag_for_each_local_extra_and_passes_each_on():
    """One flag per field of the server's LocalExtras, off by default, each reaching its field."""
    import dataclasses

    from flux_nb import cli
    from flux_nb.server._app import LocalExtras

    assert list(cli.LOCAL_EXTRAS) == [f.name for f in dataclasses.fields(LocalExtras)]
    parser = cli.build_parser()
    assert not any(getattr(parser.parse_args(["serve"]), name) for name in cli.LOCAL_EXTRAS)
    for name in cli.LOCAL_EXTRAS:
        args = parser.parse_args(["serve", "--port", "0", f"--{name.replace('_', '-')}"])
        app = cli._serve_app(args)
        try:
            assert app.state.flux.extras == LocalExtras(**{name: True})
        finally:
            app.state.flux.close()
