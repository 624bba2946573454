"""Websocket load: concurrent search sessions against a real ASGI server and Celery worker.

    python -m bench.ws_load                          # 8 sessions x 2 turns, uvicorn
    python -m bench.ws_load --sessions 16 --turns 3 --server daphne
    python -m bench.ws_load --sessions 100 --turns 1 --duration 120   # overload

Runs the product as the demo does, in subprocesses on loopback: uvicorn (or daphne) serving
``dar_site.asgi:application``, the gpu worker and the interactive worker (``celery worker --pool
threads``, dar_site/processes.py; the gpu worker runs beat, the stuck-turn sweeper, as in
``make demo``), offline models, bench database.
Every session is a browser: a Django session cookie, the page's Origin, ``/ws/search/<id>/``; it
sends its messages one after another, each when the previous turn is done. Reported per turn:
time to the first (text-only) results, to the final (fused) results and to ``turn.done``; how many
messages were accepted, refused (``busy``: the line of waiting turns was full), told their place in
line (``turn.queued``), completed, and timed out; turns completed per second. A refused session
stops (or, with --resend, sends the same message again after the Retry-After it was given).
Bounded by --sessions, --turns and --duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Summary,
    bench_database,
    child_env,
    print_table,
    setup_django,
    spawn,
    stop,
    wait_for_worker,
)
from bench.fixtures import bench_catalog, dialogue

MAX_SESSIONS = 128  # loopback only, and a 2-core machine: keep the load bounded


@dataclass
class Outcome:
    connect: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    # Per message sent: refused (busy) and told to come back, or told its place in line.
    refused: int = 0
    queued_positions: list[int] = field(default_factory=list)
    queued_waits: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the ASGI server exited; see {log}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the ASGI server did not answer in {timeout:.0f} s; see {log}")


def start_services(args: argparse.Namespace, port: int, logs: Path, stack: ExitStack) -> None:
    from dar_site.processes import interactive_worker_command, web_command, worker_command

    # Every simulated browser talks from 127.0.0.1, so the per-address limit would be the first
    # thing measured; real shoppers come from many addresses.
    env = child_env(
        DAR_RATE_LIMIT_ADDRESS_TURNS=str(10 * args.sessions * args.turns),
        DAR_LOG_LEVEL="WARNING",
        **({"DAR_TURN_QUEUE_DEPTH": str(args.queue_depth)} if args.queue_depth else {}),
    )
    # As `make demo` runs it: the gpu worker also runs beat (the sweeper of turns past their
    # time limit), so what a shopper would see of a timeout is measured too.
    gpu = worker_command(
        threads=args.worker_threads, loglevel="WARNING", beat_schedule=logs / "celerybeat-schedule"
    )
    workers = [("gpu", gpu)]
    if args.interactive_threads:
        # As `make demo` runs it: the turns' text stage on a worker of its own.
        command = interactive_worker_command(threads=args.interactive_threads, loglevel="WARNING")
        workers.append(("interactive", command))
    for name, command in workers:
        log = logs / f"{name}.log"
        worker = spawn(command, env, log)
        stack.callback(stop, worker)
        wait_for_worker(name, worker, log)
    if args.server == "daphne":
        command = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "dar_site.asgi:application",
        ]
    else:
        command = web_command(port=port, loglevel="warning")
    web = spawn(command, env, logs / "web.log")
    stack.callback(stop, web)
    _wait_http(port, web, logs / "web.log")


def make_sessions(catalog: Any, count: int) -> list[tuple[str, str]]:
    """(search session id, browser session key) pairs, as the shopper page would create them."""
    from django.contrib.sessions.backends.db import SessionStore

    from retrieval.services.sessions import create_session

    out = []
    for _ in range(count):
        store = SessionStore()
        store.create()
        key = str(store.session_key)
        out.append((str(create_session(catalog, None, key).pk), key))
    return out


async def browse(
    port: int,
    session_id: str,
    key: str,
    texts: list[str],
    outcome: Outcome,
    deadline: float,
    *,
    resend: bool = False,
) -> None:
    from websockets.asyncio.client import connect

    start = time.perf_counter()
    async with connect(
        f"ws://127.0.0.1:{port}/ws/search/{session_id}/",
        origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
        additional_headers={"Cookie": f"sessionid={key}"},
        open_timeout=30,
    ) as ws:
        first = json.loads(await ws.recv())
        if first.get("type") != "state":
            outcome.errors[f"connect: {first.get('code', first.get('type'))}"] += 1
            return
        outcome.connect.append(time.perf_counter() - start)
        index = 0
        while index < len(texts):
            if time.perf_counter() > deadline:
                outcome.errors["not sent: --duration reached"] += len(texts) - index
                return
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "message", "text": texts[index]}))
            while True:
                remaining = deadline - time.perf_counter()
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), max(remaining, 0.1)))
                except TimeoutError:
                    outcome.errors["unfinished at --duration"] += 1
                    return
                kind = event.get("type")
                if kind == "error" and event.get("turn") is None:
                    # Refused before any turn was stored: the message is still the client's.
                    if event.get("code") != "busy":
                        outcome.errors[f"refused: {event.get('code')}"] += 1
                        return
                    outcome.refused += 1
                    if not resend:
                        if index + 1 < len(texts):
                            outcome.errors["not sent: refused (busy)"] += len(texts) - index - 1
                        return
                    await asyncio.sleep(float(event.get("retry_after_s") or 1))
                    break  # the same message again
                if event.get("turn") != index:
                    continue
                elapsed = time.perf_counter() - sent
                if kind == "turn.accepted":
                    outcome.accepted.append(elapsed)
                elif kind == "turn.queued":
                    outcome.queued_positions.append(int(event["position"]))
                    if event.get("expected_wait_s") is not None:
                        outcome.queued_waits.append(float(event["expected_wait_s"]))
                elif kind == "results":
                    (outcome.final if event.get("final") else outcome.first).append(elapsed)
                elif kind == "turn.done":
                    outcome.done.append(elapsed)
                    index += 1
                    break
                elif kind == "error":
                    outcome.errors[str(event.get("code"))] += 1
                    index += 1
                    break


async def load(args: argparse.Namespace, port: int, sessions: list[tuple[str, str]]) -> Outcome:
    outcome = Outcome()
    deadline = time.perf_counter() + args.duration

    async def one(i: int, session_id: str, key: str) -> None:
        try:
            texts = dialogue(i)[: args.turns]
            await browse(port, session_id, key, texts, outcome, deadline, resend=args.resend)
        except Exception as exc:  # a dropped socket is a result, not a crash of the benchmark
            outcome.errors[f"{type(exc).__name__}"] += 1

    await asyncio.gather(*(one(i, sid, key) for i, (sid, key) in enumerate(sessions)))
    return outcome


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--sessions", type=int, default=8, help=f"concurrent (8, max {MAX_SESSIONS})"
    )
    parser.add_argument("--turns", type=int, default=2, help="messages per session (2, max 3)")
    parser.add_argument("--duration", type=float, default=300, help="hard stop after (300 s)")
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument(
        "--worker-threads", type=int, default=4, help="gpu worker, as the demo runs it (4)"
    )
    parser.add_argument(
        "--interactive-threads",
        type=int,
        default=4,
        help="interactive worker (the turns' text stage), as the demo runs it (4); 0: none, "
        "the gpu worker then ranks by text itself, just before its final ranking",
    )
    parser.add_argument("--items", type=int, default=200, help="catalog size (200)")
    parser.add_argument(
        "--queue-depth",
        type=int,
        default=0,
        help="DAR_TURN_QUEUE_DEPTH for the server (0: the settings' default)",
    )
    parser.add_argument(
        "--resend",
        action="store_true",
        help="a refused (busy) message is sent again after its Retry-After, as a shopper would",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS or not 1 <= args.turns <= 3:
        parser.error(f"--sessions must be 1..{MAX_SESSIONS} and --turns 1..3")
    setup_django()
    with bench_database(), ExitStack() as stack:
        # Kept when the run fails (the message names the folder), removed after a good run.
        logs = Path(tempfile.mkdtemp(prefix="dar-ws-load-"))
        catalog = bench_catalog(args.items)
        port = _free_port()
        start_services(args, port, logs, stack)
        # One untimed turn loads the models in the worker.
        warm = Outcome()
        (sid, key), *sessions = make_sessions(catalog, args.sessions + 1)
        asyncio.run(browse(port, sid, key, ["a red mug"], warm, time.perf_counter() + 600))
        if not warm.done:
            raise SystemExit(f"the warm-up turn failed: {dict(warm.errors)}; logs in {logs}")
        load_before = os.getloadavg()
        start = time.perf_counter()
        outcome = asyncio.run(load(args, port, sessions))
        wall = time.perf_counter() - start
        report(args, outcome, wall, warm.done[0], (load_before, os.getloadavg()))
    shutil.rmtree(logs, ignore_errors=True)


def stored_timings(skip: int) -> dict[str, list[float]]:
    """Stage times the turns recorded themselves (``Turn.timings``), after the first ``skip``
    turns (the warm-up): where the text stage's part of "first results" went."""
    from retrieval.models import Turn

    done = Turn.objects.filter(status=Turn.Status.DONE).order_by("created_at")[skip:]
    timings = [turn.timings for turn in done]
    return {
        f"  stage {key} (turn.timings)": [float(t[key]) for t in timings if key in t]
        for key in ("text", "queued")
    }


def report(
    args: argparse.Namespace,
    outcome: Outcome,
    wall: float,
    warm_s: float,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
) -> None:
    from django.conf import settings

    depth = args.queue_depth or settings.DAR_TURN_QUEUE_DEPTH
    print(
        f"websocket load: {args.sessions} sessions x {args.turns} turns over {args.server} + "
        f"celery gpu worker (threads x {args.worker_threads}) + interactive worker (threads x "
        f"{args.interactive_threads}), loopback; queue depth {depth}; warm-up turn {warm_s:.1f} s"
    )
    print(
        "load average (1/5/15 min) at start "
        + " / ".join(f"{x:.2f}" for x in loads[0])
        + ", at end "
        + " / ".join(f"{x:.2f}" for x in loads[1])
    )
    rows = []
    for name, samples in (
        ("connect -> state", outcome.connect),
        ("turn.accepted", outcome.accepted),
        ("first (text-only) results", outcome.first),
        ("final results", outcome.final),
        ("turn.done", outcome.done),
    ):
        s = Summary.of([1000 * x for x in samples])
        rows.append([name, s.n, s.p50, s.p95, s.mean])
    for name, samples in stored_timings(skip=1).items():
        s = Summary.of(samples)
        rows.append([name, s.n, s.p50, s.p95, s.mean])
    print_table("per turn, from sending the message (ms)", ["", "n", "p50", "p95", "mean"], rows)
    timeouts = outcome.errors.get("timeout", 0)
    errors = ", ".join(f"{k}: {v}" for k, v in outcome.errors.items() if k != "timeout")
    first = Summary.of([1000 * x for x in outcome.first])
    final = Summary.of([1000 * x for x in outcome.final])
    positions = outcome.queued_positions
    waits = Summary.of(outcome.queued_waits)
    print(
        f"\nmessages sent {len(outcome.accepted) + outcome.refused}: accepted "
        f"{len(outcome.accepted)}, refused (busy) {outcome.refused}; told their place in line "
        f"{len(positions)} (position max {max(positions, default=0)}, expected wait p50 "
        f"{waits.p50:.0f} s)\n"
        f"completed {len(outcome.done)}, timeouts {timeouts}; "
        f"first results p50/p95 {first.p50:.0f}/{first.p95:.0f} ms, "
        f"finals p50/p95 {final.p50:.0f}/{final.p95:.0f} ms\n"
        f"turns completed {len(outcome.done)} of {args.sessions * args.turns} in {wall:.1f} s "
        f"= {len(outcome.done) / wall:.2f} turns/s; other errors: {errors or 'none'}"
    )


if __name__ == "__main__":
    main()
