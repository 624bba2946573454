"""Django's STORAGES from the environment (imported by settings: no Django imports here)."""

from __future__ import annotations

from typing import Any


def storages_setting(
    *,
    backend: str,
    media_root: str,
    media_url: str,
    private_root: str,
    s3: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Django's STORAGES for ``DAR_MEDIA_STORAGE`` (``local`` or ``s3``)."""
    static = {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"}
    if backend == "s3":
        common = {
            "querystring_auth": True,  # presigned URLs: objects stay private in the bucket
            "default_acl": None,
            "file_overwrite": True,  # names are content-addressed; the ingest checks first
            "signature_version": "s3v4",
            **s3,
        }
        return {
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {**common, "location": "media"},
            },
            "private": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {**common, "location": "private"},
            },
            "staticfiles": static,
        }
    return {
        "default": {
            "BACKEND": "dar_site.media.SignedFileSystemStorage",
            "OPTIONS": {"location": media_root, "base_url": media_url},
        },
        "private": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": private_root, "base_url": "/nowhere/"},
        },
        "staticfiles": static,
    }
