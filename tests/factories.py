"""factory_boy factories for the product's records."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from PIL import Image

from catalog.models import Catalog, CatalogItem, Shop
from retrieval.models import SearchSession, Turn


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests-123")
    is_staff = True


class ShopFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Shop

    name = factory.Sequence(lambda n: f"Shop {n}")
    slug = factory.Sequence(lambda n: f"shop-{n}")


class CatalogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Catalog

    shop = factory.SubFactory(ShopFactory)
    name = factory.Sequence(lambda n: f"Catalog {n}")
    slug = factory.Sequence(lambda n: f"catalog-{n}")


class CatalogItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CatalogItem

    catalog = factory.SubFactory(CatalogFactory)
    title = factory.Sequence(lambda n: f"item {n}")
    color = factory.Sequence(lambda n: ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))

    @classmethod
    def _create(cls, model_class: type[CatalogItem], *args: Any, **kwargs: Any) -> CatalogItem:
        color = kwargs.pop("color")
        data = kwargs.pop("image_bytes", None) or png_bytes(color)
        kwargs.setdefault("sha256", hashlib.sha256(data).hexdigest())
        with Image.open(io.BytesIO(data)) as img:
            kwargs.setdefault("width", img.width)
            kwargs.setdefault("height", img.height)
        item = model_class(*args, **kwargs)
        item.image.save(f"{kwargs['sha256']}.png", ContentFile(data), save=False)
        item.save()
        return item


class SearchSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SearchSession

    catalog = factory.SubFactory(CatalogFactory)
    session_key = factory.Sequence(lambda n: f"key{n}")


class TurnFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Turn

    session = factory.SubFactory(SearchSessionFactory)
    index = factory.Sequence(lambda n: n)
    message = "a red shoe"
