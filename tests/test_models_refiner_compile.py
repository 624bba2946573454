"""The local LLM's CUDA decoding settings: static cache buckets and opt-in torch.compile.

No GPU here: these check what is built for CUDA (configs, shapes, settings) without running it;
the static-cache path itself runs on CPU in tests/test_models_refiner_batching.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workers.models.refiner import REPETITION_PENALTY, bucket, decoding_config

REPO = Path(__file__).resolve().parents[1]


def _base() -> object:
    from transformers import GenerationConfig

    # Like Qwen2.5's generation_config.json: two end tokens, sampling on, no pad token.
    return GenerationConfig(
        eos_token_id=[151645, 151643], bos_token_id=151643, do_sample=True, temperature=0.7
    )


def test_generate_config_is_greedy_and_never_compiles() -> None:
    config = decoding_config(_base(), 48)
    # The static-cache path compiles its own step (GreedyDecoder); transformers would otherwise
    # compile per shape on CUDA.
    assert config.disable_compile is True
    assert config.compile_config is None
    assert (config.do_sample, config.max_new_tokens, config.pad_token_id) == (False, 48, 151645)
    assert config.eos_token_id == [151645, 151643]
    assert config.repetition_penalty == REPETITION_PENALTY
    # The config does not ask transformers for a cache: the refiner passes its own.
    assert getattr(config, "cache_implementation", None) is None


def test_cache_shapes_come_from_few_buckets() -> None:
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 9, 16, 17)] == [1, 2, 4, 4, 8, 16, 16, 32]
    lengths = {bucket(n, 1024) for n in range(1, 4097)}
    assert lengths == {1024, 2048, 4096}


def test_recompile_limit_leaves_room_for_every_bucket() -> None:
    import torch._dynamo

    from workers.models.refiner.local import _raise_recompile_limit

    _raise_recompile_limit(64)
    config = torch._dynamo.config
    limit = getattr(config, "recompile_limit", None) or config.cache_size_limit
    assert limit >= 64


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "False 1024"),
        ({"DAR_LLM_COMPILE": "1", "DAR_LLM_CACHE_TOKENS": "2048"}, "True 2048"),
        ({"DAR_LLM_COMPILE": "maybe"}, "EnvError DAR_LLM_COMPILE"),
        ({"DAR_LLM_CACHE_TOKENS": "16"}, "EnvError DAR_LLM_CACHE_TOKENS"),
    ],
)
def test_settings_from_the_environment(env: dict[str, str], expected: str) -> None:
    """DAR_LLM_COMPILE and DAR_LLM_CACHE_TOKENS are model settings, like the token budgets."""
    import os

    code = (
        "from dar_site.env import EnvError\n"
        "try:\n"
        "    from workers.models.config import model_settings\n"
        "    settings = model_settings()\n"
        "    print(settings.llm_compile, settings.llm_cache_tokens)\n"
        "except EnvError as err:\n"
        "    print('EnvError', str(err).split('=')[0])\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DAR_LLM_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == expected
