"""Forms of the catalog admin."""

from __future__ import annotations

from typing import Any

from django import forms

from .services import metadata


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts many files (Django's documented recipe)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"multiple": True}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> Any:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)] if data else []


class UploadImagesForm(forms.Form):
    images = MultipleFileField(
        label="Images, zip archives or a feed",
        help_text="Select many files at once; zip archives are unpacked. Files are judged by "
        "their content: anything that is not a sound raster image is reported, not stored. "
        "Add one CSV/JSONL manifest to give the images titles, or upload a product feed "
        "(Merchant Center TSV/XML, Shopify CSV) alone or beside its images to sync products.",
        allow_empty_file=True,  # an empty file is reported as rejected, not a form error
    )
    title = forms.CharField(
        required=False, max_length=500, help_text="Optional, applied to every uploaded image."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    attributes = forms.CharField(
        required=False,
        help_text='Optional JSON object applied to every image, e.g. {"brand": "ACME"}.',
    )

    def clean_attributes(self) -> dict[str, Any]:
        try:
            return metadata.parse_attributes(self.cleaned_data.get("attributes") or "")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class CatalogAdminForm(forms.ModelForm):
    """The catalog's change form: a feed location on this server's disk is for superusers only
    (a shop admin naming /etc/... must not make the server read it)."""

    allow_paths = False  # set per request by CatalogAdmin.get_form

    def clean_feed_location(self) -> str:
        value = str(self.cleaned_data.get("feed_location") or "").strip()
        if not value or value.lower().startswith(("http://", "https://")):
            return value
        if "://" in value or not self.allow_paths:
            raise forms.ValidationError(
                "Give an http(s) URL (a path on the server is for superusers only)."
            )
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("feed_interval_minutes") and not data.get("feed_location"):
            self.add_error("feed_interval_minutes", "A sync interval needs a feed location.")
        return data
