"""``manage.py evaluate_dialogues`` on a tiny dialogue file: whole turns through the turn services.

The catalog's titles are embedded by the real MiniLM, so a dialogue that names an item finds it
text-first; the report holds per-turn and last-message figures for each variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from catalog.services.embedding import embed_items
from retrieval.models import SearchSession, Turn
from tests.factories import CatalogFactory, CatalogItemFactory

pytestmark = pytest.mark.django_db(transaction=True)

TITLES = ["green frog", "red apple", "blue car", "white cat", "yellow sun", "black umbrella"]


@pytest.fixture
def catalog(turn_models: None, settings: Any) -> Any:
    settings.DAR_WEIGHT_PRODUCT_TEXT = 0.5
    settings.DAR_WEIGHT_IMAGE = None  # auto: the offline encoder's similarities are noise
    settings.DAR_FINAL_DIALOGUE_WEIGHT = 1.0
    catalog = CatalogFactory.create(slug="tiny")
    items = [CatalogItemFactory.create(catalog=catalog, title=t) for t in TITLES]
    assert len(embed_items([i.pk for i in items]).embedded) == len(items)
    return catalog


def _dialogues(tmp_path: Path, entries: Any) -> Path:
    path = tmp_path / "dialogues.json"
    path.write_text(json.dumps(entries))
    return path


def test_the_command_reports_text_first_and_final_figures_per_turn(
    catalog: Any, tmp_path: Path, capsys: Any
) -> None:
    path = _dialogues(
        tmp_path,
        [
            {"target": "white cat", "turns": ["a green frog", "actually I'd rather have a cat"]},
            {"target": "red apple", "turns": ["a red apple"]},
        ],
    )
    out = tmp_path / "report.json"
    call_command(
        "evaluate_dialogues",
        catalog="tiny",
        dialogs=path,
        compare="none,configured",
        out=out,
        no_progress=True,
    )
    printed = capsys.readouterr().out
    assert "last" in printed and "final H@1" in printed
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"none", "configured"}
    for body in report["variants"].values():
        summary = body["summary"]
        assert set(summary["per_turn"]) == {"0", "1"}
        assert summary["per_turn"]["0"]["text_first"]["n"] == 2
        assert summary["per_turn"]["1"]["text_first"]["n"] == 1
        for figures in [summary["last"], *summary["per_turn"].values()]:
            for kind in ("text_first", "final"):
                m = figures[kind]
                assert 0 <= m["hits@1"] <= m["hits@10"] <= 1 and 0 <= m["mrr"] <= 1
            assert figures["failed"] == 0
        assert {"text", "refine", "rank"} <= set(summary["all_turns"]["mean_ms"])
        turns = [t for d in body["dialogues"] for t in d["turns"]]
        assert all(t["refined"] and t["status"] == Turn.Status.DONE for t in turns)
        # The correction wins: the cat is the first text-first result, and the frog is gone
        # from what the system understood.
        cat = body["dialogues"][0]["turns"][1]
        assert cat["text_rank"] == 1
        assert "frog" not in cat["refined"].lower()
        assert body["dialogues"][1]["turns"][0]["text_rank"] == 1
    # No LLM: every description is the grounded fallback.
    assert report["variants"]["none"]["summary"]["last"]["fallback_rate"] == 1.0
    # Each dialogue ran in a fresh session, removed afterwards.
    assert not SearchSession.objects.exists()


@pytest.mark.parametrize(
    ("entries", "options", "message"),
    [
        ([{"target": "unicorn", "turns": ["a unicorn"]}], {}, "no item titled 'unicorn'"),
        ([{"target": "red apple", "turns": []}], {}, "non-empty list of messages"),
        ({"target": "red apple"}, {}, "non-empty JSON list"),
        ([{"target": "red apple", "turns": ["an apple"]}], {"compare": "gpt9"}, "unknown"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    catalog: Any, tmp_path: Path, entries: Any, options: dict[str, str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command(
            "evaluate_dialogues",
            catalog="tiny",
            dialogs=_dialogues(tmp_path, entries),
            no_progress=True,
            **options,
        )
    with pytest.raises(CommandError, match="no catalog"):
        call_command("evaluate_dialogues", catalog="nope", dialogs=tmp_path / "x.json")
