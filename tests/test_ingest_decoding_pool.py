"""The ingest's decoding processes: images go to the pool in chunks, outcomes come back to each
image, and a chunk whose process died is decoded again image by image."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from django.test import override_settings

from catalog.services import decoding, ingest, validation
from catalog.services.sources import from_bytes
from tests.factories import CatalogFactory, image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool() -> Iterator[None]:
    with override_settings(DAR_INGEST_PROCESSES=2):
        yield
    decoding.shutdown()


def pictures(n: int) -> list[bytes]:
    return [image_bytes("RGB", (24, 18), (i, 3 * i % 256, 90)) for i in range(n)]


def test_chunks_decoded_in_the_pool_equal_inline_decodes(pool: None) -> None:
    limits = validation.Limits.from_settings()
    datas = [*pictures(decoding.CHUNK_IMAGES * 2 + 3), b"\x89PNG\r\n\x1a\n broken"]
    decoder = decoding.Decoder(limits, inline=False)
    futures = [decoder.submit(data, validation.sha256_of(data)) for data in datas]
    decoder.flush()
    outcomes = [decoder.result(f) for f in futures]
    for data, outcome in zip(datas, outcomes, strict=True):
        assert outcome == validation.decode(data, limits, validation.sha256_of(data))
    assert isinstance(outcomes[-1], validation.Rejection)


def test_waiting_on_an_image_still_being_collected_sends_its_chunk(pool: None) -> None:
    decoder = decoding.Decoder(validation.Limits.from_settings(), inline=False)
    data = pictures(1)[0]
    future = decoder.submit(data, validation.sha256_of(data))  # a chunk of one, not sent yet
    assert isinstance(decoder.result(future), validation.NormalisedImage)


def test_a_dead_chunk_is_retried_image_by_image(
    pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    datas = pictures(decoding.CHUNK_IMAGES + 2)
    victim = datas[3]
    real_send = decoding.Decoder._send
    sent: list[int] = []

    def send(self: decoding.Decoder, fn: Any, *args: Any) -> Future[Any]:
        # A process dies on the victim: its whole chunk is lost, and so is a retry of it alone.
        images = [d for d, _ in args[0]] if fn is decoding.decode_chunk else [args[0]]
        sent.append(len(images))
        if victim in images:
            dead: Future[Any] = Future()
            dead.set_exception(BrokenProcessPool("killed"))
            return dead
        return real_send(self, fn, *args)

    monkeypatch.setattr(decoding.Decoder, "_send", send)
    candidates = [from_bytes(f"p{i}.png", data) for i, data in enumerate(datas)]
    report = ingest.import_candidates(CatalogFactory.create(), candidates, embed=False)
    assert report.rejected == [{"path": "p3.png", "reason": decoding.STOPPED}]
    assert len(report.imported) == len(datas) - 1
    # The first chunk went whole, then its images one by one.
    assert sent[0] == decoding.CHUNK_IMAGES and sent.count(1) >= decoding.CHUNK_IMAGES
