"""REST API for shop admins: catalogs, item uploads, item listing/deletion, embedding progress.

Thin: querysets come from ``services.access`` (another shop's catalog is a 404, not a 403), the
work from ``services.ingest`` / ``services.embedding`` / ``services.progress``, and every write
of a catalog or an item from ``services.catalogs`` (never ``serializer.save()``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from dar_site.storable_text import StorableJSONParser

from .models import PRODUCT_FIELDS, Catalog, CatalogItem, Shop
from .services import (
    access,
    catalogs,
    embedding,
    facets,
    feeds,
    metadata,
    progress,
    reembed,
    uploads,
)

# --- Serializers ------------------------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    embedded = serializers.IntegerField(help_text="Items with a vector from the active encoder.")
    failed = serializers.IntegerField()
    stale = serializers.IntegerField(
        help_text="Embedded once, but not by the active encoder: invisible to search until "
        "re-embedded."
    )
    encoder = serializers.CharField(allow_null=True, help_text="The active encoder's name.")


class OwnShopField(serializers.SlugRelatedField):
    """A shop by slug, among the shops the requesting user administers (others "do not exist")."""

    def get_queryset(self) -> QuerySet[Shop]:
        request = self.context.get("request")
        return access.shops_for(request.user if request else None)


class CatalogSerializer(serializers.ModelSerializer):
    shop = OwnShopField(slug_field="slug")

    class Meta:
        model = Catalog
        fields = ["id", "shop", "name", "slug", "description", "is_public", "created_at"]
        read_only_fields = ["id", "created_at"]


class CatalogItemSerializer(serializers.ModelSerializer):
    catalog: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )

    class Meta:
        model = CatalogItem
        fields = [
            "id",
            "catalog",
            "image",
            "sha256",
            "width",
            "height",
            "source_name",
            "title",
            "description",
            "attributes",
            *PRODUCT_FIELDS,
            "status",
            "error",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class UploadSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        allow_empty=False,
        help_text="One or many image files, or zip archives of images (judged by content).",
    )
    title = serializers.CharField(required=False, allow_blank=True, max_length=500)
    description = serializers.CharField(required=False, allow_blank=True)
    attributes = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text='A JSON object, e.g. {"color": "red", "size": "M"}.',
    )

    def validate_attributes(self, value: str) -> dict[str, Any]:
        try:
            return metadata.parse_attributes(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class RejectedSerializer(serializers.Serializer):
    path = serializers.CharField()
    reason = serializers.CharField()


class ImportedSerializer(serializers.Serializer):
    path = serializers.CharField()
    id = serializers.IntegerField()
    sha256 = serializers.CharField()


class DuplicateSerializer(ImportedSerializer):
    of = serializers.CharField(help_text="Source name of the item that already holds the bytes.")


class ImportReportSerializer(serializers.Serializer):
    imported = ImportedSerializer(many=True)
    duplicates = DuplicateSerializer(many=True)
    rejected = RejectedSerializer(many=True)
    queued = serializers.IntegerField(help_text="Items sent to the embedding queue.")
    progress = ProgressSerializer()


class ReembedSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=list(embedding.REEMBED_MODES),
        default="stale",
        help_text="stale: items without a vector from the active encoder, not already queued "
        "(older encoder, or failed); failed: failed items; pending: re-send queued items' jobs; "
        "all: every item.",
    )


# --- Views ------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="Catalogs of the shops you administer"),
    create=extend_schema(summary="Create a catalog in a shop you administer"),
)
class CatalogViewSet(viewsets.ModelViewSet):
    serializer_class = CatalogSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"

    def get_queryset(self) -> QuerySet[Catalog]:
        return access.catalogs_for(self.request.user).select_related("shop").order_by("pk")

    def perform_create(self, serializer: serializers.BaseSerializer[Catalog]) -> None:
        serializer.instance = catalogs.create_catalog(**serializer.validated_data)

    def perform_update(self, serializer: serializers.BaseSerializer[Catalog]) -> None:
        assert serializer.instance is not None
        catalogs.update_catalog(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Catalog) -> None:
        catalogs.delete_catalog(instance)

    @extend_schema(summary="Embedding progress counts", responses=ProgressSerializer)
    @action(detail=True, methods=["get"])
    def progress(self, request: Request, slug: str | None = None) -> Response:
        return Response(progress.counts(self.get_object()))

    @extend_schema(
        summary="Attribute facets (names, types, values seen) of the catalog's available items",
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["get"])
    def facets(self, request: Request, slug: str | None = None) -> Response:
        found = facets.catalog_facets(self.get_object())
        return Response({"facets": [facet.as_dict() for facet in found]})

    @extend_schema(
        summary="Re-embed with the current encoder",
        request=ReembedSerializer,
        responses={
            202: inline_serializer(
                "ReembedQueued",
                {"queued": serializers.IntegerField(), "progress": ProgressSerializer()},
            )
        },
    )
    @action(
        detail=True,
        methods=["post"],
        parser_classes=[StorableJSONParser, FormParser, MultiPartParser],
    )
    def reembed(self, request: Request, slug: str | None = None) -> Response:
        catalog = self.get_object()
        params = ReembedSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            queued = reembed.request_reembed(catalog, params.validated_data["mode"])
        except reembed.ReembedRefused as refused:
            return Response(
                {
                    "code": refused.code,
                    "detail": refused.message,
                    "progress": progress.counts(catalog),
                },
                status=refused.http_status,
            )
        return Response(
            {"queued": queued, "progress": progress.counts(catalog)},
            status=status.HTTP_202_ACCEPTED,
        )


@extend_schema_view(
    list=extend_schema(
        summary="Items of a catalog",
        parameters=[
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                enum=[s.value for s in CatalogItem.Status],
                description="Only items with this embedding status.",
            )
        ],
    ),
    retrieve=extend_schema(summary="One item"),
    destroy=extend_schema(summary="Delete an item (and its stored file and vectors)"),
)
class CatalogItemViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = CatalogItemSerializer
    parser_classes = [MultiPartParser, FormParser]
    _catalog: Catalog

    def get_catalog(self) -> Catalog:
        if not hasattr(self, "_catalog"):
            self._catalog = get_object_or_404(
                access.catalogs_for(self.request.user), slug=self.kwargs["catalog_slug"]
            )
        return self._catalog

    def get_queryset(self) -> QuerySet[CatalogItem]:
        if getattr(self, "swagger_fake_view", False):
            return CatalogItem.objects.none()
        items = CatalogItem.objects.filter(catalog=self.get_catalog()).select_related("catalog")
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in CatalogItem.Status.values:
                raise ValidationError(
                    {"status": f"must be one of {', '.join(CatalogItem.Status.values)}"}
                )
            items = items.filter(status=wanted)
        return items.order_by("pk")

    def perform_destroy(self, instance: CatalogItem) -> None:
        catalogs.delete_item(instance)

    @extend_schema(
        summary="Upload images (files, zips, a CSV/JSONL manifest beside them) or a product feed",
        request={"multipart/form-data": UploadSerializer},
        responses={
            201: OpenApiResponse(ImportReportSerializer, description="At least one imported."),
            200: OpenApiResponse(
                ImportReportSerializer, description="Nothing new: all duplicates or rejected."
            ),
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        catalog = self.get_catalog()
        params = UploadSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            outcome = uploads.handle(
                catalog,
                data["files"],
                title=data.get("title", ""),
                description=data.get("description", ""),
                attributes=data.get("attributes") or {},
            )
        except (uploads.UploadRefused, feeds.FeedError) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        if outcome.queued_feed:
            return Response(
                {"detail": outcome.summary(), "progress": progress.counts(catalog)},
                status=status.HTTP_202_ACCEPTED,
            )
        if outcome.synced is not None:
            synced = outcome.synced
            code = status.HTTP_201_CREATED if synced.added else status.HTTP_200_OK
            return Response(synced.as_dict() | {"progress": progress.counts(catalog)}, status=code)
        report = outcome.imported
        assert report is not None
        body = report.as_dict() | {"queued": report.queued, "progress": progress.counts(catalog)}
        code = status.HTTP_201_CREATED if report.imported else status.HTTP_200_OK
        return Response(body, status=code)
