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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin

from ...recipe import Recipe
from .base import (
    CONTENT_TYPES,
    JPEG_QUALITY,
    LOCAL_EXTRA_PIP,
    WEBP_QUALITY,
    Cancelled,
    EngineConfig,
    EngineError,
    EngineUnavailable,
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


def _software_exif(software: str) -> bytes:
    """EXIF naming the engine (Software), where JPEG and WebP readers look for it; none without."""
    if not software:
        return b""
    exif = Image.Exif()
    exif[0x0131] = software
    return exif.tobytes()


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
            exif=_software_exif(software),  # no COM segment: readers take it for Fooocus JSON
        )
    elif output_format == "webp":
        image.save(
            buf, "WEBP", quality=WEBP_QUALITY.get(quality, 80), exif=_software_exif(software)
        )
    else:
        raise ValueError(f"output_format={output_format!r} is not one of png, jpg, webp")
    return buf.getvalue(), CONTENT_TYPES[output_format]


# --- pipelines, one per (weights, device, dtype, offload) in the process ------------------------


@dataclass
class Loaded:
    """A loaded pipeline and the lock that lets one call at a time use it."""

    pipe: Any
    device: str
    dtype: str
    lock: threading.Lock


_pipelines: dict[tuple[str, str, str, bool], Loaded] = {}
_load_lock = threading.Lock()  # one load at a time: two loads of the same weights help no one


def load_pipeline(config: EngineConfig) -> Loaded:
    """The process's pipeline for this configuration, loaded on first use; EngineUnavailable
    (one line saying what to do) when the libraries, the weights or the device are missing."""
    config.check_available()
    torch = _import_torch()
    device = resolve_device(config.device, torch)
    dtype = resolve_dtype(config.dtype, device)
    if config.offload and not device.startswith(("cuda", "mps")):
        raise EngineUnavailable(
            f"--offload moves parts of the model to a GPU when needed; on {device} there is none: "
            "drop --offload."
        )
    key = (str(config.model), device, dtype, config.offload)
    with _load_lock:
        if key not in _pipelines:
            _pipelines[key] = Loaded(
                _from_pretrained(str(config.model), device, dtype, config.offload, torch),
                device,
                dtype,
                threading.Lock(),
            )
        return _pipelines[key]


def adopt_pipeline(config: EngineConfig, pipe: Any) -> Loaded:
    """Serve a Flux2KleinPipeline already built in this process (say, a notebook's, or the
    benchmark's full-size random one) for config, instead of loading config.model."""
    torch = _import_torch()
    device = resolve_device(config.device, torch)
    dtype = resolve_dtype(config.dtype, device)
    _quiet_guidance_warning()
    pipe.set_progress_bar_config(disable=True)
    with _load_lock:
        loaded = Loaded(pipe, device, dtype, threading.Lock())
        _pipelines[(str(config.model), device, dtype, config.offload)] = loaded
        return loaded


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


def resolve_dtype(requested: str, device: str) -> str:
    """auto -> bfloat16 on cuda, float32 elsewhere."""
    if requested != "auto":
        return requested
    return "bfloat16" if device.startswith("cuda") else "float32"


def _from_pretrained(model: str, device: str, dtype: str, offload: bool, torch: Any) -> Any:
    try:
        from diffusers import Flux2KleinPipeline
    except ImportError:
        import diffusers

        raise EngineUnavailable(
            f"diffusers {diffusers.__version__} has no Flux2KleinPipeline: run "
            f"pip install -U 'flux-nb[local]'"
        ) from None
    _quiet_guidance_warning()
    try:
        pipe = Flux2KleinPipeline.from_pretrained(model, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(_weights_problem(model, exc)) from None
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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


class Flux2KleinEngine:
    """Renders a recipe with the shared pipeline of its configuration; see the module docstring."""

    name = ENGINE_NAME

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.software = f"flux-nb {config.label}"

    def preload(self) -> Loaded:
        """Load the pipeline now (flux-nb serve --preload) rather than at the first generation."""
        return load_pipeline(self.config)

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
        loaded = load_pipeline(self.config)
        kwargs = pipeline_kwargs(recipe, inputs, size_scale=self.config.size_scale)

        def step_end(pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if stop():  # raising here ends the call at once; the pipeline stays usable
                raise Cancelled(f"cancelled after step {i + 1}")
            if on_step is not None:
                on_step(i + 1, pipe.num_timesteps)
            return tensors

        with loaded.lock:
            if stop():
                raise Cancelled("cancelled before it started")
            try:
                image = loaded.pipe(**kwargs, callback_on_step_end=step_end).images[0]
            except Cancelled:
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
            hint = "" if self.config.offload else " try flux-nb serve --offload, or"
            return EngineError(
                f"out of memory on {loaded.device} making a {size} image ({loaded.dtype}):{hint} "
                "free memory other programs hold on that device."
            )
        if isinstance(exc, ValueError):
            return EngineError(f"Flux2KleinPipeline refused this request: {_first_line(exc)}")
        return None


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
    "encode",
    "load_pipeline",
    "pipeline_kwargs",
    "resolve_device",
    "resolve_dtype",
    "size_for",
]
