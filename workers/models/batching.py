"""Micro-batching of concurrent model calls.

The GPU worker serves several sessions from a thread pool. Running each request on its own wastes
the GPU (one short text per forward pass, one image per diffusion call, one dialogue per decoding
loop), so concurrent calls are merged: the first caller waits a few milliseconds (or until
``max_batch`` items are queued), runs one batched call for everybody queued and hands each caller
its slice. No background thread is involved: callers take turns leading, so nothing needs starting
or stopping around forks.

``MicroBatcher`` is generic over the items and the per-item results: the batched function returns
anything with one entry per item that slices (a numpy array of rows, a list of images, a list of
strings). Requests can carry a key; only requests with equal keys share a call (images of one
size, say), the others wait for the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from .protocols import Encoder

T = TypeVar("T")


class Sliceable(Protocol):
    """What a batched function returns: one entry per item, sliceable (list, tuple, ndarray)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> Self: ...


R = TypeVar("R", bound=Sliceable)


class _Request(Generic[T, R]):
    __slots__ = ("done", "error", "items", "key", "leader", "result", "wake")

    def __init__(self, items: list[T], key: Hashable) -> None:
        self.items = items
        self.key = key
        self.wake = threading.Event()
        self.leader = False
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class MicroBatcher(Generic[T, R]):
    """Calls ``fn`` (list of items -> one result entry per item) on merged concurrent requests.

    A single request larger than ``max_batch`` is passed through whole (``fn`` chunks internally
    if it must); requests are never split, so each caller's entries stay contiguous and in order.
    A failure of ``fn`` (or a result of the wrong length) is raised in every caller of that batch;
    the batcher then goes on with the next one.
    """

    def __init__(
        self, fn: Callable[[list[T]], R], max_batch: int = 64, window_s: float = 0.005
    ) -> None:
        self._fn = fn
        self.max_batch = max(1, max_batch)
        self.window_s = max(0.0, window_s)
        self._cond = threading.Condition()
        self._pending: list[_Request[T, R]] = []
        self._busy = False  # a leader is collecting or running a batch
        self.batches_run = 0  # for tests and metrics

    def __call__(self, items: Sequence[T], key: Hashable = None) -> R:
        if len(items) == 0:
            return self._fn([])
        request: _Request[T, R] = _Request(list(items), key)
        with self._cond:
            self._pending.append(request)
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

    def _queued(self, key: Hashable) -> int:
        return sum(len(r.items) for r in self._pending if r.key == key)

    def _lead(self) -> None:
        deadline = time.monotonic() + self.window_s
        with self._cond:
            key = self._pending[0].key  # the leader's own request is the oldest one
            while self._queued(key) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Request[T, R]] = []
            size = 0
            for request in list(self._pending):
                if request.key != key:
                    continue
                if batch and size + len(request.items) > self.max_batch:
                    break  # first come, first served: no overtaking of a request that waits
                self._pending.remove(request)
                batch.append(request)
                size += len(request.items)
        try:
            merged = [item for request in batch for item in request.items]
            output = self._fn(merged)
            if len(output) != len(merged):
                raise RuntimeError(
                    f"batched call returned {len(output)} results for {len(merged)} items"
                )
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
        self.image_size = inner.image_size
        self._texts: MicroBatcher[str, np.ndarray] = MicroBatcher(
            inner.encode_texts, max_batch, window_s
        )
        self._images: MicroBatcher[Image.Image, np.ndarray] = MicroBatcher(
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
