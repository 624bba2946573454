"""A model's HNSW index is built once after its first bulk load, not updated on every insert.

Jobs that find no index store without one and record it (``DeferredIndex``); the job that leaves
nothing pending builds it, also when two jobs finish together; celery beat builds what a lost job
left behind; searches before the index exists are exact scans with the same results.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.models import CatalogItem, DeferredIndex, ItemEmbedding
from catalog.services import embedding, index_builds, vectors
from catalog.services.item_filters import ItemFilter
from dar_site.instrument import closing_thread_connections
from retrieval.turn import ranking
from tests.factories import CatalogFactory, CatalogItemFactory


def _unit(seed: bytes, dim: int) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


class SeededEncoder:
    """A distinct unit vector per picture (seeded by its pixels), so a graph search can tell
    items apart; a name of its own per test, so no other test's index is in the way."""

    image_size = 224

    def __init__(self, dim: int = 16) -> None:
        self.name, self.dim = f"defer-enc-{uuid.uuid4().hex[:8]}", dim

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        return np.stack([_unit(im.tobytes(), self.dim) for im in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("not used")


class SeededTextEmbedder:
    def __init__(self, dim: int = 8) -> None:
        self.name, self.dim = f"defer-text-{uuid.uuid4().hex[:8]}", dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([_unit(t.encode(), self.dim) for t in texts])


class Models:
    def __init__(self) -> None:
        self.encoder, self.text = SeededEncoder(), SeededTextEmbedder()

    def embed(self, items: Sequence[CatalogItem]) -> embedding.EmbedResult:
        return embedding.embed_items(
            [i.pk for i in items], encoder=self.encoder, text_embedder=self.text
        )

    @property
    def image_index(self) -> str:
        return vectors.index_name("image", self.encoder.name, self.encoder.dim)

    @property
    def text_index(self) -> str:
        return vectors.index_name("text", self.text.name, self.text.dim)

    def deferred(self) -> set[tuple[str, str, int]]:
        return set(DeferredIndex.objects.values_list("space", "model_name", "dim"))


def index_state(name: str) -> str:
    """ "missing", "invalid" or "valid"."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
        row = cursor.fetchone()
    return "missing" if row is None else ("valid" if row[0] else "invalid")


def stored(models: Models, items: Sequence[CatalogItem]) -> int:
    return ItemEmbedding.objects.filter(
        item__in=items, space="image", model_name=models.encoder.name
    ).count()


@pytest.mark.django_db
def test_first_load_stores_without_the_index_and_the_last_job_builds_it() -> None:
    models = Models()
    catalog = CatalogFactory.create()
    first, second = (CatalogItemFactory.create_batch(3, catalog=catalog) for _ in range(2))

    result = models.embed(first)
    # Stored and marked embedded, the index left for later: the second job's items are pending.
    assert sorted(result.embedded) == sorted(i.pk for i in first) and stored(models, first) == 3
    assert index_state(models.image_index) == index_state(models.text_index) == "missing"
    assert models.deferred() == {
        ("image", models.encoder.name, models.encoder.dim),
        ("text", models.text.name, models.text.dim),
    }

    models.embed(second)  # the last job of the load: nothing is pending any more
    assert index_state(models.image_index) == index_state(models.text_index) == "valid"
    assert models.deferred() == set()
    assert set(CatalogItem.objects.values_list("status", flat=True)) == {"embedded"}


@pytest.mark.django_db
def test_pending_items_of_another_catalog_keep_the_build_waiting() -> None:
    models = Models()
    mine = CatalogItemFactory.create_batch(2)
    CatalogItemFactory.create()  # another shop's item, pending: it will store into this index
    models.embed(mine)
    assert index_state(models.image_index) == "missing"
    assert len(models.deferred()) == 2


@pytest.mark.django_db
def test_an_existing_index_is_updated_by_later_jobs() -> None:
    models = Models()
    catalog = CatalogFactory.create()
    models.embed(CatalogItemFactory.create_batch(4, catalog=catalog))
    assert index_state(models.image_index) == "valid"

    later = CatalogItemFactory.create_batch(3, catalog=catalog)
    result = models.embed(later)
    assert sorted(result.embedded) == sorted(i.pk for i in later) and not result.unindexed
    assert models.deferred() == set()  # stored into the index, nothing recorded for later

    # The new items are found by a graph search (the planner may use nothing but the index).
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_sort = off")
    for item in later:
        query = vectors.vectors_for(
            space="image", model_name=models.encoder.name, item_ids=[item.pk]
        )[item.pk]
        with CaptureQueriesContext(connection) as captured:
            hits = vectors.search(
                catalog_id=catalog.pk,
                space="image",
                model_name=models.encoder.name,
                query=query,
                k=3,
            )
        assert hits[0].item_id == item.pk
        with connection.cursor() as cursor:
            (ranked,) = [q["sql"] for q in captured.captured_queries if "ORDER BY" in q["sql"]]
            cursor.execute("EXPLAIN " + ranked)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert f"Index Scan using {models.image_index}" in plan


@pytest.fixture
def drop_indexes() -> Iterator[list[str]]:
    """Indexes a test that commits creates: truncating the tables afterwards does not drop them."""
    names: list[str] = []
    yield names
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")


def _advisory_lock_waiter() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _counting_side_by_side(counted: list[bool]) -> Callable[[], bool]:
    """``anything_pending`` that, once it has counted, waits before its job commits until the
    other job has counted too, or is queued behind this one's lock: what two jobs finishing at
    the same moment would do, made certain."""
    original = index_builds.anything_pending
    lock = threading.Lock()

    def pending() -> bool:
        answer = original()
        with lock:
            counted.append(answer)
        deadline = time.monotonic() + 60
        while len(counted) < 2 and not _advisory_lock_waiter():
            assert time.monotonic() < deadline, "the other job neither counted nor waited"
            time.sleep(0.01)
        return answer

    return pending


@pytest.mark.django_db(transaction=True)
def test_two_jobs_finishing_together_still_build_the_index(
    monkeypatch: pytest.MonkeyPatch, drop_indexes: list[str]
) -> None:
    models = Models()
    drop_indexes += [models.image_index, models.text_index]
    catalog = CatalogFactory.create()
    batches = [CatalogItemFactory.create_batch(2, catalog=catalog) for _ in range(2)]
    counted: list[bool] = []
    monkeypatch.setattr(index_builds, "anything_pending", _counting_side_by_side(counted))
    errors: list[BaseException] = []

    def job(items: Sequence[CatalogItem]) -> None:
        try:
            models.embed(items)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    with closing_thread_connections():
        threads = [threading.Thread(target=job, args=(batch,)) for batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors and not any(thread.is_alive() for thread in threads)
    # The second to take the lock counted after the first had committed: nothing pending.
    assert counted == [True, False]
    # Built by the job, concurrently (a committed job runs outside a transaction).
    assert index_state(models.image_index) == index_state(models.text_index) == "valid"
    assert models.deferred() == set()


@contextmanager
def import_running_elsewhere() -> Iterator[threading.Event]:
    """An import holding ``loading`` on another connection until the event is set."""
    started, finish = threading.Event(), threading.Event()

    def run() -> None:
        with index_builds.loading():
            started.set()
            finish.wait(60)

    with closing_thread_connections():
        thread = threading.Thread(target=run)
        thread.start()
        assert started.wait(30)
        try:
            yield finish
        finally:
            finish.set()
            thread.join(30)


@pytest.mark.django_db(transaction=True)
def test_an_import_in_progress_keeps_the_build_waiting_and_checks_again_at_its_end(
    monkeypatch: pytest.MonkeyPatch, drop_indexes: list[str]
) -> None:
    from dar_site.celery import app

    sent: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, *a, **k: sent.append(name))
    models = Models()
    drop_indexes += [models.image_index, models.text_index]
    first_groups = CatalogItemFactory.create_batch(2)
    with import_running_elsewhere():
        # Embedding caught up with the import: nothing pending, but more items are on the way.
        models.embed(first_groups)
        assert index_state(models.image_index) == "missing"
        assert index_builds.build_stalled() == []
        assert sent == []
    assert sent == ["catalog.build_deferred_indexes"]  # queued by the import's end
    assert set(index_builds.build_stalled()) == {models.image_index, models.text_index}


@pytest.mark.django_db
def test_imports_and_feed_syncs_hold_the_load_open(monkeypatch: pytest.MonkeyPatch) -> None:
    from catalog.services import ingest, sync

    seen: list[str] = []

    @contextmanager
    def loading() -> Iterator[None]:
        seen.append("start")
        yield
        seen.append("end")

    monkeypatch.setattr(index_builds, "loading", loading)
    catalog = CatalogFactory.create()
    ingest.import_candidates(catalog, [], embed=False)
    feed = b"id\ttitle\tlink\timage_link\nSKU1\tHat\thttps://shop.example/hat\t\n"
    assert sync.sync_feed(catalog, feed, "feed.tsv", embed=False).failed  # no image: no fetch
    assert seen == ["start", "end", "start", "end"]


@pytest.mark.django_db(transaction=True)
def test_an_invalid_index_left_by_a_failed_concurrent_build_is_rebuilt(
    drop_indexes: list[str],
) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        (superuser,) = cursor.fetchone()
    if not superuser:
        pytest.skip("marking an index invalid takes a superuser")
    models = Models()
    drop_indexes.append(models.image_index)
    item = CatalogItemFactory.create()
    vectors.store("image", models.encoder.name, [(item.pk, item.catalog_id, _unit(b"x", 16))])
    with connection.cursor() as cursor:  # what a killed CREATE INDEX CONCURRENTLY leaves
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)",
            [models.image_index],
        )
    assert not vectors.index_ready("image", models.encoder.name, 16)
    assert vectors.ensure_index("image", models.encoder.name, 16, concurrently=True)
    assert index_state(models.image_index) == "valid"


@pytest.mark.django_db
def test_the_periodic_task_does_nothing_when_all_is_well(
    django_assert_max_num_queries: Any,
) -> None:
    from catalog.tasks import build_deferred_indexes
    from dar_site.celery import app

    schedule = settings.CELERY_BEAT_SCHEDULE["build-deferred-indexes"]
    assert schedule["task"] in app.tasks
    with django_assert_max_num_queries(1):
        assert build_deferred_indexes.apply().get() == []

    models = Models()
    items = CatalogItemFactory.create_batch(2)
    models.embed(items)  # one job, the whole load: built at once
    CatalogItemFactory.create()  # a new import's item, its job on the way
    with django_assert_max_num_queries(1):
        assert index_builds.build_stalled() == []
    assert index_state(models.image_index) == "valid"


@pytest.mark.django_db
def test_the_periodic_task_builds_what_a_lost_job_left_missing(
    django_assert_max_num_queries: Any,
) -> None:
    models = Models()
    lost = CatalogItemFactory.create()  # pending for good: its job went with a broker flush
    models.embed(CatalogItemFactory.create_batch(2))
    assert len(models.deferred()) == 2

    # A load in progress (jobs stored moments ago): left alone. The deferred rows, the turn lock
    # and the pending items' partial index (the test's savepoint adds two statements).
    with django_assert_max_num_queries(5):
        assert index_builds.build_stalled() == []
    assert index_state(models.image_index) == "missing"

    # Nothing stored for DAR_DEFERRED_INDEX_IDLE: the load stalled, the index is built.
    quiet = timezone.now() - timedelta(seconds=settings.DAR_DEFERRED_INDEX_IDLE + 1)
    DeferredIndex.objects.update(stored_at=quiet)
    assert set(index_builds.build_stalled()) == {models.image_index, models.text_index}
    assert models.deferred() == set()
    assert index_state(models.image_index) == index_state(models.text_index) == "valid"

    models.embed([lost])  # a job sent again later inserts into the index
    assert models.deferred() == set()


@pytest.mark.django_db
def test_jobs_of_a_load_in_progress_keep_it_from_counting_as_stalled() -> None:
    models = Models()
    CatalogItemFactory.create()  # pending: the load goes on
    models.embed(CatalogItemFactory.create_batch(2))
    # Nearly idle for DAR_DEFERRED_INDEX_IDLE; the next job to store says the load is alive.
    nearly = timezone.now() - timedelta(seconds=settings.DAR_DEFERRED_INDEX_IDLE - 30)
    DeferredIndex.objects.update(stored_at=nearly)
    models.embed(CatalogItemFactory.create_batch(2))
    assert all(
        at > nearly + timedelta(seconds=60)
        for at in DeferredIndex.objects.values_list("stored_at", flat=True)
    )
    recent = timezone.now() - timedelta(seconds=30)
    DeferredIndex.objects.update(stored_at=recent)
    models.embed(CatalogItemFactory.create_batch(2))  # fresh enough: read, not written again
    assert set(DeferredIndex.objects.values_list("stored_at", flat=True)) == {recent}
    assert index_builds.build_stalled() == []
    assert index_state(models.image_index) == "missing"


@pytest.mark.django_db
def test_the_periodic_task_builds_at_once_when_the_last_job_failed() -> None:
    models = Models()
    last = CatalogItemFactory.create()
    models.embed(CatalogItemFactory.create_batch(2))
    last.image.storage.delete(str(last.image.name))
    models.embed([last])  # fails its only item: stores nothing, so it does not build
    assert CatalogItem.objects.get(pk=last.pk).status == "failed"
    assert index_state(models.image_index) == "missing"

    assert set(index_builds.build_stalled()) == {models.image_index, models.text_index}
    assert models.deferred() == set()


@pytest.mark.django_db
def test_searches_before_the_index_exists_are_exact(settings: Any) -> None:
    rng = np.random.default_rng(3)
    catalog = CatalogFactory.create()
    items = [
        CatalogItemFactory.create(catalog=catalog, brand="acme" if i % 2 else "other")
        for i in range(40)
    ]
    model = f"noindex-{uuid.uuid4().hex[:8]}"
    vecs = rng.normal(size=(40, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vectors.store(
        "image",
        model,
        [(i.pk, catalog.pk, v) for i, v in zip(items, vecs, strict=True)],
        index=False,
    )
    assert index_state(vectors.index_name("image", model, 16)) == "missing"

    query = rng.normal(size=16).astype(np.float32)
    halves = vecs.astype(np.float16).astype(np.float32)
    order = np.argsort(-(halves @ query), kind="stable")
    expected = [items[i].pk for i in order[:10]]
    for exact in (False, True):
        hits = vectors.search(
            catalog_id=catalog.pk, space="image", model_name=model, query=query, k=10, exact=exact
        )
        assert [h.item_id for h in hits] == expected
    assert [
        h.item_id for h in ranking.rank(catalog_id=catalog.pk, model_name=model, query=query, k=10)
    ] == expected

    # A filtered search takes the index path when the filter leaves many items: a scan all the
    # same (the planner has nothing else), with the same results.
    settings.DAR_FILTER_EXACT_MAX = 0
    acme = [items[i].pk for i in order if i % 2][:5]
    hits = ranking.rank(
        catalog_id=catalog.pk,
        model_name=model,
        query=query,
        k=5,
        filters=[ItemFilter("brand", ("acme",))],
    )
    assert [h.item_id for h in hits] == acme
