from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.catalog_list, name="catalog-list"),
    path("search/<slug:slug>/", views.search_page, name="search-page"),
]
