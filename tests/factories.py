"""factory_boy factories for the product's records."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from PIL import Image

from catalog.models import Catalog, CatalogItem, Shop
from dar_site.instrument import EventTap
from retrieval.models import Feedback, Preview, ProductClick, SearchSession, Turn, TurnResult


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests-123")
    is_staff = True


class ShopFactory(factory.django.DjangoModelFactory[Shop]):
    class Meta:
        model = Shop

    name = factory.Sequence(lambda n: f"Shop {n}")
    slug = factory.Sequence(lambda n: f"shop-{n}")


class CatalogFactory(factory.django.DjangoModelFactory[Catalog]):
    class Meta:
        model = Catalog

    shop = factory.SubFactory(ShopFactory)
    name = factory.Sequence(lambda n: f"Catalog {n}")
    slug = factory.Sequence(lambda n: f"catalog-{n}")


class CatalogItemFactory(factory.django.DjangoModelFactory[CatalogItem]):
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
        # factory_boy passes no positional arguments here (and mypy would read one as ``id``).
        assert not args
        item = model_class(**kwargs)
        item.image.save(f"{kwargs['sha256']}.png", ContentFile(data), save=False)
        item.save()
        return item


class SearchSessionFactory(factory.django.DjangoModelFactory[SearchSession]):
    class Meta:
        model = SearchSession

    catalog = factory.SubFactory(CatalogFactory)
    # Tests give the browser's raw key; the model stores only its keyed hash.
    session_key = factory.Sequence(lambda n: f"key{n}")

    @classmethod
    def _adjust_kwargs(cls, **kwargs: Any) -> dict[str, Any]:
        from retrieval.services.owner_keys import hash_session_key

        key = kwargs.pop("session_key", "")
        if "session_key_hash" not in kwargs:
            kwargs["session_key_hash"] = hash_session_key(key) if key else ""
        return kwargs


class TurnFactory(factory.django.DjangoModelFactory[Turn]):
    class Meta:
        model = Turn

    session = factory.SubFactory(SearchSessionFactory)
    index = factory.Sequence(lambda n: n)
    message = "a red shoe"


# --- analysts (previews, results, feedback of turns) ---------------------------------------


class PreviewFactory(factory.django.DjangoModelFactory[Preview]):
    class Meta:
        model = Preview

    turn = factory.SubFactory(TurnFactory)
    index = factory.Sequence(lambda n: n)
    prompt = "a product photo of a red shoe"
    seed = factory.Sequence(lambda n: 1000 + n)
    image = factory.django.ImageField(width=16, height=16, color="blue")


class TurnResultFactory(factory.django.DjangoModelFactory[TurnResult]):
    class Meta:
        model = TurnResult

    turn = factory.SubFactory(TurnFactory)
    item = factory.SubFactory(
        CatalogItemFactory, catalog=factory.SelfAttribute("..turn.session.catalog")
    )
    final = True
    rank = factory.Sequence(lambda n: n)
    score = 0.5


class FeedbackFactory(factory.django.DjangoModelFactory[Feedback]):
    class Meta:
        model = Feedback

    turn = factory.SubFactory(TurnFactory)
    session = factory.SelfAttribute("turn.session")
    item = factory.SubFactory(
        CatalogItemFactory, catalog=factory.SelfAttribute("..session.catalog")
    )
    value = 1


class ProductClickFactory(factory.django.DjangoModelFactory[ProductClick]):
    """A click on a result, as ``retrieval.services.clicks.record_click`` stores it (tests that
    need the service's checks call the service instead)."""

    class Meta:
        model = ProductClick

    turn = factory.SubFactory(TurnFactory)
    session = factory.SelfAttribute("turn.session")
    item = factory.SubFactory(
        CatalogItemFactory, catalog=factory.SelfAttribute("..session.catalog")
    )


# --- search sessions (websocket, REST, browser) -------------------------------------------


def browser_session_key(user: Any = None) -> str:
    """A saved Django session, as a browser's ``sessionid`` cookie holds it (signed in or not)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    if user is not None:
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    assert store.session_key is not None
    return store.session_key


def embedded_catalog(n_items: int = 12, **catalog_fields: Any) -> Catalog:
    """A catalog whose items are embedded by the real embedding service with the active models."""
    from catalog.services.embedding import embed_items

    catalog = CatalogFactory.create(**catalog_fields)
    items = CatalogItemFactory.create_batch(n_items, catalog=catalog)
    result = embed_items([item.pk for item in items])
    assert len(result.embedded) == n_items, result.as_dict()
    return catalog


class EventRecorder(EventTap):
    """Records a search session's websocket events straight from the channel layer (Redis).

    Runs its own event loop in a thread so that sync tests can watch the events a Celery worker
    emits: ``with EventRecorder(session.pk) as events: ...; events.wait_for(pred)``. The
    listening is ``dar_site.instrument.EventTap`` (the benchmarks use it too).
    """

    def __init__(self, session_id: object) -> None:
        from retrieval.services.events import group_name

        super().__init__(group_name(session_id))

    def wait_for(self, predicate: Any, timeout: float = 180) -> list[dict[str, Any]]:
        """Block until ``predicate(events)`` holds; fail the test after ``timeout`` seconds."""
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.events), timeout)
            assert ok, f"events never satisfied the condition: {self.events}"
            return list(self.events)

    def of(self, kind: str, turn: int | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e for e in self.events if e["type"] == kind and (turn is None or e["turn"] == turn)
            ]


# --- catalogs: images of every kind, and the three personas ---------------------------------


def image_bytes(
    mode: str = "RGB",
    size: tuple[int, int] = (40, 30),
    color: Any = (200, 30, 30),
    fmt: str = "PNG",
    **save: Any,
) -> bytes:
    """An encoded test image made with Pillow (any mode the format can hold)."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def shop_admin(shop: Shop | None = None, **user_fields: Any) -> Any:
    """A staff user who administers ``shop`` (a new shop if None)."""
    user = UserFactory.create(**user_fields)
    (shop or ShopFactory.create()).admins.add(user)
    return user


def new_turn(session: SearchSession, text: str) -> Turn:
    """The session's next turn, stored as ``submit_message`` stores it, without sending its tasks
    (the test runs them)."""
    previous = list(session.turns.order_by("index").values_list("message", flat=True))
    return Turn.objects.create(
        session=session, index=len(previous), message=text, context=[*previous, text]
    )


def limit_llm_tokens(monkeypatch: Any, tokens: int = 10) -> None:
    """Short LLM answers for tests: SmolLM2 on a CI CPU decodes a few tokens per second.

    The refiner reads its token budgets (``budgets``, from DAR_LLM_*_TOKENS when built) at call
    time, so shortening them on this process's refiner reaches the in-process Celery worker too.
    """
    from workers.models.refiner import TokenBudgets
    from workers.models.registry import get_refiner

    short = TokenBudgets(description=tokens, prompt=tokens, question=tokens)
    monkeypatch.setattr(get_refiner(), "budgets", short)
