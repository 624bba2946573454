"""The search corpus of an evaluation, held in a catalog so that it is ranked like a live search.

``--corpus FILE --images DIR``: the JSON list of image paths becomes an evaluation catalog (shop
``evaluation``, one catalog per corpus list and image folder, private). Its items point at the
images where they are (no copy of 50k files): ``attributes.path`` holds the absolute path and
``source_name`` the listed path; the image field stays empty. Corpus id i is item
``item_ids[i]``. The image vectors are made with the active encoder and stored through
``catalog.services.vectors.store``, the same table and index a live catalog uses.

``--catalog SLUG``: an existing catalog, embedded by the ingest service; corpus ids follow item
ids, and dialogue targets are matched to items by source name (the path at import).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from catalog.models import Catalog, CatalogItem, ItemEmbedding
from catalog.services import catalogs, embedding, vectors
from retrieval.evaluation.cache import DiskCache, digest, slug

if TYPE_CHECKING:
    from workers.models.protocols import Encoder

log = logging.getLogger(__name__)

EVAL_SHOP = "evaluation"
# Corpus embeddings are cached in files of this many images, whatever the encoder batch size,
# so a cache written with one batch size resumes with another.
CHUNK = 1024
_CREATE_BATCH = 2000

Progress = Callable[[int], object]


class CorpusError(ValueError):
    """The corpus, its images or the catalog cannot be used; the message says why."""


@dataclass
class Corpus:
    catalog: Catalog
    item_ids: list[int]  # corpus id -> item id
    names: list[str]  # corpus id -> path as listed (or source name)
    _by_name: dict[str, int] = field(default_factory=dict, repr=False)
    _by_base: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, name in enumerate(self.names):
            key = _normal(name)
            self._by_name.setdefault(key, i)
            self._by_base.setdefault(PurePosixPath(key).name, []).append(i)

    def __len__(self) -> int:
        return len(self.item_ids)

    def find(self, target: str) -> int | None:
        """Corpus id of a dialogue's target path: exact path, else an unambiguous file name."""
        key = _normal(target)
        if key in self._by_name:
            return self._by_name[key]
        same_name = self._by_base.get(PurePosixPath(key).name, [])
        return same_name[0] if len(same_name) == 1 else None


def _normal(path: str) -> str:
    # PurePosixPath drops "." parts and doubled slashes: "./a//b.jpg" and "a/b.jpg" are equal.
    return str(PurePosixPath(path.replace("\\", "/"))).lstrip("/")


# --- reading inputs ------------------------------------------------------------------------------


def read_corpus_list(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorpusError(f"cannot read the corpus list {path}: {exc}") from exc
    if not isinstance(data, list) or not data or not all(isinstance(p, str) and p for p in data):
        raise CorpusError(f"{path} must be a non-empty JSON list of image paths")
    seen: set[str] = set()
    for p in data:
        if _normal(p) in seen:
            raise CorpusError(f"{path} lists {p!r} twice (corpus ids must be distinct images)")
        seen.add(_normal(p))
    return data


def _resolve(paths: Sequence[str], root: Path) -> list[Path]:
    files = [root / p for p in paths]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        shown = ", ".join(missing[:5])
        raise CorpusError(f"{len(missing)} corpus images are missing under {root}: {shown}")
    return files


# --- building the catalog ------------------------------------------------------------------------


def corpus_fingerprint(paths: Sequence[str], root: Path) -> str:
    return digest(list(paths), str(root.resolve()))


def catalog_for_list(paths: Sequence[str], root: Path, label: str) -> Corpus:
    """The evaluation catalog of this corpus list and image folder, created on first use."""
    files = _resolve(paths, root)
    fingerprint = corpus_fingerprint(paths, root)
    catalog, _ = catalogs.ensure_catalog(
        EVAL_SHOP,
        f"eval-{fingerprint[:12]}",
        shop_name="Evaluation corpora",
        name=f"Evaluation: {label} ({len(paths)} images)"[:200],
        description=f"Corpus {label}, images under {root.resolve()}",
        is_public=False,
    )
    existing = dict(CatalogItem.objects.filter(catalog=catalog).values_list("source_name", "pk"))
    new = [
        CatalogItem(
            catalog=catalog,
            # No image field: deleting an item deletes its stored file (catalog.signals), and
            # the corpus images are the user's own files, never the product's to delete.
            image="",
            # Keyed by path, not by bytes: two corpus entries with equal bytes must stay two
            # items, because corpus ids are list positions.
            sha256=hashlib.sha256(f"eval-corpus:{name}".encode()).hexdigest(),
            source_name=name[:500],
            attributes={"corpus_index": i, "path": str(file.resolve())},
        )
        for i, (name, file) in enumerate(zip(paths, files, strict=True))
        if name[:500] not in existing
    ]
    created = catalogs.add_items(new, batch_size=_CREATE_BATCH)
    existing.update({item.source_name: item.pk for item in created})
    return Corpus(catalog, [existing[name[:500]] for name in paths], list(paths))


def catalog_by_slug(slug_: str) -> Corpus:
    catalog = Catalog.objects.filter(slug=slug_).first()
    if catalog is None:
        raise CorpusError(f"no catalog with slug {slug_!r}")
    rows = list(
        CatalogItem.objects.filter(catalog=catalog).order_by("pk").values_list("pk", "source_name")
    )
    if not rows:
        raise CorpusError(f"catalog {slug_!r} has no items")
    return Corpus(catalog, [pk for pk, _ in rows], [name or "" for _, name in rows])


# --- embedding -----------------------------------------------------------------------------------


def embedded_ids(corpus: Corpus, model_name: str) -> set[int]:
    return set(
        ItemEmbedding.objects.filter(
            catalog=corpus.catalog, space=ItemEmbedding.Space.IMAGE, model_name=model_name
        ).values_list("item_id", flat=True)
    )


def _load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")  # as the catalog's embedding job does
    except (OSError, Image.DecompressionBombError) as exc:
        raise CorpusError(f"cannot read corpus image {path}: {exc}") from exc


def _chunks(n: int) -> Iterator[range]:
    for start in range(0, n, CHUNK):
        yield range(start, min(n, start + CHUNK))


def embed_list_corpus(
    corpus: Corpus,
    root: Path,
    encoder: Encoder,
    cache: DiskCache,
    *,
    batch_size: int,
    progress: Progress = lambda n: None,
) -> int:
    """Store a vector for every corpus item that lacks one; returns how many images were encoded.

    Vectors come from the cache when a chunk file is there, so a run interrupted while embedding
    50k images resumes where it stopped, and a fresh database refills without the encoder.
    """
    done = embedded_ids(corpus, encoder.name)
    folder = ("corpus", slug(encoder.name), corpus_fingerprint(corpus.names, root))
    encoded = 0
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2))) as pool:
        for chunk in _chunks(len(corpus)):
            missing = [i for i in chunk if corpus.item_ids[i] not in done]
            if not missing:
                progress(len(chunk))
                continue
            name = f"chunk-{chunk.start:07d}.npy"
            matrix = cache.load_array(*folder, name)
            if matrix is None or matrix.shape[0] != len(chunk):
                matrix = _encode([root / corpus.names[i] for i in chunk], encoder, pool, batch_size)
                encoded += len(chunk)
                cache.save_array(matrix, *folder, name)
            rows = [
                (corpus.item_ids[i], corpus.catalog.pk, matrix[i - chunk.start]) for i in missing
            ]
            # Ranking here is exact by default; --use-index builds the index after the load.
            vectors.store(ItemEmbedding.Space.IMAGE, encoder.name, rows, index=False)
            embedding.mark_embedded([r[0] for r in rows])
            progress(len(chunk))
    return encoded


def _encode(
    files: list[Path], encoder: Encoder, pool: ThreadPoolExecutor, batch_size: int
) -> np.ndarray:
    parts = []
    for start in range(0, len(files), batch_size):
        # Decoding JPEGs is the bottleneck next to a GPU: threads decode while PIL drops the GIL.
        images = list(pool.map(_load_rgb, files[start : start + batch_size]))
        parts.append(np.asarray(encoder.encode_images(images), dtype=np.float32))
        for img in images:
            img.close()
    return np.concatenate(parts)


def embed_catalog_corpus(
    corpus: Corpus, encoder: Encoder, *, batch_size: int, progress: Progress = lambda n: None
) -> int:
    """Embed an existing catalog's items that lack a vector of this encoder, with the catalog's
    own embedding job (``catalog.services.embedding.embed_items``)."""
    done = embedded_ids(corpus, encoder.name)
    missing = [pk for pk in corpus.item_ids if pk not in done]
    progress(len(corpus) - len(missing))
    failed: dict[int, str] = {}
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        result = embedding.embed_items(batch, encoder=encoder)
        failed.update(result.failed)
        progress(len(batch))
    if failed:
        first = next(iter(failed.items()))
        raise CorpusError(f"{len(failed)} catalog items could not be embedded, e.g. {first}")
    return len(missing)
