"""The diffusers generator on the tiny offline Stable Diffusion pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

# Shared fixtures (offline_dir, offline_manifest, model_env) live in tests/conftest_models.py.
pytest_plugins = ["tests.conftest_models"]


@pytest.fixture(scope="module")
def generator(offline_manifest: dict[str, Any]) -> Any:
    from workers.models.generator import DiffusersGenerator

    spec = offline_manifest["generator"]
    return DiffusersGenerator(
        spec["dir"], name=spec["name"], steps=spec["steps"], default_size=spec["size"]
    )


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_seed_same_pixels_other_seed_other_pixels(generator: Any) -> None:
    prompts = ["a red summer dress", "blue running shoes"]
    first = generator.generate(prompts, seed=7)
    again = generator.generate(prompts, seed=7)
    other = generator.generate(prompts, seed=8)
    assert [im.size for im in first] == [(64, 64), (64, 64)]
    assert all(im.mode == "RGB" for im in first)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(first[0]), _pixels(other[0]))
    # Within one call every image has its own seed, so equal prompts still differ.
    twins = generator.generate(["a chair", "a chair"], seed=1)
    assert not np.array_equal(_pixels(twins[0]), _pixels(twins[1]))


def test_image_i_uses_seed_plus_i(generator: Any) -> None:
    """An image does not depend on what else was in the batch (only float rounding may)."""
    batch = generator.generate(["a hat", "a scarf"], seed=3)
    alone = generator.generate(["a scarf"], seed=4)
    assert np.abs(_pixels(batch[1]) - _pixels(alone[0])).max() <= 2


def test_sizes_snap_to_valid_multiples(generator: Any) -> None:
    assert generator.generate(["a lamp"], seed=0, size=128)[0].size == (128, 128)
    # The tiny UNet needs multiples of 16 pixels (8x VAE, one UNet downsample).
    assert generator.generate(["a lamp"], seed=0, size=70)[0].size == (64, 64)
    assert generator.generate(["a lamp"], seed=0, size=1)[0].size == (32, 32)


def test_awkward_prompts(generator: Any) -> None:
    assert generator.generate([], seed=0) == []
    images = generator.generate(["", "robe 👗🌸 à fleurs", "日本語", "word " * 2000], seed=0)
    assert len(images) == 4


def test_a_tiny_autoencoder_replaces_the_vae(
    offline_manifest: dict[str, Any], generator: Any, tmp_path: Any
) -> None:
    """DAR_GENERATOR_VAE (e.g. madebyollin/taesd): an AutoencoderTiny checkpoint decodes."""
    import torch
    from diffusers import AutoencoderTiny

    from workers.models.generator import DiffusersGenerator

    torch.manual_seed(0)
    taesd: Any = AutoencoderTiny(  # TAESD's architecture (8x, 4 latent channels) at toy width
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    taesd.save_pretrained(tmp_path / "taesd")
    spec = offline_manifest["generator"]
    tiny = DiffusersGenerator(
        spec["dir"],
        name=spec["name"],
        steps=spec["steps"],
        default_size=spec["size"],
        vae=str(tmp_path / "taesd"),
    )
    assert type(tiny._pipe.vae).__name__ == "AutoencoderTiny"
    first = tiny.generate(["a red summer dress"], seed=7)
    assert first[0].size == (64, 64) and first[0].mode == "RGB"
    assert np.array_equal(_pixels(first[0]), _pixels(tiny.generate(["a red summer dress"], 7)[0]))
    usual = generator.generate(["a red summer dress"], seed=7)[0]
    assert not np.array_equal(_pixels(first[0]), _pixels(usual))
