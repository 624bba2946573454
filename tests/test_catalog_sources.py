"""Sources: folders, zips and manifests yield candidates safely; bad entries carry a reason."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from django.test import override_settings

from catalog.services.sources import (
    Candidate,
    CandidateRejected,
    _read_capped,
    _ZipBudget,
    collect,
)
from tests.factories import image_bytes


def gather(*paths: str | Path) -> dict[str, Candidate]:
    with contextlib.ExitStack() as stack:
        found = collect([str(p) for p in paths], stack)
        # Read inside the stack (archives are open); keep the outcome on the candidate.
        for c in found:
            if c.rejection is None and c.read is not None:
                try:
                    c.attributes.setdefault("_bytes", len(c.read()))
                except CandidateRejected as exc:
                    c.rejection = str(exc)
        return {c.path: c for c in found}


def reasons(found: dict[str, Candidate]) -> dict[str, str]:
    """Rejection reason per path ("" for an accepted candidate)."""
    return {path: c.rejection or "" for path, c in found.items()}


def make_zip(path: Path, entries: dict[str, bytes], **symlinks: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_folder_is_walked_recursively_skipping_clutter(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "top.png").write_bytes(image_bytes())
    (tmp_path / "a" / "b" / "deep.jpg").write_bytes(image_bytes(fmt="JPEG"))
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "a" / "._deep.jpg").write_bytes(b"appledouble")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "x.png").write_bytes(b"junk")
    found = gather(tmp_path)
    assert set(found) == {f"{tmp_path}/top.png", f"{tmp_path}/a/b/deep.jpg"}
    assert all(c.rejection is None for c in found.values())


def test_symlink_escaping_the_folder_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes())
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "ok.png").write_bytes(image_bytes())
    os.symlink(outside, folder / "link.png")
    os.symlink(folder / "ok.png", folder / "inner-link.png")
    found = reasons(gather(folder))
    assert found[f"{folder}/link.png"] == "symlink pointing outside the folder"
    assert found[f"{folder}/inner-link.png"] == ""
    assert found[f"{folder}/ok.png"] == ""


def test_zip_inside_a_folder_is_expanded(tmp_path: Path) -> None:
    make_zip(tmp_path / "pack.bin", {"in/zip.png": image_bytes()})  # a zip by content
    found = gather(tmp_path)
    assert reasons(found) == {f"{tmp_path}/pack.bin!in/zip.png": ""}


def test_zip_entries_escaping_their_folder(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "evil.zip",
        {
            "good/one.png": image_bytes(),
            "../escape.png": image_bytes(),
            "a/../../escape2.png": image_bytes(),
            "/etc/absolute.png": image_bytes(),
            "C:/windows.png": image_bytes(),
            "a\\..\\..\\backslash.png": image_bytes(),
        },
        **{"link.png": "/etc/passwd"},
    )
    found = reasons(gather(archive))
    z = f"{archive}!"
    assert found[z + "good/one.png"] == ""
    assert "escapes" in found[z + "../escape.png"]
    assert "escapes" in found[z + "a/../../escape2.png"]
    assert "absolute" in found[z + "/etc/absolute.png"]
    assert "absolute" in found[z + "C:/windows.png"]
    assert "escapes" in found[z + "a\\..\\..\\backslash.png"]
    assert "symbolic link" in found[z + "link.png"]


@override_settings(DAR_MAX_ZIP_ENTRIES=5)
def test_zip_with_too_many_entries_is_refused_whole(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", {f"{i}.png": image_bytes() for i in range(6)})
    found = gather(archive)
    assert list(found) == [str(archive)]
    assert "6 entries exceed the limit of 5" in (found[str(archive)].rejection or "")


@override_settings(DAR_MAX_ZIP_BYTES=1024 * 1024)
def test_zip_bomb_by_declared_size(tmp_path: Path) -> None:
    # 2 MB of zeros deflate to a couple of KB: a small zip bomb.
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.png": b"\x00" * (2 * 1024 * 1024)})
    assert archive.stat().st_size < 20_000
    (rejection,) = reasons(gather(archive)).values()
    assert "zip bomb guard" in rejection and "declared unpacked size" in rejection


def lie_about_sizes(archive: Path, size: int) -> None:
    """Rewrite every central-directory entry to declare ``size`` unpacked bytes."""
    data = bytearray(archive.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        data[pos + 24 : pos + 28] = struct.pack("<I", size)
        pos = data.find(b"PK\x01\x02", pos + 4)
    archive.write_bytes(bytes(data))


@override_settings(DAR_MAX_ZIP_BYTES=1024 * 1024)
def test_zip_that_lies_about_its_sizes_is_stopped_while_reading(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "liar.zip", {"a.png": b"\x00" * (3 * 1024 * 1024), "b.png": image_bytes()}
    )
    lie_about_sizes(archive, 100)  # declares 200 bytes in all
    found = reasons(gather(archive))
    assert "corrupt archive entry" in found[f"{archive}!a.png"]  # never more than declared read


def test_zip_budget_counts_actual_bytes() -> None:
    budget = _ZipBudget(100_000)
    _read_capped(io.BytesIO(b"x" * 60_000), budget.spend)
    with pytest.raises(CandidateRejected, match="zip bomb guard"):
        _read_capped(io.BytesIO(b"x" * 60_000), budget.spend)
    assert budget.exhausted
    with pytest.raises(CandidateRejected, match="zip bomb guard"):
        budget.spend(0)  # later entries are refused without reading


@override_settings(DAR_MAX_IMAGE_BYTES=4096)
def test_oversized_zip_entry_is_refused_unread(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "big.zip", {"big.png": b"\x00" * 10_000, "ok.png": b"x"})
    found = reasons(gather(archive))
    assert "file too large" in found[f"{archive}!big.png"]
    assert found[f"{archive}!ok.png"] == ""


def test_corrupt_zip(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    assert "corrupt or unreadable zip" in reasons(gather(path))[str(path)]


def test_csv_manifest_rows(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "red.png").write_bytes(image_bytes())
    (tmp_path.parent / "outside.png").write_bytes(image_bytes())
    manifest = tmp_path / "items.csv"
    manifest.write_text(
        "path,title,description,color,size\n"
        "img/red.png,Red shirt,A red cotton shirt,red,M\n"
        ",No path,,,\n"
        "https://example.com/x.png,Remote,,,\n"
        "../outside.png,Escape,,,\n"
        f"{tmp_path.parent / 'outside.png'},Absolute outside,,,\n"
        "img/missing.png,Missing,,,\n"
        "img,A folder,,,\n"
        f"{tmp_path / 'img' / 'red.png'},Absolute inside,,blue,\n",
        encoding="utf-8",
    )
    found = gather(manifest)
    rows = {path.split(":")[1]: c for path, c in found.items()}
    why = {n: c.rejection or "" for n, c in rows.items()}
    good = rows["2"]
    assert good.rejection is None
    assert (good.title, good.description) == ("Red shirt", "A red cotton shirt")
    assert good.attributes["color"] == "red" and good.attributes["size"] == "M"
    assert rows["3"].rejection == "manifest row has no path"
    assert "URLs are not fetched" in why["4"]
    assert rows["5"].rejection == "path escapes the manifest's folder"
    assert rows["6"].rejection == "path escapes the manifest's folder"
    assert rows["7"].rejection == "file not found"
    assert rows["8"].rejection == "not a file"
    assert rows["9"].rejection is None and rows["9"].attributes["color"] == "blue"


def test_jsonl_manifest_rows(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes())
    manifest = tmp_path / "items.jsonl"
    lines = [
        json.dumps({"path": "a.png", "title": "A", "attributes": {"tags": ["x"]}, "price": 9.5}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"title": "no path"}),
        json.dumps({"file": "data:image/png;base64,AAAA"}),
        "",
    ]
    manifest.write_text("\n".join(lines), encoding="utf-8")
    found = list(gather(manifest).values())
    assert found[0].rejection is None and found[0].title == "A"
    assert found[0].attributes["tags"] == ["x"] and found[0].attributes["price"] == 9.5
    assert "invalid JSON" in (found[1].rejection or "")
    assert found[2].rejection == "JSON line is not an object"
    assert found[3].rejection == "manifest row has no path"
    assert "URLs are not fetched" in (found[4].rejection or "")
    assert len(found) == 5


def test_missing_paths_and_urls_on_the_command_line(tmp_path: Path) -> None:
    found = reasons(gather(tmp_path / "nope", "https://example.com/catalog.zip"))
    assert found[str(tmp_path / "nope")] == "no such file or folder"
    assert "URLs are not fetched" in found["https://example.com/catalog.zip"]
