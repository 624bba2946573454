from django.urls import URLPattern, URLResolver, path

from . import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("search/sessions/", api.SessionCreateView.as_view(), name="search-session-create"),
    path(
        "search/sessions/<str:session_id>/",
        api.SessionDetailView.as_view(),
        name="search-session",
    ),
    path(
        "search/sessions/<str:session_id>/messages/",
        api.MessageView.as_view(),
        name="search-messages",
    ),
    path(
        "search/sessions/<str:session_id>/turns/<int:index>/",
        api.TurnView.as_view(),
        name="search-turn",
    ),
    path(
        "search/sessions/<str:session_id>/filters/",
        api.FiltersView.as_view(),
        name="search-filters",
    ),
    path(
        "search/sessions/<str:session_id>/feedback/",
        api.FeedbackView.as_view(),
        name="search-feedback",
    ),
    path(
        "search/sessions/<str:session_id>/clicks/",
        api.ClickView.as_view(),
        name="search-clicks",
    ),
]
