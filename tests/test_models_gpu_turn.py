"""scripts/gpu_turn.py runs end to end at toy size on CPU and reports every stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_turn_tiny_smoke() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            sys.executable,
            "scripts/gpu_turn.py",
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
            "--sessions",
            "2",
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
        assert out.count(stage) == 2, stage  # single-session table and batched table
    assert "sessions=2 batched:" in out and "turns/s" in out
