"""The ingest's decoding processes: each upload decoded once, on every core.

Decoding and re-encoding are CPU work under the interpreter lock, so threads would share one core;
a pool of processes (``DAR_INGEST_PROCESSES``, default one per core) runs ``validation.decode``
beside the importing thread, which meanwhile reads, hashes, de-duplicates and stores. The pool also
keeps a big decode's memory out of the web process, and recycles its processes so one pixel-heavy
upload does not leave them large.

Images travel to the pool in chunks (``CHUNK_IMAGES``): a pool task costs the parent's feeder and
result threads a fraction of a millisecond under the interpreter lock, as much as decoding a small
JPEG, so one task per image made the pool no faster than decoding inline. A chunk whose process
died is decoded again image by image, so a crash still rejects only the image that caused it.

The processes are started with ``forkserver``: they never inherit the parent's database
connections, threads or models. The fork server imports ``validation`` (Pillow, numpy) once, so a
new or recycled process starts in milliseconds rather than re-importing them.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from django.conf import settings

from . import validation

# A process is replaced after this many chunks (about 2,000 images): Pillow and the allocator keep
# the peak of the largest decode otherwise.
TASKS_PER_PROCESS = 250
# Images per pool task, and the bytes one may carry (a chunk of large photos goes sooner).
CHUNK_IMAGES = 8
CHUNK_BYTES = 8 * 1024 * 1024

Outcome = validation.NormalisedImage | validation.Rejection
STOPPED = "the image could not be decoded (the decoder stopped)"

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def processes() -> int:
    configured = int(settings.DAR_INGEST_PROCESSES)
    return configured or max(1, len(os.sched_getaffinity(0)))


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            context = multiprocessing.get_context("forkserver")
            # Only read when the fork server starts (the first pool of this process).
            context.set_forkserver_preload([validation.__name__])
            _pool = ProcessPoolExecutor(
                max_workers=processes(),
                mp_context=context,
                max_tasks_per_child=TASKS_PER_PROCESS,
            )
        return _pool


def _reset() -> None:
    global _pool
    with _lock:
        broken, _pool = _pool, None
    if broken is not None:
        broken.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the processes (tests, benchmarks); the next decode starts new ones."""
    _reset()


def decode_chunk(jobs: list[tuple[bytes, str]], limits: validation.Limits) -> list[Outcome]:
    """What a pool task runs: ``validation.decode`` for each (bytes, sha256)."""
    return [validation.decode(data, limits, sha256) for data, sha256 in jobs]


class _ChunkStopped(Exception):
    """The process decoding this image's chunk died: the image is tried again on its own."""


class Decoder:
    """Decodes in the pool, or inline for an import with a single image (no process start).

    ``submit`` collects images into chunks; ``flush`` sends the chunk being collected (the
    importer calls it when it starts waiting, and ``result`` does if it waits on one)."""

    def __init__(self, limits: validation.Limits, *, inline: bool) -> None:
        self.limits = limits
        self.inline = inline
        self._chunk: list[tuple[bytes, str, Future[Outcome]]] = []
        self._chunk_bytes = 0
        self._alone: dict[Future[Outcome], tuple[bytes, str]] = {}

    def submit(self, data: bytes, sha256: str) -> Future[Outcome]:
        done: Future[Outcome] = Future()
        if self.inline:
            done.set_result(validation.decode(data, self.limits, sha256))
            return done
        self._chunk.append((data, sha256, done))
        self._chunk_bytes += len(data)
        if len(self._chunk) >= CHUNK_IMAGES or self._chunk_bytes >= CHUNK_BYTES:
            self.flush()
        return done

    def flush(self) -> None:
        chunk, self._chunk, self._chunk_bytes = self._chunk, [], 0
        if not chunk:
            return
        jobs = [(data, sha256) for data, sha256, _ in chunk]
        futures = [future for _, _, future in chunk]
        for future, job in zip(futures, jobs, strict=True):
            self._alone[future] = job  # kept until its result is taken, for a retry on its own
        task = self._send(decode_chunk, jobs, self.limits)
        task.add_done_callback(lambda finished: _hand_out(finished, futures))

    def _send(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        try:
            return _executor().submit(fn, *args)
        except (BrokenProcessPool, RuntimeError):
            _reset()
            return _executor().submit(fn, *args)

    def result(self, future: Future[Outcome]) -> Outcome:
        if not future.done() and any(future is f for _, _, f in self._chunk):
            self.flush()
        job = self._alone.pop(future, None)
        try:
            return future.result()
        except _ChunkStopped:
            if job is None:
                return validation.Rejection(STOPPED)
            # A process of the pool died (killed for memory, a crash in a codec): this image
            # alone, in a fresh pool, says whether it was the cause.
            _reset()
            return self._one(*job)
        except BrokenProcessPool:
            _reset()
            return validation.Rejection(STOPPED)

    def _one(self, data: bytes, sha256: str) -> Outcome:
        try:
            outcome = self._send(validation.decode, data, self.limits, sha256).result()
        except BrokenProcessPool:
            _reset()
            return validation.Rejection(STOPPED)
        assert isinstance(outcome, (validation.NormalisedImage, validation.Rejection))
        return outcome


def _hand_out(task: Future[Any], futures: list[Future[Outcome]]) -> None:
    """A chunk's outcomes to its images' futures (runs in the pool's result thread)."""
    if task.cancelled():
        for future in futures:
            future.set_exception(_ChunkStopped())
        return
    error = task.exception()
    if error is not None:
        stopped = isinstance(error, BrokenProcessPool)
        for future in futures:
            future.set_exception(_ChunkStopped() if stopped else error)
        return
    outcomes = task.result()
    assert isinstance(outcomes, list)
    for future, outcome in zip(futures, outcomes, strict=True):
        future.set_result(outcome)
