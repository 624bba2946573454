from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from dar_site.media import serve_signed
from retrieval.api_meta import ApiRootView, CsrfView


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask for /favicon.ico where a page names no icon (a JSON answer, say): the
    brand's icon from the static files, rather than a 404 in every log."""
    return redirect(static("favicon.png"))


urlpatterns = [
    path("favicon.ico", favicon),
    path("admin/", admin.site.urls),
    path("api/", ApiRootView.as_view(), name="api-root"),
    path("api/csrf/", CsrfView.as_view(), name="api-csrf"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its initialiser as a script file: no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("catalog.api_urls")),
    path("api/", include("retrieval.api_urls")),
    path("", include("retrieval.urls")),
]

if settings.DAR_MEDIA_STORAGE == "local":
    # Signed URLs only (dar_site/media.py); with an object store, its presigned URLs instead.
    media_prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns.append(re_path(rf"^{media_prefix}(?P<path>.+)$", serve_signed, name="media"))
