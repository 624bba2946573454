"""Media behind signed URLs (local disk or an object store), static files from WhiteNoise, and
several workers with their own disks sharing one object store."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client, override_settings
from PIL import Image

from catalog.services import ingest
from catalog.services.sources import from_bytes
from dar_site import media
from dar_site.storage_config import storages_setting
from retrieval.turn import payloads, previews
from tests.factories import CatalogFactory, SearchSessionFactory, TurnFactory, image_bytes

pytestmark = pytest.mark.django_db


def _private_item() -> Any:
    catalog = CatalogFactory.create(is_public=False)
    report = ingest.import_candidates(
        catalog, [from_bytes("secret.png", image_bytes("RGB", (30, 20), (1, 2, 3)))], embed=False
    )
    from catalog.models import CatalogItem

    return CatalogItem.objects.get(pk=report.imported[0]["id"])


def test_media_is_served_only_through_signed_urls() -> None:
    item = _private_item()
    url = item.image.url
    assert item.sha256 not in url  # holding the image does not tell where it is stored
    client = Client()
    response = client.get(url)
    assert response.status_code == 200
    with item.image.open("rb") as handle:
        assert b"".join(response.streaming_content) == handle.read()  # type: ignore[attr-defined]
    assert response["X-Content-Type-Options"] == "nosniff"

    path = url.split("?")[0]
    assert client.get(path).status_code == 403  # the bare path, as the probe used it
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert client.get(tampered).status_code == 403
    other = path.replace(item.image.name.rsplit("/", 1)[-1], "x.png") + "?" + url.split("?")[1]
    assert client.get(other).status_code == 403  # a signature is for one file only


def test_signed_urls_expire() -> None:
    name = "catalogs/1/ab/abc.png"
    query = dict(part.split("=") for part in media.signed_query(name).split("&"))
    assert media.check(name, query["e"], query["s"])
    assert not media.check(name, query["e"], query["s"], now=int(query["e"]) + 1)
    assert not media.check(name, "not-a-number", query["s"])


def test_behind_nginx_the_file_is_sent_by_the_web_server() -> None:
    item = _private_item()
    with override_settings(DAR_MEDIA_ACCEL_REDIRECT="/protected-media/"):
        response = Client().get(item.image.url)
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-media/{item.image.name}"
    assert response.content == b""


def test_originals_are_not_served_at_all() -> None:
    item = _private_item()
    assert item.original.name
    signed = media.signed_query(item.original.name)
    response = Client().get(f"/media/{item.original.name}?{signed}")
    assert response.status_code == 404  # not under MEDIA_ROOT, whatever the signature


def test_static_files_come_from_whitenoise() -> None:
    client = Client()
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert client.get("/static/../dar_site/settings.py").status_code == 404


# --- Several hosts: one object store -----------------------------------------------------------


@pytest.fixture
def object_store() -> Iterator[dict[str, Any]]:
    """An S3-compatible server (moto's, on a free local port) with an empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {
        "bucket_name": "dar-test",
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "access_key": "test",
        "secret_key": "test",
        "addressing_style": "path",
        "querystring_expire": 600,
    }
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket="dar-test")
    try:
        yield options
    finally:
        server.stop()


def _host(tmp: Path, name: str, s3: dict[str, Any]) -> Any:
    """Settings of one host: its own local disk, the shared object store."""
    disk = tmp / name
    disk.mkdir()
    return override_settings(
        MEDIA_ROOT=str(disk / "media"),
        PRIVATE_MEDIA_ROOT=str(disk / "private"),
        DAR_MEDIA_STORAGE="s3",
        STORAGES=storages_setting(
            backend="s3",
            media_root=str(disk / "media"),
            media_url="/media/",
            private_root=str(disk / "private"),
            s3=s3,
        ),
    )


def _png(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (16, 16), color)


def test_previews_written_by_two_workers_are_served_by_the_web_host(
    tmp_path: Path, object_store: dict[str, Any]
) -> None:
    session = SearchSessionFactory.create()
    turns = [TurnFactory.create(session=session, index=i) for i in range(2)]
    colours = [(250, 0, 0), (0, 0, 250)]
    for n, (turn, colour) in enumerate(zip(turns, colours, strict=True)):
        with _host(tmp_path, f"gpu{n}", object_store):  # two gpu workers, two disks
            written = previews.write(turn, 1, [f"prompt {n}"], [_png(colour)], seed=n).result()
            for preview in written:
                preview.save()
    for n in range(2):
        assert not any((tmp_path / f"gpu{n}").rglob("*.png"))  # nothing on a worker's disk

    with _host(tmp_path, "web", object_store):
        # What the web host sends the page for each turn (the websocket event and REST state).
        urls = [
            img["url"]
            for t in turns
            for img in payloads.previews_event(t, t.previews.all())["images"]
        ]
        fetched = []
        for url in urls:
            assert "X-Amz-Signature=" in url  # presigned: the bucket stays private
            with urllib.request.urlopen(url, timeout=10) as response:
                fetched.append(Image.open(io.BytesIO(response.read())).getpixel((0, 0)))
            bare = url.split("?")[0]
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(bare, timeout=10)
    assert fetched == colours
    assert not any((tmp_path / "web").rglob("*.png"))


def test_the_object_store_keeps_originals_apart_and_private(
    tmp_path: Path, object_store: dict[str, Any]
) -> None:
    with _host(tmp_path, "web", object_store):
        item = _private_item()
        assert item.image.storage.location == "media"
        assert item.original.storage.location == "private"
        assert default_storage.exists(item.image.name)
        default_storage.save("probe.txt", ContentFile(b"x"))
        with urllib.request.urlopen(default_storage.url("probe.txt"), timeout=10) as response:
            assert response.read() == b"x"
