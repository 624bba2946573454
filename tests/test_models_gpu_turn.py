"""bench/gpu_turn.py runs end to end at toy size on CPU and reports every stage and variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_turn_tiny_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gpu_turn",
            "--tiny",
            "--device",
            "cpu",
            "--turns",
            "2",
            "--warmup",
            "1",
            "--items",
            "500",
            "--new-tokens",
            "8",
            "--prompt-tokens",
            "32",
            "--long-tokens",
            "12",
            "--sessions",
            "2",
            "--variants",
            "fast,generate",
            "--json",
            str(tmp_path / "figures.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for stage in (
        "text_encode",
        "text_search",
        "llm_generate",
        "image_generate",
        "image_encode",
        "fused_search",
        "turn_total",
    ):
        assert out.count(stage) == 3, stage  # fast: single and batched; generate: single
    assert "sessions=2 batched:" in out and "turns/s" in out
    figures = json.loads((tmp_path / "figures.json").read_text())
    runs = [(run["variant"], run["sessions"]) for run in figures["runs"]]
    assert runs == [("fast", 1), ("fast", 2), ("generate", 1)]
    assert all(run["turn_total"]["p50_ms"] > 0 and "llm_long" in run for run in figures["runs"])
    assert all(run["llm_fields"]["p50_ms"] > 0 for run in figures["runs"])
    # The fast decoder continued the check prompt exactly like the eager one.
    assert figures["decoder_check"]["token_agreement"] == 1.0
