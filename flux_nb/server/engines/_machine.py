"""Reading this machine for the memory plan: free GPU memory, free RAM, CUDA compute capability.

torch tells the most (free memory per CUDA device, Apple's GPU); without torch (before
`pip install 'flux-nb[local]'`) nvidia-smi still answers for NVIDIA GPUs. Any field the caller
gives (--vram, --ram, --capability) replaces what is read: that is how a plan is made for a
machine described rather than this one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from typing import Any

from ._plan import GB, MPS_GPU_SHARE, Machine


def free_ram_gb() -> float:
    """MemAvailable on Linux; the physical memory elsewhere (an upper bound)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        return 0.0


def parse_capability(text: str) -> tuple[int, int]:
    """'7.5' -> (7, 5); ValueError with what to write otherwise."""
    major, sep, minor = text.strip().partition(".")
    if not (sep and major.isdigit() and minor.isdigit()):
        raise ValueError(f"--capability {text}: write it as MAJOR.MINOR, e.g. 7.5 for a T4")
    return int(major), int(minor)


def _torch() -> Any:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def _nvidia_smi() -> list[tuple[str, float, tuple[int, int] | None]]:
    """(name, free GB, capability) per NVIDIA GPU, from nvidia-smi; [] without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    query = "--query-gpu=name,memory.free,compute_cap"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus: list[tuple[str, float, tuple[int, int] | None]] = []
    for line in out.strip().splitlines():
        name, free, cap = (x.strip() for x in line.split(","))
        try:
            gpus.append((name, float(free) * 2**20 / GB, parse_capability(cap)))
        except ValueError:
            continue
    return gpus


def visible_gpus() -> list[str]:
    """The CUDA devices torch sees (cuda:0, cuda:1, ...), else nvidia-smi's, else none."""
    torch = _torch()
    if torch is not None:
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return []
    return [f"cuda:{i}" for i in range(len(_nvidia_smi()))]


def read_machine(
    device: str = "auto",
    *,
    vram_gb: float | None = None,
    ram_gb: float | None = None,
    capability: tuple[int, int] | None = None,
) -> Machine:
    """This machine for `device` (auto: the first CUDA GPU, then Apple's, then the CPU), with any
    of its figures replaced by those given. A described CUDA GPU (--vram, no GPU here) is planned
    as one."""
    ram = ram_gb if ram_gb is not None else free_ram_gb()
    if device == "auto" and (vram_gb is not None or capability is not None):
        device = "cuda"  # described: a GPU this machine need not have
    torch = _torch()
    if device == "auto":
        if visible_gpus():
            device = "cuda"
        elif torch is not None and _mps_available(torch):
            device = "mps"
        else:
            device = "cpu"
    if device == "cpu":
        return Machine("cpu", 0.0, ram, None, "CPU")
    if device == "mps":
        vram = vram_gb if vram_gb is not None else ram * MPS_GPU_SHARE
        return Machine("mps", vram, ram, None, "Apple GPU")
    index = int(device.split(":")[1]) if ":" in device else 0
    name, free, cap = _cuda_device(index, torch)
    return Machine(
        device,
        vram_gb if vram_gb is not None else free,
        ram,
        capability if capability is not None else cap,
        name if vram_gb is None else "described GPU",
    )


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cuda_device(index: int, torch: Any) -> tuple[str, float, tuple[int, int] | None]:
    if torch is not None and torch.cuda.is_available() and index < torch.cuda.device_count():
        free, _total = torch.cuda.mem_get_info(index)
        return (
            torch.cuda.get_device_name(index),
            free / GB,
            tuple(torch.cuda.get_device_capability(index)),
        )
    gpus = _nvidia_smi()
    if index < len(gpus):
        return gpus[index]
    return "no CUDA GPU here", 0.0, None


__all__ = ["free_ram_gb", "parse_capability", "read_machine", "visible_gpus"]
