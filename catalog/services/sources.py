"""Where images come from: folders, zip archives, CSV/JSONL manifests and uploaded files.

Every source is turned into a list of ``Candidate``s before anything is imported, so a progress bar
knows the total and a bad entry never stops the good ones. Reading is lazy (``Candidate.read``):
at most one image is in memory at a time. A candidate that is known to be bad before reading (an
archive entry escaping its folder, a manifest row with a URL) carries its ``rejection`` instead.

Zip safety: entry names are checked (no ``..``, no absolute or drive paths, no symlinks, no
encrypted entries), the entry count and the *declared* unpacked size are checked up front
(``DAR_MAX_ZIP_ENTRIES``, ``DAR_MAX_ZIP_BYTES``), and the bytes *actually* unpacked are counted
while reading, so an archive that lies about its sizes is stopped as well.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
PATH_COLUMNS = ("path", "file", "filename", "image")
_CHUNK = 1 << 16
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, file:, data:, s3: ...
_DRIVE = re.compile(r"^[a-zA-Z]:")


class CandidateRejected(Exception):
    """Raised by ``Candidate.read`` when the bytes cannot be had; the message is the reason."""


@dataclass
class Candidate:
    path: str  # how reports and the item's ``source_name`` name it
    read: Callable[[], bytes] | None = None
    title: str = ""
    description: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    rejection: str | None = None  # known to be bad before reading


def _skippable(name: str) -> bool:
    """OS clutter, not content: hidden files (.DS_Store, AppleDouble ._x.jpg), __MACOSX/."""
    parts = [p for p in re.split(r"[/\\]", name) if p]
    return any(
        (p.startswith(".") and p not in (".", "..")) or p in ("__MACOSX", "Thumbs.db")
        for p in parts
    )


def _too_large(size: int) -> str | None:
    limit = int(settings.DAR_MAX_IMAGE_BYTES)
    if size > limit:
        return (
            f"file too large: {size:,} bytes exceeds the limit of {limit:,} bytes "
            "(DAR_MAX_IMAGE_BYTES)"
        )
    return None


def _read_capped(stream: IO[bytes], on_chunk: Callable[[int], None] | None = None) -> bytes:
    """Read a stream, refusing more than DAR_MAX_IMAGE_BYTES whatever its declared size."""
    limit = int(settings.DAR_MAX_IMAGE_BYTES)
    buffer = bytearray()
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return bytes(buffer)
        if on_chunk:
            on_chunk(len(chunk))
        buffer += chunk
        if len(buffer) > limit:
            raise CandidateRejected(
                f"file too large: more than {limit:,} bytes (DAR_MAX_IMAGE_BYTES)"
            )


def _is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGIC


# --- Plain files and folders ----------------------------------------------------------------


def _file_reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with path.open("rb") as handle:
                return _read_capped(handle)
        except OSError as exc:
            raise CandidateRejected(f"cannot read file: {exc.strerror or exc}") from None

    return read


def _file_candidate(path: Path, display: str, **meta: Any) -> Candidate:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return Candidate(display, rejection=f"cannot read file: {exc.strerror or exc}")
    reason = _too_large(size)
    if reason:
        return Candidate(display, rejection=reason, **meta)
    return Candidate(display, read=_file_reader(path), **meta)


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(4)
    except OSError:
        return b""


def iter_folder(root: Path, display: str, stack: contextlib.ExitStack) -> Iterator[Candidate]:
    """Every file under ``root``, recursively, in a stable order; zips inside are expanded."""
    base = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _skippable(d))
        for filename in sorted(filenames):
            if _skippable(filename):
                continue
            path = Path(dirpath) / filename
            rel = path.relative_to(root).as_posix()
            shown = f"{display.rstrip('/')}/{rel}"
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(base):
                    yield Candidate(shown, rejection="symlink pointing outside the folder")
                    continue
                if not target.is_file():
                    yield Candidate(shown, rejection="symlink to something that is not a file")
                    continue
            if _is_zip(_head(path)):
                yield from iter_zip(path, shown, stack)
            else:
                yield _file_candidate(path, shown)


# --- Zip archives ---------------------------------------------------------------------------


def unsafe_entry_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\x00" in name:
        return "entry name contains a NUL byte"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path in archive (escapes the archive folder)"
    if any(part == ".." for part in re.split(r"[/\\]", name)):
        return "path escapes the archive folder (..)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link in archive (not followed)"
    if info.flag_bits & 0x1:
        return "encrypted archive entry"
    return None


class _ZipBudget:
    """Counts the bytes actually unpacked from one archive against DAR_MAX_ZIP_BYTES."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise CandidateRejected(
                f"zip bomb guard: the archive unpacked more than {self.limit:,} bytes "
                "(DAR_MAX_ZIP_BYTES); entries from here on are not read"
            )

    @property
    def exhausted(self) -> bool:
        return self.used > self.limit


def iter_zip(
    source: Path | IO[bytes],
    display: str,
    stack: contextlib.ExitStack,
    meta: dict[str, Any] | None = None,
) -> Iterator[Candidate]:
    """The entries of one archive. The archive stays open until ``stack`` closes."""
    meta = meta or {}
    try:
        archive = stack.enter_context(zipfile.ZipFile(source))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        yield Candidate(display, rejection=f"corrupt or unreadable zip archive: {exc}")
        return
    max_entries, max_bytes = int(settings.DAR_MAX_ZIP_ENTRIES), int(settings.DAR_MAX_ZIP_BYTES)
    if len(infos) > max_entries:
        yield Candidate(
            display,
            rejection=f"zip bomb guard: {len(infos):,} entries exceed the limit of "
            f"{max_entries:,} (DAR_MAX_ZIP_ENTRIES); nothing was read from this archive",
        )
        return
    declared = sum(info.file_size for info in infos)
    if declared > max_bytes:
        yield Candidate(
            display,
            rejection=f"zip bomb guard: declared unpacked size {declared:,} bytes exceeds the "
            f"limit of {max_bytes:,} bytes (DAR_MAX_ZIP_BYTES); nothing was read from this archive",
        )
        return
    budget = _ZipBudget(max_bytes)
    for info in infos:
        if info.is_dir() or _skippable(info.filename):
            continue
        shown = f"{display}!{info.filename}"
        reason = unsafe_entry_reason(info) or _too_large(info.file_size)
        if reason:
            yield Candidate(shown, rejection=reason, **meta)
            continue
        yield Candidate(shown, read=_zip_reader(archive, info, budget), **meta)


def _zip_reader(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _ZipBudget
) -> Callable[[], bytes]:
    def read() -> bytes:
        if budget.exhausted:
            budget.spend(0)
        try:
            with archive.open(info) as stream:
                data = _read_capped(stream, budget.spend)
        except CandidateRejected:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise CandidateRejected(f"corrupt archive entry: {exc}") from None
        if len(data) != info.file_size:
            raise CandidateRejected("archive entry size does not match its header")
        return data

    return read


# --- Manifests ------------------------------------------------------------------------------


def _row_path_reason(value: str) -> str | None:
    if not value:
        return "manifest row has no path"
    if value.startswith("//") or (_URL.match(value) and not _DRIVE.match(value)):
        return "URLs are not fetched: give a file path relative to the manifest's folder"
    return None


def _row_meta(row: dict[str, Any], path_key: str) -> dict[str, Any]:
    title = row.get("title")
    description = row.get("description")
    attributes: dict[str, Any] = {}
    extra = row.get("attributes")
    if isinstance(extra, dict):
        attributes.update(extra)
    elif isinstance(extra, str) and extra.strip():
        try:
            parsed = json.loads(extra)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            attributes.update(parsed)
        else:
            attributes["attributes"] = extra
    for key, value in row.items():
        if key in (path_key, "title", "description", "attributes") or key is None:
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        attributes[str(key)] = value.strip() if isinstance(value, str) else value
    return {
        "title": str(title).strip()[:500] if title not in (None, "") else "",
        "description": str(description).strip() if description not in (None, "") else "",
        "attributes": attributes,
    }


def _manifest_rows(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row dict) or (line number, reason the line is unreadable)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        yield from manifest_rows(handle, kind)


def manifest_rows(handle: IO[str], kind: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """The rows of an open manifest (a file, or an upload decoded in memory)."""
    if kind == "csv":
        reader = csv.DictReader(handle)
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            yield reader.line_num, row
        return
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            yield number, f"invalid JSON: {exc}"
            continue
        if not isinstance(row, dict):
            yield number, "JSON line is not an object"
            continue
        yield number, row


def manifest_meta(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A manifest row's file path and the title/description/attributes it gives that file."""
    path_key = next((k for k in PATH_COLUMNS if k in row), PATH_COLUMNS[0])
    raw = row.get(path_key)
    return (str(raw).strip() if raw is not None else ""), _row_meta(row, path_key)


def iter_manifest(path: Path, display: str) -> Iterator[Candidate]:
    kind = MANIFEST_SUFFIXES[path.suffix.lower()]
    base = path.parent.resolve()
    try:
        rows = list(_manifest_rows(path, kind))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        yield Candidate(display, rejection=f"unreadable manifest: {exc}")
        return
    for number, row in rows:
        where = f"{display}:{number}"
        if isinstance(row, str):
            yield Candidate(where, rejection=row)
            continue
        path_key = next((k for k in PATH_COLUMNS if k in row), PATH_COLUMNS[0])
        raw = row.get(path_key)
        value = str(raw).strip() if raw is not None else ""
        meta = _row_meta(row, path_key)
        shown = f"{where}:{value}" if value else where
        reason = _row_path_reason(value)
        if reason:
            yield Candidate(shown, rejection=reason, **meta)
            continue
        target = (base / value).resolve()
        if not target.is_relative_to(base):
            yield Candidate(shown, rejection="path escapes the manifest's folder", **meta)
            continue
        if not target.exists():
            yield Candidate(shown, rejection="file not found", **meta)
            continue
        if not target.is_file():
            yield Candidate(shown, rejection="not a file", **meta)
            continue
        yield _file_candidate(target, shown, **meta)


# --- Entry points ---------------------------------------------------------------------------


def iter_paths(paths: Iterable[str | Path], stack: contextlib.ExitStack) -> Iterator[Candidate]:
    """Candidates for command-line paths: folders, zips (by content), manifests (by suffix)."""
    for raw in paths:
        path = Path(raw)
        display = str(raw)
        if _URL.match(display) and not _DRIVE.match(display) and not path.exists():
            yield Candidate(display, rejection="URLs are not fetched: give a local path")
        elif not path.exists():
            yield Candidate(display, rejection="no such file or folder")
        elif path.is_dir():
            yield from iter_folder(path, display, stack)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from iter_manifest(path, display)
        elif _is_zip(_head(path)):
            yield from iter_zip(path, display, stack)
        else:
            yield _file_candidate(path, display)


def collect(paths: Iterable[str | Path], stack: contextlib.ExitStack) -> list[Candidate]:
    return list(iter_paths(paths, stack))


def from_uploads(
    files: Iterable[Any],
    stack: contextlib.ExitStack,
    *,
    title: str = "",
    description: str = "",
    attributes: dict[str, Any] | None = None,
) -> list[Candidate]:
    """Candidates for uploaded files (Django ``UploadedFile``s); a zip upload is expanded."""
    meta: dict[str, Any] = {
        "title": title,
        "description": description,
        "attributes": dict(attributes or {}),
    }
    out: list[Candidate] = []
    for upload in files:
        name = os.path.basename(getattr(upload, "name", "") or "upload")
        size = getattr(upload, "size", None)
        upload.seek(0)
        head = upload.read(4)
        upload.seek(0)
        if _is_zip(head):
            stream = getattr(upload, "file", upload)
            out.extend(iter_zip(stream, name, stack, meta))
            continue
        reason = _too_large(size) if size is not None else None
        if reason:
            out.append(Candidate(name, rejection=reason, **meta))
            continue
        out.append(Candidate(name, read=_upload_reader(upload), **meta))
    return out


def _upload_reader(upload: Any) -> Callable[[], bytes]:
    def read() -> bytes:
        upload.seek(0)
        return _read_capped(upload)

    return read


def from_bytes(name: str, data: bytes, **meta: Any) -> Candidate:
    """A candidate for bytes made in memory (the demo renderer, tests)."""
    return Candidate(name, read=lambda: _read_capped(io.BytesIO(data)), **meta)
