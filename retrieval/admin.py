"""The analysts' review of search sessions: read-only lists, turn details, exports, dashboard.

Everything here is read-only by design (sessions are a record of what shoppers did), and every
queryset is scoped through ``retrieval.analytics.scope`` so a shop admin only ever sees the
sessions of their own shops' catalogs. Figures, charts and exports live in the service modules;
this file only wires them into the admin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from retrieval import exports
from retrieval.analytics import charts, filters, outcomes, scope, stats, tables
from retrieval.analytics.annotations import with_figures
from retrieval.models import Feedback, SearchSession, Turn, TurnResult

# Turn-count ranges of the session list filter: (query value, label, lowest, highest or None).
TURN_RANGES: tuple[tuple[str, str, int, int | None], ...] = (
    ("0", "no turns", 0, 0),
    ("1", "1 turn", 1, 1),
    ("2-3", "2 to 3", 2, 3),
    ("4-6", "4 to 6", 4, 6),
    ("7-10", "7 to 10", 7, 10),
    ("11+", "11 or more", 11, None),
)
THUMB_PX = 64
# How many results of a turn's final ranking the session page shows.
RESULTS_SHOWN = 8
# Stages in pipeline order (PostgreSQL's jsonb keeps keys in its own order); others follow.
STAGE_ORDER = ("queued", "text", "refine", "generate", "rank", "ask", "total")


# --- HTML fragments --------------------------------------------------------------------------


def _image_url(field: Any) -> str | None:
    try:
        return str(field.url) if field else None
    except ValueError:  # a file field whose name is empty
        return None


def _thumb(url: str | None, title: str, caption: str = "") -> SafeString:
    if url is None:
        return format_html('<span title="{}">(no image)</span>', title)
    return format_html(
        # Classes in static/admin/dar.css: the CSP allows no inline style.
        '<figure class="dar-thumb">'
        '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" title="{}" '
        'loading="lazy" width="{}" height="{}">'
        "</a><figcaption>{}</figcaption></figure>",
        url,
        url,
        title,
        title,
        THUMB_PX,
        THUMB_PX,
        caption,
    )


def previews_html(turn: Turn) -> SafeString:
    previews = list(turn.previews.all())
    if not previews:
        return format_html("{}", "—")
    return format_html_join(
        "", "{}", ((_thumb(_image_url(p.image), p.prompt, f"seed {p.seed}"),) for p in previews)
    )


def results_html(turn: Turn) -> SafeString:
    results = getattr(turn, "final_results", None)
    if results is None:
        results = turn.results.filter(final=True).select_related("item").order_by("rank")
    shown = list(results)[:RESULTS_SHOWN]
    if not shown:
        return format_html("{}", "—")
    return format_html_join(
        "",
        "{}",
        (
            (_thumb(_image_url(r.item.image), str(r.item), f"#{r.rank} · {r.score:.3f}"),)
            for r in shown
        ),
    )


def feedback_html(turn: Turn) -> SafeString:
    votes = list(turn.feedback_set.all())
    if not votes:
        return format_html("{}", "—")
    return format_html_join(
        "",
        "{}",
        (
            (
                _thumb(
                    _image_url(f.item.image),
                    str(f.item),
                    "👍 like" if f.value > 0 else "👎 dislike",
                ),
            )
            for f in votes
        ),
    )


def end_to_end_ms(turn: Turn) -> float | None:
    """Queue-inclusive latency: from the message's arrival to the end of the turn.

    The pipeline's ``total`` starts when a worker picks the turn up, so it leaves out the queue."""
    if turn.status != Turn.Status.DONE or turn.finished_at is None:
        return None
    return (turn.finished_at - turn.created_at).total_seconds() * 1000


def timings_html(timings: Any, end_to_end: float | None = None) -> SafeString:
    rows = sorted(timings.items(), key=_stage_position) if isinstance(timings, dict) else []
    if end_to_end is not None:
        rows.append((stats.END_TO_END, end_to_end))
    if not rows:
        return format_html("{}", "—")
    return format_html(
        "<table><tbody>{}</tbody></table>",
        format_html_join(
            "",
            "<tr><td>{}</td><td class='dar-number'>{}</td></tr>",
            (
                (stage, f"{ms:,.0f} ms" if isinstance(ms, int | float) else str(ms))
                for stage, ms in rows
            ),
        ),
    )


def clicks_html(session: SearchSession) -> SafeString:
    clicks = list(session.clicks.select_related("item", "turn").order_by("created_at"))
    if not clicks:
        return format_html("{}", "—")
    return format_html_join(
        "",
        "{}",
        (
            (
                _thumb(
                    _image_url(c.item.image),
                    str(c.item),
                    f"turn {c.turn.index if c.turn else '?'} · {c.created_at:%H:%M:%S}"
                    + (f" · {c.source}" if c.source != "page" else ""),
                ),
            )
            for c in clicks
        ),
    )


def _stage_position(entry: tuple[str, Any]) -> tuple[int, str]:
    stage = entry[0]
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


# --- shared behaviour ------------------------------------------------------------------------


# Fields that hold (a hash of) a credential: the admin's URL lookups must never filter on them, or
# an analyst could recover them one character at a time (``?session_key_hash__regex=^ab``).
CREDENTIAL_FIELDS = frozenset({"session_key", "session_key_hash", "password"})


class ReadOnlyMixin:
    """Nobody adds or edits these records through the admin; deleting needs the permission.

    Viewing needs the model's view permission, or being a staff admin of a shop: every list is
    scoped by ``retrieval.analytics.scope``, so a shop admin reads their own shops' sessions only
    (the same membership that lets them manage their catalogs, with no extra grant).
    """

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or _shop_reviewer(request)  # type: ignore[misc]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) or _shop_reviewer(request)  # type: ignore[misc]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if CREDENTIAL_FIELDS.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _shop_reviewer(request: HttpRequest) -> bool:
    from catalog.services.access import administers_any

    user = request.user
    return bool(user.is_active and user.is_staff and administers_any(user))


def _turn_details() -> tuple[Any, ...]:
    top = TurnResult.objects.filter(final=True).select_related("item").order_by("rank")
    return (
        "previews",
        Prefetch("results", queryset=top, to_attr="final_results"),
        Prefetch("feedback_set", queryset=Feedback.objects.select_related("item")),
    )


# --- session list filters --------------------------------------------------------------------


class TurnDisplayMixin:
    """A turn's previews, results, feedback and timings, shown alike inline and on its own page."""

    @admin.display(description="previews")
    def previews(self, obj: Turn) -> SafeString:
        return previews_html(obj)

    @admin.display(description="results (final ranking, score)")
    def results(self, obj: Turn) -> SafeString:
        return results_html(obj)

    @admin.display(description="feedback")
    def feedback(self, obj: Turn) -> SafeString:
        return feedback_html(obj)

    @admin.display(description="stage timings")
    def stage_timings(self, obj: Turn) -> SafeString:
        return timings_html(obj.timings, end_to_end_ms(obj))


class TurnCountFilter(admin.SimpleListFilter):
    title = "number of turns"
    parameter_name = "turns"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _, _ in TURN_RANGES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        for value, _, low, high in TURN_RANGES:
            if self.value() == value:
                queryset = queryset.filter(n_turns__gte=low)
                return queryset if high is None else queryset.filter(n_turns__lte=high)
        return queryset


class OutcomeFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("liked", "liked a result"), ("not_liked", "no liked result")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if self.value() == "liked":
            return queryset.filter(liked=True)
        if self.value() == "not_liked":
            return queryset.filter(liked=False)
        return queryset


# --- sessions --------------------------------------------------------------------------------


class TurnInline(TurnDisplayMixin, ReadOnlyMixin, admin.StackedInline):
    model = Turn
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("index",)
    fields = (
        ("index", "status", "created_at"),
        "message",
        "refined_query",
        "question",
        "previews",
        "results",
        "feedback",
        "stage_timings",
        ("error_code", "error"),
    )
    readonly_fields = (
        "index",
        "status",
        "created_at",
        "message",
        "refined_query",
        "question",
        "previews",
        "results",
        "feedback",
        "stage_timings",
        "error_code",
        "error",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Turn]:
        return super().get_queryset(request).prefetch_related(*_turn_details())


def _export_action(
    what: exports.Kind, fmt: exports.Format, description: str
) -> Callable[..., StreamingHttpResponse]:
    def action(
        modeladmin: admin.ModelAdmin[SearchSession],
        request: HttpRequest,
        queryset: QuerySet[SearchSession],
    ) -> StreamingHttpResponse:
        return exports.export_response(queryset, what, fmt)

    action.__name__ = f"export_{what}_{fmt}"  # the action's name in the admin's POST
    return admin.action(description=description)(action)


EXPORT_ACTIONS = (
    _export_action("sessions", "csv", "Export selected sessions (CSV)"),
    _export_action("sessions", "json", "Export selected sessions (JSON)"),
    _export_action("turns", "csv", "Export turns of selected sessions (CSV)"),
    _export_action("turns", "json", "Export turns of selected sessions (JSON)"),
)


@admin.register(SearchSession)
class SearchSessionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "catalog",
        "turn_count",
        "failed_count",
        "first_message",
        "likes",
        "dislikes",
        "liked_result",
    )
    list_filter = (
        ("catalog", admin.RelatedOnlyFieldListFilter),
        "created_at",
        TurnCountFilter,
        OutcomeFilter,
    )
    list_select_related = ("catalog",)
    date_hierarchy = "created_at"
    search_fields = ("turns__message", "turns__refined_query")
    fields = ("id", "catalog", "user", "created_at", "updated_at", "product_clicks")
    readonly_fields = fields
    inlines = (TurnInline,)
    # Exports of the selected sessions (the action bar offers "select all N" for a filtered list).
    actions = EXPORT_ACTIONS

    def get_queryset(self, request: HttpRequest) -> QuerySet[SearchSession]:
        first = Prefetch("turns", queryset=Turn.objects.filter(index=0), to_attr="first_turns")
        sessions = scope.visible_sessions(request.user)
        return with_figures(sessions).prefetch_related(first)

    @admin.display(description="products opened")
    def product_clicks(self, obj: SearchSession) -> SafeString:
        return clicks_html(obj)

    @admin.display(description="turns", ordering="n_turns")
    def turn_count(self, obj: SearchSession) -> int:
        return obj.n_turns  # type: ignore[attr-defined]

    @admin.display(description="failed", ordering="n_failed")
    def failed_count(self, obj: SearchSession) -> int:
        return obj.n_failed  # type: ignore[attr-defined]

    @admin.display(description="first message")
    def first_message(self, obj: SearchSession) -> str:
        first = getattr(obj, "first_turns", None) or []
        return first[0].message[:80] if first else ""

    @admin.display(description="👍", ordering="n_likes")
    def likes(self, obj: SearchSession) -> int:
        return obj.n_likes  # type: ignore[attr-defined]

    @admin.display(description="👎", ordering="n_dislikes")
    def dislikes(self, obj: SearchSession) -> int:
        return obj.n_dislikes  # type: ignore[attr-defined]

    @admin.display(description="liked a result", boolean=True, ordering="liked")
    def liked_result(self, obj: SearchSession) -> bool:
        return bool(obj.liked)  # type: ignore[attr-defined]

    # Extra pages: the dashboard and exports of the whole filtered list.

    def get_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        extra = [
            path(
                "dashboard/",
                wrap(self.dashboard_view),
                name="retrieval_searchsession_dashboard",
            ),
            path(
                "dashboard/export/<str:table>.<str:fmt>",
                wrap(self.dashboard_export_view),
                name="retrieval_searchsession_dashboard_export",
            ),
            path(
                "export/<str:kind>.<str:fmt>",
                wrap(self.export_view),
                name="retrieval_searchsession_export",
            ),
        ]
        return [*extra, *super().get_urls()]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {"export_kinds": exports.KINDS, "export_formats": exports.FORMATS}
        return super().changelist_view(request, {**context, **(extra_context or {})})

    def export_view(self, request: HttpRequest, kind: str, fmt: str) -> HttpResponseBase:
        """The sessions (or their turns) of the list as filtered by the query string."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if kind not in exports.KINDS or fmt not in exports.FORMATS:
            return HttpResponseBadRequest("unknown export")
        try:
            sessions = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("invalid filter")
        return exports.export_response(
            sessions, cast(exports.Kind, kind), cast(exports.Format, fmt)
        )

    def _dashboard_input(
        self, request: HttpRequest, params: Mapping[str, str]
    ) -> tuple[filters.DashboardFilter, QuerySet[SearchSession]]:
        """The filter and the sessions it selects; raises ``filters.FilterError`` for a bad one."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        chosen = filters.parse(params)
        visible = scope.visible_catalogs(request.user)
        if chosen.catalog_id is not None and not visible.filter(pk=chosen.catalog_id).exists():
            raise PermissionDenied
        return chosen, chosen.apply(scope.visible_sessions(request.user))

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        filter_error = ""
        try:
            chosen, sessions = self._dashboard_input(request, request.GET)
        except filters.FilterError as error:
            # A bad date range: the page (form included) for the period alone, saying what was
            # wrong, instead of a bare error text. Without dates nothing is refused.
            filter_error = str(error)
            period = {k: str(v) for k, v in request.GET.items() if k not in ("start", "end")}
            chosen, sessions = self._dashboard_input(request, period)
        figures = stats.dashboard(sessions)
        pngs = {
            "funnel": charts.funnel_chart(figures.funnel),
            "e2e": charts.end_to_end_chart(figures.end_to_end, figures.axis),
            "fallback": charts.fallback_chart(figures.fallback_over_time, figures.axis),
            "turns": charts.turns_histogram(figures.turns_per_session),
            "latency": charts.latency_chart(figures.latency, figures.axis),
            "feedback": charts.feedback_chart(figures.feedback_over_time, figures.axis),
        }
        query = urlencode(chosen.query())
        catalogs = list(scope.visible_catalogs(request.user).order_by("name"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Search dashboard",
            "opts": self.opts,
            "figures": figures,
            "charts": {name: charts.data_uri(png) if png else None for name, png in pngs.items()},
            "filter": chosen,
            "period": chosen.period(),
            "days": chosen.days,
            "day_choices": filters.DAYS,
            "catalogs": catalogs,
            "catalog_id": chosen.catalog_id,
            "catalog_name": next((c.name for c in catalogs if c.pk == chosen.catalog_id), ""),
            "exports": {
                name: {
                    fmt: reverse("admin:retrieval_searchsession_dashboard_export", args=[name, fmt])
                    + (f"?{query}" if query else "")
                    for fmt in exports.FORMATS
                }
                for name in tables.TABLES
            },
            "low_score": settings.DAR_ANALYTICS_LOW_SCORE,
            "list_limit": outcomes.LIST_LIMIT,
            "reasons": outcomes.REASONS,
            "filter_error": filter_error,
        }
        return TemplateResponse(
            request, "admin/retrieval/dashboard.html", context, status=400 if filter_error else 200
        )

    def dashboard_export_view(self, request: HttpRequest, table: str, fmt: str) -> HttpResponse:
        """One table of the dashboard, for the same filter, as CSV or JSON."""
        if table not in tables.TABLES or fmt not in exports.FORMATS:
            return HttpResponseBadRequest("unknown export")
        try:
            _, sessions = self._dashboard_input(request, request.GET)
        except filters.FilterError as error:
            return HttpResponseBadRequest(str(error))
        figures = stats.dashboard(sessions)
        rows = tables.rows(table, figures, sessions)
        if fmt == "csv":
            body = exports.stream_csv(rows, tables.TABLES[table])
        else:
            body = exports.stream_json(rows)
        response = StreamingHttpResponse(
            body, content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/json"
        )
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="dar-{table}-{stamp}.{fmt}"'
        return response  # type: ignore[return-value]


# --- turns and feedback on their own ---------------------------------------------------------


@admin.register(Turn)
class TurnAdmin(TurnDisplayMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "session", "index", "status", "short_message", "error_code")
    list_filter = (
        "status",
        ("session__catalog", admin.RelatedOnlyFieldListFilter),
        "created_at",
        "refinement_fallback",
        "error_code",
    )
    list_select_related = ("session__catalog",)
    search_fields = ("message", "refined_query")
    fields = (
        ("session", "index", "status"),
        "message",
        "context",
        "refined_query",
        "refinement_fallback",
        "prompts",
        "question",
        "previews",
        "results",
        "feedback",
        ("encoder_name", "weights"),
        "stage_timings",
        ("error_code", "error"),
        ("created_at", "started_at", "finished_at"),
        ("task_id", "attempts"),
    )
    readonly_fields = (
        "session",
        "index",
        "status",
        "message",
        "context",
        "refined_query",
        "refinement_fallback",
        "prompts",
        "question",
        "previews",
        "results",
        "feedback",
        "encoder_name",
        "weights",
        "stage_timings",
        "error_code",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "task_id",
        "attempts",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Turn]:
        turns = scope.visible_turns(request.user)
        return turns.prefetch_related(*_turn_details())

    @admin.display(description="message")
    def short_message(self, obj: Turn) -> str:
        return obj.message[:80]


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "session", "turn", "item", "value")
    list_filter = ("value", ("session__catalog", admin.RelatedOnlyFieldListFilter), "created_at")
    list_select_related = ("session__catalog", "turn", "item")
    fields = ("session", "turn", "item", "value", "created_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Feedback]:
        return scope.visible_feedback(request.user)
