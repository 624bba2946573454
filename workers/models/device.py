"""Device and precision choice, shared by every backend."""

from __future__ import annotations

import os
from typing import Any

# At most this many cores: one torch thread (see ``ModelSettings.torch_threads``).
SMALL_MACHINE_CORES = 2


def pick_device(preference: str = "auto") -> str:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is a configuration error."""
    import torch

    if preference == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if preference == "cuda" and not available:
        raise RuntimeError("DAR_DEVICE=cuda but torch sees no CUDA device")
    return "cuda" if available else "cpu"


def cpu_threads(configured: int, cores: int | None = None) -> int | None:
    """torch's intra-op threads for CPU work: ``configured``, or for 0 one thread on a machine of
    at most ``SMALL_MACHINE_CORES`` cores; None leaves torch's default."""
    if configured:
        return configured
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return 1 if cores <= SMALL_MACHINE_CORES else None


def configure_threads(device: str, configured: int) -> None:
    """Apply ``cpu_threads`` for a CPU device (process-wide; a GPU's kernels do not use them)."""
    import torch

    threads = cpu_threads(configured) if device == "cpu" else configured or None
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def pick_dtype(device: str) -> Any:
    """Half precision on GPUs (bf16 where supported: no fp16 overflow in LLM activations), float32
    on CPU, where half precision is slow or unsupported."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def to_unit_rows(features: Any) -> Any:
    """L2-normalise a torch tensor row-wise and return a float32 numpy array.

    Normalising in float32 keeps unit norms exact even when the model ran in half precision.
    """
    import torch

    feats = features.detach().float()
    feats = torch.nn.functional.normalize(feats, dim=-1)
    return feats.cpu().numpy().astype("float32", copy=False)
