"""Per-round query vectors of one dialogue for each evaluation mode.

Round k (0-based) of a ChatIR dialogue is ``Dialogue(dialog[0], dialog[1:k+1])``: the caption and
the first k question-answer rounds.

- ``text``: ChatIR's baseline, the rounds joined with ", " (``Dialogue.as_text``), encoded as is.
- ``reformulated``: the LLM's description of the dialogue so far (``Refiner.refine``), encoded.
- ``dar``: the description plus images generated from the LLM's prompts, fused with the paper's
  weights for round k (``ranking.paper_weights``, ``ranking.fuse``): what a live turn does.

With ``split`` the dialogue file already holds one ready-made query per round (PlugIR's and DAR's
released reformulations): ``dialog[k]`` is the text of round k, the refiner is not called, and in
``dar`` mode the images are generated from that text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.evaluation.cache import DiskCache, digest, slug
from retrieval.turn import ranking
from workers.models import grounding
from workers.models.protocols import Dialogue, Refinement

if TYPE_CHECKING:
    from PIL import Image

    from workers.models.protocols import Encoder, Generator, Refiner

MODES = ("text", "reformulated", "dar")


@dataclass
class Counters:
    """Model work done by a run (a fully resumed run does none)."""

    corpus_images_encoded: int = 0
    query_texts_encoded: int = 0
    generated_images_encoded: int = 0
    refinements: int = 0
    images_generated: int = 0
    dialogues_from_cache: int = 0


def round_dialogue(dialog: list[str], k: int) -> Dialogue:
    return Dialogue(caption=dialog[0], rounds=list(dialog[1 : k + 1]))


def generation_seed(base: int, dialogue_index: int, round_index: int) -> int:
    """A fixed seed per dialogue and round, like the live search's per-turn seed."""
    raw = hashlib.sha256(f"{base}:{dialogue_index}:{round_index}".encode()).digest()
    return int.from_bytes(raw[:4], "big") & 0x7FFFFFFF


class QueryBuilder:
    """Builds (rounds x dim) query matrices for one mode, with every model output cached.

    The LLM and the generator load on first use, so a run resumed from a complete cache never
    loads them; cache keys use the configured model names and generation settings instead.
    """

    def __init__(
        self,
        mode: str,
        *,
        split: bool,
        rounds: int,
        images_per_round: int,
        seed: int,
        cache: DiskCache,
        counters: Counters,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (use {', '.join(MODES)})")
        from workers.models import config as model_config
        from workers.models.config import model_plan
        from workers.models.registry import get_encoder

        self.mode, self.split, self.rounds = mode, split, rounds
        self.images = images_per_round if mode == "dar" else 0
        self.seed, self.cache, self.counters = seed, cache, counters
        self.encoder: Encoder = get_encoder()
        model_settings = model_config.model_settings()
        plan = model_plan(model_settings)
        self.needs_llm = mode in ("reformulated", "dar") and not split
        self.refiner_name = f"{plan.llm_backend}:{plan.llm_name}" if self.needs_llm else None
        # Everything that changes the pixels of a generated image.
        self.generator_id: dict[str, Any] | None = (
            {
                "name": plan.generator_name,
                "size": plan.gen_size,
                "steps": plan.gen_steps,
                "guidance": model_settings.gen_guidance,
            }
            if self.images
            else None
        )
        self._refiner: Refiner | None = None
        self._generator: Generator | None = None
        self.key = digest(
            mode,
            split,
            rounds,
            self.encoder.name,
            self.refiner_name,
            self.generator_id,
            images_per_round if self.needs_llm or self.images else 0,
            seed if self.images else None,
            [ranking.paper_weights(k).as_dict() for k in range(rounds)] if self.images else None,
        )

    def config(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "encoder": self.encoder.name,
            "refiner": self.refiner_name,
            "generator": self.generator_id,
            "images_per_round": self.images,
        }

    def refiner(self) -> Refiner:
        if self._refiner is None:
            from workers.models.registry import get_refiner

            self._refiner = get_refiner()
        return self._refiner

    def generator(self) -> Generator:
        if self._generator is None:
            from workers.models.registry import get_generator

            self._generator = get_generator()
        return self._generator

    def vectors(self, index: int, dialog: list[str]) -> np.ndarray:
        """The query vector of every round of one dialogue (cached per dialogue)."""
        name = f"{index}-{digest(dialog)[:12]}.npy"
        cached = self.cache.load_array("queries", self.mode, self.key, name)
        if cached is not None and cached.shape[0] == self.rounds:
            self.counters.dialogues_from_cache += 1
            return cached
        descriptions: list[str] = []
        prompts: list[list[str]] = []
        for k in range(self.rounds):
            text, round_prompts = self._round_text(dialog, k)
            descriptions.append(text)
            prompts.append(round_prompts)
        text_vecs = self.encoder.encode_texts(descriptions)
        self.counters.query_texts_encoded += len(descriptions)
        rows = []
        for k in range(self.rounds):
            if self.mode != "dar":
                rows.append(np.asarray(text_vecs[k], dtype=np.float32))
                continue
            images = self._generated(prompts[k], generation_seed(self.seed, index, k))
            gen_vecs = self.encoder.encode_images(images) if images else None
            self.counters.generated_images_encoded += len(images)
            rows.append(ranking.fuse(text_vecs[k], gen_vecs, ranking.paper_weights(k)))
        matrix = np.stack(rows).astype(np.float32)
        self.cache.save_array(matrix, "queries", self.mode, self.key, name)
        return matrix

    def _round_text(self, dialog: list[str], k: int) -> tuple[str, list[str]]:
        """The text query of round k and the generation prompts (dar only)."""
        if self.split:
            return dialog[k], [dialog[k]] * self.images
        dialogue = round_dialogue(dialog, k)
        if self.mode == "text":
            return dialogue.as_text(), []
        refinement = self._refined(dialogue)
        return refinement.description, refinement.prompts[: self.images]

    def _refined(self, dialogue: Dialogue) -> Refinement:
        assert self.refiner_name is not None
        n = max(self.images, 1)
        folder = f"refinements/{slug(self.refiner_name)}"
        key = digest(self.refiner_name, dialogue.caption, dialogue.rounds, n)
        cached = self.cache.load_json(folder, f"{key}.json")
        if isinstance(cached, dict) and isinstance(cached.get("description"), str):
            refinement = Refinement(
                cached["description"],
                list(cached.get("prompts") or []),
                bool(cached.get("fallback")),
            )
        else:
            refinement = self.refiner().refine(dialogue, n)
            self.counters.refinements += 1
            self.cache.save_json(
                {
                    "description": refinement.description,
                    "prompts": list(refinement.prompts),
                    "fallback": refinement.fallback,
                },
                folder,
                f"{key}.json",
            )
        return grounding.usable(refinement, dialogue, n)

    def _generated(self, prompts: list[str], seed: int) -> list[Image.Image]:
        if not prompts or self.generator_id is None:
            return []
        folder = f"generated/{slug(self.generator_id['name'])}"
        key = digest(self.generator_id, prompts, seed)
        images = self.cache.load_images(len(prompts), folder, key)
        if images is None:
            images = [img.convert("RGB") for img in self.generator().generate(prompts, seed)]
            self.counters.images_generated += len(images)
            self.cache.save_images(images, folder, key)
        return images
