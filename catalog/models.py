"""Shops own catalogs; catalog items are the search space."""

from __future__ import annotations

import secrets
from typing import cast

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.files.storage import Storage, storages
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver
from django.utils.crypto import salted_hmac
from django.utils.functional import LazyObject, empty
from pgvector.django import HalfVectorField


def new_publishable_key() -> str:
    """A catalog's widget key: ``pk_`` and 32 random URL-safe characters (192 bits)."""
    return "pk_" + secrets.token_urlsafe(24)


class Shop(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    admins = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="shops", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Catalog(models.Model):
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="catalogs")
    name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    description = models.TextField(blank=True)
    # Anyone may search a public catalog; a private one only its shop's admins.
    is_public = models.BooleanField(default=True)
    # The embeddable search widget (catalog/services/embed.py). The key is public (it is in the
    # shop's page source): it only names the catalog; what protects the widget is that browsers
    # send a true Origin, which must be one of the exact origins listed here.
    publishable_key = models.CharField(
        max_length=64, unique=True, default=new_publishable_key, editable=False
    )
    embed_origins = ArrayField(
        models.CharField(max_length=300),
        default=list,
        blank=True,
        verbose_name="allowed origins",
        help_text="Exact origins (scheme://host[:port]) of the shop's pages that may embed "
        "this catalog's search widget, one per line, e.g. https://shop.example",
    )
    # A product feed synced on a schedule (catalog/services/sync.py, celery beat): an http(s) URL
    # (fetched with the same guards as feed images) or a path on the server.
    feed_location = models.CharField(max_length=2000, blank=True)
    feed_interval_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Sync the feed this often; empty: never on a schedule."
    )
    feed_synced_at = models.DateTimeField(null=True, blank=True)
    feed_report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


def media_token(catalog_id: int, sha256: str) -> str:
    """The name part of an item's files: derived from its bytes (so a re-run import lands on the
    same path, leaving no orphans) but keyed with SECRET_KEY, so holding an image does not tell
    anyone where, or whether, it is stored (the plain sha256 would)."""
    mac = salted_hmac("dar.catalog.media", f"{catalog_id}:{sha256}", algorithm="sha256")
    return mac.hexdigest()[:40]


def _upload_path(prefix: str, item: CatalogItem, filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    token = media_token(item.catalog_id, item.sha256)
    return f"{prefix}/{item.catalog_id}/{token[:2]}/{token}.{ext}"


def item_upload_path(item: CatalogItem, filename: str) -> str:
    """Where the served rendition goes (the default media storage)."""
    return _upload_path("catalogs", item, filename)


def original_upload_path(item: CatalogItem, filename: str) -> str:
    """Where the uploaded bytes are kept, as received (private storage, never served)."""
    return _upload_path("originals", item, filename)


class _PrivateStorage(LazyObject):
    """``storages["private"]``, looked up when first used (and again when STORAGES changes)."""

    def _setup(self) -> None:
        self._wrapped = storages["private"]


_private = _PrivateStorage()


@receiver(setting_changed)
def _storages_changed(setting: str, **_: object) -> None:
    if setting == "STORAGES":
        _private._wrapped = empty  # type: ignore[assignment]  # LazyObject's reset


def private_storage() -> Storage:
    return cast(Storage, _private)


# The product data a shop's feed gives an item, in the order the admin and the API show it.
PRODUCT_FIELDS = (
    "product_id",
    "product_url",
    "price",
    "currency",
    "availability",
    "brand",
    "category",
)


class CatalogItem(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        EMBEDDED = "embedded"
        FAILED = "failed"

    class Availability(models.TextChoices):
        # Google Merchant Center's values; Shopify's inventory maps onto them (services/feeds.py).
        IN_STOCK = "in_stock"
        OUT_OF_STOCK = "out_of_stock"
        PREORDER = "preorder"
        BACKORDER = "backorder"

    catalog = models.ForeignKey(Catalog, on_delete=models.CASCADE, related_name="items")
    # The web-size rendition re-encoded from decoded pixels: the only form of the item served.
    image = models.ImageField(upload_to=item_upload_path)
    # The upload as received, kept for re-rendering (another web size) and the shop's records.
    original = models.FileField(
        upload_to=original_upload_path, storage=private_storage, blank=True, max_length=200
    )
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    source_name = models.CharField(max_length=500, blank=True)
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    # Free attributes (colour, size, material...): a catalog's facets are computed from them.
    attributes = models.JSONField(default=dict, blank=True)
    # Product data. ``product_id`` is the shop's id, the key a feed sync updates by; empty for
    # items imported as plain pictures (those stay keyed by their bytes).
    product_id = models.CharField(max_length=200, blank=True)
    product_url = models.URLField(max_length=2000, blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)  # ISO 4217, checked by feeds.currency
    availability = models.CharField(
        max_length=16, choices=Availability.choices, default=Availability.IN_STOCK
    )
    brand = models.CharField(max_length=200, blank=True)
    category = models.CharField(max_length=500, blank=True)
    # Where a feed said the picture is (URL or path): an unchanged location is not fetched again.
    image_source = models.CharField(max_length=2000, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Plain pictures are keyed by their bytes; products by their id (two products may
            # share a picture: variants, a placeholder image).
            models.UniqueConstraint(
                fields=["catalog", "sha256"],
                condition=models.Q(product_id=""),
                name="unique_item_bytes",
            ),
            models.UniqueConstraint(
                fields=["catalog", "product_id"],
                condition=~models.Q(product_id=""),
                name="unique_item_product_id",
            ),
        ]
        indexes = [
            models.Index(fields=["catalog", "status"]),
            models.Index(fields=["catalog", "availability"]),
            # "Is any item of any catalog still pending?" (catalog.services.index_builds), asked
            # after embedding jobs while an HNSW index waits for the end of a bulk load: a
            # partial index, empty when nothing waits, so the question is one index probe.
            models.Index(
                fields=["catalog"],
                condition=models.Q(status="pending"),
                name="catalogitem_pending",
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.source_name or self.sha256[:12]

    @property
    def product_text(self) -> str:
        return ". ".join(part for part in (self.title, self.description) if part)


class ItemEmbedding(models.Model):
    """One vector of one item in one embedding space, tagged with the model that made it.

    The vector column has no fixed dimension so that encoders of any size can coexist; each
    (space, model) pair gets its own partial HNSW index over ``vector::halfvec(dim)``
    (see ``catalog.services.vectors``). Searches filter on ``model_name``, so vectors made by
    another encoder can never be mixed into a ranking.
    """

    class Space(models.TextChoices):
        IMAGE = "image"  # CLIP-family image embedding of the item's picture
        TEXT = "text"  # sentence-model embedding of the item's title and description

    item = models.ForeignKey(CatalogItem, on_delete=models.CASCADE, related_name="embeddings")
    # Denormalised so a search filters and orders one table without a join.
    catalog = models.ForeignKey(Catalog, on_delete=models.CASCADE, related_name="+")
    space = models.CharField(max_length=8, choices=Space.choices)
    model_name = models.CharField(max_length=300)
    dim = models.PositiveIntegerField()
    # Half precision (pgvector halfvec): half the table and index of 32-bit floats for a recall
    # change well under a point at 1M vectors (docs/benchmarks.md); indexable up to 4000 dims.
    vector = HalfVectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "space", "model_name"], name="unique_item_space_model"
            )
        ]
        indexes = [models.Index(fields=["catalog", "space", "model_name"])]

    def __str__(self) -> str:
        return f"{self.space} vector of item {self.item_id} by {self.model_name} ({self.dim}-d)"


class DeferredIndex(models.Model):
    """An HNSW index that waits for the end of a bulk load (``catalog.services.index_builds``).

    An embedding job that stores vectors of a (space, model, dim) with no index yet records it
    here first, so the build that follows the load can never be forgotten: the job that leaves
    nothing pending builds it, and a periodic task builds what a lost job left behind. The row
    goes once the index exists.
    """

    space = models.CharField(max_length=8, choices=ItemEmbedding.Space.choices)
    model_name = models.CharField(max_length=300)
    dim = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # When a job last stored vectors without the index (to the minute): a load that stopped
    # storing for a while (its jobs lost with a broker flush) gets its index from celery beat.
    stored_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["space", "model_name", "dim"], name="unique_deferred_index"
            )
        ]

    def __str__(self) -> str:
        return f"{self.space} index of {self.model_name} ({self.dim}-d), deferred"
