"""Text-to-image generation with diffusers (SD-Turbo by default, the tiny pipeline offline)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .batching import MicroBatcher
from .device import pick_dtype

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


class DiffusersGenerator:
    """Any diffusers text-to-image pipeline, loaded with ``AutoPipelineForText2Image``.

    Image ``i`` of a call is drawn from its own ``torch.Generator`` seeded with ``seed + i``, so a
    prompt list and seed always give the same pixels, independent of batch composition (up to the
    float rounding of batched kernels). ``vae`` optionally names a diffusers ``AutoencoderTiny``
    checkpoint (``madebyollin/taesd`` for SD 1.x/2.x and SD-Turbo) that replaces the pipeline's
    VAE: decoding then costs a fraction of the full VAE's, at a small loss of detail.
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
        vae: str = "",
    ) -> None:
        from diffusers import AutoPipelineForText2Image

        self.name = name
        self.device = device
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.default_size = default_size
        dtype = pick_dtype(device)
        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype)
        if vae:
            from diffusers import AutoencoderTiny

            pipe.vae = AutoencoderTiny.from_pretrained(vae, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe.to(device)
        # Diffusers schedulers keep per-call state (timesteps, step index): one call at a time.
        self._lock = threading.Lock()
        down_blocks = len(getattr(pipe.unet.config, "down_block_types", ())) or 1
        self._multiple = int(getattr(pipe, "vae_scale_factor", 8)) * 2 ** (down_blocks - 1)

    def snap(self, size: int | None) -> int:
        """The image side a call with ``size`` produces (``None``: the default size)."""
        # The UNet halves the latent per down block, so sizes must divide evenly all the way; the
        # innermost feature map keeps at least 2x2 values (GroupNorm needs more than one).
        wanted = self.default_size if size is None else size
        return max(2 * self._multiple, round(wanted / self._multiple) * self._multiple)

    def generate(
        self, prompts: Sequence[str], seed: int, size: int | None = None
    ) -> list[Image.Image]:
        return self.generate_seeded(prompts, [int(seed) + i for i in range(len(prompts))], size)

    def generate_seeded(
        self, prompts: Sequence[str], seeds: Sequence[int], size: int | None = None
    ) -> list[Image.Image]:
        """One pipeline call; image ``i`` is drawn from a generator seeded with ``seeds[i]``."""
        import torch

        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if len(prompts) == 0:
            return []
        side = self.snap(size)
        generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
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


class _Image(NamedTuple):
    prompt: str
    seed: int
    side: int


class BatchedGenerator:
    """A ``Generator`` whose concurrent calls share diffusion pipeline calls.

    Concurrent ``generate`` calls for the same image size are merged into one pipeline call (at
    most ``max_batch`` images, a larger single request goes through whole); every image keeps
    its own seed (``seed + i`` of its request), so it depends only on its own prompt and seed, not
    on what it was batched with (up to the float rounding of batched kernels). Steps and guidance
    are the generator's own, so the size is the only parameter that can differ between requests.
    """

    def __init__(
        self, inner: DiffusersGenerator, max_batch: int = 16, window_s: float = 0.005
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self._batcher: MicroBatcher[_Image, list[Image.Image]] = MicroBatcher(
            self._run, max_batch, window_s
        )

    @property
    def batches_run(self) -> int:
        return self._batcher.batches_run

    def _run(self, images: list[_Image]) -> list[Image.Image]:
        if not images:
            return []
        side = images[0].side  # one key per batch: every image has this side
        return self.inner.generate_seeded(
            [i.prompt for i in images], [i.seed for i in images], side
        )

    def generate(
        self, prompts: Sequence[str], seed: int, size: int | None = None
    ) -> list[Image.Image]:
        side = self.inner.snap(size)
        items = [_Image(str(p), int(seed) + i, side) for i, p in enumerate(prompts)]
        return self._batcher(items, key=side)

    def __getattr__(self, attr: str) -> Any:
        # Backend specifics (device, steps...) stay reachable through the wrapper.
        if attr == "inner":  # not set yet (copy/unpickle): avoid infinite recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)
