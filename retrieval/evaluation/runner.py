"""``manage.py evaluate``: the ChatIR / PlugIR / DAR evaluation protocol over one code path.

1. the corpus goes into a catalog and its image vectors into the vector table (``corpus``);
2. for every mode, dialogue and round a query vector is built (``queries``), as a live turn would;
3. the target's 0-based rank is read from the live ranking: ``ranking.positions`` counts the
   items ``ranking.rank(exact=True)`` puts before it (same SQL expression and tie-break), or,
   with ``use_index``, its place in ``ranking.rank(exact=False)`` through the HNSW index;
4. ``protocol`` turns the ranks into Hits/Recall/BRI; outputs go to the --out folder.

Models load only when ``run`` is called (this module is imported by the command only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.db import connections
from tqdm import tqdm

from catalog.models import ItemEmbedding
from catalog.services import vectors
from retrieval.evaluation import corpus as corpus_mod
from retrieval.evaluation import protocol
from retrieval.evaluation.cache import DiskCache, write_atomic
from retrieval.evaluation.plot import hits_plot
from retrieval.evaluation.queries import MODES, Counters, QueryBuilder
from retrieval.turn import ranking

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Bad input or options; the message says what to fix."""


@dataclass
class Options:
    dialogs: Path
    out: Path
    modes: list[str] = field(default_factory=lambda: ["text"])
    corpus: Path | None = None
    images: Path | None = None
    catalog: str | None = None
    split: bool = False
    max_dialogs: int | None = None
    rounds: int = 11
    images_per_round: int = 1
    seed: int = 0
    cache: Path | None = None
    use_index: bool = False
    index_depth: int = 1000
    jobs: int = 1
    batch_size: int = 32
    progress: bool = True


@dataclass
class Result:
    ranks: dict[str, dict[str, list[int]]]  # mode -> dialogue index -> rank per round
    metrics: dict[str, Any]
    counters: Counters
    files: list[Path]


def check_options(options: Options) -> None:
    if not options.modes:
        raise EvaluationError("give at least one --mode")
    unknown = [m for m in options.modes if m not in MODES]
    if unknown:
        raise EvaluationError(f"unknown mode(s) {', '.join(unknown)}: use {', '.join(MODES)}")
    if len(set(options.modes)) != len(options.modes):
        raise EvaluationError("each --mode once")
    if (options.corpus is None) == (options.catalog is None):
        raise EvaluationError("give either --corpus (with --images) or --catalog")
    if options.corpus is not None and options.images is None:
        raise EvaluationError("--corpus needs --images, the folder its paths are relative to")
    if options.images is not None and not options.images.is_dir():
        raise EvaluationError(f"--images {options.images} is not a folder")
    if options.rounds < 1:
        raise EvaluationError("--rounds must be at least 1")
    if options.images_per_round < 0 or options.jobs < 1 or options.index_depth < 10:
        raise EvaluationError("--images-per-round >= 0, --jobs >= 1 and --index-depth >= 10")
    if options.max_dialogs is not None and options.max_dialogs < 1:
        raise EvaluationError("--max-dialogs must be at least 1")


def read_dialogs(path: Path, rounds: int, limit: int | None) -> list[dict[str, Any]]:
    """ChatIR's format: a list of {"img": target path, "dialog": [caption, round 1, ...]}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read the dialogues {path}: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise EvaluationError(f"{path} must be a non-empty JSON list of dialogues")
    data = data[:limit] if limit else data
    for i, entry in enumerate(data):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("img"), str)
            and isinstance(entry.get("dialog"), list)
            and all(isinstance(t, str) for t in entry["dialog"])
        )
        if not ok:
            raise EvaluationError(f"dialogue {i} of {path} is not {{'img': str, 'dialog': [str]}}")
        if len(entry["dialog"]) < rounds:
            raise EvaluationError(
                f"dialogue {i} of {path} has {len(entry['dialog'])} entries;"
                f" --rounds {rounds} needs {rounds}"
            )
    return data


def target_ranks(
    catalog_id: int,
    model_name: str,
    queries: np.ndarray,
    target: int,
    *,
    use_index: bool = False,
    depth: int = 1000,
) -> list[int]:
    """0-based rank of ``target`` in the live ranking of each query.

    Exact: the item count ``ranking.rank(exact=True)`` would place before the target. With the
    index: the target's place among the ``depth`` results of ``ranking.rank(exact=False)``;
    a target the index does not return there gets ``max(depth, exact rank)``, since the live
    search would not show it either.
    """
    exact = ranking.positions(
        catalog_id=catalog_id,
        model_name=model_name,
        queries=queries,
        targets=[target] * len(queries),
    )
    if any(p is None for p in exact):
        raise EvaluationError(f"target item {target} has no vector from {model_name}")
    ranks = [int(p) for p in exact if p is not None]
    if not use_index:
        return ranks
    out = []
    for query, exact_rank in zip(queries, ranks, strict=True):
        hits = ranking.rank(catalog_id=catalog_id, model_name=model_name, query=query, k=depth)
        ids = [h.item_id for h in hits]
        out.append(ids.index(target) if target in ids else max(depth, exact_rank))
    return out


class _Ranker:
    """Runs ``target_ranks`` inline, or on ``jobs`` threads each with its own DB connection
    (the count queries are CPU-bound in PostgreSQL, so parallel connections scale)."""

    def __init__(self, jobs: int, work: Callable[[np.ndarray, int], list[int]]) -> None:
        self.work = work
        self.pool = ThreadPoolExecutor(max_workers=jobs) if jobs > 1 else None
        self.pending: dict[int, Future[list[int]]] = {}
        self.done: dict[int, list[int]] = {}

    def submit(
        self, index: int, queries: np.ndarray, target: int, tick: Callable[[], object]
    ) -> None:
        if self.pool is None:
            self.done[index] = self.work(queries, target)
            tick()
            return
        future = self.pool.submit(self._threaded, queries, target)
        future.add_done_callback(lambda _: tick())
        self.pending[index] = future

    def _threaded(self, queries: np.ndarray, target: int) -> list[int]:
        try:
            return self.work(queries, target)
        finally:
            connections.close_all()  # this thread's connection; the pool thread may idle long

    def results(self) -> dict[int, list[int]]:
        try:
            for index, future in self.pending.items():
                self.done[index] = future.result()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        return dict(sorted(self.done.items()))


def _open_corpus(options: Options) -> corpus_mod.Corpus:
    if options.catalog is not None:
        return corpus_mod.catalog_by_slug(options.catalog)
    assert options.corpus is not None and options.images is not None
    paths = corpus_mod.read_corpus_list(options.corpus)
    return corpus_mod.catalog_for_list(paths, options.images, options.corpus.name)


def _embed_corpus(
    options: Options,
    corpus: corpus_mod.Corpus,
    encoder: Any,
    cache: DiskCache,
    counters: Counters,
) -> None:
    with tqdm(total=len(corpus), desc="corpus", unit="img", disable=not options.progress) as bar:
        if options.catalog is not None:
            encoded = corpus_mod.embed_catalog_corpus(
                corpus, encoder, batch_size=options.batch_size, progress=bar.update
            )
        else:
            assert options.images is not None
            encoded = corpus_mod.embed_list_corpus(
                corpus,
                options.images,
                encoder,
                cache,
                batch_size=options.batch_size,
                progress=bar.update,
            )
    counters.corpus_images_encoded += encoded


def run(options: Options) -> Result:
    check_options(options)
    dialogs = read_dialogs(options.dialogs, options.rounds, options.max_dialogs)
    cache = DiskCache(options.cache)
    counters = Counters()
    try:
        corpus = _open_corpus(options)
        # Every target is matched before the (long) corpus embedding starts.
        targets: list[int] = []
        for i, entry in enumerate(dialogs):
            found = corpus.find(entry["img"])
            if found is None:
                raise EvaluationError(f"dialogue {i}: target {entry['img']!r} is not in the corpus")
            targets.append(corpus.item_ids[found])
        from workers.models.registry import get_encoder

        encoder = get_encoder()
        _embed_corpus(options, corpus, encoder, cache, counters)
        if options.use_index:
            vectors.ensure_index(ItemEmbedding.Space.IMAGE, encoder.name, encoder.dim)
    except corpus_mod.CorpusError as exc:
        raise EvaluationError(str(exc)) from exc

    def work(queries: np.ndarray, target: int) -> list[int]:
        return target_ranks(
            corpus.catalog.pk,
            encoder.name,
            queries,
            target,
            use_index=options.use_index,
            depth=options.index_depth,
        )

    all_ranks: dict[str, dict[str, list[int]]] = {}
    summaries: dict[str, Any] = {}
    builders: dict[str, dict[str, Any]] = {}
    for mode in options.modes:
        builder = QueryBuilder(
            mode,
            split=options.split,
            rounds=options.rounds,
            images_per_round=options.images_per_round,
            seed=options.seed,
            cache=cache,
            counters=counters,
        )
        builders[mode] = builder.config()
        ranker = _Ranker(options.jobs, work)
        with tqdm(total=len(dialogs), desc=mode, unit="dlg", disable=not options.progress) as bar:
            for i, entry in enumerate(dialogs):
                queries = builder.vectors(i, entry["dialog"][: options.rounds])
                ranker.submit(i, queries, targets[i], lambda: bar.update(1))
            by_index = ranker.results()
        all_ranks[mode] = {str(i): ranks for i, ranks in by_index.items()}
        summaries[mode] = protocol.summarize([by_index[i] for i in range(len(dialogs))])

    metrics = {
        "config": _config(options, encoder.name, corpus, builders),
        "work": asdict(counters),
        "modes": summaries,
    }
    files = _write(options, all_ranks, metrics)
    return Result(all_ranks, metrics, counters, files)


def _config(
    options: Options,
    encoder_name: str,
    corpus: corpus_mod.Corpus,
    builders: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "dialogs": str(options.dialogs),
        "max_dialogs": options.max_dialogs,
        "corpus": str(options.corpus) if options.corpus else None,
        "images": str(options.images) if options.images else None,
        "catalog": corpus.catalog.slug,
        "corpus_size": len(corpus),
        "split": options.split,
        "rounds": options.rounds,
        "seed": options.seed,
        "ranking": f"hnsw index, depth {options.index_depth}" if options.use_index else "exact",
        "encoder": encoder_name,
        "weights": [ranking.paper_weights(k).as_dict() for k in range(options.rounds)],
        "modes": builders,
    }


def _write(
    options: Options, all_ranks: dict[str, dict[str, list[int]]], metrics: dict[str, Any]
) -> list[Path]:
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    files = []

    def dump(name: str, text: str) -> None:
        path = out / name
        write_atomic(path, text.encode())
        files.append(path)

    for mode, ranks in all_ranks.items():
        dump(f"ranks_{mode}.json", _ranks_json(ranks))
    # ranks.json: the first mode given, the single file ChatIR-style tools expect.
    dump("ranks.json", _ranks_json(all_ranks[options.modes[0]]))
    dump("metrics.json", json.dumps(metrics, indent=1) + "\n")
    hits = {mode: summary["hits@10"] for mode, summary in metrics["modes"].items()}
    files.append(hits_plot(hits, out / "hits_at_10.png"))
    return files


def _ranks_json(ranks: dict[str, list[int]]) -> str:
    """One dialogue per line: readable and diffable for 2,064 dialogues."""
    lines = [f"{json.dumps(index)}: {json.dumps(values)}" for index, values in ranks.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"
