"""A gpu attempt's final write: what it found, its previews and its final results, one statement.

One ``UPDATE`` of the turn with two ``INSERT``s riding on it (data-modifying ``WITH`` clauses),
sent in autocommit: a single round trip, all or nothing. The ``UPDATE`` is the fence: it matches
only while this attempt owns the turn (RUNNING, same attempt number) and the turn has provisional
results; the inserts take their turn id from the rows it returns, so when it matches nothing,
nothing is written.

Why "has provisional results" suffices for the page's order (text-only results, then final ones):
the text stage announces its results before it commits them (``text_stage.store_provisional``), so
a statement that sees them sees results whose event has already been sent. When it does not see
them (the text stage failed, is late, or is committing at this very moment), the gpu task ranks
by text itself, under the text stage's lock, and writes again (``pipeline._TurnRun._store_final``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.db.models import Field

from retrieval.models import Preview, Turn, TurnResult

from .claims import Superseded, owned


@functools.cache
def _sql(fields: tuple[str, ...], after_provisional: bool = True) -> str:
    turn, preview, result = Turn._meta, Preview._meta, TurnResult._meta

    def col(meta: Any, name: str) -> str:
        return f'"{meta.get_field(name).column}"'

    sets = ", ".join(f"{col(turn, name)} = %({name})s" for name in fields)
    timings = col(turn, "timings")
    provisional = f"""
              AND EXISTS (
                SELECT 1 FROM "{result.db_table}" AS r
                WHERE r.{col(result, "turn")} = t."id" AND NOT r.{col(result, "final")}
              )"""
    return f"""
        WITH owned AS (
            UPDATE "{turn.db_table}" AS t
            SET {sets}, {timings} = t.{timings} || %(timings)s::jsonb
            WHERE t."id" = %(turn)s AND t.{col(turn, "status")} = %(running)s
              AND t.{col(turn, "attempts")} = %(attempt)s{provisional if after_provisional else ""}
            RETURNING t."id", t.{timings}
        ), previews AS (
            INSERT INTO "{preview.db_table}" ({col(preview, "turn")}, {col(preview, "index")},
                {col(preview, "prompt")}, {col(preview, "seed")}, {col(preview, "image")})
            SELECT owned."id", p.i, p.prompt, p.seed, p.image FROM owned,
              unnest(%(p_index)s::int[], %(p_prompt)s::text[], %(p_seed)s::bigint[],
                     %(p_image)s::text[]) AS p (i, prompt, seed, image)
        ), results AS (
            INSERT INTO "{result.db_table}" ({col(result, "turn")}, {col(result, "item")},
                {col(result, "final")}, {col(result, "rank")}, {col(result, "score")})
            SELECT owned."id", r.item, true, r.rank, r.score FROM owned,
              unnest(%(r_item)s::bigint[], %(r_rank)s::int[], %(r_score)s::float8[])
                AS r (item, rank, score)
        )
        SELECT {timings} FROM owned
    """


def store_final(
    turn: Turn,
    attempt: int,
    values: dict[str, Any],
    timings: dict[str, int],
    previews: Sequence[Preview],
    results: Sequence[TurnResult],
    *,
    after_provisional: bool = True,
) -> dict[str, int] | None:
    """Store ``values`` (turn fields), ``timings`` (merged into the stored ones), the previews'
    rows and the final results. Returns the turn's timings as stored, or None (nothing written)
    while the turn has no provisional results; raises ``Superseded`` when this attempt no longer
    owns the turn.

    ``after_provisional=False`` drops the provisional-results fence: only for a turn whose text
    ranking found nothing at all (an empty catalog), whose empty provisional results leave no row
    to see."""
    fields = tuple(sorted(values))
    params: dict[str, Any] = {
        name: _field(name).get_db_prep_save(value, connection) for name, value in values.items()
    }
    params |= {
        "timings": _field("timings").get_db_prep_save(timings, connection),
        "turn": turn.pk,
        "running": Turn.Status.RUNNING,
        "attempt": attempt,
        "p_index": [p.index for p in previews],
        "p_prompt": [p.prompt for p in previews],
        "p_seed": [p.seed for p in previews],
        "p_image": [str(p.image.name) for p in previews],
        "r_item": [r.item_id for r in results],
        "r_rank": [r.rank for r in results],
        "r_score": [r.score for r in results],
    }
    with connection.cursor() as cursor:
        cursor.execute(_sql(fields, after_provisional), params)
        row = cursor.fetchone()
    if row is not None:
        stored = row[0]
        # Raw cursors may hand jsonb over as text (Django's own loader), or already parsed.
        return dict(json.loads(stored) if isinstance(stored, str) else stored)
    if not owned(turn.pk, attempt).exists():
        raise Superseded(turn.pk)
    return None


def _field(name: str) -> Field[Any, Any]:
    return Turn._meta.get_field(name)  # type: ignore[return-value]
