"""Interfaces of the model layer and the small value types they exchange.

The services depend on these protocols only, so tests and deployments can swap backends (open_clip
or BLIP, a local LLM or an OpenAI-compatible server, SD-Turbo or the tiny offline pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class Dialogue:
    """A ChatIR-style dialogue: the shopper's first caption followed by one string per round
    (typically "question? answer")."""

    caption: str
    rounds: list[str] = field(default_factory=list)
    # Clarifying questions already asked in this dialogue (never asked again).
    questions: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        # The ChatIR baseline query: caption and rounds concatenated with ", ".
        parts = [self.caption.strip(), *(r.strip() for r in self.rounds)]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Refinement:
    """What the LLM made of a dialogue: a description for text-to-image retrieval and the prompts
    for the diffusion model. ``fallback`` is True when both come from the raw dialogue text because
    the LLM failed or answered something unusable."""

    description: str
    prompts: list[str]
    fallback: bool = False
    # Why the description was repaired or replaced by the grounded fallback ("" when kept).
    note: str = ""


@runtime_checkable
class Encoder(Protocol):
    """Joint image/text embedding model; every output row is float32 and L2-normalised."""

    name: str
    dim: int
    # The shorter side, in pixels, its preprocessing resizes an image to: a stored picture need
    # not be decoded any larger (JPEG's draft scaling) to be embedded.
    image_size: int

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Text-only sentence embedder for product texts (all-MiniLM-L6-v2)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class Refiner(Protocol):
    """LLM that rewrites a dialogue into a description plus k generation prompts, and asks the
    shopper a clarifying question."""

    name: str

    def refine(self, dialogue: Dialogue, k: int) -> Refinement: ...

    def ask(self, dialogue: Dialogue, candidates: Sequence[str]) -> str | None: ...


@runtime_checkable
class Generator(Protocol):
    """Text-to-image model; the same prompts and seed always give the same pixels."""

    name: str

    def generate(
        self, prompts: Sequence[str], seed: int, size: int | None = None
    ) -> list[Image.Image]: ...
