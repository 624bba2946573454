"""A shopper's turn behind another shop's embedding backlog: the fair gpu queue, measured.

    python -m bench.fair_queue                      # 120 jobs of 64 items ahead of the turn
    python -m bench.fair_queue --jobs 30 --job-items 32

Shop A re-embeds its catalog (``--jobs`` embedding jobs) an instant before a shopper of shop B
sends a message. Timed: that turn, from the message to its final results and to ``turn.done``,
and until A's backlog is embedded. On the same workers and catalogs: once as the product
sends the jobs (``fair``: turns at priority 0, a shop's jobs at 1 + its jobs waiting, see
catalog/services/embed_queue.py) and once with every job at priority 0 (``fifo``: first come,
first served, as before), after the same turn with no backlog (``none``). The workers run as
`make demo` runs them (the gpu worker with threads; the interactive worker for the text
stage), offline models, bench database.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import (
    bench_database,
    child_env,
    print_table,
    setup_django,
    spawn,
    stop,
    wait_for_worker,
)
from bench.fixtures import bench_catalog

MESSAGE = "a red bag"


def start_workers(logs: Path, stack: ExitStack) -> None:
    from dar_site.processes import interactive_worker_command, worker_command

    env = child_env(DAR_LOG_LEVEL="WARNING")
    for name, command in (
        ("gpu", worker_command(threads=4, loglevel="WARNING")),
        ("interactive", interactive_worker_command(threads=4, loglevel="WARNING")),
    ):
        log = logs / f"{name}.log"
        proc = spawn(command, env, log)
        stack.callback(stop, proc)
        wait_for_worker(name, proc, log)


def one_turn(catalog: Any, timeout: float) -> dict[str, float]:
    """Send one message as a new shopper of ``catalog``; seconds to final results and done."""
    from dar_site.instrument import EventTap
    from retrieval.models import SearchSession
    from retrieval.services import events
    from retrieval.turn import submit

    session = SearchSession.objects.create(catalog=catalog)
    with EventTap(events.group_name(session.pk)) as tap:
        start = time.perf_counter()
        turn = submit.submit_message(session, MESSAGE)
        done = tap.wait(lambda e: e.get("turn") == turn.index and e["type"] == "turn.done", timeout)
        final = tap.wait(lambda e: e["type"] == "results" and bool(e.get("final")), 1)
    return {"final": final - start, "done": done - start}


def send_backlog(ids: list[int], job_items: int, *, fair: bool) -> None:
    from catalog.models import CatalogItem
    from catalog.services import embedding
    from dar_site.celery import app

    CatalogItem.objects.filter(pk__in=ids).update(status=CatalogItem.Status.PENDING)
    for start in range(0, len(ids), job_items):
        chunk = ids[start : start + job_items]
        if fair:
            embedding.send_batch(chunk)
        else:  # what the product did before: every job at the default priority, in order
            app.send_task(embedding.TASK_NAME, args=[chunk])


def drained(ids: list[int], timeout: float) -> float:
    from catalog.models import CatalogItem

    start = time.perf_counter()
    while CatalogItem.objects.filter(pk__in=ids, status=CatalogItem.Status.PENDING).exists():
        if time.perf_counter() - start > timeout:
            raise SystemExit("the embedding backlog did not drain")
        time.sleep(0.2)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> None:
    from catalog.models import CatalogItem

    shop_b = bench_catalog(args.items, seed=1)
    shop_a = bench_catalog(args.jobs * args.job_items, seed=2)
    ids = list(
        CatalogItem.objects.filter(catalog=shop_a).order_by("pk").values_list("pk", flat=True)
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="dar-fair-queue-") as logs, ExitStack() as stack:
        start_workers(Path(logs), stack)
        one_turn(shop_b, args.timeout)  # loads the models; untimed
        for mode in args.modes:
            for _ in range(args.repeat):
                began = time.perf_counter()
                if mode != "none":
                    send_backlog(ids, args.job_items, fair=mode == "fair")
                turn = one_turn(shop_b, args.timeout)
                drained(ids, args.timeout)
                backlog = time.perf_counter() - began if mode != "none" else float("nan")
                rows.append([mode, f"{turn['final']:.1f}", f"{turn['done']:.1f}", f"{backlog:.1f}"])
    print(
        f"fair gpu queue: {args.jobs} embedding jobs of {args.job_items} items (shop A) sent "
        f"just before one message of shop B; catalog of B {args.items} items; gpu worker threads x4"
    )
    print_table(
        "seconds from the message (backlog: from sending the jobs until all are embedded)",
        ["order", "B: final results", "B: turn.done", "A: backlog embedded"],
        rows,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fair_queue", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=120, help="shop A's embedding jobs (120)")
    parser.add_argument("--job-items", type=int, default=64, help="items per job (64)")
    parser.add_argument("--items", type=int, default=100, help="shop B's catalog (100)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per order (1)")
    parser.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=["none", "fifo", "fair"],
        help="in this order: none (no backlog), fifo, fair (none,fifo,fair)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="per turn and backlog (600 s)")
    args = parser.parse_args(argv)
    setup_django()
    with bench_database():
        run(args)


if __name__ == "__main__":
    main()
