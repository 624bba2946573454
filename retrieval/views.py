"""The shopper pages: the list of catalogs and the conversational search page of one catalog."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

from catalog.models import CatalogItem
from retrieval.services import sessions
from retrieval.services.errors import SearchError
from retrieval.turn import filters


def _stand_in() -> bool:
    # workers.models.config reads the model settings without importing torch.
    from workers.models.config import is_stand_in

    return bool(is_stand_in())


def catalog_list(request: HttpRequest) -> HttpResponse:
    catalogs = sessions.searchable_catalogs(request.user).annotate(
        item_count=Count("items", filter=Q(items__status=CatalogItem.Status.EMBEDDED))
    )
    return render(request, "retrieval/catalog_list.html", {"catalogs": catalogs})


# Values offered per facet on the page (the most common first); any value can still be said.
PAGE_FACET_VALUES = 100


def _facets(catalog_id: int) -> dict[str, object]:
    vocab = filters.vocabulary(catalog_id)
    return {
        "values": {key: values[:PAGE_FACET_VALUES] for key, values in vocab.values.items()},
        "currencies": [c for c in vocab.currencies if c],
        "availability": list(filters.AVAILABLE),
    }


@ensure_csrf_cookie
def search_page(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        catalog = sessions.catalog_for(slug, request.user)
    except SearchError:
        raise Http404("No such catalog") from None
    # No session row is written for a page view: an anonymous shopper's session (and its key, which
    # owns the search session) is created by the first POST to createSessionUrl, before the socket
    # opens. A crawler or a flood of page views stores nothing.
    config = {
        "catalog": catalog.slug,
        "createSessionUrl": reverse("search-session-create"),
        "sessionUrl": reverse("search-session", args=["SESSION"]),
        "clickUrl": reverse("search-clicks", args=["SESSION"]),
        "filtersUrl": reverse("search-filters", args=["SESSION"]),
        # What the shopper can pick: the catalog's own facet values (filters.vocabulary).
        "facets": _facets(catalog.pk),
        "socketPath": "/ws/search/SESSION/",
        "maxChars": settings.DAR_MAX_MESSAGE_CHARS,
        "previewsPerTurn": settings.DAR_PREVIEWS_PER_TURN,
        "askQuestions": settings.DAR_ASK_QUESTIONS,
        # Stage timings are for the people who run the instance, not for shoppers.
        "showTimings": bool(request.user.is_staff),
    }
    return render(
        request,
        "retrieval/search.html",
        {"catalog": catalog, "config": config, "stand_in": _stand_in()},
    )
