"""The flux2-klein engine: real FLUX.2 Klein images from diffusers' Flux2KleinPipeline.

`pipeline_kwargs(recipe, inputs)` is the one place a recipe becomes pipeline arguments:

- prompt by keyword (the pipeline's first positional argument is `image`);
- input images (already fetched and decoded by the server) as RGB PIL images, `image=[...]`;
- aspect_ratio as width x height of about one megapixel, multiples of 16 (SIZES), for edits too;
- num_inference_steps as is; guidance_scale passed through (step-distilled Klein ignores it, and
  the warning diffusers logs about that on every call is filtered out);
- seed through torch.Generator("cpu").manual_seed(seed): the starting noise is drawn on the CPU,
  so it is the same on every device.

Same recipe, same weights, device and dtype: the same pixels as calling the pipeline with those
arguments. Across devices or dtypes the noise is the same but the arithmetic is not, so pixels
differ slightly. One pipeline per (weights, device, dtype, offload) in the process, loaded at the
first generation (or by preload()), and one call at a time on it: the pipeline keeps per-call state
on itself. torch and diffusers are imported only when a pipeline is loaded or used.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin

from ...core._recipe import Recipe
from ._base import (
    CONTENT_TYPES,
    JPEG_QUALITY,
    LOCAL_EXTRA_PIP,
    TORCHAO_PIP,
    WEBP_QUALITY,
    Cancelled,
    Engine,
    EngineConfig,
    EngineError,
    EngineUnavailable,
    devices_for,
    software_exif,
)

ENGINE_NAME = "flux2-klein"
# Width x height per aspect ratio: about one megapixel, multiples of 16.
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "4:3": (1184, 880),
    "3:4": (880, 1184),
}
PNG_COMPRESS_LEVEL = {"standard": 1, "high": 6}  # lossless either way: only size and time differ
# The pipeline's own limits on reference images (Flux2ImageProcessor.check_image_input).
MIN_INPUT_SIDE, MAX_INPUT_ASPECT = 64, 8
PIPELINE_LOGGER = "diffusers.pipelines.flux2.pipeline_flux2_klein"


def size_for(aspect_ratio: str, scale: float = 1.0) -> tuple[int, int]:
    """Output size for an aspect ratio; scale < 1 shrinks it (multiples of 16, at least 16)."""
    width, height = SIZES.get(aspect_ratio, SIZES["16:9"])
    if scale == 1.0:
        return width, height
    return max(16, int(width * scale) // 16 * 16), max(16, int(height * scale) // 16 * 16)


def check_inputs(inputs: Sequence[Image.Image]) -> None:
    """Refuse, naming the item, the input images the pipeline would refuse."""
    for i, image in enumerate(inputs):
        width, height = image.size
        if min(width, height) < MIN_INPUT_SIDE:
            raise EngineError(
                f"input_image[{i}] is {width}x{height}: FLUX.2 Klein needs each side of an "
                f"input image to be at least {MIN_INPUT_SIDE} px."
            )
        if max(width, height) > MAX_INPUT_ASPECT * min(width, height):
            raise EngineError(
                f"input_image[{i}] is {width}x{height}: FLUX.2 Klein takes input images up to "
                f"{MAX_INPUT_ASPECT}:1."
            )


def pipeline_kwargs(
    recipe: Recipe, inputs: Sequence[Image.Image] = (), *, size_scale: float = 1.0
) -> dict[str, Any]:
    """The Flux2KleinPipeline arguments that make this recipe (see the module docstring)."""
    import torch

    width, height = size_for(recipe.aspect_ratio, size_scale)
    kwargs: dict[str, Any] = {
        "prompt": recipe.prompt,
        "width": width,
        "height": height,
        "num_inference_steps": int(recipe.num_inference_steps),
        "guidance_scale": float(recipe.guidance_scale),
        "generator": torch.Generator("cpu").manual_seed(int(recipe.seed)),
    }
    if inputs:
        kwargs["image"] = [im if im.mode == "RGB" else im.convert("RGB") for im in inputs]
    return kwargs


def encode(
    image: Image.Image, output_format: str, quality: str = "standard", software: str = ""
) -> tuple[bytes, str]:
    """Encode the pipeline's PIL result; returns (bytes, content type)."""
    buf = io.BytesIO()
    if output_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", software)
        info.add_text("flux_nb_engine", ENGINE_NAME)
        image.save(buf, "PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL.get(quality, 1))
    elif output_format == "jpg":
        image.save(
            buf,
            "JPEG",
            quality=JPEG_QUALITY.get(quality, 85),
            subsampling=0 if quality == "high" else 2,
            exif=software_exif(software),
        )
    elif output_format == "webp":
        image.save(buf, "WEBP", quality=WEBP_QUALITY.get(quality, 80), exif=software_exif(software))
    else:
        raise ValueError(f"output_format={output_format!r} is not one of png, jpg, webp")
    return buf.getvalue(), CONTENT_TYPES[output_format]


# --- pipelines, one per (weights, device, dtype, offload) in the process ------------------------


@dataclass
class Loaded:
    """A loaded pipeline, the plan it follows, and the lock that lets one call at a time use it."""

    pipe: Any
    device: str
    dtype: str
    lock: threading.Lock
    plan: Any = None  # plan.Plan; None for an adopted pipeline


# (weights, device, memory, quantize, slot) -> {dtype: pipeline}; the first for dtype auto.
_pipelines: dict[tuple[str, str, str, tuple[tuple[str, str], ...], int], dict[str, Loaded]] = {}
_load_lock = threading.Lock()  # one load at a time: two loads of the same weights help no one


def _key(config: EngineConfig, device: str, slot: int) -> tuple:
    return (str(config.model), device, config.memory, config.quantize, slot)


def _cached(config: EngineConfig, device: str, slot: int) -> Loaded | None:
    """The pipeline adopted or loaded before for this configuration and slot; locked."""
    by_dtype = _pipelines.get(_key(config, device, slot), {})
    if config.dtype == "auto":
        return next(iter(by_dtype.values()), None)
    return by_dtype.get(config.dtype)


def _keep(config: EngineConfig, device: str, slot: int, loaded: Loaded) -> Loaded:
    _pipelines.setdefault(_key(config, device, slot), {})[loaded.dtype] = loaded
    return loaded


def make_plan(config: EngineConfig, device: str) -> Any:
    """The memory plan for config on this machine's `device` (resolved already)."""
    from ._machine import read_machine
    from ._plan import model_sizes, plan

    try:
        return plan(read_machine(device), model_sizes(config.model), **config.plan_options)
    except ValueError as exc:
        raise EngineUnavailable(str(exc)) from None


def load_pipeline(config: EngineConfig, slot: int = 0) -> Loaded:
    """The process's pipeline for this configuration (and device slot), loaded on first use by
    its memory plan, whose line is printed; EngineUnavailable (one line saying what to do) when
    the libraries, the weights or the device are missing, or nothing fits."""
    config.check_available()
    torch = _import_torch()
    devices = devices_for(config)  # for auto on several GPUs: the ones the plan fits, by slot
    device = resolve_device(devices[slot % len(devices)], torch)
    with _load_lock:
        cached = _cached(config, device, slot)
        if cached is not None:
            return cached
        decided = make_plan(config, device)
        if not decided.fits:
            raise EngineUnavailable(f"FLUX.2 Klein does not fit on {device}: {decided.why}.")
        print(f"flux-nb: flux2-klein plan: {decided.line}", file=sys.stderr, flush=True)
        pipe = _from_pretrained(str(config.model), device, decided, torch)
        return _keep(
            config, device, slot, Loaded(pipe, device, decided.dtype, threading.Lock(), decided)
        )


def adopt_pipeline(config: EngineConfig, pipe: Any, slot: int = 0) -> Loaded:
    """Serve a Flux2KleinPipeline already built in this process (say, a notebook's, or the
    benchmark's full-size random one) for config, instead of loading config.model."""
    torch = _import_torch()
    devices = devices_for(config)
    device = resolve_device(devices[slot % len(devices)], torch)
    dtype = str(next(pipe.transformer.parameters()).dtype).removeprefix("torch.")
    _quiet_guidance_warning()
    pipe.set_progress_bar_config(disable=True)
    with _load_lock:
        return _keep(config, device, slot, Loaded(pipe, device, dtype, threading.Lock()))


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - check_available saw it there
        raise EngineUnavailable(
            f"torch cannot be imported ({exc}): run {LOCAL_EXTRA_PIP}"
        ) from None
    return torch


def available_devices(torch: Any) -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices[:0] = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.insert(len(devices) - 1, "mps")
    return devices


def resolve_device(requested: str, torch: Any) -> str:
    """auto -> cuda, then mps, then cpu; a device that is not there -> the devices that are."""
    available = available_devices(torch)
    if requested == "auto":
        first = available[0]
        return "cuda" if first.startswith("cuda") else first
    if requested in available or (requested == "cuda" and available[0].startswith("cuda")):
        return requested
    raise EngineUnavailable(
        f"device {requested!r} is not available here; available: {', '.join(available)} "
        "(or --device auto)."
    )


def _from_pretrained(model: str, device: str, decided: Any, torch: Any) -> Any:
    """Load part by part as the plan says: each big part in the plan's dtype, quantized (torchao)
    and, for the gpu placement, moved to the device before the next one is read, so only one
    part is ever held whole in RAM; then the placement (offload hooks) for the pipeline."""
    try:
        from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel
        from transformers import Qwen3ForCausalLM
    except ImportError:
        import diffusers

        raise EngineUnavailable(
            f"diffusers {diffusers.__version__} has no Flux2KleinPipeline: run "
            f"pip install -U 'flux-nb[local]'"
        ) from None
    _quiet_guidance_warning()
    dtype = getattr(torch, decided.dtype)
    on_device = decided.placement == "gpu" and device != "cpu"
    parts: dict[str, Any] = {}
    try:
        for name, cls in (
            ("text_encoder", Qwen3ForCausalLM),
            ("transformer", Flux2Transformer2DModel),
        ):
            part = cls.from_pretrained(model, subfolder=name, dtype=dtype)
            if on_device:
                part.to(device)
            _quantize(part, name, decided.quantize[name])
            parts[name] = part
        pipe = Flux2KleinPipeline.from_pretrained(model, dtype=dtype, **parts)
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(_weights_problem(model, exc)) from None
    if decided.placement in ("gpu", "cpu"):
        pipe.to(device)
    elif decided.placement == "model-offload":
        pipe.enable_model_cpu_offload(device=device)
    elif decided.placement == "sequential-offload":
        pipe.enable_sequential_cpu_offload(device=device)
    else:  # group-offload: blocks streamed to the device, one group ahead
        from diffusers.hooks import apply_group_offloading

        for name in ("text_encoder", "transformer", "vae"):
            apply_group_offloading(
                getattr(pipe, name),
                onload_device=torch.device(device),
                offload_type="block_level",
                num_blocks_per_group=1,
            )
    pipe.set_progress_bar_config(disable=True)
    return pipe


TORCHAO_CONFIGS = {
    "int8": "Int8WeightOnlyConfig",
    "fp8": "Float8WeightOnlyConfig",
    "int4": "Int4WeightOnlyConfig",
}


def _quantize(module: Any, name: str, level: str) -> None:
    """Quantize a part's Linear weights in place with torchao (weight-only); the text encoder's
    LM head is left alone: the pipeline reads hidden states, never its logits' values."""
    if level == "none":
        return
    try:
        import torchao.quantization as tq
    except ImportError:
        raise EngineUnavailable(
            f"--quantize {name.replace('_', '-')}={level} needs torchao: run {TORCHAO_PIP}"
        ) from None
    import torch

    def linear(mod: Any, fqn: str) -> bool:
        return isinstance(mod, torch.nn.Linear) and "lm_head" not in fqn

    tq.quantize_(module, getattr(tq, TORCHAO_CONFIGS[level])(), filter_fn=linear)


def _weights_problem(model: str, exc: Exception) -> str:
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return (
            f"{model} is not a Flux2KleinPipeline folder ({_first_line(exc)}): give a folder "
            "saved with save_pretrained, or a Hugging Face model id."
        )
    if model.startswith(("/", ".", "~")) or os.sep in model.strip(os.sep).replace("/", "", 1):
        return (
            f"no folder {model}: give a folder saved with save_pretrained,"
            f" or a Hugging Face model id."
        )
    return (
        f"the weights of {model} are not in the Hugging Face cache and could not be downloaded "
        f"here: on a machine with internet run `hf download {model}` (or log in first with "
        "`hf auth login` if the model is gated), or pass --model FOLDER with a pipeline saved by "
        "save_pretrained."
    )


class _DropGuidanceWarning(logging.Filter):
    """Step-distilled Klein logs 'Guidance scale ... is ignored' on every call: the model
    description says so once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is ignored for step-wise distilled models" not in record.getMessage()


def _quiet_guidance_warning() -> None:
    logger = logging.getLogger(PIPELINE_LOGGER)
    if not any(isinstance(f, _DropGuidanceWarning) for f in logger.filters):
        logger.addFilter(_DropGuidanceWarning())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


# --- the engine --------------------------------------------------------------------------------


def make_engine(config: EngineConfig, slot: int) -> Engine:
    """The registry's factory (base.ENGINES): one engine per worker slot, on that slot's device."""
    return Flux2KleinEngine(config, slot)


class Flux2KleinEngine:
    """Renders a recipe with the shared pipeline of its configuration; see the module docstring."""

    name = ENGINE_NAME

    def __init__(self, config: EngineConfig, slot: int = 0) -> None:
        self.config = config
        self.slot = slot  # which of config's devices (one pipeline and one worker each)
        self.software = f"flux-nb {config.label}"

    def preload(self) -> None:
        """Load the pipeline now (flux-nb serve --preload) rather than at the first generation."""
        load_pipeline(self.config, self.slot)

    def render(
        self,
        recipe: Recipe,
        inputs: Sequence[Image.Image],
        *,
        on_step: Callable[[int, int], object] | None = None,
        should_stop: Callable[[], bool] | None = None,
        step_delay: float = 0.0,  # the preview engine's; a real model takes its own time
    ) -> tuple[bytes, str]:
        """Return (encoded bytes in recipe.output_format, content type)."""
        stop = should_stop or (lambda: False)
        check_inputs(inputs)
        if stop():
            raise Cancelled("cancelled before it started")
        loaded = load_pipeline(self.config, self.slot)
        kwargs = pipeline_kwargs(recipe, inputs, size_scale=self.config.size_scale)

        watch = _FiniteWatch() if loaded.dtype == "float16" else None

        def step_end(pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if stop():  # raising here ends the call at once; the pipeline stays usable
                raise Cancelled(f"cancelled after step {i + 1}")
            if watch is not None:  # one wait for the device, after the last step, not one a step
                watch.see(tensors.get("latents"), i + 1)
                if i + 1 == pipe.num_timesteps and watch.first_bad_step():
                    raise _float16_overflow(watch.first_bad_step())
            if on_step is not None:
                on_step(i + 1, pipe.num_timesteps)
            return tensors

        with loaded.lock:
            if stop():
                raise Cancelled("cancelled before it started")
            try:
                image = loaded.pipe(**kwargs, callback_on_step_end=step_end).images[0]
            except (Cancelled, EngineError):
                raise
            except Exception as exc:
                explained = self._explain(exc, loaded, kwargs)
                if explained is None:
                    raise
                raise explained from exc
        if stop():
            raise Cancelled("cancelled after the last step")
        return encode(image, recipe.output_format, recipe.output_quality, self.software)

    def _explain(
        self, exc: Exception, loaded: Loaded, kwargs: dict[str, Any]
    ) -> EngineError | None:
        """One line for the failures a user can act on; None leaves the error as it is."""
        size = f"{kwargs['width']}x{kwargs['height']}"
        if _is_out_of_memory(exc):
            _free_memory(loaded.device)
            hint = (
                f" the plan ({loaded.plan.line}) underestimated it: try flux-nb plan and a "
                "smaller --memory placement or --quantize, or"
                if loaded.plan is not None
                else ""
            )
            return EngineError(
                f"out of memory on {loaded.device} making a {size} image ({loaded.dtype}):{hint} "
                "free memory other programs hold on that device."
            )
        if isinstance(exc, ValueError):
            return EngineError(f"Flux2KleinPipeline refused this request: {_first_line(exc)}")
        return None


def _float16_overflow(step: int) -> EngineError:
    return EngineError(
        f"the latents turned non-finite (NaN or inf) in float16 at step {step}: this model "
        "overflows float16 here; pass --dtype float32 (or bfloat16 on a GPU of compute "
        "capability 8.0 or more)"
    )


class _FiniteWatch:
    """Whether float16 latents stayed finite, and the first step they did not: kept on the device
    at each step (no wait for the GPU there) and read once, after the last step, before the
    VAE decodes them."""

    def __init__(self) -> None:
        self._first_bad: Any = None  # a 0-d tensor on the latents' device: 0 while all finite

    def see(self, latents: Any, step: int) -> None:
        if latents is None:
            return
        import torch

        if self._first_bad is None:
            self._first_bad = torch.zeros((), dtype=torch.int64, device=latents.device)
        bad = (self._first_bad == 0) & ~torch.isfinite(latents).all()
        self._first_bad = torch.where(bad, step, self._first_bad)

    def first_bad_step(self) -> int:
        """The step whose latents first turned non-finite; 0 when none did (the one sync)."""
        return 0 if self._first_bad is None else int(self._first_bad)


def _free_memory(device: str) -> None:
    try:
        import torch

        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        elif device == "mps":
            torch.mps.empty_cache()
    except Exception:  # best effort: the generation has failed already
        pass


__all__ = [
    "SIZES",
    "Flux2KleinEngine",
    "adopt_pipeline",
    "available_devices",
    "devices_for",
    "make_plan",
    "encode",
    "load_pipeline",
    "pipeline_kwargs",
    "resolve_device",
    "size_for",
]
