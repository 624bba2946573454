"""Forms of the catalog admin."""

from __future__ import annotations

from typing import Any

from django import forms

from dar_site.origin_names import OriginError, normalize_origins

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


class OriginsField(forms.CharField):
    """A catalog's allowed origins: one per line in a textarea, stored as a normalised list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("max_length", None)
        kwargs.pop("base_field", None)
        kwargs.pop("delimiter", None)
        kwargs["widget"] = forms.Textarea(attrs={"rows": 3, "cols": 60, "spellcheck": "false"})
        super().__init__(*args, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list | tuple):
            lines = [str(v) for v in value]
        else:
            lines = str(value or "").replace(",", "\n").splitlines()
        try:
            return normalize_origins(lines)
        except OriginError as error:
            raise forms.ValidationError(str(error)) from None

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(initial) != self.to_python(data)
        except forms.ValidationError:
            return True


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


class CatalogItemAdminForm(forms.ModelForm):
    """An item's change form. Product data is editable here only in catalogs without a feed (the
    feed owns it otherwise); a price needs its ISO 4217 currency, like a feed row."""

    def clean(self) -> dict[str, Any]:
        from .services.feeds import RowRejected, currency

        data = super().clean() or {}
        if "currency" in self.fields:
            code = str(data.get("currency") or "")
            if code:
                try:
                    data["currency"] = currency(code)
                except RowRejected as error:
                    self.add_error("currency", str(error))
            price = data.get("price")
            if price is not None and price < 0:
                self.add_error("price", "A price cannot be negative.")
            if price is not None and not code:
                self.add_error("currency", "A price needs its currency (e.g. EUR).")
        return data
