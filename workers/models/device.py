"""Device and precision choice, shared by every backend."""

from __future__ import annotations

from typing import Any


def pick_device(preference: str = "auto") -> str:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is a configuration error."""
    import torch

    if preference == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if preference == "cuda" and not available:
        raise RuntimeError("DAR_DEVICE=cuda but torch sees no CUDA device")
    return "cuda" if available else "cpu"


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
