"""Turn latency with the offline models on CPU: time per stage, and the orchestration overhead.

    python -m bench.turn_latency               # 21 turns (7 three-message searches), 2 warm-up
    python -m bench.turn_latency --turns 60

Each turn goes the real way: ``submit.submit_message`` (what the websocket consumer calls) stores it
and queues its two tasks through Redis, the text stage (``interactive.turn_text``) and the rest
(``gpu.run_turn``); real Celery workers (threads of this process, so their calls can be timed), one
per queue as an instance runs them, do the work; the events come back through the channel layer.
Model calls are timed where the registry hands the models out; SQL on every connection; the channel
layer where ``events.emit`` sends. Overhead = end-to-end time (submit -> ``turn.done`` received)
minus model compute: queueing, database, channel layer, preview files, Python.

The gpu worker runs in threads of this process (so its calls can be timed); the interactive
worker, which does the text stage beside the gpu task and off the path to ``turn.done``, runs as
its own process, as deployed (in this one it would compete with the gpu worker for the interpreter
lock). Its share is seen from outside: "to provisional results", and "stage text" (the time it
records in the turn's timings).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import Summary, bench_database, print_table, setup_django
from bench.fixtures import bench_catalog, dialogue
from bench.instrument import Meter, celery_worker, instrumented, interactive_worker
from dar_site.instrument import EventTap

TARGET_OVERHEAD_MS = 20.0
FINAL_WRITE = "final results' transaction"


def one_turn(
    session: Any, text: str, meter: Meter, tap: EventTap, timeout: float
) -> dict[str, Any]:
    from retrieval.models import Turn
    from retrieval.turn import submit

    meter.reset()
    start = time.perf_counter()
    turn = submit.submit_message(session, text)
    index = turn.index

    def of_turn(kind: str, **match: Any) -> Any:
        return lambda e: (
            e.get("turn") == index
            and e["type"] == kind
            and all(e.get(k) == v for k, v in match.items())
        )

    done = tap.wait(
        lambda e: e.get("turn") == index and e["type"] in ("turn.done", "error"), timeout
    )
    started = tap.wait(of_turn("turn.started"), 1)
    provisional = tap.wait(of_turn("results", final=False), 1)
    final = tap.wait(of_turn("results", final=True), 1)
    totals = meter.snapshot()
    counts = dict(meter.calls)
    turn = Turn.objects.get(pk=turn.pk)
    if turn.status != Turn.Status.DONE:
        raise RuntimeError(f"turn failed: {turn.error_code} {turn.error}")
    # Getting a loaded model is a dict lookup; only the calls are compute.
    calls = {k: v for k, v in totals.items() if k.startswith("model:") and k != "model: load"}
    model = sum(calls.values())
    e2e = done - start
    row = {
        "end to end": e2e,
        "to provisional results": provisional - start,
        "to final results": final - start,
        "queue wait (to turn.started)": started - start,
        "model compute": model,
        "overhead (not model)": e2e - model,
        "  database (SQL)": totals.get("db", 0.0),
        "  channel layer (emit)": totals.get("channel layer", 0.0),
    }
    # The final results' transaction (its SQL included) is on the path unless a question is
    # asked: then the LLM asks it meanwhile, and the transaction is hidden behind the model.
    stored = totals.get(FINAL_WRITE, 0.0)
    asked = "model: ask (LLM)" in totals
    on_path: tuple[str, ...] = ("  database (SQL)", "  channel layer (emit)")
    if asked:
        row[f"{FINAL_WRITE} (beside the question)"] = stored
    else:
        row[f"  {FINAL_WRITE}"] = stored
        on_path += (f"  {FINAL_WRITE}",)
    row["  queue, Python, other"] = row["overhead (not model)"] - sum(row[k] for k in on_path)
    # Written on another thread while the ranking runs: not part of the sum above.
    row["preview files (beside the ranking)"] = totals.get("preview files (beside the ranking)", 0)
    row |= calls
    row |= {f"stage {k} (turn.timings)": v / 1000 for k, v in turn.timings.items()}
    # Counts ride along under names the table skips (they are not durations).
    row["#sql"] = counts.get("db", 0)
    row["#emit"] = counts.get("channel layer", 0)
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.turn_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--turns", type=int, default=21, help="timed turns (21)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed turns first (2)")
    parser.add_argument("--items", type=int, default=200, help="catalog size (200)")
    parser.add_argument("--timeout", type=float, default=300, help="per turn (300 s)")
    parser.add_argument(
        "--questions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask a clarifying question each turn (default: DAR_ASK_QUESTIONS)",
    )
    args = parser.parse_args(argv)
    setup_django()
    with bench_database():
        run(args)


def run(args: argparse.Namespace) -> None:
    from django.conf import settings

    from retrieval.models import SearchSession
    from retrieval.services import events
    from retrieval.turn import pipeline, previews
    from workers.models.config import model_plan

    if args.questions is not None:
        # The gpu worker runs in this process: its turns read this setting.
        settings.DAR_ASK_QUESTIONS = args.questions
    catalog = bench_catalog(args.items)
    meter = Meter()
    spans = [
        (events, "emit", "channel layer"),
        (previews, "_write", "preview files (beside the ranking)"),
        (pipeline._TurnRun, "_write_final", FINAL_WRITE),
    ]
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="dar-turn-latency-") as logs,
        interactive_worker(Path(logs)),
        celery_worker(concurrency=2),
        instrumented(meter, spans),
    ):
        for i in range(args.warmup + args.turns):
            session = SearchSession.objects.create(catalog=catalog)
            with EventTap(events.group_name(session.pk)) as tap:
                for text in dialogue(i)[: 3 if i >= args.warmup else 1]:
                    row = one_turn(session, text, meter, tap, args.timeout)
                    if i >= args.warmup:
                        rows.append(row)
                    if len(rows) >= args.turns:
                        break
            if len(rows) >= args.turns:
                break

    plan = model_plan()
    print(
        f"turn latency bench: {len(rows)} turns after {args.warmup} warm-up, catalog of "
        f"{args.items}; profile {plan.profile}, encoder {plan.encoder_name}; "
        f"previews/turn {settings.DAR_PREVIEWS_PER_TURN}, questions {settings.DAR_ASK_QUESTIONS}"
    )
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if not k.startswith("#")]
    table = []
    for key in keys:
        s = Summary.of([1000 * row.get(key, 0.0) for row in rows])
        table.append([key, s.p50, s.p95, s.mean])
    print_table("per turn (ms)", ["", "p50", "p95", "mean"], table)
    sql, emits = (Summary.of([row[k] for row in rows]).p50 for k in ("#sql", "#emit"))
    print(f"per turn (p50): {sql:.0f} SQL statements, {emits:.0f} events sent")
    overhead = Summary.of([1000 * row["overhead (not model)"] for row in rows]).p50
    verdict = "met" if overhead < TARGET_OVERHEAD_MS else "NOT met"
    print(
        f"\ntarget orchestration overhead p50 < {TARGET_OVERHEAD_MS:.0f} ms: {verdict} "
        f"({overhead:.1f} ms)"
    )


if __name__ == "__main__":
    main()
