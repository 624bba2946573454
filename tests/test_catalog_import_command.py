"""``import_catalog``: a realistic mixed batch, the JSON report, re-runs and interrupted runs."""

from __future__ import annotations

import io
import json
import zipfile
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from PIL import Image

from catalog.models import Catalog, CatalogItem, Shop, media_token
from catalog.services import embedding, storing, validation
from tests.factories import CatalogFactory, image_bytes

pytestmark = pytest.mark.django_db


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (0, 90, 200)).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in ((0, 255, 0), (255, 0, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def build_batch(root: Path) -> dict[str, Path]:
    """A folder of good and bad files, a zip, and a CSV manifest (as a shop would send)."""
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    good = image_bytes("RGB", (40, 30), (200, 30, 30))
    (photos / "red.png").write_bytes(good)
    (photos / "sub" / "copy-of-red.png").write_bytes(good)  # duplicate in the same batch
    (photos / "sub" / "rotated.jpg").write_bytes(exif_rotated_jpeg())
    (photos / "cmyk.jpg").write_bytes(image_bytes("CMYK", (20, 20), (0, 255, 255, 0), "JPEG"))
    (photos / "anim.gif").write_bytes(animated_gif())
    (photos / "fake.jpg").write_bytes(b"this is not a picture\n" * 10)
    (photos / "icon.png").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    (photos / "empty.png").write_bytes(b"")
    (photos / "truncated.jpg").write_bytes(image_bytes("RGB", (64, 64), (9, 9, 9), "JPEG")[:300])

    archive = root / "pack.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pack/green.png", image_bytes("RGB", (20, 20), (0, 200, 0)))
        zf.writestr("pack/palette.png", image_bytes("P", (20, 20), 3))
        zf.writestr("../evil.png", image_bytes("RGB", (20, 20), (1, 1, 1)))
        zf.writestr("pack/red-again.png", good)

    shop = root / "shop"
    (shop / "img").mkdir(parents=True)
    (shop / "img" / "blue.png").write_bytes(image_bytes("RGB", (30, 30), (0, 0, 220)))
    (shop / "img" / "rgba.png").write_bytes(image_bytes("RGBA", (30, 30), (0, 0, 0, 0)))
    manifest = shop / "items.csv"
    manifest.write_text(
        "path,title,description,color\n"
        "img/blue.png,Blue scarf,Soft wool scarf,blue\n"
        "img/rgba.png,Clear case,,\n"
        "https://cdn.example.com/a.png,Remote,,\n"
        "../photos/red.png,Escaping,,\n"
        ",No path,,\n",
        encoding="utf-8",
    )
    return {"photos": photos, "zip": archive, "manifest": manifest}


def stored_files(catalog: Catalog) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "catalogs" / str(catalog.pk)
    return sorted(p for p in folder.rglob("*") if p.is_file())


def run_import(catalog: Catalog, paths: list[Path], tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    out = io.StringIO()
    call_command(
        "import_catalog",
        "--catalog",
        catalog.slug,
        *map(str, paths),
        "--report",
        str(report),
        "--no-embed",
        "--no-progress",
        *args,
        stdout=out,
    )
    return json.loads(report.read_text())


def test_mixed_batch_imports_the_good_and_reports_the_rest(tmp_path: Path) -> None:
    catalog = CatalogFactory.create()
    batch = build_batch(tmp_path)
    report = run_import(catalog, list(batch.values()), tmp_path)

    def rel(path: str) -> str:
        return path.replace(f"{tmp_path}/", "")

    assert {rel(r["path"]) for r in report["imported"]} == {
        "photos/red.png",
        "photos/sub/rotated.jpg",
        "photos/cmyk.jpg",
        "photos/anim.gif",
        "pack.zip!pack/green.png",
        "pack.zip!pack/palette.png",
        "shop/items.csv:2:img/blue.png",
        "shop/items.csv:3:img/rgba.png",
    }
    assert {rel(r["path"]) for r in report["duplicates"]} == {
        "photos/sub/copy-of-red.png",
        "pack.zip!pack/red-again.png",
    }
    rejected = {rel(r["path"]): r["reason"] for r in report["rejected"]}
    assert "not a recognised image" in rejected["photos/fake.jpg"]
    assert "SVG" in rejected["photos/icon.png"]
    assert rejected["photos/empty.png"] == "empty file"
    assert "truncated" in rejected["photos/truncated.jpg"]
    assert "escapes" in rejected["pack.zip!../evil.png"]
    assert "URLs are not fetched" in rejected["shop/items.csv:4:https://cdn.example.com/a.png"]
    assert rejected["shop/items.csv:5:../photos/red.png"] == "path escapes the manifest's folder"
    assert rejected["shop/items.csv:6"] == "manifest row has no path"
    assert len(report["rejected"]) == 8

    items = CatalogItem.objects.filter(catalog=catalog)
    assert items.count() == 8 and set(items.values_list("status", flat=True)) == {"pending"}
    scarf = items.get(title="Blue scarf")
    assert scarf.description == "Soft wool scarf" and scarf.attributes == {"color": "blue"}
    rotated = items.get(source_name__endswith="rotated.jpg")
    assert (rotated.width, rotated.height) == (40, 60)
    assert str(rotated.image.name).endswith(".jpg") and str(scarf.image.name).endswith(".png")
    # Content-addressed by a keyed hash of the original bytes: not the sha256 itself, which
    # would tell anyone holding an image where (and whether) a catalog stores it.
    token = media_token(catalog.pk, rotated.sha256)
    assert rotated.image.name == f"catalogs/{catalog.pk}/{token[:2]}/{token}.jpg"
    assert rotated.sha256 not in rotated.image.name
    # The original is kept as received, privately (outside the served media folder).
    with rotated.original.open("rb") as handle:
        assert validation.sha256_of(handle.read()) == rotated.sha256
    assert not Path(rotated.original.path).is_relative_to(settings.MEDIA_ROOT)
    assert len(stored_files(catalog)) == 8


def test_rerun_adds_nothing(tmp_path: Path) -> None:
    catalog = CatalogFactory.create()
    batch = build_batch(tmp_path)
    run_import(catalog, list(batch.values()), tmp_path)
    files = stored_files(catalog)
    again = run_import(catalog, list(batch.values()), tmp_path)
    assert again["imported"] == []
    assert len(again["duplicates"]) == 10 and len(again["rejected"]) == 8
    assert CatalogItem.objects.filter(catalog=catalog).count() == 8
    assert stored_files(catalog) == files


def test_interrupted_import_finishes_on_rerun_without_duplicates_or_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = CatalogFactory.create()
    batch = build_batch(tmp_path)
    real_store = storing.store_item_files
    calls = {"n": 0}

    def store_then_die(item: CatalogItem, image: Any, original: bytes) -> None:
        real_store(item, image, original)
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed after writing the files, before the rows exist

    monkeypatch.setattr(storing, "store_item_files", store_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_import(catalog, list(batch.values()), tmp_path)
    # A group's rows are inserted together once its files are written: none yet.
    assert CatalogItem.objects.filter(catalog=catalog).count() == 0
    # Files without rows: the fourth write and any written beside it (a group's files are
    # written from several threads).
    assert len(stored_files(catalog)) >= 4

    monkeypatch.setattr(storing, "store_item_files", real_store)
    report = run_import(catalog, list(batch.values()), tmp_path)
    assert len(report["imported"]) == 8 and len(report["duplicates"]) == 2
    items = CatalogItem.objects.filter(catalog=catalog)
    assert items.count() == 8
    # Every file belongs to exactly one item: the leftover was adopted, not saved as name_x7Yz.
    assert [p.relative_to(settings.MEDIA_ROOT).as_posix() for p in stored_files(catalog)] == sorted(
        items.values_list("image", flat=True)
    )


def test_a_file_cut_short_by_a_crash_is_replaced(tmp_path: Path) -> None:
    catalog = CatalogFactory.create()
    data = image_bytes("RGB", (30, 30), (5, 6, 7))
    (tmp_path / "a.png").write_bytes(data)
    from catalog.services.validation import NormalisedImage, judge

    judged = judge(data)
    assert isinstance(judged, NormalisedImage)
    token = media_token(catalog.pk, judged.sha256)
    leftover = Path(settings.MEDIA_ROOT) / "catalogs" / str(catalog.pk) / token[:2] / f"{token}.png"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(judged.data[:20])
    run_import(catalog, [tmp_path / "a.png"], tmp_path)
    item = CatalogItem.objects.get(catalog=catalog)
    assert item.image.name == leftover.relative_to(settings.MEDIA_ROOT).as_posix()
    assert leftover.read_bytes() == judged.data


def test_create_option_makes_shop_and_catalog(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes())
    with pytest.raises(CommandError, match="no catalog"):
        call_command("import_catalog", "--catalog", "new-cat", str(tmp_path), "--no-progress")
    with pytest.raises(CommandError, match="--shop"):
        call_command(
            "import_catalog", "--catalog", "new-cat", str(tmp_path), "--create", "--no-progress"
        )
    out = io.StringIO()
    call_command(
        "import_catalog",
        "--catalog",
        "new-cat",
        str(tmp_path),
        "--create",
        "--shop",
        "acme",
        "--name",
        "New things",
        "--no-embed",
        "--no-progress",
        stdout=out,
    )
    catalog = Catalog.objects.get(slug="new-cat")
    assert catalog.shop == Shop.objects.get(slug="acme") and catalog.name == "New things"
    assert "1 imported, 0 duplicates, 0 rejected" in out.getvalue()


@override_settings(DAR_EMBED_BATCH=3)
def test_embedding_jobs_are_queued_in_batches_after_commit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    catalog = CatalogFactory.create()
    for i in range(7):
        (tmp_path / f"{i}.png").write_bytes(image_bytes("RGB", (8, 8), (i, i, i)))
    sent: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", sent.append)

    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_catalog",
            "--catalog",
            catalog.slug,
            str(tmp_path),
            "--no-embed",
            "--no-progress",
            stdout=io.StringIO(),
        )
    assert sent == []

    CatalogItem.objects.filter(catalog=catalog).delete()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_catalog",
            "--catalog",
            catalog.slug,
            str(tmp_path),
            "--no-progress",
            stdout=io.StringIO(),
        )
    ids = sorted(CatalogItem.objects.filter(catalog=catalog).values_list("pk", flat=True))
    assert [len(b) for b in sent] == [3, 3, 1] and sorted(chain.from_iterable(sent)) == ids

    # A re-run re-queues items still pending (their job may have died with the last run).
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_catalog",
            "--catalog",
            catalog.slug,
            str(tmp_path),
            "--no-progress",
            stdout=io.StringIO(),
        )
    assert sorted(chain.from_iterable(sent)) == ids
