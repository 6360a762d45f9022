"""Make the files the readers' tests read, with flux-nb as a user has it (the main environment).

    python tests/readers/make_files.py OUTDIR     prints a JSON manifest on stdout

Run by tests/readers/conftest.py with the main environment's Python (.venv), not the readers'
one: the readers pin their own Pillow, and flux-nb writes with whatever the user has. Every file
comes from the embedded local server and the output folder, as `%%flux` saves it: a generation
in each format, an edit of it (its lineage recorded), a sweep's contact sheet in each format, and
a JPEG whose recipe is over one JPEG segment, so the recipe goes to the sidecar and the
`parameters` text stays in the file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FORMATS = ("png", "jpg", "webp")


def main(out: Path) -> None:
    os.environ.pop("OXEN_API_KEY", None)
    os.environ.pop("FLUX_NB_BASE_URL", None)
    os.environ["FLUX_NB_OUTPUT_DIR"] = str(out / "flux_outputs")
    os.environ["FLUX_NB_STEP_DELAY"] = "0"
    import flux_nb
    from flux_nb.files._metadata import read_parameters, sidecar_path
    from flux_nb.files._storage import OutputFolder

    files = []

    def add(case: str, path: Path, recipe: flux_nb.Recipe) -> None:
        files.append(
            {
                "case": case,
                "path": str(path),
                "prompt": recipe.prompt,
                "seed": recipe.seed,
                "steps": recipe.num_inference_steps,
                "cfg_scale": float(recipe.guidance_scale),
                "parameters": read_parameters(path),
                "sidecar": sidecar_path(path).exists(),
            }
        )

    heron = "a blue heron at dawn, misty lake"
    first = None
    for fmt in FORMATS:
        gen = flux_nb.generate(
            heron, seed=77, num_inference_steps=8, guidance_scale=3.5, output_format=fmt
        ).wait(60)
        add(f"generate {fmt}", gen.path, gen.recipe)
        first = first or gen
    for fmt in FORMATS:
        edit = flux_nb.generate(
            "the same heron in the rain",
            input_image=first,
            seed=78,
            num_inference_steps=4,
            output_format=fmt,
        ).wait(60)
        assert edit.lineage, "an edit of a result records its lineage"
        add(f"lineage edit {fmt}", edit.path, edit.recipe)
    grid = flux_nb.sweep("a {red|blue} fox in snow", seed=7, steps=[4, 8], aspect_ratio="1:1")
    for fmt in FORMATS:
        path = grid.save(out / f"sheet.{fmt}", tile=64, timeout=60)
        add(f"contact sheet {fmt}", path, grid[0, 0].recipe)
    # A recipe over one JPEG segment (64 KB: here a lineage record of many long steps) goes to
    # the sidecar; the `parameters` text stays in the file's EXIF.
    recipe = flux_nb.Recipe.build(heron, seed=79, num_inference_steps=6, output_format="jpg")
    steps = [{"prompt": f"step {i}: " + "a long winding description " * 20} for i in range(200)]
    extra = {"backend": "local", "lineage": json.dumps({"steps": steps})}
    path = OutputFolder(out / "flux_outputs").save(first_jpeg(first), recipe, "sidecar01", extra)
    assert sidecar_path(path).exists(), "the recipe was meant to need the sidecar"
    add("jpeg with sidecar", path, recipe)
    flux_nb.session().close()
    json.dump(files, sys.stdout, indent=1)


def first_jpeg(gen) -> bytes:
    """A JPEG as the server sends it (no recipe yet): the generation's pixels, encoded by the
    offline engine's encoder."""
    from flux_nb.server.engines._preview import encode

    return encode(gen.image, "jpg")[0]


if __name__ == "__main__":
    main(Path(sys.argv[1]))
