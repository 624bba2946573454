"""The ingest pipeline: bytes de-duplicated before decoding, a decode budget per upload, each
upload decoded once (in the decoding processes), renditions served and originals kept."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from PIL import Image, ImageFile

from catalog.models import CatalogItem
from catalog.services import decoding, embedding, ingest
from catalog.services.sources import from_bytes
from tests.factories import CatalogFactory, image_bytes

pytestmark = pytest.mark.django_db


def zip_of(entries: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("pack.zip", buffer.getvalue(), content_type="application/zip")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every full decode (``ImageFile.load``) in this process; the import decodes inline."""
    calls: list[Any] = []
    real = ImageFile.ImageFile.load

    def counting(self: ImageFile.ImageFile) -> Any:
        if self.tile:  # a load that still has pixels to decode
            calls.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    with override_settings(DAR_INGEST_PROCESSES=1):
        yield calls


def test_identical_large_images_in_a_zip_are_decoded_once(decodes: list[Any]) -> None:
    # The hardening probe's upload: ten copies of one big flat PNG, a few kB zipped.
    big = image_bytes("RGB", (3000, 3000), (10, 120, 40))
    upload = zip_of({f"copy{i}.png": big for i in range(10)})
    catalog = CatalogFactory.create()
    report = ingest.import_uploads(catalog, [upload], embed=False)
    assert len(report.imported) == 1 and len(report.duplicates) == 9 and not report.rejected
    assert {d["id"] for d in report.duplicates} == {report.imported[0]["id"]}
    assert decodes == [(3000, 3000)]

    # Uploading them again decodes nothing: the catalog has those bytes.
    decodes.clear()
    again = ingest.import_uploads(catalog, [zip_of({"more.png": big})], embed=False)
    assert len(again.duplicates) == 1 and decodes == []


def test_an_upload_has_a_decode_budget() -> None:
    files = [
        SimpleUploadedFile(f"p{i}.png", image_bytes("RGB", (100, 100), (i, 2 * i, 90)))
        for i in range(4)
    ]
    catalog = CatalogFactory.create()
    with override_settings(DAR_MAX_UPLOAD_PIXELS=25_000):
        report = ingest.import_uploads(catalog, files, embed=False)
    assert len(report.imported) == 2
    reasons = [r["reason"] for r in report.rejected]
    assert len(reasons) == 2 and all("DAR_MAX_UPLOAD_PIXELS" in r for r in reasons)
    # The command line (a shop's own files) has no such budget.
    with override_settings(DAR_MAX_UPLOAD_PIXELS=25_000):
        cli = ingest.import_candidates(
            catalog,
            [from_bytes(f"c{i}.png", image_bytes("RGB", (100, 100), (i, 9, 9))) for i in range(3)],
            embed=False,
        )
    assert len(cli.imported) == 3


def test_pool_renders_large_photos_at_web_size_and_keeps_the_original() -> None:
    photo = io.BytesIO()
    Image.radial_gradient("L").resize((2400, 1800)).convert("RGB").save(photo, "JPEG", quality=90)
    data = photo.getvalue()
    candidates = [from_bytes("big.jpg", data), from_bytes("small.png", image_bytes())]
    catalog = CatalogFactory.create()
    with override_settings(DAR_WEB_IMAGE_SIZE=600, DAR_INGEST_PROCESSES=2):
        report = ingest.import_candidates(catalog, candidates, embed=False)
    assert len(report.imported) == 2
    item = CatalogItem.objects.get(catalog=catalog, source_name="big.jpg")
    assert (item.width, item.height) == (600, 450)
    with item.image.open("rb") as handle, Image.open(handle) as served:
        assert served.size == (600, 450) and served.format == "JPEG"
        assert not served.info.get("exif")
    with item.original.open("rb") as handle:  # type: ignore[assignment]
        assert handle.read() == data


def test_embedding_jobs_are_queued_group_by_group(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    sent: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", sent.append)
    candidates = [
        from_bytes(f"p{i}.png", image_bytes("RGB", (20, 20), (i, 100, 200))) for i in range(7)
    ]
    with override_settings(DAR_EMBED_BATCH=3), django_capture_on_commit_callbacks(execute=True):
        report = ingest.import_candidates(CatalogFactory.create(), candidates)
    # One job per group of three, each sent as soon as its group was stored.
    assert [len(batch) for batch in sent] == [3, 3, 1]
    assert sorted(pk for batch in sent for pk in batch) == sorted(r["id"] for r in report.imported)


def test_a_crashed_decoder_rejects_that_image_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    real_submit = decoding.Decoder.submit

    def crash_on_second(self: decoding.Decoder, data: bytes, sha256: str) -> Future[Any]:
        if data == victim:
            broken: Future[Any] = Future()
            broken.set_exception(BrokenProcessPool("killed"))
            return broken
        return real_submit(self, data, sha256)

    victim = image_bytes("RGB", (20, 20), (1, 2, 3))
    monkeypatch.setattr(decoding.Decoder, "submit", crash_on_second)
    candidates = [
        from_bytes("a.png", image_bytes("RGB", (20, 20), (9, 9, 9))),
        from_bytes("victim.png", victim),
        from_bytes("c.png", image_bytes("RGB", (20, 20), (7, 7, 7))),
    ]
    report = ingest.import_candidates(CatalogFactory.create(), candidates, embed=False)
    assert [r["path"] for r in report.imported] == ["a.png", "c.png"]
    assert report.rejected == [
        {"path": "victim.png", "reason": "the image could not be decoded (the decoder stopped)"}
    ]


def test_duplicates_are_looked_up_a_chunk_at_a_time() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    catalog = CatalogFactory.create()
    datas = [image_bytes("RGB", (16, 16), (i, 40, 80)) for i in range(40)]
    first = ingest.import_candidates(
        catalog, [from_bytes(f"a{i}.png", d) for i, d in enumerate(datas)], embed=False
    )
    assert len(first.imported) == 40
    with CaptureQueriesContext(connection) as queries:
        again = ingest.import_candidates(
            catalog, [from_bytes(f"b{i}.png", d) for i, d in enumerate(datas)], embed=False
        )
    assert len(again.duplicates) == 40 and not again.imported
    lookups = [q for q in queries.captured_queries if "sha256" in q["sql"]]
    assert len(lookups) == 2  # 40 candidates in chunks of 32, not one query each
