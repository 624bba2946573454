"""Moving files stored under their plain sha256 (before media tokens) to their keyed names.

Items imported before ``media_token`` have files named ``<sha256>.<ext>``: anyone holding an image
could compute its path and learn whether a private catalog has it. ``rename_legacy`` moves each
such file (served rendition and private original) to the name ``item_upload_path`` /
``original_upload_path`` give today, through the storage API (local disk or an object store alike).

Per item and per file: copy to the new name, point the row at it, then delete the old file. A run
killed after the copy leaves the old name in the row: the next run adopts the identical copy. A
run killed after the row update leaves the old file without a row: nothing links to it any more
(media URLs are signed per name), and it holds only what the renamed file holds. So it is safe to
rerun, and a second run over a renamed catalog changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.db.models import F, Q, QuerySet
from django.db.models.fields.files import FieldFile
from django.db.models.functions import StrIndex

from catalog.models import Catalog, CatalogItem, item_upload_path, original_upload_path


@dataclass
class RenameReport:
    renamed: int = 0  # files moved
    items: int = 0  # items with at least one file moved
    unchanged: int = 0  # items already under their keyed names
    missing: list[str] = field(default_factory=list)  # "item <pk>: <name>" whose file is gone

    def summary(self) -> str:
        text = (
            f"{self.renamed} file(s) of {self.items} item(s) renamed, "
            f"{self.unchanged} item(s) already keyed"
        )
        if self.missing:
            text += f", {len(self.missing)} file(s) missing"
        return text


def legacy_items(catalog: Catalog | None = None) -> QuerySet[CatalogItem]:
    """Items with a file whose name contains their plain sha256."""
    items = CatalogItem.objects.all() if catalog is None else catalog.items.all()
    # A keyed name is an HMAC (40 hex digits), never the 64-digit sha256 itself.
    return (
        items.annotate(
            in_image=StrIndex("image", F("sha256")), in_original=StrIndex("original", F("sha256"))
        )
        .filter(Q(in_image__gt=0) | Q(in_original__gt=0))
        .order_by("pk")
    )


PathMaker = Callable[[CatalogItem, str], str]


def _move(item: CatalogItem, attr: str, make_path: PathMaker, report: RenameReport) -> bool:
    file: FieldFile = getattr(item, attr)
    if not file.name or item.sha256 not in file.name:
        return False
    storage = file.storage
    old = file.name
    try:
        with storage.open(old, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError):
        report.missing.append(f"item {item.pk}: {old}")
        return False
    ext = old.rsplit(".", 1)[-1] if "." in old else "img"
    new = make_path(item, f"file.{ext}")
    if storage.exists(new):
        with contextlib.suppress(OSError), storage.open(new, "rb") as handle:
            if handle.read() != data:  # a cut-short copy of an earlier run: replace it
                storage.delete(new)
    if not storage.exists(new):
        new = storage.save(new, ContentFile(data))
    CatalogItem.objects.filter(pk=item.pk).update(**{attr: new})
    storage.delete(old)
    report.renamed += 1
    return True


def _batches(items: QuerySet[CatalogItem], size: int = 500) -> Iterator[list[CatalogItem]]:
    last = 0
    while batch := list(items.filter(pk__gt=last)[:size]):
        yield batch
        last = batch[-1].pk


def rename_legacy(catalog: Catalog | None = None, *, dry_run: bool = False) -> RenameReport:
    """Move every legacy-named file of ``catalog`` (or of every catalog) to its keyed name."""
    report = RenameReport()
    items = legacy_items(catalog)
    legacy = items.count()
    total = CatalogItem.objects.count() if catalog is None else catalog.items.count()
    report.unchanged = total - legacy
    if dry_run:
        report.items = legacy
        return report
    for batch in _batches(items):
        for item in batch:
            moved = _move(item, "image", item_upload_path, report)
            moved = _move(item, "original", original_upload_path, report) or moved
            report.items += int(moved)
    return report
