"""The memory plan: where FLUX.2 Klein's parts go on a machine, in which dtype and how quantized,
decided before anything is loaded (`flux-nb plan`, and the flux2-klein engine at load).

Sizes come from the model's configuration (parameter counts computed from the transformer's, the
Qwen3 text encoder's and the VAE's config; FLUX.2 Klein 4B's are built in), never from weights.
Activations are counted at ~1 MP (1024x1024, 4,096 image tokens) with the 512-token prompt the
pipeline always pads to. The figures are estimates: `benchmarks/local_engine.py` measures the
real peaks on a GPU. Pure arithmetic, no torch: the machine is described by a Machine (_machine.py
reads this one).

Placements, fastest first: gpu (everything on the device), model-offload (each part moved to the
device when it runs), group-offload (blocks streamed to the device), sequential-offload (one layer
at a time), cpu. Quantization (torchao, weight-only) shrinks the text encoder first: it runs once
per image, so it costs little speed, and the transformer's arithmetic stays in the model's dtype.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._klein_configs import KLEIN_4B

GB = 1e9
PLACEMENTS = ("gpu", "model-offload", "group-offload", "sequential-offload", "cpu")
MEMORY_CHOICES = ("auto", *PLACEMENTS[:-1])  # --memory: cpu is --device cpu
QUANTIZATIONS = ("none", "int8", "fp8", "int4")
QUANTIZE_CHOICES = (*QUANTIZATIONS, "auto")
PARTS = ("text_encoder", "transformer")  # what can be quantized (the VAE is small, and convs)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Bytes per weight of a quantized Linear: int4 keeps a bf16 scale and zero point per 128 weights.
QUANT_BYTES = {"int8": 1.0, "fp8": 1.0, "int4": 0.5 + 4 / 128}
# What a process holds besides the weights: Python, torch and (on CUDA) its libraries in RAM; the
# CUDA context and the allocator's slack on the GPU. Memory is used up to HEADROOM of what is free.
BASE_RAM_GB = 1.5
CUDA_CONTEXT_GB = 0.5
HEADROOM = 0.95
MPS_GPU_SHARE = 0.7  # the share of a Mac's unified memory Metal lets one process use (about)
IMAGE_SIDE, PROMPT_TOKENS = 1024, 512


# --- sizes from the configuration --------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One component: weights in Linear layers (quantizable) and the rest, its largest single
    layer and block count (for the offload placements), and its activation bytes per dtype byte."""

    linear: float
    other: float
    largest_layer: float
    blocks: int
    activations: float  # elements at the peak of one call at 1 MP with the 512-token prompt
    scores: float = 0.0  # an attention score matrix, where no memory-efficient kernel runs

    @property
    def params(self) -> float:
        return self.linear + self.other

    def weights(self, dtype_bytes: float, quantization: str = "none") -> float:
        """Bytes of the weights in this dtype, the Linear layers in `quantization`."""
        linear_bytes = QUANT_BYTES.get(quantization, dtype_bytes)
        return self.linear * linear_bytes + self.other * dtype_bytes


@dataclass(frozen=True)
class ModelSizes:
    """The three parts of a Flux2KleinPipeline, and where their numbers came from."""

    text_encoder: Part
    transformer: Part
    vae: Part
    source: str

    def part(self, name: str) -> Part:
        return getattr(self, name)


def text_encoder_part(cfg: Mapping[str, Any]) -> Part:
    """Qwen3ForCausalLM: embeddings (tied with the LM head), decoder layers of attention, MLP."""
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    layers, vocab = cfg["num_hidden_layers"], cfg["vocab_size"]
    heads, kv = (
        cfg["num_attention_heads"],
        cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
    )
    head_dim = cfg.get("head_dim") or hidden // heads
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    if cfg.get("attention_bias"):
        attention += heads * head_dim + kv * head_dim * 2 + hidden
    per_layer = attention + 3 * hidden * inter
    embed = vocab * hidden
    lm_head = 0 if cfg.get("tie_word_embeddings", True) else vocab * hidden
    other = embed + layers * (2 * hidden + 2 * head_dim) + hidden
    # hidden states of every layer kept (output_hidden_states), the MLP's widest tensors, and the
    # LM head's logits, which the model computes although the pipeline reads hidden states only
    seq = PROMPT_TOKENS
    acts = seq * hidden * (layers + 1) + 3 * seq * inter + 2 * seq * vocab
    return Part(layers * per_layer + lm_head, other, embed, layers, acts)


def transformer_part(cfg: Mapping[str, Any]) -> Part:
    """Flux2Transformer2DModel: double-stream and single-stream blocks (all Linear, no biases)."""
    d = cfg.get("num_attention_heads", 24) * cfg.get("attention_head_dim", 128)
    m = int(d * cfg.get("mlp_ratio", 3.0))
    in_ch = cfg.get("in_channels", 128)
    out_ch = cfg.get("out_channels") or in_ch
    patch = cfg.get("patch_size", 1)
    double, single = cfg.get("num_layers", 5), cfg.get("num_single_layers", 20)
    double_block = 8 * d * d + 6 * d * m
    single_block = d * (3 * d + 2 * m) + (d + m) * d
    t_ch = cfg.get("timestep_guidance_channels", 256)
    embed = (t_ch * d + d * d + 2 * d) * (2 if cfg.get("guidance_embeds", False) else 1)
    rest = 15 * d * d + in_ch * d + cfg.get("joint_attention_dim", 7680) * d + 2 * d * d
    rest += d * patch * patch * out_ch
    norms = (double * 4 + single * 2) * cfg.get("attention_head_dim", 128)
    linear = double * double_block + single * single_block + embed + rest
    # one single-stream block at the peak: its fused projection, attention and MLP outputs and the
    # residual, for the prompt's 512 tokens and 1 MP's image tokens (2x2 patches of 1/8 scale)
    seq = PROMPT_TOKENS + (IMAGE_SIDE // 16) ** 2
    acts = seq * (3 * d + 2 * m + (d + m) + 3 * d + 2 * d)
    scores = cfg.get("num_attention_heads", 24) * seq * seq
    return Part(linear, norms, max(double_block, single_block), double + single, acts, scores)


def vae_part(cfg: Mapping[str, Any]) -> Part:
    """AutoencoderKLFlux2: 3x3 conv resnets (encoder and decoder) and a mid-block attention."""
    chans = list(cfg.get("block_out_channels", (128, 256, 512, 512)))
    per = cfg.get("layers_per_block", 2)
    latent = cfg.get("latent_channels", 32)
    convs = 0.0
    for i, c in enumerate(chans):
        prev = chans[i - 1] if i else c
        convs += 9 * (prev * c + c * c) + 9 * c * c * 2 * (per - 1)  # encoder
        convs += 9 * c * c * 2 * (per + 1)  # decoder
        if i < len(chans) - 1:
            convs += 9 * c * c * 2  # down- and upsampler
    top = chans[-1]
    convs += 2 * 2 * 9 * top * top * 2  # mid blocks: two resnets each side
    convs += 9 * 3 * chans[0] * 2 + 9 * top * latent * 3 + latent * latent * 4
    linear = 2 * 4 * top * top  # mid-block attention, both sides
    # decoding 1 MP: a few tensors of the second stage's width at full resolution
    acts = IMAGE_SIDE * IMAGE_SIDE * chans[min(1, len(chans) - 1)] * 3
    return Part(linear, convs, 9 * top * top, 1, acts)


def sizes_from_configs(configs: Mapping[str, Mapping[str, Any]], source: str) -> ModelSizes:
    return ModelSizes(
        text_encoder_part(configs["text_encoder"]),
        transformer_part(configs["transformer"]),
        vae_part(configs["vae"]),
        source,
    )


def klein_4b_sizes() -> ModelSizes:
    return sizes_from_configs(KLEIN_4B, "FLUX.2 Klein 4B's configuration")


def model_sizes(model: str | None) -> ModelSizes:
    """Sizes for --model: a saved folder's config.json files, a Hugging Face id's configs in the
    local cache, else (the default id, or nothing cached) FLUX.2 Klein 4B's built-in ones."""
    folder = _config_folder(model)
    if folder is None:
        return klein_4b_sizes()
    configs = {}
    for part in ("text_encoder", "transformer", "vae"):
        path = os.path.join(folder, part, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                configs[part] = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{model} is not a Flux2KleinPipeline folder (cannot read {part}/config.json: "
                f"{exc.__class__.__name__}): give a folder saved with save_pretrained, or a "
                "Hugging Face model id."
            ) from None
    return sizes_from_configs(configs, f"the configuration in {model}")


def _config_folder(model: str | None) -> str | None:
    if not model:
        return None
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return path
    if model.startswith(("/", ".", "~")):
        raise ValueError(
            f"no folder {model}: give a folder saved with save_pretrained, or a Hugging Face "
            "model id."
        )
    try:  # a hub id: its configs when they are cached (huggingface_hub comes with [local])
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model, "transformer/config.json")
    if isinstance(found, str):
        return os.path.dirname(os.path.dirname(found))
    return None


# --- the machine and the rules ----------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What the plan is for: the device kind, its free memory, free RAM, CUDA capability.

    For mps (unified memory) vram is the share Metal gives the GPU and ram the whole pool."""

    device: str  # cuda, cuda:N, mps or cpu
    vram_gb: float
    ram_gb: float
    capability: tuple[int, int] | None = None
    name: str = ""

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]


def auto_dtype(machine: Machine) -> str:
    """bfloat16 where the GPU runs it natively (CUDA capability >= 8.0, and Apple GPUs), float16
    on older CUDA GPUs (T4 7.5, V100 7.0), float32 on the CPU."""
    if machine.kind == "cuda":
        cap = machine.capability or (8, 0)
        return "bfloat16" if cap >= (8, 0) else "float16"
    if machine.kind == "mps":
        return "bfloat16"
    return "float32"


def supported(quantization: str, machine: Machine) -> str | None:
    """None if this quantization runs on the machine, else why not."""
    if quantization == "fp8" and not (
        machine.kind == "cuda" and (machine.capability or (0, 0)) >= (8, 9)
    ):
        return "fp8 needs an NVIDIA GPU of compute capability 8.9 or more (Ada, Hopper)"
    if quantization == "int4" and not (
        machine.kind == "cuda" and (machine.capability or (0, 0)) >= (8, 0)
    ):
        return "int4 needs an NVIDIA GPU of compute capability 8.0 or more"
    return None


@dataclass(frozen=True)
class Plan:
    """The decision: see `flux-nb plan --json` (the field names are its keys)."""

    fits: bool
    device: str
    dtype: str
    placement: str
    quantize: dict[str, str]
    peak_vram_gb: float
    peak_ram_gb: float
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "fits": self.fits,
            "device": self.device,
            "dtype": self.dtype,
            "placement": self.placement,
            "quantize": dict(self.quantize),
            "peak_vram_gb": round(self.peak_vram_gb, 1),
            "peak_ram_gb": round(self.peak_ram_gb, 1),
            "why": self.why,
        }

    @property
    def line(self) -> str:
        """The plan for people, one line."""
        quant = ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in self.quantize.items() if v != "none"
        )
        what = f"{self.placement} on {self.device}, {self.dtype}" + (f", {quant}" if quant else "")
        verdict = "fits" if self.fits else "does not fit"
        return (
            f"{what}: {verdict}, peak ~{self.peak_vram_gb:.1f} GB GPU memory and "
            f"~{self.peak_ram_gb:.1f} GB RAM ({self.why})"
        )


@dataclass(frozen=True)
class _Candidate:
    placement: str
    dtype: str
    quantize: tuple[str, str]  # text encoder, transformer


def peaks(sizes: ModelSizes, machine: Machine, cand: _Candidate) -> tuple[float, float]:
    """(peak GPU memory, peak RAM) in GB for one candidate: the larger of loading and running."""
    b = DTYPE_BYTES[cand.dtype]
    quant = dict(zip(PARTS, cand.quantize, strict=True))
    order = ("text_encoder", "transformer", "vae")  # the order they load and run in
    full = [sizes.part(p).weights(b) for p in order]
    done = [sizes.part(p).weights(b, quant.get(p, "none")) for p in order]
    acts = [sizes.part(p).activations * b for p in order]
    # loading: the parts before in their final form, this one in full before it is quantized
    load = max(sum(done[:i]) + full[i] for i in range(len(order)))
    ctx = CUDA_CONTEXT_GB * GB if machine.kind == "cuda" else 0.0
    base = BASE_RAM_GB * GB
    if machine.kind != "cuda":  # attention without a memory-efficient kernel: the scores too
        acts[1] += sizes.transformer.scores * b
    if cand.placement == "cpu":
        return 0.0, (base + max(load, sum(done) + max(acts))) / GB
    if cand.placement == "gpu" and machine.kind == "mps":  # quantized on the CPU, then moved
        return (sum(done) + max(acts)) / GB, (base + load) / GB
    if cand.placement == "gpu":  # each part loaded onto the device, then quantized there
        vram = max(load, sum(done) + max(acts)) + ctx
        return vram / GB, (base + max(full)) / GB  # one part staged in RAM at a time
    if cand.placement == "model-offload":
        on_gpu = max(done[i] + acts[i] for i in range(len(order)))
    else:
        per_part = []
        for i, p in enumerate(order):
            part = sizes.part(p)
            layer = part.largest_layer * (QUANT_BYTES.get(quant.get(p, "none"), b))
            if cand.placement == "group-offload":  # a block on the device and the next arriving
                held = max(2 * done[i] / max(part.blocks, 1), layer)
            else:
                held = layer
            per_part.append(held + acts[i])
        on_gpu = max(per_part)
    return (on_gpu + ctx) / GB, (base + max(load, sum(done))) / GB


def _ladder(machine: Machine, dtype: str) -> list[_Candidate]:
    """Every candidate, fastest first (see the module docstring)."""
    big = "fp8" if supported("fp8", machine) is None else "int8"
    small = "int4" if supported("int4", machine) is None else None
    q = [("none", "none"), ("int8", "none"), ("int8", big)]
    if small:
        q += [(small, big), (small, small)]
    if machine.kind == "cpu":
        if dtype != "auto":
            return [_Candidate("cpu", dtype, qq) for qq in q[:3]]
        f32 = [_Candidate("cpu", "float32", qq) for qq in q[:2]]
        return f32 + [_Candidate("cpu", "bfloat16", qq) for qq in q[:3]]
    d = auto_dtype(machine) if dtype == "auto" else dtype
    if machine.kind == "mps":  # unified memory: offloading moves nothing anywhere
        return [_Candidate("gpu", d, qq) for qq in q]
    gpu = [_Candidate("gpu", d, qq) for qq in q]
    model = [_Candidate("model-offload", d, qq) for qq in q[:3]]
    order = [gpu[0], gpu[1], model[0], model[1], gpu[2], model[2], *gpu[3:]]
    for placement in ("group-offload", "sequential-offload"):
        order += [_Candidate(placement, d, qq) for qq in q[:3]]
    return order


def _fits(vram: float, ram: float, machine: Machine) -> bool:
    if machine.kind == "cpu":
        return ram <= machine.ram_gb * HEADROOM
    if machine.kind == "mps":  # one pool: the GPU's share and the whole
        whole = max(ram, BASE_RAM_GB + vram)
        return vram <= machine.vram_gb * HEADROOM and whole <= machine.ram_gb * HEADROOM
    return vram <= machine.vram_gb * HEADROOM and ram <= machine.ram_gb * HEADROOM


def _describe(cand: _Candidate) -> str:
    parts = [
        f"the {p.replace('_', ' ')} in {q}"
        for p, q in zip(PARTS, cand.quantize, strict=True)
        if q != "none"
    ]
    quant = " with " + " and ".join(parts) if parts else " unquantized"
    return f"{cand.placement}{quant}"


def plan(
    machine: Machine,
    sizes: ModelSizes | None = None,
    *,
    dtype: str = "auto",
    memory: str = "auto",
    quantize: Mapping[str, str] | None = None,
) -> Plan:
    """The fastest candidate that fits, within what the caller forced (a dtype, a placement, a
    quantization per part); when none does, the closest one, fits=False, and `why` says what
    was tried and what would fit."""
    sizes = sizes or klein_4b_sizes()
    wanted = {p: (quantize or {}).get(p, "auto") for p in PARTS}
    for part, q in wanted.items():
        if q not in QUANTIZE_CHOICES:
            raise ValueError(
                f"--quantize {part.replace('_', '-')}={q}: use one of {', '.join(QUANTIZE_CHOICES)}"
            )
        if q != "auto" and (problem := supported(q, machine)):
            raise ValueError(f"--quantize {part.replace('_', '-')}={q}: {problem}")
    if memory not in MEMORY_CHOICES:
        raise ValueError(f"--memory {memory}: use one of {', '.join(MEMORY_CHOICES)}")
    if memory != "auto" and machine.kind == "cpu":
        raise ValueError(
            f"--memory {memory} moves parts to a GPU; on the CPU there is none: drop --memory"
            + (" (and --offload)" if memory == "model-offload" else "")
        )
    everything = _ladder(machine, dtype)

    def allowed(c: _Candidate) -> bool:
        return (memory == "auto" or c.placement == memory) and all(
            w in ("auto", q) for w, q in zip(wanted.values(), c.quantize, strict=True)
        )

    tried = [c for c in everything if allowed(c)]
    if not tried:  # a forced quantization outside the ladder (int4 text encoder, none transformer)
        d = everything[0].dtype
        placements = (
            [memory]
            if memory != "auto"
            else sorted({c.placement for c in everything}, key=PLACEMENTS.index)
        )
        tried = [
            _Candidate(p, d, tuple(wanted[x] if wanted[x] != "auto" else "none" for x in PARTS))  # type: ignore[arg-type]
            for p in placements
        ]
    scored = [(c, *peaks(sizes, machine, c)) for c in tried]
    limits = f"{machine.vram_gb:.1f} GB GPU memory, {machine.ram_gb:.1f} GB RAM"
    if machine.kind == "cpu":
        limits = f"{machine.ram_gb:.1f} GB RAM"
    for i, (c, vram, ram) in enumerate(scored):
        if _fits(vram, ram, machine):
            if i == 0:
                why = f"the fastest placement; it fits in {limits}"
            else:
                first, fv, fr = scored[0]
                need = (
                    f"{fr:.1f} GB RAM"
                    if machine.kind == "cpu"
                    else f"{fv:.1f} GB GPU memory and {fr:.1f} GB RAM"
                )
                why = f"{_describe(first)} would need {need}; this machine has {limits}"
            return _decided(True, machine, c, vram, ram, why)
    # nothing within what was asked: say what the smallest try needs and what else would fit
    c, vram, ram = min(scored, key=lambda s: s[1] + s[2])
    need = (
        f"needs {ram:.1f} GB of RAM"
        if machine.kind == "cpu"
        else f"needs {vram:.1f} GB of GPU memory and {ram:.1f} GB of RAM"
    )
    why = f"{_describe(c)} {need}; this machine has {limits}"
    if memory != "auto" or any(w != "auto" for w in wanted.values()) or dtype != "auto":
        other = plan(machine, sizes)
        if other.fits:
            why += f"; try {_flags(other, machine)}"
    elif machine.kind != "cpu":
        why += "; try --device cpu"
    return _decided(False, machine, c, vram, ram, why)


def _decided(
    fits: bool, machine: Machine, c: _Candidate, vram: float, ram: float, why: str
) -> Plan:
    quantize = dict(zip(PARTS, c.quantize, strict=True))
    return Plan(fits, machine.device, c.dtype, c.placement, quantize, vram, ram, why)


def _flags(p: Plan, machine: Machine) -> str:
    flags = [f"--memory {p.placement}"] if p.placement != "cpu" else ["--device cpu"]
    flags += [f"--quantize {k.replace('_', '-')}={v}" for k, v in p.quantize.items() if v != "none"]
    if p.dtype != auto_dtype(machine):
        flags.append(f"--dtype {p.dtype}")
    return " ".join(flags)


def parse_quantize(values: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """--quantize text-encoder=int8 --quantize transformer=auto (or a bare level for both)."""
    found = {p: "auto" for p in PARTS}
    for value in values or ():
        for item in value.split(","):
            name, sep, level = item.strip().partition("=")
            if not sep:  # a bare level: both parts
                name, level = "both", name
            level = level.strip().lower()
            if level not in QUANTIZE_CHOICES:
                raise ValueError(
                    f"--quantize {item.strip()}: the level is one of {', '.join(QUANTIZE_CHOICES)}"
                )
            key = name.strip().lower().replace("-", "_")
            if key == "both":
                found = dict.fromkeys(PARTS, level)
            elif key in PARTS:
                found[key] = level
            else:
                raise ValueError(
                    f"--quantize {item.strip()}: the part is text-encoder or transformer"
                )
    return found


__all__ = [
    "MEMORY_CHOICES",
    "PLACEMENTS",
    "QUANTIZATIONS",
    "QUANTIZE_CHOICES",
    "Machine",
    "ModelSizes",
    "Part",
    "Plan",
    "auto_dtype",
    "klein_4b_sizes",
    "model_sizes",
    "parse_quantize",
    "peaks",
    "plan",
    "sizes_from_configs",
]
