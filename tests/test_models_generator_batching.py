"""Generator batching: concurrent previews share diffusion calls, each image keeps its seed."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

# Shared fixtures (offline_dir, offline_manifest, model_env) live in tests/conftest_models.py.
pytest_plugins = ["tests.conftest_models"]

REQUESTS = [
    (["a red summer dress"], 11),
    (["blue running shoes", "a straw hat"], 20),
    (["a lamp"], 5),
]


@pytest.fixture(scope="module")
def inner(offline_manifest: dict[str, Any]) -> Any:
    from workers.models.generator import DiffusersGenerator

    spec = offline_manifest["generator"]
    return DiffusersGenerator(
        spec["dir"], name=spec["name"], steps=spec["steps"], default_size=spec["size"]
    )


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _concurrently(calls: list[Any]) -> list[Any]:
    start = threading.Barrier(len(calls))

    def run(call: Any) -> Any:
        start.wait()  # release all threads at once so their calls overlap
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_requests_share_one_call_and_keep_their_seeds(inner: Any) -> None:
    from workers.models.generator import BatchedGenerator

    alone = [inner.generate(prompts, seed) for prompts, seed in REQUESTS]
    again = [inner.generate(prompts, seed) for prompts, seed in REQUESTS]
    for first, second in zip(alone, again, strict=True):  # alone, a request is reproducible
        for a, b in zip(first, second, strict=True):
            assert np.array_equal(_pixels(a), _pixels(b))

    # max_batch = every image of the three requests: the leader runs once all are queued (the
    # long window only bounds a broken test).
    batched = BatchedGenerator(inner, max_batch=4, window_s=30)
    results = _concurrently(
        [lambda p=prompts, s=seed: batched.generate(p, s) for prompts, seed in REQUESTS]
    )
    assert batched.batches_run == 1
    for (prompts, _), images, reference in zip(REQUESTS, results, alone, strict=True):
        assert len(images) == len(prompts)
        for image, expected in zip(images, reference, strict=True):
            assert image.size == expected.size
            # The same latents (own generator per image); batched kernels may round differently.
            assert np.abs(_pixels(image) - _pixels(expected)).max() <= 2


def test_sizes_are_batched_apart(inner: Any) -> None:
    from workers.models.generator import BatchedGenerator

    batched = BatchedGenerator(inner, max_batch=2, window_s=30)
    calls = [
        lambda: batched.generate(["a hat"], 1, size=32),
        lambda: batched.generate(["a scarf"], 2, size=64),
        lambda: batched.generate(["a coat"], 3, size=33),  # snaps to 32: batched with the hat
        lambda: batched.generate(["a glove"], 4),  # the default size, 64: with the scarf
    ]
    results = _concurrently(calls)
    assert [images[0].size for images in results] == [(32, 32), (64, 64), (32, 32), (64, 64)]
    assert batched.batches_run == 2
    alone = inner.generate(["a coat"], 3, size=32)[0]
    assert np.abs(_pixels(results[2][0]) - _pixels(alone)).max() <= 2


def test_wrapper_passes_through(inner: Any) -> None:
    from workers.models.generator import BatchedGenerator
    from workers.models.protocols import Generator

    batched = BatchedGenerator(inner, max_batch=8, window_s=0.0)
    assert isinstance(batched, Generator)
    assert batched.name == inner.name and batched.steps == inner.steps
    assert batched.generate([], seed=0) == []
    single = batched.generate(["a chair", "a chair"], seed=1)
    assert not np.array_equal(_pixels(single[0]), _pixels(single[1]))
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        inner.generate_seeded(["a", "b"], [1])
