"""A turn's preview files: written while the final ranking runs, not before it.

The final ranking needs only the generated images in memory, and encoding a 512 px PNG costs tens
of milliseconds of CPU, so the files are written on a small thread pool (Pillow releases the
interpreter lock while it compresses) beside the ranking; their rows go into the database with
the final results, in one statement (``store.store_final``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from retrieval.models import Preview, Turn
from retrieval.services import threadpools

if TYPE_CHECKING:
    from PIL import Image

# Each worker thread's turn writes its own previews; two writers keep up with them (a turn's
# ranking takes longer than its files).
WRITERS = 2


def _writers() -> ThreadPoolExecutor:
    return threadpools.pool("previews", WRITERS)


def write(
    turn: Turn, attempt: int, prompts: Sequence[str], images: Sequence[Image.Image], seed: int
) -> Future[list[Preview]]:
    """Start writing the images' files; the future gives their unsaved ``Preview`` rows."""
    return _writers().submit(_write, turn, attempt, list(prompts), list(images), seed)


def _write(
    turn: Turn, attempt: int, prompts: list[str], images: list[Image.Image], seed: int
) -> list[Preview]:
    previews: list[Preview] = []
    try:
        for j, image in enumerate(images):
            buffer = io.BytesIO()
            # Lossless: the stored preview is exactly the image the ranking encoded, so the fused
            # query can be recomputed from the database (analysts, tests). zlib's fastest level:
            # the file has to be ready when the ranking is (a 512 px photo: 25 ms against 83 ms at
            # the default level, for a file 10% larger).
            image.convert("RGB").save(buffer, format="PNG", compress_level=1)
            preview = Preview(turn=turn, index=j, prompt=prompts[j], seed=seed + j)
            # The attempt number keeps a rerun from colliding with a dead attempt's file.
            name = f"{turn.session_id}-t{turn.index}-a{attempt}-{j}.png"
            preview.image.save(name, ContentFile(buffer.getvalue()), save=False)
            previews.append(preview)
    except BaseException:
        delete(previews)
        raise
    return previews


def delete(previews: Sequence[Preview]) -> None:
    """Remove the files of previews whose rows were not stored."""
    for preview in previews:
        default_storage.delete(str(preview.image.name))


def discard(pending: Future[list[Preview]]) -> None:
    """The turn will not store these previews: remove their files once they are written."""

    def remove(done: Future[list[Preview]]) -> None:
        if not done.cancelled() and done.exception() is None:
            delete(done.result())

    pending.add_done_callback(remove)
