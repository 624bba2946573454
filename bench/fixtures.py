"""Data the turn and websocket benchmarks search: a catalog of embedded synthetic product photos."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from bench.ingest import make_photo

COLOURS = ["red", "blue", "green", "black", "white", "yellow", "brown", "grey"]
KINDS = ["mug", "shoe", "jacket", "lamp", "bag", "chair", "hat", "vase"]


def bench_catalog(items: int, *, seed: int = 0, size: int = 160) -> Any:
    """A public catalog of ``items`` photos, imported and embedded through the product services
    (in this process: the figures of interest come later)."""
    from catalog.services import catalogs, embedding, ingest, sources

    rng = np.random.default_rng(seed)
    catalog, _ = catalogs.ensure_catalog(
        "bench", f"bench-{seed}-{items}", shop_name="Bench", name="Bench catalog"
    )
    candidates = []
    for i in range(items):
        buffer = io.BytesIO()
        make_photo(rng, size).save(buffer, format="JPEG", quality=85)
        title = f"{COLOURS[i % len(COLOURS)]} {KINDS[(i // len(COLOURS)) % len(KINDS)]} {i}"
        candidates.append(sources.from_bytes(f"p{i}.jpg", buffer.getvalue(), title=title))
    report = ingest.import_candidates(catalog, candidates, embed=False)
    ids = [entry["id"] for entry in report.imported]
    for start in range(0, len(ids), 64):
        embedding.embed_items(ids[start : start + 64])
    return catalog


def dialogue(i: int) -> list[str]:
    """A three-message search, different for every ``i``."""
    colour, kind = COLOURS[i % len(COLOURS)], KINDS[(i * 3) % len(KINDS)]
    return [f"a {colour} {kind}", "something more elegant", f"not {COLOURS[(i + 1) % 8]}"]
