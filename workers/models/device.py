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


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere torch
    emulates it, slower than float32. The probes are torch's own, private: False if they move."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)
    except Exception:  # a probe that fails says nothing: stay on float32
        return False


def sentence_dtype(device: str, precision: str = "auto") -> Any:
    """The product-text model's dtype. ``auto``: the GPU's half precision (``pick_dtype``), and on
    a CPU bfloat16 where it runs in hardware: there the sentence model is twice as fast (2.47 ->
    1.24 ms per product title on the ingest bench's CPU), its vectors within cosine 0.998 of
    float32's, and ranking by them unchanged (docs/benchmarks.md). ``fp32``/``bf16`` force it."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return pick_dtype(device)
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def to_unit_rows(features: Any) -> Any:
    """L2-normalise a torch tensor row-wise and return a float32 numpy array.

    Normalising in float32 keeps unit norms exact even when the model ran in half precision.
    """
    import torch

    feats = features.detach().float()
    feats = torch.nn.functional.normalize(feats, dim=-1)
    return feats.cpu().numpy().astype("float32", copy=False)
