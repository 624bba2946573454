"""The ingest's decoding processes: each upload decoded once, on every core.

Decoding and re-encoding are CPU work under the interpreter lock, so threads would share one core;
a pool of processes (``DAR_INGEST_PROCESSES``, default one per core) runs ``validation.decode``
beside the importing thread, which meanwhile reads, hashes, de-duplicates and stores. The pool also
keeps a big decode's memory out of the web process, and recycles its processes so one pixel-heavy
upload does not leave them large.

The processes are started with ``forkserver``: they never inherit the parent's database
connections, threads or models, and import nothing but Pillow and numpy.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from django.conf import settings

from . import validation

# A process is replaced after this many images: Pillow and the allocator keep the peak of the
# largest decode otherwise.
TASKS_PER_PROCESS = 2000

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def processes() -> int:
    configured = int(settings.DAR_INGEST_PROCESSES)
    return configured or max(1, len(os.sched_getaffinity(0)))


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                max_workers=processes(),
                mp_context=multiprocessing.get_context("forkserver"),
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


class Decoder:
    """Decodes in the pool, or inline for an import with a single image (no process start)."""

    def __init__(self, limits: validation.Limits, *, inline: bool) -> None:
        self.limits = limits
        self.inline = inline

    def submit(
        self, data: bytes, sha256: str
    ) -> Future[validation.NormalisedImage | validation.Rejection]:
        if self.inline:
            done: Future[validation.NormalisedImage | validation.Rejection] = Future()
            done.set_result(validation.decode(data, self.limits, sha256))
            return done
        try:
            return _executor().submit(validation.decode, data, self.limits, sha256)
        except (BrokenProcessPool, RuntimeError):
            _reset()
            return _executor().submit(validation.decode, data, self.limits, sha256)

    def result(
        self,
        future: Future[validation.NormalisedImage | validation.Rejection],
    ) -> validation.NormalisedImage | validation.Rejection:
        try:
            return future.result()
        except BrokenProcessPool:
            # A decoder process died (killed for memory, a crash in a codec): that image is
            # rejected, the pool restarted for the next ones.
            _reset()
            return validation.Rejection("the image could not be decoded (the decoder stopped)")
