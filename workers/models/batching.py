"""Micro-batching of concurrent encode calls.

The GPU worker serves several sessions from a thread pool. Encoding each request on its own
wastes the GPU (one short text per forward pass), so concurrent calls are merged: the first caller
waits a few milliseconds (or until ``max_batch`` items are queued), runs one forward pass for
everybody queued and hands each caller its slice. No background thread is involved: callers take
turns leading, so nothing needs starting or stopping around forks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from .protocols import Encoder

T = TypeVar("T")


class _Request(Generic[T]):
    __slots__ = ("done", "error", "items", "leader", "result", "wake")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.wake = threading.Event()
        self.leader = False
        self.done = False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class MicroBatcher(Generic[T]):
    """Calls ``fn`` (list of items -> array with one row per item) on merged concurrent requests.

    A single request larger than ``max_batch`` is passed through whole (``fn`` chunks internally);
    requests are never split, so each caller's rows stay contiguous and in order.
    """

    def __init__(
        self, fn: Callable[[list[T]], np.ndarray], max_batch: int = 64, window_s: float = 0.005
    ) -> None:
        self._fn = fn
        self.max_batch = max(1, max_batch)
        self.window_s = max(0.0, window_s)
        self._cond = threading.Condition()
        self._pending: list[_Request[T]] = []
        self._queued = 0
        self._busy = False  # a leader is collecting or running a batch
        self.batches_run = 0  # for tests and metrics

    def __call__(self, items: Sequence[T]) -> np.ndarray:
        if len(items) == 0:
            return self._fn([])
        request: _Request[T] = _Request(list(items))
        with self._cond:
            self._pending.append(request)
            self._queued += len(request.items)
            if self._busy:
                self._cond.notify_all()  # the collecting leader may now have a full batch
            else:
                self._busy = True
                request.leader = True
        while not request.done:
            if request.leader:
                self._lead()
            else:
                request.wake.wait()
                request.wake.clear()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self) -> None:
        deadline = time.monotonic() + self.window_s
        with self._cond:
            while self._queued < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Request[T]] = []
            size = 0
            while self._pending:
                if batch and size + len(self._pending[0].items) > self.max_batch:
                    break
                request = self._pending.pop(0)
                batch.append(request)
                size += len(request.items)
            self._queued -= size
        try:
            merged = [item for request in batch for item in request.items]
            output = self._fn(merged)
            self.batches_run += 1
            start = 0
            for request in batch:
                request.result = output[start : start + len(request.items)]
                start += len(request.items)
        except BaseException as err:  # every waiting caller must learn about the failure
            for request in batch:
                request.error = err
        finally:
            with self._cond:
                # Hand leadership to the oldest waiting request, or go idle.
                if self._pending:
                    self._pending[0].leader = True
                    self._pending[0].wake.set()
                else:
                    self._busy = False
            for request in batch:
                request.done = True
                request.wake.set()


class BatchedEncoder:
    """An ``Encoder`` whose text and image calls from concurrent threads share forward passes."""

    def __init__(self, inner: Encoder, max_batch: int = 64, window_s: float = 0.005) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self._texts: MicroBatcher[str] = MicroBatcher(inner.encode_texts, max_batch, window_s)
        self._images: MicroBatcher[Image.Image] = MicroBatcher(
            inner.encode_images, max_batch, window_s
        )

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._texts(texts)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._images(images)

    def __getattr__(self, attr: str) -> Any:
        # Backend specifics (device, batch_size...) stay reachable through the wrapper.
        if attr == "inner":  # not set yet (copy/unpickle): avoid infinite recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)
