"""The benchmarks still run end to end on the product's current code and schema, at tiny sizes.

Their figures are not checked (speed targets live in the benchmarks' own output, never in tests):
what is checked is that each one completes and reports what it measured, so a schema or API change
that breaks a benchmark fails here rather than on the day someone needs its figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    env = {**os.environ, "DAR_MODEL_PROFILE": "offline"}
    # Each benchmark picks its own settings, database and Redis prefix: inheriting this run's
    # names (set in os.environ by dar_site.settings_test) made it recreate the suite's database.
    for name in ("DJANGO_SETTINGS_MODULE", "DAR_TEST_DB_NAME", "DAR_REDIS_PREFIX"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_vector_search_bench_loads_builds_and_reports_recall() -> None:
    out = _run(
        "bench.vector_search",
        "--size",
        "1500",
        "--queries",
        "10",
        "--exact-queries",
        "3",
        "--warmup",
        "3",
        "--ef-search",
        "40",
    )
    row = re.search(r"pgvector HNSW\s+40\s+10\s+[\d.]+\s+[\d.]+\s+([\d.]+)", out)
    assert row, out
    assert 0.0 <= float(row[1]) <= 1.0
    assert "HNSW index scans during the HNSW queries: 0" not in out  # the index was used
    # The filtered run: a 1% and a 10% price filter inside the query, against numpy over the
    # matching items; k results each time (1% of 1500 items is still more than 10).
    for share in ("1%", "10%"):
        filtered = re.search(
            rf"{share} \((\d+) items\)\s+HNSW, iterative scan, ef \d+\s+10\s+[\d.]+\s+[\d.]+"
            r"\s+([\d.]+)\s+(\d+)%\s+(\d+)",
            out,
        )
        assert filtered, out
        assert int(filtered[1]) > 10 and 0.0 <= float(filtered[2]) <= 1.0
        assert filtered[3] == "100"  # k results every time
        if share == "10%":  # at 15 items, the planner may rightly prefer another index
            assert int(filtered[4]) > 0, out  # the HNSW index, scanned iteratively


@pytest.mark.slow
def test_ingest_bench_imports_and_embeds_every_photo() -> None:
    out = _run("bench.ingest", "--images", "12")
    assert "imported 12, rejected 0, embedded 12, pending 0, failed 0" in out, out
    assert re.search(r"decode-only floor on the same files: [\d.]+ images/s", out), out
