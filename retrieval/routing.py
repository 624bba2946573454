from django.urls import URLPattern, path

from .consumers import SearchConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/search/<str:session_id>/", SearchConsumer.as_asgi(), name="search-socket"),
]
