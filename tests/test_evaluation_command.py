"""`manage.py evaluate` on the offline models: ranks equal the live ranking, metrics follow from
the ranks, an interrupted run resumes from its cache, and bad input fails clearly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image, ImageDraw

from catalog.models import Catalog, ItemEmbedding
from catalog.services import vectors
from retrieval.evaluation import protocol
from retrieval.turn import ranking
from tests.factories import CatalogFactory, CatalogItemFactory, png_bytes
from workers.models.protocols import Dialogue

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["square", "circle"]


@pytest.fixture
def corpus_files(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """12 distinct pictures in a COCO-like layout and the JSON list of their paths."""
    root = tmp_path / "images"
    (root / "unlabeled2017").mkdir(parents=True)
    names = []
    for i, (color, shape) in enumerate((c, s) for s in SHAPES for c in COLORS):
        img = Image.new("RGB", (64, 64), "white")
        draw = ImageDraw.Draw(img)
        box = (8 + i % 3, 8, 56, 56 - i % 4)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=color)
        name = f"unlabeled2017/{i:012d}.jpg"
        img.save(root / name, quality=95)
        names.append(name)
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(names))
    return corpus, root, names


def _dialog(color: str, shape: str) -> list[str]:
    answers = [f"is it {color}? yes", f"is it a {shape}? yes", "is the background white? yes"]
    return [f"a {color} {shape}"] + [answers[k % 3] for k in range(10)]


def _write_dialogs(tmp_path: Path, names: list[str]) -> tuple[Path, list[dict[str, Any]]]:
    dialogs = [
        {"img": names[0], "dialog": _dialog("red", "square")},
        {"img": names[8], "dialog": _dialog("blue", "circle")},
        {"img": names[5], "dialog": _dialog("orange", "square")},
    ]
    path = tmp_path / "dialogs.json"
    path.write_text(json.dumps(dialogs))
    return path, dialogs


def _read(out: Path, name: str) -> Any:
    return json.loads((out / name).read_text())


def _catalog(metrics: dict[str, Any]) -> Catalog:
    return Catalog.objects.get(slug=metrics["config"]["catalog"])


def _live_position(catalog: Catalog, model_name: str, query: np.ndarray, target: int) -> int:
    size = catalog.items.count()
    hits = ranking.rank(
        catalog_id=catalog.pk, model_name=model_name, query=query, k=size, exact=True
    )
    assert len(hits) == size
    return [h.item_id for h in hits].index(target)


@pytest.mark.django_db
def test_positions_agree_with_the_full_live_ranking_ties_included() -> None:
    rng = np.random.default_rng(7)
    catalog = CatalogFactory.create()
    items = [CatalogItemFactory.create(catalog=catalog) for _ in range(15)]
    vecs = rng.normal(size=(15, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[4] = vecs[9] = vecs[2]  # equal scores: the item id decides, in both
    vectors.store(
        "image", "enc", [(it.pk, catalog.pk, v) for it, v in zip(items, vecs, strict=True)]
    )
    queries = np.vstack([rng.normal(size=(3, 8)), vecs[2:3]]).astype(np.float32)
    for query in queries:
        expected = [_live_position(catalog, "enc", query, it.pk) for it in items]
        got = ranking.positions(
            catalog_id=catalog.pk,
            model_name="enc",
            queries=np.repeat(query[None], len(items), axis=0),
            targets=[it.pk for it in items],
        )
        assert got == expected
        assert sorted(expected) == list(range(len(items)))
    other = CatalogItemFactory.create()
    assert ranking.positions(
        catalog_id=catalog.pk, model_name="enc", queries=queries[:1], targets=[other.pk]
    ) == [None]


@pytest.mark.django_db
def test_text_and_dar_ranks_match_the_live_ranking_and_resume_from_the_cache(
    tmp_path: Path, offline_models: Any, corpus_files: tuple[Path, Path, list[str]]
) -> None:
    from workers.models.registry import get_encoder

    corpus, root, names = corpus_files
    dialogs_path, dialogs = _write_dialogs(tmp_path, names)
    split_path = tmp_path / "split.json"  # one ready-made query per round, PlugIR style
    split_path.write_text(
        json.dumps(
            [
                {
                    "img": d["img"],
                    "dialog": [
                        Dialogue(d["dialog"][0], d["dialog"][1 : k + 1]).as_text()
                        for k in range(11)
                    ],
                }
                for d in dialogs
            ]
        )
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [
        "--corpus",
        str(corpus),
        "--images",
        str(root),
        "--cache",
        str(cache),
        "--verbosity",
        "0",
    ]
    call_command(
        "evaluate", "--dialogs", str(dialogs_path), "--out", str(out), "--mode", "text", *args
    )

    ranks = _read(out, "ranks.json")
    assert ranks == _read(out, "ranks_text.json")
    assert sorted(ranks, key=int) == [str(i) for i in range(len(dialogs))]
    metrics = _read(out, "metrics.json")
    catalog = _catalog(metrics)
    assert catalog.items.count() == len(names) == metrics["config"]["corpus_size"]
    assert metrics["work"]["corpus_images_encoded"] == len(names)

    # Each rank is the target's place in ranking.rank() for the ChatIR text of that round.
    encoder = get_encoder()
    item_of = dict(catalog.items.values_list("source_name", "pk"))
    for index, dialogue in enumerate(dialogs):
        texts = [
            Dialogue(dialogue["dialog"][0], list(dialogue["dialog"][1 : k + 1])).as_text()
            for k in range(11)
        ]
        queries = encoder.encode_texts(texts)
        expected = [
            _live_position(catalog, encoder.name, q, item_of[dialogue["img"]]) for q in queries
        ]
        assert ranks[str(index)] == expected

    # Metrics are the protocol's functions of these ranks.
    summary = metrics["modes"]["text"]
    matrix = [ranks[str(i)] for i in range(len(dialogs))]
    assert summary == protocol.summarize(matrix)
    hits10 = summary["hits@10"]
    assert len(hits10) == 11 and all(a <= b for a, b in itertools.pairwise(hits10))
    assert all(h >= r for h, r in zip(hits10, summary["recall@10"], strict=True))
    assert (out / "hits_at_10.png").read_bytes().startswith(PNG_MAGIC)

    # PlugIR-style split queries equal to the ChatIR texts give the very same ranks.
    split_out = tmp_path / "split-out"
    call_command(
        "evaluate",
        "--dialogs",
        str(split_path),
        "--out",
        str(split_out),
        "--split",
        "--mode",
        "text",
        "--mode",
        "dar",
        "--images-per-round",
        "1",
        *args,
    )
    assert _read(split_out, "ranks_text.json") == ranks
    dar_ranks = _read(split_out, "ranks_dar.json")
    assert sorted(dar_ranks) == sorted(ranks) and all(len(r) == 11 for r in dar_ranks.values())
    first = _read(split_out, "metrics.json")
    assert first["work"]["images_generated"] == len(dialogs) * 11
    assert first["work"]["corpus_images_encoded"] == 0  # already in the catalog

    # Resume: a fresh database (no vectors) and the same cache folder: no model work at all.
    ItemEmbedding.objects.filter(catalog=catalog).delete()
    again = tmp_path / "again"
    call_command(
        "evaluate",
        "--dialogs",
        str(split_path),
        "--out",
        str(again),
        "--split",
        "--mode",
        "text",
        "--mode",
        "dar",
        "--images-per-round",
        "1",
        *args,
    )
    work = _read(again, "metrics.json")["work"]
    assert work["dialogues_from_cache"] == 2 * len(dialogs)
    assert {k: v for k, v in work.items() if k != "dialogues_from_cache"} == {
        "corpus_images_encoded": 0,
        "query_texts_encoded": 0,
        "generated_images_encoded": 0,
        "refinements": 0,
        "images_generated": 0,
    }
    assert _read(again, "ranks_dar.json") == dar_ranks
    assert ItemEmbedding.objects.filter(catalog=catalog).count() == len(names)

    # Through the HNSW index a 12-image catalog is searched exhaustively: the same ranks.
    indexed = tmp_path / "indexed"
    call_command(
        "evaluate",
        "--dialogs",
        str(dialogs_path),
        "--out",
        str(indexed),
        "--mode",
        "text",
        "--use-index",
        *args,
    )
    assert _read(indexed, "ranks.json") == ranks
    assert _read(indexed, "metrics.json")["config"]["ranking"].startswith("hnsw")


@pytest.mark.django_db
def test_reformulated_and_dar_modes_share_the_llm_refinement(
    tmp_path: Path, offline_models: Any, corpus_files: tuple[Path, Path, list[str]]
) -> None:
    corpus, root, names = corpus_files
    dialogs_path, _ = _write_dialogs(tmp_path, names)
    out = tmp_path / "out"
    call_command(
        "evaluate",
        "--dialogs",
        str(dialogs_path),
        "--corpus",
        str(corpus),
        "--images",
        str(root),
        "--out",
        str(out),
        "--mode",
        "reformulated",
        "--mode",
        "dar",
        "--max-dialogs",
        "1",
        # One round: the LLM (the real SmolLM2 on CPU) is by far the slowest part of the suite.
        "--rounds",
        "1",
        "--images-per-round",
        "1",
        "--verbosity",
        "0",
    )
    metrics = _read(out, "metrics.json")
    # The two modes share the refinement (same dialogue, same prompt count): one LLM call.
    assert metrics["work"]["refinements"] == 1
    assert metrics["work"]["images_generated"] == 1
    assert metrics["config"]["modes"]["dar"]["refiner"]
    for mode in ("reformulated", "dar"):
        ranks = _read(out, f"ranks_{mode}.json")
        assert list(ranks) == ["0"] and len(ranks["0"]) == 1
        assert all(0 <= r < len(names) for r in ranks["0"])
        assert metrics["modes"][mode] == protocol.summarize([ranks["0"]])
    assert _read(out, "ranks.json") == _read(out, "ranks_reformulated.json")


@pytest.mark.django_db(transaction=True)
def test_existing_catalog_with_parallel_ranking(tmp_path: Path, offline_models: Any) -> None:
    from workers.models.registry import get_encoder

    catalog = CatalogFactory.create()
    items = [
        CatalogItemFactory.create(
            catalog=catalog,
            title="",
            source_name=f"photos/{i:03d}.png",
            image_bytes=png_bytes(((40 * i) % 256, (90 * i) % 256, (160 * i) % 256), size=48),
        )
        for i in range(6)
    ]
    dialogs = [
        {"img": "photos/002.png", "dialog": ["a photo", "is it dark? no", "any text? no"]},
        {"img": "shop-export/photos/004.png", "dialog": ["a picture", "colour? yes", "big? no"]},
    ]
    path = tmp_path / "dialogs.json"
    path.write_text(json.dumps(dialogs))
    out = tmp_path / "out"
    call_command(
        "evaluate",
        "--dialogs",
        str(path),
        "--catalog",
        catalog.slug,
        "--out",
        str(out),
        "--rounds",
        "3",
        "--jobs",
        "2",
        "--verbosity",
        "0",
    )
    encoder = get_encoder()
    assert ItemEmbedding.objects.filter(catalog=catalog, model_name=encoder.name).count() == 6
    ranks = _read(out, "ranks.json")
    for index, dialogue in enumerate(dialogs):
        target = items[2 if index == 0 else 4].pk  # the second matched by its file name
        texts = [
            Dialogue(dialogue["dialog"][0], list(dialogue["dialog"][1 : k + 1])).as_text()
            for k in range(3)
        ]
        expected = [
            _live_position(catalog, encoder.name, q, target) for q in encoder.encode_texts(texts)
        ]
        assert ranks[str(index)] == expected


@pytest.mark.django_db
def test_bad_input_fails_with_a_clear_message(
    tmp_path: Path, offline_models: Any, corpus_files: tuple[Path, Path, list[str]]
) -> None:
    corpus, root, names = corpus_files
    dialogs_path = tmp_path / "dialogs.json"
    out = str(tmp_path / "out")
    base = ["--corpus", str(corpus), "--images", str(root), "--out", out, "--verbosity", "0"]

    dialogs_path.write_text(
        json.dumps([{"img": "unlabeled2017/nope.jpg", "dialog": _dialog("red", "square")}])
    )
    with pytest.raises(CommandError, match="not in the corpus"):
        call_command("evaluate", "--dialogs", str(dialogs_path), *base)

    dialogs_path.write_text(json.dumps([{"img": names[0], "dialog": ["only a caption"]}]))
    with pytest.raises(CommandError, match="--rounds 11"):
        call_command("evaluate", "--dialogs", str(dialogs_path), *base)

    dialogs_path.write_text(json.dumps([{"img": names[0], "dialog": _dialog("red", "square")}]))
    (root / names[3]).unlink()
    with pytest.raises(CommandError, match="missing"):
        call_command("evaluate", "--dialogs", str(dialogs_path), *base)

    with pytest.raises(CommandError, match="no catalog"):
        call_command("evaluate", "--dialogs", str(dialogs_path), "--catalog", "nope", "--out", out)
    assert not (tmp_path / "out").exists()
