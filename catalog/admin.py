"""Admin for shop admins: their shops' catalogs and items only; superusers see everything.

Shop membership *is* the permission here (a shop admin needs ``is_staff`` to log in, not Django
model permissions). Uploading goes through the custom "Upload images" view on a catalog, which
calls the same ingest service as the API and the commands. Saves and deletes go through
``services.catalogs`` like every other write to shops, catalogs and items.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Count, F, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from .forms import CatalogAdminForm, CatalogItemAdminForm, OriginsField, UploadImagesForm
from .models import PRODUCT_FIELDS, Catalog, CatalogItem, ItemEmbedding, Shop
from .services import access, catalogs, embed, embedding, feeds, progress, uploads
from .services.encoder import active_encoder_name


class ShopScopedAdmin(admin.ModelAdmin):
    """View/change/delete only what belongs to a shop the user administers."""

    def _shop_of(self, obj: Any) -> Shop | None:
        raise NotImplementedError

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access.administers_any(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def _may(self, request: HttpRequest, obj: Any) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if obj is None:
            return access.administers_any(user)
        shop = self._shop_of(obj)
        return bool(user.is_superuser or (shop and shop.admins.filter(pk=user.pk).exists()))


@admin.register(Shop)
class ShopAdmin(ShopScopedAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    filter_horizontal = ["admins"]
    prepopulated_fields = {"slug": ("name",)}

    def _shop_of(self, obj: Shop) -> Shop:
        return obj

    def get_queryset(self, request: HttpRequest) -> QuerySet[Shop]:
        return access.shops_for(request.user)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Shop admins manage their catalogs; who administers a shop is the superuser's call.
        return () if request.user.is_superuser else ("slug", "admins")

    def get_prepopulated_fields(self, request: HttpRequest, obj: Any = None) -> dict[str, Any]:
        return dict(self.prepopulated_fields) if request.user.is_superuser else {}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def save_model(self, request: HttpRequest, obj: Shop, form: Any, change: bool) -> None:
        catalogs.save_shop(obj)

    def delete_model(self, request: HttpRequest, obj: Shop) -> None:
        catalogs.delete_shops([obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Shop]) -> None:
        catalogs.delete_shops(queryset)


def _count_filter(status: str, extra: Q | None = None) -> Count:
    condition = Q(items__status=status)
    return Count("items", filter=condition & extra if extra is not None else condition)


@admin.register(Catalog)
class CatalogAdmin(ShopScopedAdmin):
    list_display = [
        "name",
        "slug",
        "shop",
        "is_public",
        "total_items",
        "pending",
        "embedded",
        "failed",
        "stale",
        "upload_link",
        "search_link",
    ]
    list_filter = ["is_public", ("shop", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = [
        "embedding_progress",
        "publishable_key",
        "feed_synced_at",
        "feed_summary",
        "created_at",
    ]
    actions = ["reembed_stale", "reembed_failed", "reembed_all", "sync_feed_now"]
    form = CatalogAdminForm
    # The sync writes the report; the page shows its summary ("Last feed sync"), not raw JSON.
    exclude = ["feed_report"]
    change_form_template = "admin/catalog/catalog/change_form.html"

    def _shop_of(self, obj: Catalog) -> Shop:
        return obj.shop

    def get_queryset(self, request: HttpRequest) -> QuerySet[Catalog]:
        catalogs = access.catalogs_for(request.user).select_related("shop")
        # Progress counts for the whole change-list page in one grouped query, against the
        # active encoder (embedded = has its vector; stale = embedded by another encoder).
        name = active_encoder_name()
        status = CatalogItem.Status
        if name:
            current = Q(
                items__in=ItemEmbedding.objects.filter(
                    space=ItemEmbedding.Space.IMAGE, model_name=name
                ).values("item_id")
            )
            embedded = _count_filter(status.EMBEDDED, current)
        else:
            embedded = _count_filter(status.EMBEDDED)
        return catalogs.annotate(
            n_total=Count("items"),
            n_pending=_count_filter(status.PENDING),
            n_failed=_count_filter(status.FAILED),
            n_embedded_any=_count_filter(status.EMBEDDED),
            n_embedded=embedded,
        ).annotate(n_stale=F("n_embedded_any") - F("n_embedded"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may(request, None)

    def save_model(self, request: HttpRequest, obj: Catalog, form: Any, change: bool) -> None:
        catalogs.save_catalog(obj)

    def delete_model(self, request: HttpRequest, obj: Catalog) -> None:
        catalogs.delete_catalogs([obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Catalog]) -> None:
        catalogs.delete_catalogs(queryset)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "embed_origins":
            return OriginsField(
                required=False, label="Allowed origins", help_text=db_field.help_text
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        catalog = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if catalog is not None:
            # The widget's snippet names this server as the shop's pages will reach it.
            context["embed"] = {
                "key": catalog.publishable_key,
                "origins": catalog.embed_origins,
                "snippet": embed.snippet(catalog, request.build_absolute_uri("/")),
                "rotate_url": reverse("admin:catalog_catalog_rotate_key", args=[catalog.pk]),
                "public": catalog.is_public,
            }
        return super().change_view(request, object_id, form_url, context)

    def get_form(
        self, request: HttpRequest, obj: Any | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form: Any = super().get_form(request, obj, change, **kwargs)
        form.allow_paths = bool(request.user.is_superuser)
        return form

    @admin.display(description="Last feed sync")
    def feed_summary(self, obj: Catalog) -> str:
        report = obj.feed_report or {}
        if not report:
            return "-"
        if "error" in report:
            return f"failed: {report['error']}"
        return (
            f"{report.get('added', 0)} added, {report.get('updated', 0)} updated, "
            f"{report.get('unchanged', 0)} unchanged, {report.get('removed', 0)} removed, "
            f"{len(report.get('failed', []))} failed"
        )

    @admin.action(description="Sync product feed now")
    def sync_feed_now(self, request: HttpRequest, queryset: QuerySet[Catalog]) -> None:
        queued = 0
        for catalog in queryset:
            if catalog.feed_location and self.has_change_permission(request, catalog):
                uploads.queue_sync(catalog.pk)
                queued += 1
        self.message_user(
            request, f"Queued {queued} feed sync(s); catalogs without a feed skipped."
        )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "shop":
            kwargs["queryset"] = access.shops_for(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="items", ordering="n_total")
    def total_items(self, obj: Catalog) -> int:
        return obj.n_total  # type: ignore[attr-defined]

    @admin.display(ordering="n_pending")
    def pending(self, obj: Catalog) -> int:
        return obj.n_pending  # type: ignore[attr-defined]

    @admin.display(ordering="n_embedded")
    def embedded(self, obj: Catalog) -> int:
        return obj.n_embedded  # type: ignore[attr-defined]

    @admin.display(ordering="n_failed")
    def failed(self, obj: Catalog) -> int:
        return obj.n_failed  # type: ignore[attr-defined]

    @admin.display(ordering="n_stale")
    def stale(self, obj: Catalog) -> int:
        return obj.n_stale  # type: ignore[attr-defined]

    @admin.display(description="")
    def upload_link(self, obj: Catalog) -> str:
        url = reverse("admin:catalog_catalog_upload", args=[obj.pk])
        return format_html('<a href="{}">Upload images</a>', url)

    @admin.display(description="")
    def search_link(self, obj: Catalog) -> str:
        return format_html('<a href="{}">Search page</a>', reverse("search-page", args=[obj.slug]))

    @admin.display(description="Embedding progress")
    def embedding_progress(self, obj: Catalog) -> str:
        if not obj.pk:
            return "-"
        c = progress.counts(obj)
        # static/admin/catalog/progress.js refreshes it from the REST progress endpoint.
        return format_html(
            '<span id="embedding-progress" data-url="{}" aria-live="polite">'
            "{} items: {} pending, {} embedded, {} failed, {} stale (active encoder: {})</span>",
            reverse("api-catalog-progress", args=[obj.slug]),
            c["total"],
            c["pending"],
            c["embedded"],
            c["failed"],
            c["stale"],
            c["encoder"] or "unknown until the first embedding job",
        )

    # --- Actions ----------------------------------------------------------------------------

    def _reembed(self, request: HttpRequest, queryset: QuerySet[Catalog], mode: str) -> None:
        total = 0
        for catalog in queryset:
            if self.has_change_permission(request, catalog):
                total += embedding.request_reembed(catalog, mode)
        self.message_user(request, f"Queued {total} item(s) for embedding ({mode}).")

    @admin.action(description="Re-embed with current encoder")
    def reembed_stale(self, request: HttpRequest, queryset: QuerySet[Catalog]) -> None:
        self._reembed(request, queryset, "stale")

    @admin.action(description="Retry failed items")
    def reembed_failed(self, request: HttpRequest, queryset: QuerySet[Catalog]) -> None:
        self._reembed(request, queryset, "failed")

    @admin.action(description="Re-embed all items with current encoder")
    def reembed_all(self, request: HttpRequest, queryset: QuerySet[Catalog]) -> None:
        self._reembed(request, queryset, "all")

    # --- Upload view ------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<path:object_id>/upload/",
                self.admin_site.admin_view(self.upload_view),
                name="catalog_catalog_upload",
            ),
            path(
                "<path:object_id>/rotate-key/",
                self.admin_site.admin_view(self.rotate_key_view),
                name="catalog_catalog_rotate_key",
            ),
        ]
        return custom + super().get_urls()

    def rotate_key_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Confirm, then give the catalog a new publishable key (the old snippet stops working)."""
        catalog = self.get_object(request, unquote(object_id))
        if catalog is None or not self.has_change_permission(request, catalog):
            raise Http404("No such catalog.")
        change_url = reverse("admin:catalog_catalog_change", args=[catalog.pk])
        if request.method == "POST":
            embed.rotate_key(catalog)
            self.message_user(
                request,
                "The widget has a new key: replace the snippet on your site with the one below "
                "(the old key no longer works).",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rotate the widget key of {catalog}?",
            "opts": self.model._meta,
            "original": catalog,
            "change_url": change_url,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/catalog/catalog/rotate_key.html", context)

    def upload_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        catalog = self.get_object(request, unquote(object_id))
        if catalog is None or not self.has_change_permission(request, catalog):
            raise Http404("No such catalog.")
        report = sync_report = None
        if request.method == "POST":
            form = UploadImagesForm(request.POST, request.FILES)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    outcome = uploads.handle(
                        catalog,
                        data["images"],
                        title=data["title"],
                        description=data["description"],
                        attributes=data["attributes"],
                    )
                except (uploads.UploadRefused, feeds.FeedError) as exc:
                    self.message_user(request, f"Upload refused: {exc}", messages.ERROR)
                else:
                    report, sync_report = outcome.imported, outcome.synced
                    level = messages.WARNING if outcome.has_problems else messages.SUCCESS
                    self.message_user(request, f"Upload finished: {outcome.summary()}.", level)
                    form = UploadImagesForm()
        else:
            form = UploadImagesForm()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upload images to {catalog}",
            "opts": self.model._meta,
            "original": catalog,
            "form": form,
            "report": report,
            "sync_report": sync_report.as_dict() if sync_report else None,
            "progress": progress.counts(catalog),
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/catalog/catalog/upload.html", context)


@admin.register(CatalogItem)
class CatalogItemAdmin(ShopScopedAdmin):
    list_display = [
        "thumbnail",
        "__str__",
        "title",
        "catalog",
        "product_id",
        "price",
        "currency",
        "availability",
        "status",
        "created_at",
    ]
    list_display_links = ["thumbnail", "__str__"]
    # Titles in bulk: each changed row goes through save_model (catalogs.save_item), which
    # re-embeds its text.
    list_editable = ["title"]
    list_filter = ["status", "availability", ("catalog", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["title", "source_name", "sha256", "product_id", "brand"]
    list_select_related = ["catalog"]
    readonly_fields = [
        "preview",
        "catalog",
        "source_name",
        "sha256",
        "width",
        "height",
        "status",
        "error",
        "image_source",
        "created_at",
        "updated_at",
    ]
    fields = [
        "preview",
        "catalog",
        "title",
        "description",
        *PRODUCT_FIELDS,
        "attributes",
        "status",
        "error",
        "image_source",
        "source_name",
        "sha256",
        "width",
        "height",
        "created_at",
        "updated_at",
    ]
    actions = ["reembed_selected"]
    form = CatalogItemAdminForm

    def _shop_of(self, obj: CatalogItem) -> Shop:
        return obj.catalog.shop

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.catalog.feed_location:
            # The shop's feed owns its product data: an edit here would be undone by the next sync.
            fields += list(PRODUCT_FIELDS)
        return fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[CatalogItem]:
        return access.items_for(request.user).select_related("catalog__shop")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # images come in through a catalog's "Upload images" (validated) view

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "title" and field is not None:
            # Django renders list_editable inputs without a label; screen readers need a name.
            field.widget.attrs["aria-label"] = "Title"
        return field

    @admin.display(description="")
    def thumbnail(self, obj: CatalogItem) -> str:
        return format_html(
            '<img src="{}" alt="{}" class="dar-item-thumb" width="48" height="48">',
            obj.image.url,
            str(obj),
        )

    @admin.display(description="Image")
    def preview(self, obj: CatalogItem) -> str:
        return format_html('<img src="{}" alt="" class="dar-item-preview">', obj.image.url)

    def save_model(self, request: HttpRequest, obj: CatalogItem, form: Any, change: bool) -> None:
        catalogs.save_item(obj, form.changed_data if change else ())

    def delete_model(self, request: HttpRequest, obj: CatalogItem) -> None:
        catalogs.delete_items([obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CatalogItem]) -> None:
        catalogs.delete_items(queryset)

    @admin.action(description="Re-embed selected items with current encoder")
    def reembed_selected(self, request: HttpRequest, queryset: QuerySet[CatalogItem]) -> None:
        queued = embedding.reembed_items(queryset.values_list("pk", flat=True))
        self.message_user(request, f"Queued {queued} item(s) for embedding.")
