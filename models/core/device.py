"""Pick the compute device: cuda (bf16 where supported) > mps > cpu (fp32), overridable."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    dtype: torch.dtype
    name: str  # the technical name, e.g. "cuda:0 (NVIDIA H200, bf16)" (logs, benchmarks, the model notes)

    @property
    def plain(self) -> str:
        """The device in a teacher's words, for the page's first line."""
        if self.device.type == "cuda":
            return f"a graphics card ({torch.cuda.get_device_name(self.device)})"
        if self.device.type == "mps":
            return "the Apple graphics chip"
        return "this computer's processor (no graphics card)"


def pick(override: str | None = None) -> DeviceInfo:
    """The device to use. ``override`` (or env ``LMLAB_DEVICE``) is 'cuda', 'mps', 'cpu' or 'auto'."""
    choice = (override or os.environ.get("LMLAB_DEVICE") or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            choice = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            choice = "mps"
        else:
            choice = "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA GPU is visible")
        device = torch.device(choice)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        label = f"{device} ({torch.cuda.get_device_name(device)}, {_short(dtype)})"
    elif choice == "mps":
        device, dtype = torch.device("mps"), torch.float16
        label = "mps (Apple GPU, fp16)"
    elif choice == "cpu":
        device, dtype = torch.device("cpu"), torch.float32
        label = f"cpu ({torch.get_num_threads()} threads, fp32)"
    else:
        raise ValueError(f"unknown device {choice!r}: use auto, cuda, mps or cpu")
    return DeviceInfo(device, dtype, label)


def _short(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def memory_figures(info: DeviceInfo) -> dict[str, float]:
    """Memory in MiB: allocated/reserved on a GPU, resident set size of this process on CPU."""
    if info.device.type == "cuda":
        return {
            "allocated_mib": torch.cuda.memory_allocated(info.device) / 2**20,
            "reserved_mib": torch.cuda.memory_reserved(info.device) / 2**20,
        }
    try:
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    except ImportError:  # Windows
        return {}
