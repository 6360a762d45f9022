"""The engine interface: names, options (EngineConfig) and the errors engines raise.

Kept apart from the package's __init__ so that the engines, which the package imports on
demand, import the interface from here and never their own package: no import circle.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from ...config import is_stand_in
from .plan import MEMORY_CHOICES, QUANTIZE_CHOICES
from .plan import PARTS as QUANTIZE_PARTS

# What the server says an engine is, in every generation object: never let a stand-in pass for FLUX.
ENGINE_LABELS = {
    "preview": "preview (offline stand-in, not FLUX)",
    "flux2-klein": "flux2-klein (FLUX.2 Klein through diffusers)",
}
ENGINE_NAMES = tuple(ENGINE_LABELS)
SERIAL_ENGINES = frozenset({"flux2-klein"})

KLEIN_DEFAULT_MODEL = "black-forest-labs/FLUX.2-klein-4B"
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::\d+)?")
# What flux2-klein imports, and the pip line that installs it.
LOCAL_EXTRA_MODULES = ("torch", "diffusers", "transformers", "accelerate", "safetensors")
LOCAL_EXTRA_PIP = "pip install 'flux-nb[local]'"
TORCHAO_PIP = "pip install torchao"  # Colab preinstalls it
NOT_QUANTIZED = ("none", "auto")
# What every engine's encoder shares: the content type of each output_format, and the lossy
# quality each output_quality maps to.
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
JPEG_QUALITY = {"standard": 85, "high": 95}
WEBP_QUALITY = {"standard": 80, "high": 92}


class Cancelled(Exception):
    """Raised by an engine when should_stop() turns true between steps."""


class EngineError(Exception):
    """A generation failed for a reason one line can say (out of memory, a refused input)."""


class EngineUnavailable(EngineError):
    """The engine cannot run here: its libraries, its weights or its device are missing."""


@dataclass(frozen=True)
class EngineConfig:
    """Which engine the server runs, and for flux2-klein which weights, where and how.

    model: a Hugging Face model id or a folder saved with save_pretrained; device: auto (cuda, then
    mps, then cpu), cuda[:N], mps or cpu, or several comma-separated (cuda:0,cuda:1; cpu,cpu): one
    pipeline and one generation at a time on each; dtype: auto (the memory plan's: bfloat16 on
    GPUs that run it natively, float16 on older CUDA GPUs, float32 on the CPU) or a torch dtype
    name; memory: auto (the fastest placement the plan fits) or a placement forced; quantize:
    (part, level) pairs, level auto (what the plan needs) or forced; offload=True is the older
    name of memory="model-offload".
    size_scale shrinks the ~1 MP sizes (multiples of 16 kept): for tests and quick drafts only.
    """

    name: str = "preview"
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    offload: bool = False
    size_scale: float = 1.0
    memory: str = "auto"
    quantize: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        check_engine_name(self.name)
        if self.name == "flux2-klein":
            if self.model is None:
                object.__setattr__(self, "model", KLEIN_DEFAULT_MODEL)
            if not str(self.model).strip():
                raise ValueError("model must not be empty: give a Hugging Face id or a folder")
            devices = [d.strip() for d in self.device.split(",")]
            if not all(_DEVICE.fullmatch(d) for d in devices) or (
                len(devices) > 1 and "auto" in devices
            ):
                raise ValueError(
                    f"device {self.device!r} is not one of: auto, cuda, cuda:N, mps, cpu (or "
                    "several, comma-separated: cuda:0,cuda:1)"
                )
            object.__setattr__(self, "device", ",".join(devices))
            if self.offload:
                if self.memory not in ("auto", "model-offload"):
                    raise ValueError(f"offload and memory={self.memory!r} disagree: give one")
                object.__setattr__(self, "memory", "model-offload")
            object.__setattr__(self, "offload", self.memory == "model-offload")
            if self.memory not in MEMORY_CHOICES:
                raise ValueError(
                    f"memory {self.memory!r} is not one of: {', '.join(MEMORY_CHOICES)}"
                )
            quantize = dict.fromkeys(QUANTIZE_PARTS, "auto")
            for part, level in self.quantize:
                if part not in QUANTIZE_PARTS or level not in QUANTIZE_CHOICES:
                    raise ValueError(
                        f"quantize {part}={level}: parts {', '.join(QUANTIZE_PARTS)}, levels "
                        f"{', '.join(QUANTIZE_CHOICES)}"
                    )
                quantize[part] = level
            object.__setattr__(self, "quantize", tuple(quantize.items()))
            if self.dtype not in DTYPES:
                raise ValueError(f"dtype {self.dtype!r} is not one of: {', '.join(DTYPES)}")
            if not 0 < self.size_scale <= 1:
                raise ValueError("size_scale must be in (0, 1]")
        elif (
            self.model is not None
            or self.offload
            or (self.device, self.dtype, self.memory) != ("auto",) * 3
            or self.quantize
        ):
            raise ValueError(
                f"the {self.name} engine takes no model, device, dtype, memory, offload or "
                "quantize: those are for the flux2-klein engine"
            )

    @classmethod
    def of(cls, engine: str | EngineConfig) -> EngineConfig:
        return engine if isinstance(engine, EngineConfig) else cls(name=engine)

    @property
    def label(self) -> str:
        """The engine as the server names it in generation objects, file metadata and headers."""
        if self.name == "flux2-klein":
            return f"flux2-klein ({self.model}, diffusers)"
        return ENGINE_LABELS[self.name]

    @property
    def devices(self) -> list[str]:
        """The devices named (one pipeline each); ["auto"] when the engine picks."""
        return self.device.split(",")

    @property
    def serial(self) -> bool:
        """One generation at a time on one shared engine (a model on a device)."""
        return self.name in SERIAL_ENGINES

    @property
    def is_stand_in(self) -> bool:
        return is_stand_in(self.name)

    @property
    def description(self) -> str:
        """What the model served with this engine is, for the model object's description."""
        if self.name == "flux2-klein":
            return (
                f"FLUX.2 Klein run on this machine by diffusers' Flux2KleinPipeline, weights "
                f"{self.model}, device {self.device}, dtype {self.dtype}, memory {self.memory}"
                f"{self._quantize_text}. guidance_scale is passed to the "
                "pipeline; the step-distilled Klein checkpoints ignore it. Same recipe, same device"
                " and dtype: same pixels."
            )
        return "An offline stand-in drawn with Pillow: its images are not FLUX's."

    @property
    def _quantize_text(self) -> str:
        forced = [f"{p.replace('_', ' ')} {q}" for p, q in self.quantize if q != "auto"]
        return f", quantized: {', '.join(forced)}" if forced else ""

    def check_available(self) -> None:
        """Raise EngineUnavailable at once (no heavy import)
        when the engine's libraries are missing."""
        if self.name != "flux2-klein":
            return
        missing = [m for m in LOCAL_EXTRA_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise EngineUnavailable(
                f"the flux2-klein engine needs {', '.join(missing)}: run {LOCAL_EXTRA_PIP}"
            )
        forced = [f"{p.replace('_', '-')}={q}" for p, q in self.quantize if q not in NOT_QUANTIZED]
        if forced and importlib.util.find_spec("torchao") is None:
            raise EngineUnavailable(
                f"--quantize {' '.join(forced)} needs torchao: run {TORCHAO_PIP}"
            )


def check_engine_name(name: str) -> str:
    """Return name if an engine of that name exists, else raise ValueError listing the names."""
    if name not in ENGINE_LABELS:
        raise ValueError(f"unknown engine {name!r}; allowed: {', '.join(ENGINE_NAMES)}")
    return name
