"""MicroBatcher: concurrent encode calls share forward passes and get their own rows back."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from workers.models.batching import BatchedEncoder, MicroBatcher


class _Recorder:
    """Stands in for a model: row i encodes item i; remembers the batch sizes it saw."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> np.ndarray:
        with self.lock:
            self.batches.append(len(items))
        if self.delay:
            threading.Event().wait(self.delay)
        return np.asarray([[x, -x] for x in items], dtype=np.float32).reshape(len(items), 2)


def _run_concurrently(
    batcher: MicroBatcher[int, np.ndarray], requests: list[list[int]]
) -> list[np.ndarray]:
    start = threading.Barrier(len(requests))

    def call(items: list[int]) -> np.ndarray:
        start.wait()  # release all threads at once so their calls overlap
        return batcher(items)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def test_concurrent_calls_are_merged_and_sliced_back() -> None:
    model = _Recorder(delay=0.02)
    batcher = MicroBatcher(model, max_batch=64, window_s=0.05)
    requests = [[100 * t + i for i in range(t % 3 + 1)] for t in range(12)]
    results = _run_concurrently(batcher, requests)
    for items, rows in zip(requests, results, strict=True):
        np.testing.assert_array_equal(rows[:, 0], items)
        np.testing.assert_array_equal(rows[:, 1], [-x for x in items])
    assert sum(model.batches) == sum(len(r) for r in requests)
    assert len(model.batches) < len(requests)  # some forward passes were shared
    assert batcher.batches_run == len(model.batches)


def test_max_batch_is_respected_without_splitting_requests() -> None:
    model = _Recorder(delay=0.01)
    batcher = MicroBatcher(model, max_batch=4, window_s=0.05)
    requests = [[t * 10, t * 10 + 1] for t in range(10)]  # 20 items, 2 per request
    results = _run_concurrently(batcher, requests)
    assert all(size <= 4 for size in model.batches)
    for items, rows in zip(requests, results, strict=True):
        np.testing.assert_array_equal(rows[:, 0], items)
    # One request larger than max_batch goes through whole (the model chunks internally).
    assert batcher(list(range(9))).shape == (9, 2)


def test_single_caller_and_empty_request() -> None:
    model = _Recorder()
    batcher = MicroBatcher(model, max_batch=8, window_s=0.0)
    np.testing.assert_array_equal(batcher([5, 6])[:, 0], [5, 6])
    assert batcher([]).shape == (0, 2)


def test_errors_reach_every_caller_and_the_batcher_recovers() -> None:
    calls = {"n": 0}

    def flaky(items: Sequence[int]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory")
        return np.zeros((len(items), 1), dtype=np.float32)

    batcher = MicroBatcher(flaky, max_batch=64, window_s=0.05)
    start = threading.Barrier(4)

    def call(i: int) -> str:
        start.wait()
        try:
            batcher([i])
        except RuntimeError as err:
            return str(err)
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(call, range(4)))
    assert "CUDA out of memory" in outcomes
    assert batcher([1, 2]).shape == (2, 1)  # not stuck after a failure


class _FakeEncoder:
    name = "fake"
    dim = 2
    image_size = 224
    device = "cpu"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([[len(t), 1.0] for t in texts], dtype=np.float32).reshape(-1, 2)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.ones((len(images), 2), dtype=np.float32)


def test_batched_encoder_wraps_an_encoder() -> None:
    encoder = BatchedEncoder(_FakeEncoder(), max_batch=16, window_s=0.01)
    assert (encoder.name, encoder.dim, encoder.device) == ("fake", 2, "cpu")
    texts = [["a"], ["bb", "ccc"], ["dddd"]]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(encoder.encode_texts, texts))
    assert [r[:, 0].tolist() for r in results] == [[1.0], [2.0, 3.0], [4.0]]
    assert encoder.encode_images([Image.new("RGB", (4, 4))]).shape == (1, 2)
    assert encoder.encode_texts([]).shape == (0, 2)
    with pytest.raises(AttributeError):
        _ = encoder.missing_attribute


def test_results_can_be_any_per_item_list() -> None:
    seen: list[list[str]] = []

    def shout(items: list[str]) -> list[str]:
        seen.append(list(items))
        return [item.upper() for item in items]

    # A full batch (6 items) is run at once; the long window only bounds a broken test.
    batcher: MicroBatcher[str, list[str]] = MicroBatcher(shout, max_batch=6, window_s=30)
    requests = [["a", "b"], ["c"], ["d", "e", "f"]]
    start = threading.Barrier(len(requests))

    def call(items: list[str]) -> list[str]:
        start.wait()
        return batcher(items)

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(call, requests))
    assert results == [["A", "B"], ["C"], ["D", "E", "F"]]
    assert all(isinstance(r, list) for r in results)
    assert [len(batch) for batch in seen] == [6]
    assert batcher([]) == []


def test_only_requests_with_equal_keys_share_a_call() -> None:
    seen: list[list[tuple[int, int]]] = []
    lock = threading.Lock()

    def run(items: list[tuple[int, int]]) -> list[int]:
        with lock:
            seen.append(list(items))
        return [value * 10 for _, value in items]

    # Each key has 8 items queued: one full batch per key.
    batcher: MicroBatcher[tuple[int, int], list[int]] = MicroBatcher(run, 8, window_s=30)
    requests = [(t % 2, [t, t + 100]) for t in range(8)]
    start = threading.Barrier(len(requests))

    def call(request: tuple[int, list[int]]) -> list[int]:
        key, values = request
        start.wait()
        return batcher([(key, v) for v in values], key=key)

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(call, requests))
    assert results == [[10 * t, 10 * (t + 100)] for t in range(8)]
    assert sorted(sorted({key for key, _ in batch}) for batch in seen) == [[0], [1]]


def test_a_result_of_the_wrong_length_is_an_error_for_every_caller() -> None:
    batcher: MicroBatcher[int, list[int]] = MicroBatcher(lambda items: [1], 6, window_s=30)
    start = threading.Barrier(3)

    def call(i: int) -> str:
        start.wait()
        try:
            batcher([i, i])
        except RuntimeError as err:
            return str(err)
        return "ok"

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(call, range(3)))
    assert all("returned 1 results" in o for o in outcomes)
