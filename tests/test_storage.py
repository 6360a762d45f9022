"""files/_storage.py: the output folder when it cannot be written, when the disk is full, and when
the metadata refuses the recipe: nothing sent that cannot be kept, no image lost, no partial
file."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
from collections import Counter

import pytest
from fault_helpers import (
    Api,
    flux_recipe,
    folder,
    journal_ops,
)
from helpers import png_bytes
from PIL import Image

from flux_nb.core import _errors as errors
from flux_nb.core._recipe import Recipe
from flux_nb.files._journal import LIVE_DIR
from flux_nb.jobs._sessions import JOURNAL_NAME
from flux_nb.notebook._cards import Card, generation_mimebundle, magic_line

# --- the output folder: not writable, disk full ---------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (needs root and mount): real EROFS and ENOSPC, not chmod tricks."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def remount(option: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{option}", str(mount)], check=True)

    yield mount, remount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_output_refuses_to_send_with_one_line(tmpfs, local_server, open_session) -> None:
    """Work a restarted kernel could not find must not be paid for: with the journal unwritable,
    nothing is sent."""
    mount, remount = tmpfs
    session = open_session(local_server, "tok-readonly-refuse", out=mount / "out")
    (mount / "out").mkdir()
    remount("ro")
    with pytest.raises(errors.StorageError, match="Nothing was sent") as info:
        session.generate("read-only disk", seed=999, num_inference_steps=2)
    assert "Read-only" in str(info.value) and "FLUX_NB_OUTPUT_DIR" in str(info.value)
    assert "\n" not in str(info.value) and session.history == []
    assert Api(local_server, "tok-readonly-refuse").seeds() == Counter()


def test_read_only_output_keeps_the_image_in_memory_then_save_works(
    tmpfs, make_server, open_session
) -> None:
    mount, remount = tmpfs
    server = make_server(step_delay=0.1)
    session = open_session(server, "tok-readonly", out=mount / "out")
    (mount / "out").mkdir()
    gen = session.generate("read-only disk", seed=1000, num_inference_steps=5)
    remount("ro")  # after the journal took the submit: the folder fails while it runs
    gen.wait(10)
    assert gen.status == "succeeded" and gen.path is None
    assert isinstance(gen.save_error, errors.StorageError)
    assert "Read-only" in str(gen.save_error) and "FLUX_NB_OUTPUT_DIR" in str(gen.save_error)
    assert html.escape(gen.save_error.message) in Card(gen).status_html
    assert gen.image.size[0] > 0 and gen.data
    remount("rw")
    # the journal never says it was saved, so a restarted kernel would still collect it
    assert "saved" not in [e["op"] for e in journal_ops(mount / "out") if e.get("key") == gen.key]
    path = gen.save()
    assert path.exists() and gen.path == path and gen.save_error is None
    assert folder(mount / "out") == ([path], [JOURNAL_NAME])
    assert Image.open(path).size == gen.image.size


def test_a_full_disk_keeps_the_image_in_memory_and_leaves_no_partial_file(
    tmpfs, local_server, open_session
) -> None:
    mount, _ = tmpfs
    out = mount / "out"
    session = open_session(local_server, "tok-full", out=out)
    first = session.generate("before the disk fills", seed=1100, num_inference_steps=2).wait(10)
    assert first.path is not None
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the tmpfs up to its last bytes
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError:
            pass
    gen = session.generate("disk full", seed=1101, num_inference_steps=2).wait(10)
    assert gen.path is None and isinstance(gen.save_error, errors.StorageError)
    assert "No space left" in str(gen.save_error) and gen.image.size[0] > 0
    assert folder(out) == ([first.path], [JOURNAL_NAME])  # no .partial-* left
    filler.unlink()
    path = gen.save()
    assert sorted(folder(out)[0]) == sorted([first.path, path])
    assert flux_recipe(path) == gen.recipe
    entries = journal_ops(out)  # records written after the full disk are whole again
    assert any(e["op"] == "saved" and e["key"] == gen.key for e in entries)


def test_the_output_folder_holds_one_image_file_per_generation(local_server, open_session) -> None:
    """A gallery: previews, cards, re-saves and copied recipes add no files beside the images."""
    session = open_session(local_server, "tok-gallery")
    gens = [
        session.generate("gallery", seed=1700 + i, output_format=fmt, num_inference_steps=2)
        for i, fmt in enumerate(("png", "jpg", "webp"))
    ]
    for gen in gens:
        gen.wait(10)
    gens.append(session.generate("an edit", seed=1710, input_image=gens[0], num_inference_steps=2))
    gens.append(gens[1].reproduce())
    for gen in gens:
        gen.wait(10)
        Card(gen)
        gen.thumbnail()
        gen.thumbnail(64)
        generation_mimebundle(gen, widget=True)
        magic_line(gen.recipe)  # may keep a copy of an input image, in a hidden folder
        assert gen.save() == gen.path  # saving again writes no second file
    images, others = folder(session.output.path)
    assert sorted(images) == sorted(g.path for g in gens) and len(set(images)) == 5
    assert {p.suffix for p in images} == {".png", ".jpg", ".webp"}
    assert set(others) <= {JOURNAL_NAME, ".inputs", LIVE_DIR} and all(
        name.startswith(".") for name in others
    )


def test_an_image_whose_metadata_refuses_the_recipe_is_saved_with_a_sidecar(tmp_path):
    """Never lose an image over metadata: the bytes are kept as made, the recipe beside them."""
    import flux_nb
    from flux_nb.files._storage import OutputFolder

    truncated_png = png_bytes((32, 16), (10, 200, 30))[:-12]  # no IEND chunk: embedding refuses it
    recipe = Recipe.build("a green field", seed=3)
    path = OutputFolder(tmp_path).save(truncated_png, recipe, "abc123", {"backend": "local"})
    assert path.read_bytes() == truncated_png
    assert flux_nb.read_recipe(path) == recipe
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == [path.name]
