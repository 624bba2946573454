"""Shops own catalogs; catalog items are the search space."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from pgvector.django import VectorField


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
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


def item_upload_path(item: CatalogItem, filename: str) -> str:
    # Content-addressed: the same bytes always land at the same path, so a re-run import
    # overwrites nothing and leaves no orphans.
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    return f"catalogs/{item.catalog_id}/{item.sha256[:2]}/{item.sha256}.{ext}"


class CatalogItem(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        EMBEDDED = "embedded"
        FAILED = "failed"

    catalog = models.ForeignKey(Catalog, on_delete=models.CASCADE, related_name="items")
    image = models.ImageField(upload_to=item_upload_path)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    source_name = models.CharField(max_length=500, blank=True)
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["catalog", "sha256"], name="unique_item_bytes")
        ]
        indexes = [models.Index(fields=["catalog", "status"])]

    def __str__(self) -> str:
        return self.title or self.source_name or self.sha256[:12]

    @property
    def product_text(self) -> str:
        return ". ".join(part for part in (self.title, self.description) if part)


class ItemEmbedding(models.Model):
    """One vector of one item in one embedding space, tagged with the model that made it.

    The vector column has no fixed dimension so that encoders of any size can coexist; each
    (space, model) pair gets its own partial HNSW index over ``vector::vector(dim)``
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
    vector = VectorField()
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
