from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from .api import CatalogItemViewSet, CatalogViewSet

router = SimpleRouter()
router.register("catalogs", CatalogViewSet, basename="api-catalog")

items = CatalogItemViewSet.as_view({"get": "list", "post": "create"})
item = CatalogItemViewSet.as_view({"get": "retrieve", "delete": "destroy"})

urlpatterns: list[URLPattern | URLResolver] = [
    *router.urls,
    path("catalogs/<slug:catalog_slug>/items/", items, name="api-catalog-item-list"),
    path("catalogs/<slug:catalog_slug>/items/<int:pk>/", item, name="api-catalog-item-detail"),
]
