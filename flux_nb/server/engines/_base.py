"""The engine interface: the Engine protocol, the registry of engines (ENGINES), their options
(EngineConfig) and the errors engines raise.

Kept apart from the package's __init__ so that the engines, which the package imports on
demand, import the interface from here and never their own package: no import circle. The
registry names each engine's module by name (EngineKind.module), imported when a server makes
an engine, so nothing heavy loads before.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._plan import MEMORY_CHOICES, QUANTIZE_CHOICES
from ._plan import PARTS as QUANTIZE_PARTS

if TYPE_CHECKING:
    from PIL import Image

    from ...core._recipe import Recipe

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


def software_exif(software: str, *, description: bool = False) -> bytes:
    """EXIF naming the engine in Software (and ImageDescription, with description), where JPEG
    and WebP readers look for it: no COM segment, which readers take for Fooocus JSON. Empty
    without a name."""
    if not software:
        return b""
    from PIL import Image

    exif = Image.Exif()
    if description:
        exif[0x010E] = software  # ImageDescription
    exif[0x0131] = software  # Software
    return exif.tobytes()


class Cancelled(Exception):
    """Raised by an engine when should_stop() turns true between steps."""


class EngineError(Exception):
    """A generation failed for a reason one line can say (out of memory, a refused input)."""


class EngineUnavailable(EngineError):
    """The engine cannot run here: its libraries, its weights or its device are missing."""


class Engine(Protocol):
    """What the server's workers run: one instance per worker slot (its own thread), so an engine
    need not be thread-safe; one that shares a model across instances guards it itself."""

    name: str

    def render(
        self,
        recipe: Recipe,
        inputs: Sequence[Image.Image],
        *,
        on_step: Callable[[int, int], object] | None = None,
        should_stop: Callable[[], bool] | None = None,
        step_delay: float = 0.0,
    ) -> tuple[bytes, str]:
        """(encoded bytes in recipe.output_format, content type). Calls on_step(i, total) after
        each step, raises Cancelled once should_stop() turns true, EngineError with one line."""
        ...

    def preload(self) -> None:
        """Load now what the first generation would (flux-nb serve --preload)."""
        ...


@dataclass(frozen=True)
class EngineKind:
    """One engine in the registry (ENGINES): where it is made and what the server says it is.

    module: the module of this package whose make_engine(config, slot) makes one, imported only
    then (by name, as diffusers' registries do: the engines import this module, never the other
    way). slots(config, workers): how many worker threads run it. serial: one shared model per
    device, one generation at a time on each. stand_in: its pictures are not FLUX's (said
    wherever they show). model_options: it takes model, device, dtype, memory, offload and
    quantize. needs: the modules it imports (checked at start without importing them).
    """

    module: str
    label: Callable[[EngineConfig], str]
    description: Callable[[EngineConfig], str]
    slots: Callable[[EngineConfig, int], int] = lambda _config, workers: workers
    serial: bool = False
    stand_in: bool = False
    model_options: bool = False
    needs: tuple[str, ...] = ()

    def make(self, config: EngineConfig, slot: int) -> Engine:
        """A new engine for one worker slot; its module is imported now."""
        module = importlib.import_module(f"{__package__}.{self.module}")
        return cast(Engine, module.make_engine(config, slot))


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
        if self.kind.model_options:
            self._check_model_options()
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

    def _check_model_options(self) -> None:
        """Check and normalise model, device, memory/offload, quantize, dtype and size_scale."""
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
            raise ValueError(f"memory {self.memory!r} is not one of: {', '.join(MEMORY_CHOICES)}")
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

    @classmethod
    def of(cls, engine: str | EngineConfig) -> EngineConfig:
        return engine if isinstance(engine, EngineConfig) else cls(name=engine)

    @property
    def kind(self) -> EngineKind:
        """The engine's entry in the registry (ValueError listing the names for an unknown one)."""
        return ENGINES[check_engine_name(self.name)]

    @property
    def label(self) -> str:
        """The engine as the server names it in generation objects, file metadata and headers:
        never lets a stand-in pass for FLUX."""
        return self.kind.label(self)

    @property
    def devices(self) -> list[str]:
        """The devices named (one pipeline each); ["auto"] when the engine picks."""
        return self.device.split(",")

    @property
    def plan_options(self) -> dict[str, Any]:
        """The memory plan's options (plan.plan's keywords) these settings give."""
        return {"dtype": self.dtype, "memory": self.memory, "quantize": dict(self.quantize)}

    @property
    def serial(self) -> bool:
        """One generation at a time on one shared engine (a model on a device)."""
        return self.kind.serial

    @property
    def is_stand_in(self) -> bool:
        return self.kind.stand_in

    @property
    def description(self) -> str:
        """What the model served with this engine is, for the model object's description."""
        return self.kind.description(self)

    def check_available(self) -> None:
        """Raise EngineUnavailable at once (no heavy import)
        when the engine's libraries are missing."""
        needs = self.kind.needs
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        if missing:
            raise EngineUnavailable(
                f"the {self.name} engine needs {', '.join(missing)}: run {LOCAL_EXTRA_PIP}"
            )
        forced = [f"{p.replace('_', '-')}={q}" for p, q in self.quantize if q not in NOT_QUANTIZED]
        if forced and importlib.util.find_spec("torchao") is None:
            raise EngineUnavailable(
                f"--quantize {' '.join(forced)} needs torchao: run {TORCHAO_PIP}"
            )


def check_engine_name(name: str) -> str:
    """Return name if an engine of that name exists, else raise ValueError listing the names."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; allowed: {', '.join(ENGINES)}")
    return name


# --- the registry: every engine the server can run, in one table -------------------------------


def _klein_slots(config: EngineConfig, workers: int) -> int:
    """One worker per device flux2-klein runs a pipeline on (torch counts GPUs for auto only)."""
    return len(devices_for(config))


@functools.cache
def devices_for(config: EngineConfig) -> tuple[str, ...]:
    """The devices flux2-klein runs a pipeline on, one worker slot each: those named, or for auto
    every visible GPU whose memory plan fits (one is enough to start: the first device there is).
    Worked out once per configuration: the worker count and every slot's pipeline use it."""
    if config.devices != ["auto"]:
        return tuple(config.devices)
    from ._machine import read_machine, visible_gpus
    from ._plan import model_sizes, plan

    gpus = visible_gpus()
    if len(gpus) > 1:
        try:
            sizes = model_sizes(config.model)
            fitting = [g for g in gpus if plan(read_machine(g), sizes, **config.plan_options).fits]
        except ValueError:
            fitting = []
        if fitting:
            return tuple(fitting)
    return ("auto",)


def _klein_description(config: EngineConfig) -> str:
    forced = [f"{p.replace('_', ' ')} {q}" for p, q in config.quantize if q != "auto"]
    quantized = f", quantized: {', '.join(forced)}" if forced else ""
    return (
        f"FLUX.2 Klein run on this machine by diffusers' Flux2KleinPipeline, weights "
        f"{config.model}, device {config.device}, dtype {config.dtype}, memory {config.memory}"
        f"{quantized}. guidance_scale is passed to the pipeline; the step-distilled Klein "
        "checkpoints ignore it. Same recipe, same device and dtype: same pixels."
    )


ENGINES: dict[str, EngineKind] = {
    "preview": EngineKind(
        module="_preview",
        label=lambda _config: "preview (offline stand-in, not FLUX)",
        description=lambda _config: (
            "An offline stand-in drawn with Pillow: its images are not FLUX's."
        ),
        stand_in=True,
    ),
    "flux2-klein": EngineKind(
        module="_flux2_klein",
        label=lambda config: f"flux2-klein ({config.model}, diffusers)",
        description=_klein_description,
        slots=_klein_slots,
        serial=True,
        model_options=True,
        needs=LOCAL_EXTRA_MODULES,
    ),
}
ENGINE_NAMES = tuple(ENGINES)
