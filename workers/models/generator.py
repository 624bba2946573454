"""Text-to-image generation with diffusers (SD-Turbo by default, the tiny pipeline offline)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .device import pick_dtype

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


class DiffusersGenerator:
    """Any diffusers text-to-image pipeline, loaded with ``AutoPipelineForText2Image``.

    Image ``i`` of a call is drawn from its own ``torch.Generator`` seeded with ``seed + i``, so a
    prompt list and seed always give the same pixels, independent of batch composition.
    """

    def __init__(
        self,
        source: str,
        *,
        name: str,
        device: str = "cpu",
        steps: int = 1,
        guidance_scale: float = 0.0,
        default_size: int = 512,
    ) -> None:
        from diffusers import AutoPipelineForText2Image

        self.name = name
        self.device = device
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.default_size = default_size
        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=pick_dtype(device))
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe.to(device)
        # Diffusers schedulers keep per-call state (timesteps, step index): one call at a time.
        self._lock = threading.Lock()
        down_blocks = len(getattr(pipe.unet.config, "down_block_types", ())) or 1
        self._multiple = int(getattr(pipe, "vae_scale_factor", 8)) * 2 ** (down_blocks - 1)

    def _snap(self, size: int | None) -> int:
        # The UNet halves the latent per down block, so sizes must divide evenly all the way; the
        # innermost feature map keeps at least 2x2 values (GroupNorm needs more than one).
        wanted = self.default_size if size is None else size
        return max(2 * self._multiple, round(wanted / self._multiple) * self._multiple)

    def generate(
        self, prompts: Sequence[str], seed: int, size: int | None = None
    ) -> list[Image.Image]:
        import torch

        if len(prompts) == 0:
            return []
        side = self._snap(size)
        generators = [
            torch.Generator(device=self.device).manual_seed(int(seed) + i)
            for i in range(len(prompts))
        ]
        with self._lock, torch.inference_mode():
            result = self._pipe(
                prompt=[str(p) for p in prompts],
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                height=side,
                width=side,
                generator=generators,
            )
        return list(result.images)
