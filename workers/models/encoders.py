"""Joint image/text encoders: open_clip models and BLIP's image-text contrastive (ITC) head.

Both return float32, L2-normalised rows. Inputs are processed in chunks of ``batch_size`` so a
caller can hand over a whole catalogue page; text longer than the model's context is truncated by
the tokenizer rather than rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .device import pick_dtype, sentence_dtype, to_unit_rows

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# BLIP's text encoder has 512 positions; ChatIR-style dialogues rarely need more than this and the
# cost of attention grows quadratically, so longer dialogues are cut here.
BLIP_MAX_TEXT_TOKENS = 256


# What a CLIP-family model resizes its input to when it does not say (ViT-B/32's 224).
DEFAULT_IMAGE_SIZE = 224


def _shorter_side(size: object) -> int:
    """A model's input size (an int or a (height, width) pair) as the shorter side, in pixels."""
    if isinstance(size, (tuple, list)):
        return int(min(size))
    return int(size) if isinstance(size, int) else DEFAULT_IMAGE_SIZE


def _as_rgb(image: Image.Image) -> Image.Image:
    # Catalogue images arrive as RGBA, palette or greyscale; every model expects 3 channels.
    return image if image.mode == "RGB" else image.convert("RGB")


def _as_text(text: object) -> str:
    return text if isinstance(text, str) else str(text)


def _chunked(
    items: Sequence[Any], size: int, run: Callable[[list[Any]], np.ndarray], dim: int
) -> np.ndarray:
    if len(items) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    parts = [run(list(items[i : i + size])) for i in range(0, len(items), size)]
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


class OpenClipEncoder:
    """Any open_clip architecture with a pretrained tag, a checkpoint file or a saved model dir.

    ``source`` may be: a pretrained tag (``laion2b_s34b_b79k``); a directory written by open_clip's
    ``save_for_hf`` (``open_clip_config.json`` + weights, loaded through the ``local-dir:`` schema);
    or a checkpoint file, in which case an unknown ``arch`` is registered from ``<arch>.json`` next
    to it with ``open_clip.add_model_config``.
    """

    def __init__(
        self, arch: str, source: str, *, name: str, device: str = "cpu", batch_size: int = 64
    ) -> None:
        import open_clip
        import torch

        self.name = name
        self.device = device
        self.batch_size = batch_size
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(pick_dtype(device), "fp32")
        path = Path(source).expanduser()
        if path.is_dir():
            model_name, pretrained = f"local-dir:{path}", None
        else:
            model_name, pretrained = arch, source
            if path.is_file():
                pretrained = str(path)
                config = path.with_name(f"{arch}.json")
                if arch not in open_clip.list_models() and config.is_file():
                    open_clip.add_model_config(config)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, precision=precision, device=device
        )
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(model_name)
        self.image_size = _shorter_side(getattr(model.visual, "image_size", DEFAULT_IMAGE_SIZE))
        out_dim = getattr(model.visual, "output_dim", None)
        self.dim = int(out_dim) if out_dim else int(self._encode_text_batch([""]).shape[1])

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        # The open_clip tokenizers truncate to the context length (keeping the end-of-text token).
        tokens = self._tokenizer([_as_text(t) for t in texts]).to(self.device)
        with torch.inference_mode():
            return to_unit_rows(self._model.encode_text(tokens))

    def _encode_image_batch(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        pixels = torch.stack([self._preprocess(_as_rgb(im)) for im in images])
        dtype = next(self._model.parameters()).dtype
        with torch.inference_mode():
            feats = self._model.encode_image(pixels.to(self.device, dtype=dtype))
            return to_unit_rows(feats)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _chunked(texts, self.batch_size, self._encode_text_batch, self.dim)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return _chunked(images, self.batch_size, self._encode_image_batch, self.dim)


class BlipEncoder:
    """BLIP image-text retrieval model (``BlipForImageTextRetrieval``) used through its ITC head.

    This is the retrieval encoder ChatIR and DAR report results with: the vision CLS token goes
    through ``vision_proj``, the text encoder's CLS (text-only mode) through ``text_proj``.
    """

    def __init__(
        self,
        source: str,
        *,
        name: str,
        device: str = "cpu",
        batch_size: int = 64,
        max_text_tokens: int = BLIP_MAX_TEXT_TOKENS,
    ) -> None:
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        self.name = name
        self.device = device
        self.batch_size = batch_size
        self._dtype = pick_dtype(device)
        # from_pretrained's decorated signature confuses type checkers; it takes an id or path.
        load: Any = BlipForImageTextRetrieval.from_pretrained
        model = load(source, dtype=self._dtype)
        self._model = model.to(device).eval()
        self._processor = BlipProcessor.from_pretrained(source)
        size = getattr(self._processor.image_processor, "size", None) or {}
        self.image_size = _shorter_side(
            (size.get("height", DEFAULT_IMAGE_SIZE), size.get("width", DEFAULT_IMAGE_SIZE))
        )
        positions = int(getattr(model.config.text_config, "max_position_embeddings", 512))
        self._max_tokens = min(max_text_tokens, positions)
        self.dim = int(model.config.image_text_hidden_size)

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self._processor.tokenizer(
            [_as_text(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self._max_tokens,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            hidden = self._model.text_encoder(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            return to_unit_rows(self._model.text_proj(hidden[:, 0, :]))

    def _encode_image_batch(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        pixels = self._processor.image_processor(
            [_as_rgb(im) for im in images], return_tensors="pt"
        )["pixel_values"].to(self.device, dtype=self._dtype)
        with torch.inference_mode():
            hidden = self._model.vision_model(pixel_values=pixels).last_hidden_state
            return to_unit_rows(self._model.vision_proj(hidden[:, 0, :]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _chunked(texts, self.batch_size, self._encode_text_batch, self.dim)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return _chunked(images, self.batch_size, self._encode_image_batch, self.dim)


class SentenceEmbedder:
    """sentence-transformers model (all-MiniLM-L6-v2 by default) for product texts."""

    def __init__(
        self,
        source: str,
        *,
        name: str,
        device: str = "cpu",
        batch_size: int = 64,
        precision: str = "auto",
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.batch_size = batch_size
        self.dtype = sentence_dtype(device, precision)
        self._model = SentenceTransformer(source, device=device)
        self._model.to(self.dtype)
        # Renamed in sentence-transformers 6; older releases only have the long name.
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim() or 0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        # sentence-transformers truncates to the model's max_seq_length itself.
        vectors = self._model.encode(
            [_as_text(t) for t in texts],
            batch_size=self.batch_size,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        # Normalised here, in float32: in bfloat16 unit norms are off by up to 1e-3.
        return np.asarray(to_unit_rows(vectors), dtype=np.float32)
