"""Embedding jobs: real offline models, idempotence, failures, encoder changes, a real worker."""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.test import override_settings

from catalog.models import CatalogItem, ItemEmbedding
from catalog.services import embedding, progress, vectors
from tests.factories import CatalogFactory, CatalogItemFactory, image_bytes


class FakeEncoder:
    def __init__(
        self, name: str = "fake-enc", dim: int = 8, fail: bool = False, image_size: int = 224
    ) -> None:
        self.name, self.dim, self.fail, self.image_size = name, dim, fail, image_size
        self.seen: list[tuple[int, int]] = []

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        self.seen += [im.size for im in images]
        out = np.ones((len(images), self.dim), dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("not used")


class FakeTextEmbedder:
    name, dim = "fake-text", 4

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += list(texts)
        return np.full((len(texts), self.dim), 0.5, dtype=np.float32)


def use_encoder_name(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr("catalog.services.encoder.configured_encoder_name", lambda: name)


@pytest.mark.django_db
def test_real_offline_models_embed_images_and_product_text(offline_models: Any) -> None:
    from workers.models.registry import get_encoder, get_text_embedder

    catalog = CatalogFactory.create()
    titled = CatalogItemFactory.create(
        catalog=catalog, title="red apple", description="fresh fruit"
    )
    untitled = CatalogItemFactory.create(catalog=catalog, title="")
    result = embedding.embed_items([titled.pk, untitled.pk])
    encoder, text = get_encoder(), get_text_embedder()
    assert sorted(result.embedded) == sorted([titled.pk, untitled.pk])
    assert result.encoder == encoder.name and result.text_model == text.name
    assert "MiniLM" in text.name and text.dim == 384

    rows = ItemEmbedding.objects.filter(catalog=catalog)
    image_rows = rows.filter(space="image", model_name=encoder.name)
    assert image_rows.count() == 2 and {r.dim for r in image_rows} == {encoder.dim}
    text_rows = rows.filter(space="text")
    assert [(r.item_id, r.model_name, r.dim) for r in text_rows] == [(titled.pk, text.name, 384)]
    assert np.linalg.norm(np.asarray(text_rows[0].vector)) == pytest.approx(1.0, abs=1e-4)

    # Idempotent: running the same job again upserts, it does not add rows.
    before = {(r.item_id, r.space): np.asarray(r.vector) for r in rows}
    embedding.embed_items([titled.pk, untitled.pk])
    after = {(r.item_id, r.space): np.asarray(r.vector) for r in rows.all()}
    assert before.keys() == after.keys()
    assert all(np.allclose(before[k], after[k], atol=1e-5) for k in before)

    counts = progress.counts(catalog, encoder.name)
    assert (counts["embedded"], counts["pending"], counts["stale"]) == (2, 0, 0)
    hits = vectors.search(
        catalog_id=catalog.pk,
        space="image",
        model_name=encoder.name,
        query=np.asarray(image_rows[0].vector, dtype=np.float32),
        k=5,
    )
    assert len(hits) == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("input_side", "decoded"), [(64, (160, 120)), (224, (320, 240)), (384, (640, 480))]
)
def test_a_stored_photo_is_decoded_at_the_encoders_input_size(
    input_side: int, decoded: tuple[int, int]
) -> None:
    """A 640x480 JPEG rendition is decoded at the smallest JPEG scale covering the encoder's
    input on both sides (1/4 for a 64 px model, 1/2 for 224 px), never below it (384 px: whole)."""
    photo = image_bytes(size=(640, 480), fmt="JPEG", quality=90)
    drawing = image_bytes(size=(640, 480), fmt="PNG")  # PNG has no scaled decoding: whole
    items = [CatalogItemFactory.create(image_bytes=data) for data in (photo, drawing)]
    enc = FakeEncoder(image_size=input_side)
    embedding.embed_items([it.pk for it in items], encoder=enc, text_embedder=FakeTextEmbedder())
    assert enc.seen == [decoded, (640, 480)]


@pytest.mark.django_db
def test_unreadable_file_fails_only_that_item_and_deleted_items_are_skipped() -> None:
    catalog = CatalogFactory.create()
    good, broken, gone = (CatalogItemFactory.create(catalog=catalog) for _ in range(3))
    broken.image.storage.delete(str(broken.image.name))
    gone_pk = gone.pk
    gone.delete()
    enc, text = FakeEncoder(), FakeTextEmbedder()
    result = embedding.embed_items([good.pk, broken.pk, gone_pk], encoder=enc, text_embedder=text)
    assert result.embedded == [good.pk] and result.missing == [gone_pk]
    broken.refresh_from_db()
    assert broken.status == "failed" and "cannot open the stored image" in broken.error
    good.refresh_from_db()
    assert good.status == "embedded" and good.error == ""
    assert text.texts == [good.title]  # product text of the embedded item


@pytest.mark.django_db
def test_encoder_failure_marks_the_batch_failed_with_the_reason() -> None:
    items = CatalogItemFactory.create_batch(2)
    result = embedding.embed_items(
        [i.pk for i in items], encoder=FakeEncoder(fail=True), text_embedder=FakeTextEmbedder()
    )
    assert len(result.failed) == 2
    assert {i.status for i in CatalogItem.objects.all()} == {"failed"}
    assert "image encoding failed: CUDA out of memory" in CatalogItem.objects.all()[0].error


@pytest.mark.django_db
def test_cleared_text_drops_the_old_text_vector() -> None:
    item = CatalogItemFactory.create(title="blue hat")
    text = FakeTextEmbedder()
    embedding.embed_items([item.pk], encoder=FakeEncoder(), text_embedder=text)
    assert item.embeddings.filter(space="text").count() == 1
    CatalogItem.objects.filter(pk=item.pk).update(title="")
    embedding.embed_items([item.pk], encoder=FakeEncoder(), text_embedder=text)
    assert item.embeddings.filter(space="text").count() == 0


@pytest.mark.django_db
def test_changing_the_encoder_makes_items_stale_until_reembedded(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    catalog = CatalogFactory.create()
    items = CatalogItemFactory.create_batch(3, catalog=catalog)
    ids = [i.pk for i in items]
    embedding.embed_items(ids, encoder=FakeEncoder("enc-A"), text_embedder=FakeTextEmbedder())
    use_encoder_name(monkeypatch, "enc-A")
    assert progress.counts(catalog)["embedded"] == 3

    use_encoder_name(monkeypatch, "enc-B")  # the operator switched encoders
    counts = progress.counts(catalog)
    assert (counts["embedded"], counts["stale"], counts["encoder"]) == (0, 3, "enc-B")
    # Searches use the active encoder's name only: nothing stale can enter a ranking.
    query = np.ones(8, dtype=np.float32) / np.sqrt(8)
    assert (
        vectors.search(catalog_id=catalog.pk, space="image", model_name="enc-B", query=query, k=10)
        == []
    )

    sent: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        out = io.StringIO()
        call_command("embed_catalog", "--catalog", catalog.slug, "--stale", stdout=out)
    assert "queued 3 item(s)" in out.getvalue() and sorted(chain.from_iterable(sent)) == sorted(ids)
    assert progress.counts(catalog)["pending"] == 3

    embedding.embed_items(ids, encoder=FakeEncoder("enc-B"), text_embedder=FakeTextEmbedder())
    counts = progress.counts(catalog)
    assert (counts["embedded"], counts["stale"], counts["pending"]) == (3, 0, 0)
    assert (
        len(
            vectors.search(
                catalog_id=catalog.pk, space="image", model_name="enc-B", query=query, k=10
            )
        )
        == 3
    )
    # Nothing stale now: --stale queues nothing, --all queues everything.
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        # As the demo runner calls it.
        call_command("embed_catalog", catalog=catalog.slug, stale=True, stdout=io.StringIO())
        assert sent == []
        call_command("embed_catalog", catalog=catalog.slug, all=True, stdout=io.StringIO())
    assert sorted(chain.from_iterable(sent)) == sorted(ids)


@pytest.mark.django_db
def test_last_used_encoder_is_the_fallback_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from catalog.services.encoder import active_encoder_name

    monkeypatch.setattr("catalog.services.encoder.configured_encoder_name", lambda: None)
    item = CatalogItemFactory.create()
    assert active_encoder_name() is None
    embedding.embed_items([item.pk], encoder=FakeEncoder("enc-Z"), text_embedder=FakeTextEmbedder())
    assert active_encoder_name() == "enc-Z"


def test_web_side_knows_the_active_encoder_without_loading_it() -> None:
    from catalog.services.encoder import configured_encoder_name
    from workers.models.config import model_plan

    assert configured_encoder_name() == model_plan().encoder_name


@pytest.mark.django_db
def test_task_retries_transient_database_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from catalog.tasks import embed_items as task

    assert task.name == "gpu.embed_items"
    calls = {"n": 0}

    def flaky(ids: list[int]) -> embedding.EmbedResult:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return embedding.EmbedResult(embedded=list(ids))

    monkeypatch.setattr(embedding, "embed_items", flaky)
    result = task.apply(args=[[1, 2]])
    assert result.successful() and result.result["embedded"] == [1, 2]
    assert calls["n"] == 2


def test_task_routing_is_the_gpu_queue() -> None:
    from django.conf import settings

    from dar_site.celery import app

    route = app.amqp.router.route({}, "gpu.embed_items")
    assert route["queue"].name == settings.CELERY_GPU_QUEUE


@override_settings(DAR_EMBED_BATCH=4)
def test_import_then_real_worker_embeds_everything(celery_worker: Any, tmp_path: Path) -> None:
    from workers.models.registry import get_encoder

    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes(image_bytes("RGB", (24, 24), (i * 20, 50, 100)))
    (tmp_path / "bad.png").write_bytes(b"nope")
    out = io.StringIO()
    call_command(
        "import_catalog",
        "--catalog",
        "worker-test",
        "--create",
        "--shop",
        "worker-shop",
        str(tmp_path),
        "--wait",
        "--timeout",
        "240",
        "--no-progress",
        stdout=out,
    )
    text = out.getvalue()
    assert "10 imported, 0 duplicates, 1 rejected" in text
    counts = progress.counts(CatalogItem.objects.all()[0].catalog)
    assert counts["embedded"] == 10 and counts["pending"] == 0, text
    assert counts["encoder"] == get_encoder().name
    assert ItemEmbedding.objects.filter(space="image", model_name=get_encoder().name).count() == 10
