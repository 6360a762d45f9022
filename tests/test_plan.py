"""The memory plan (`flux-nb plan`): decisions for the machines people have, from the sizes in
FLUX.2 Klein 4B's configuration. Pure arithmetic: runs in the main environment, no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flux_nb import cli
from flux_nb.server.engines import _base as base
from flux_nb.server.engines._plan import (
    HEADROOM,
    MEMORY_CHOICES,
    QUANTIZE_CHOICES,
    Machine,
    klein_4b_sizes,
    parse_quantize,
    plan,
)

H100 = Machine("cuda", 80, 200, (9, 0))
RTX_4090 = Machine("cuda", 24, 64, (8, 9))
COLAB_T4 = Machine("cuda", 15, 12.7, (7, 5))
RTX_4070 = Machine("cuda", 12, 32, (8, 9))
LAPTOP_8GB = Machine("cuda", 8, 16, (8, 6))
MAC_16GB = Machine("mps", 16 * 0.7, 16)
CPU_24GB = Machine("cpu", 0, 24)
MACHINES = [H100, RTX_4090, COLAB_T4, RTX_4070, LAPTOP_8GB, MAC_16GB, CPU_24GB]


def test_sizes_match_the_published_weights() -> None:
    # the Hugging Face repo's bf16 files: transformer 7.75 GB, text encoder 8.05 GB, VAE 0.17 GB
    sizes = klein_4b_sizes()
    assert sizes.transformer.weights(2) / 1e9 == pytest.approx(7.75, abs=0.02)
    assert sizes.text_encoder.weights(2) / 1e9 == pytest.approx(8.05, abs=0.02)
    assert sizes.vae.weights(2) / 1e9 == pytest.approx(0.17, abs=0.03)
    assert sizes.text_encoder.weights(2, "int8") < 0.6 * sizes.text_encoder.weights(2)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: f"{m.device}-{m.vram_gb}-{m.ram_gb}")
def test_every_described_machine_fits_within_its_memory(machine: Machine) -> None:
    decided = plan(machine)
    assert decided.fits, decided.line
    assert decided.peak_ram_gb <= machine.ram_gb * HEADROOM
    if machine.kind != "cpu":
        assert decided.peak_vram_gb <= machine.vram_gb * HEADROOM


@pytest.mark.parametrize("machine", [H100, RTX_4090])
def test_big_gpus_run_everything_unquantized_on_the_gpu_in_bfloat16(machine: Machine) -> None:
    decided = plan(machine)
    assert (decided.placement, decided.dtype) == ("gpu", "bfloat16")
    assert decided.quantize == {"text_encoder": "none", "transformer": "none"}


def test_a_colab_t4_gets_float16_on_the_gpu_with_quantized_parts() -> None:
    decided = plan(COLAB_T4)
    assert decided.dtype == "float16"  # capability 7.5: no native bfloat16
    assert decided.placement == "gpu"  # model offload would need all 16 GB in 12.7 GB of RAM
    assert decided.quantize["text_encoder"] == "int8"
    assert plan(COLAB_T4, memory="model-offload").fits is False


def test_8_to_12_gb_cards_fit_and_only_what_is_needed_is_quantized() -> None:
    assert plan(RTX_4070).quantize == {"text_encoder": "none", "transformer": "none"}
    assert plan(RTX_4070).placement == "model-offload"
    laptop = plan(LAPTOP_8GB)
    assert laptop.placement in ("model-offload", "gpu") and laptop.dtype == "bfloat16"


def test_the_dtype_rule() -> None:
    assert plan(Machine("cuda", 80, 200, (8, 0))).dtype == "bfloat16"
    assert plan(Machine("cuda", 32, 64, (7, 0))).dtype == "float16"  # V100
    assert plan(Machine("cpu", 0, 64)).dtype == "float32"
    assert plan(CPU_24GB).dtype == "bfloat16"  # float32 does not fit in 24 GB
    assert plan(MAC_16GB).dtype == "bfloat16"


def test_forced_choices_are_kept_and_a_misfit_says_what_would_fit() -> None:
    forced = plan(Machine("cuda", 6, 16, (8, 6)), memory="gpu", quantize={"text_encoder": "int8"})
    assert not forced.fits and forced.placement == "gpu"
    assert "GB of GPU memory" in forced.why and "this machine has 6.0 GB" in forced.why
    assert "try --memory" in forced.why
    assert plan(H100, memory="sequential-offload").placement == "sequential-offload"
    assert plan(H100, quantize={"transformer": "fp8"}).quantize["transformer"] == "fp8"
    with pytest.raises(ValueError, match="fp8 needs .* 8.9"):
        plan(COLAB_T4, quantize={"transformer": "fp8"})
    with pytest.raises(ValueError, match="on the CPU there is none"):
        plan(CPU_24GB, memory="gpu")


def test_nothing_fits_says_what_was_tried() -> None:
    decided = plan(Machine("cuda", 1, 2, (8, 6)))
    assert not decided.fits
    assert "needs" in decided.why and "this machine has 1.0 GB GPU memory, 2.0 GB RAM" in (
        decided.why
    )


def test_parse_quantize() -> None:
    assert parse_quantize(["text-encoder=int8"]) == {"text_encoder": "int8", "transformer": "auto"}
    assert parse_quantize(["int8"]) == {"text_encoder": "int8", "transformer": "int8"}
    with pytest.raises(ValueError, match="the part is text-encoder or transformer"):
        parse_quantize(["vae=int8"])
    with pytest.raises(ValueError, match="the level is one of"):
        parse_quantize(["transformer=int2"])


def test_the_copies_of_the_choices_agree() -> None:
    assert cli.MEMORY_CHOICES == base.MEMORY_CHOICES == MEMORY_CHOICES
    assert base.QUANTIZE_CHOICES == QUANTIZE_CHOICES


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flux_nb", "plan", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flux_nb_plan_json_for_a_described_t4() -> None:
    done = run_plan("--vram", "15", "--ram", "12.7", "--capability", "7.5", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert set(found) == {
        "fits",
        "device",
        "dtype",
        "placement",
        "quantize",
        "peak_vram_gb",
        "peak_ram_gb",
        "why",
    }
    assert (found["fits"], found["device"], found["dtype"]) == (True, "cuda", "float16")
    assert set(found["quantize"]) == {"text_encoder", "transformer"}


def test_flux_nb_plan_line_and_exit_codes() -> None:
    fits = run_plan("--vram", "80", "--ram", "200", "--capability", "9.0")
    assert fits.returncode == 0 and fits.stdout.startswith("flux-nb plan: gpu on cuda, bfloat16")
    small = run_plan("--vram", "6", "--ram", "16", "--memory", "gpu", "--quantize", "int8")
    assert small.returncode == 1 and "try --memory" in small.stdout
    bad = run_plan("--capability", "seven")
    assert bad.returncode == 2 and "MAJOR.MINOR" in bad.stderr and "Traceback" not in bad.stderr


def test_a_cuda_plan_without_a_gpu_asks_for_one_described() -> None:
    done = run_plan("--device", "cuda")  # these machines have no GPU (nvidia-smi absent)
    assert done.returncode == 2
    assert "describe the GPU with --vram GB" in done.stderr and "Traceback" not in done.stderr


def test_a_saved_folders_config_is_read(tmp_path) -> None:
    from flux_nb.server.engines._klein_configs import TINY

    for part, config in TINY.items():
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text(json.dumps(config))
    done = run_plan("--model", str(tmp_path), "--device", "cpu", "--ram", "4", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["peak_ram_gb"] < 2.0
    missing = run_plan("--model", str(tmp_path / "nope"), "--json")
    assert missing.returncode == 2 and "no folder" in missing.stderr
