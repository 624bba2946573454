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
