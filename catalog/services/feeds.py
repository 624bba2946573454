"""Reading product feeds into rows: the formats shops already export.

* Google Merchant Center product data: the tab-separated file (header row: ``id``, ``title``,
  ``description``, ``link``, ``image_link``, ``price`` as "12.00 EUR", ``availability``, ``brand``,
  ``product_type`` / ``google_product_category``, ``color``, ``size``, ``material``...) and the
  RSS 2.0 XML feed whose items carry those fields in the ``g:`` namespace.
* Shopify's product CSV export (``Handle``, ``Title``, ``Body (HTML)``, ``Vendor``, ``Type``,
  ``Variant Price``, ``Image Src``, ``Variant SKU``...): rows sharing a Handle are one product's
  variants, so the Handle is the product id and the variants are kept in its attributes.
* The CSV/JSONL manifests of ``import_catalog`` when they carry a product id (``id`` or
  ``product_id``); manifests without one stay plain picture imports (``sources``).

Parsing is pure (bytes in, rows out): no database, no network. A row that cannot be read is a
``RowError`` with its row number and reason; the others are unaffected. XML is parsed by
``defusedxml`` with DTDs forbidden, so no entity (local file, billion laughs) is ever expanded.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeET
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils.html import strip_tags

from catalog.models import CatalogItem

G_NS = "http://base.google.com/ns/1.0"

# ISO 4217 active codes (2024), plus XAU-style funds left out on purpose: prices are in money.
_CODES = """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
    MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
    TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG"""
CURRENCIES = frozenset(_CODES.split())

_AVAILABILITY = {
    "in_stock": CatalogItem.Availability.IN_STOCK,
    "instock": CatalogItem.Availability.IN_STOCK,
    "available": CatalogItem.Availability.IN_STOCK,
    "out_of_stock": CatalogItem.Availability.OUT_OF_STOCK,
    "outofstock": CatalogItem.Availability.OUT_OF_STOCK,
    "sold_out": CatalogItem.Availability.OUT_OF_STOCK,
    "preorder": CatalogItem.Availability.PREORDER,
    "pre_order": CatalogItem.Availability.PREORDER,
    "backorder": CatalogItem.Availability.BACKORDER,
    "back_order": CatalogItem.Availability.BACKORDER,
}

# Column names (normalised: lower case, no "g:", spaces as underscores) per field.
_ID = ("id", "product_id", "offer_id", "sku")
_TITLE = ("title", "name")
_DESCRIPTION = ("description",)
_LINK = ("link", "product_url", "url")
_IMAGE = ("image_link", "image", "image_url", "path", "file", "filename")
_PRICE = ("price",)
_CURRENCY = ("currency",)
_AVAIL = ("availability",)
_BRAND = ("brand",)
_CATEGORY = ("product_type", "category", "google_product_category")
_KNOWN = {*_ID, *_TITLE, *_DESCRIPTION, *_LINK, *_IMAGE, *_PRICE, *_CURRENCY, *_AVAIL, *_BRAND}
_PRICE_TEXT = re.compile(r"^\s*([0-9][0-9 ,]*(?:[.,][0-9]{1,2})?)\s*([A-Za-z]{3})?\s*$")
_URL_OK = URLValidator(schemes=["http", "https"])


class FeedError(ValueError):
    """The feed as a whole cannot be read (not a feed, broken XML): nothing is imported."""


class RowRejected(ValueError):
    """One row's data is invalid; the message is the reason."""


@dataclass
class ProductRow:
    row: int  # 1-based: the line of a TSV/CSV (header = 1), the item's number in XML/JSONL
    product_id: str
    title: str = ""
    description: str = ""
    product_url: str = ""
    image: str = ""  # a URL or a path relative to the feed (manifests, uploads)
    price: Decimal | None = None
    currency: str = ""
    availability: str = CatalogItem.Availability.IN_STOCK
    brand: str = ""
    category: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The item fields this row sets (compared with the stored ones by the sync)."""
        return {
            "title": self.title[:500],
            "description": self.description,
            "product_url": self.product_url,
            "price": self.price,
            "currency": self.currency,
            "availability": self.availability,
            "brand": self.brand[:200],
            "category": self.category[:500],
            "attributes": self.attributes,
        }


@dataclass
class RowError:
    row: int
    reason: str
    product_id: str = ""


@dataclass
class Feed:
    kind: str  # merchant_tsv, merchant_xml, shopify_csv, manifest_csv, manifest_jsonl
    rows: list[ProductRow]
    errors: list[RowError]


def normalise_key(key: str) -> str:
    key = key.strip().lower()
    if key.startswith("g:"):
        key = key[2:]
    return re.sub(r"[\s\-]+", "_", key)


def currency(code: str) -> str:
    """An ISO 4217 code, upper-cased, or RowRejected."""
    value = code.strip().upper()
    if value not in CURRENCIES:
        raise RowRejected(f"unknown currency {code.strip()!r} (expected an ISO 4217 code)")
    return value


def parse_price(text: Any, default_currency: str = "") -> tuple[Decimal | None, str]:
    """ "12.00 EUR", "12,5 EUR", "12.00" (with ``default_currency``) -> (Decimal, currency)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None, ""
    if isinstance(text, int | float) and not isinstance(text, bool):
        raw, code = str(text), default_currency
    else:
        match = _PRICE_TEXT.match(str(text))
        if not match:
            raise RowRejected(f"unreadable price {str(text)[:40]!r} (expected e.g. '12.00 EUR')")
        raw, code = match.group(1), match.group(2) or default_currency
    raw = raw.replace(" ", "")
    if "," in raw and "." not in raw:
        raw = raw.replace(",", ".")  # decimal comma
    raw = raw.replace(",", "")  # thousands separators
    try:
        value = Decimal(raw).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise RowRejected(f"unreadable price {str(text)[:40]!r}") from None
    if value < 0 or value >= Decimal("1e10"):
        raise RowRejected(f"price out of range: {value}")
    return value, currency(code) if code else ""


def parse_availability(text: Any) -> str:
    if text is None or not str(text).strip():
        return CatalogItem.Availability.IN_STOCK
    key = normalise_key(str(text))
    if key not in _AVAILABILITY:
        raise RowRejected(
            f"unknown availability {str(text)[:40]!r} "
            "(in_stock, out_of_stock, preorder or backorder)"
        )
    return _AVAILABILITY[key]


def _url(text: str, what: str) -> str:
    value = text.strip()
    if not value:
        return ""
    if len(value) > 2000:
        raise RowRejected(f"{what} longer than 2,000 characters")
    try:
        _URL_OK(value)
    except ValidationError:
        raise RowRejected(f"{what} is not an http(s) URL: {value[:80]!r}") from None
    return value


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = row.get(key)
        if value not in (None, ""):
            return str(value).strip()
    return ""


def product_from_row(number: int, raw: dict[str, Any], default_currency: str = "") -> ProductRow:
    """One Merchant Center / manifest row (any key spelling) as a product; RowRejected if bad."""
    row = {normalise_key(str(k)): v for k, v in raw.items() if k is not None}
    product_id = _first(row, _ID)
    if not product_id:
        raise RowRejected("no product id (column 'id')")
    if len(product_id) > 200:
        raise RowRejected("product id longer than 200 characters")
    price, code = parse_price(row.get("price"), default_currency)
    if row.get("currency") not in (None, ""):
        code = currency(str(row["currency"]))
    if price is not None and not code:
        raise RowRejected("price without a currency (write it as '12.00 EUR')")
    category = _first(row, _CATEGORY)
    attributes: dict[str, Any] = {}
    extra = row.get("attributes")
    if isinstance(extra, dict):
        attributes.update(extra)
    for key, value in row.items():
        if key in _KNOWN or key in _CATEGORY or key == "attributes":
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        attributes[key] = value.strip() if isinstance(value, str) else value
    title = _first(row, _TITLE)
    image = _first(row, _IMAGE)
    if len(image) > 2000:
        raise RowRejected("image_link longer than 2,000 characters")
    return ProductRow(
        row=number,
        product_id=product_id,
        title=title,
        description=strip_tags(_first(row, _DESCRIPTION)),
        product_url=_url(_first(row, _LINK), "link"),
        image=image,
        price=price,
        currency=code,
        availability=parse_availability(row.get("availability")),
        brand=_first(row, _BRAND),
        category=category,
        attributes=attributes,
    )


def _collect(
    rows: list[tuple[int, dict[str, Any] | str]], kind: str, default_currency: str
) -> Feed:
    feed = Feed(kind, [], [])
    for number, raw in rows:
        if isinstance(raw, str):
            feed.errors.append(RowError(number, raw))
            continue
        try:
            feed.rows.append(product_from_row(number, raw, default_currency))
        except RowRejected as exc:
            pid = str(raw.get("id") or raw.get("product_id") or "").strip()
            feed.errors.append(RowError(number, str(exc), pid))
    return feed


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedError(f"the feed is not UTF-8 text: {exc}") from None


def _delimited(text: str, delimiter: str) -> list[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    out: list[tuple[int, dict[str, Any] | str]] = []
    try:
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            if None in row:  # more cells than header columns
                out.append((reader.line_num, "more cells than the header has columns"))
                continue
            out.append((reader.line_num, row))
    except csv.Error as exc:
        raise FeedError(f"unreadable {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}") from None
    return out


def _xml_rows(data: bytes) -> list[tuple[int, dict[str, Any] | str]]:
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True)
    except SafeET.ParseError as exc:
        raise FeedError(f"broken XML: {exc}") from None
    except Exception as exc:  # defusedxml's DTDForbidden, EntitiesForbidden...
        raise FeedError(f"XML refused: {exc.__class__.__name__}") from None
    items = root.findall("./channel/item") or root.findall(".//item")
    out: list[tuple[int, dict[str, Any] | str]] = []
    for number, item in enumerate(items, start=1):
        out.append((number, _xml_item(item)))
    return out


def _xml_item(item: Element) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for child in item:
        tag = child.tag.split("}", 1)[-1] if isinstance(child.tag, str) else ""
        if not tag:
            continue
        value = "".join(child.itertext()).strip()
        row.setdefault(tag, value)  # g:id wins over nothing; the first of a repeated field
    return row


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any] | str]]:
    out: list[tuple[int, dict[str, Any] | str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            out.append((number, f"invalid JSON: {exc}"))
            continue
        out.append((number, row if isinstance(row, dict) else "JSON line is not an object"))
    return out


# --- Shopify ------------------------------------------------------------------------------


def _shopify(text: str, default_currency: str) -> Feed:
    feed = Feed("shopify_csv", [], [])
    products: dict[str, ProductRow] = {}
    prices: dict[str, list[Decimal]] = {}
    stock: dict[str, list[int | None]] = {}
    option_names: dict[str, dict[int, str]] = {}
    for number, raw in _delimited(text, ","):
        if isinstance(raw, str):
            feed.errors.append(RowError(number, raw))
            continue
        row = {str(k).strip(): (v or "").strip() for k, v in raw.items()}
        handle = row.get("Handle", "")
        if not handle:
            feed.errors.append(RowError(number, "no Handle"))
            continue
        try:
            price, code = parse_price(row.get("Variant Price"), default_currency)
        except RowRejected as exc:
            feed.errors.append(RowError(number, str(exc), handle))
            continue
        product = products.get(handle)
        if product is None:
            if not row.get("Title"):
                feed.errors.append(RowError(number, "the first row of a product has no Title"))
                continue
            product = ProductRow(
                row=number,
                product_id=handle[:200],
                title=row["Title"],
                description=strip_tags(row.get("Body (HTML)", "")),
                brand=row.get("Vendor", ""),
                category=row.get("Type", "") or row.get("Product Category", ""),
                currency=code,
                attributes={"variants": []},
            )
            if row.get("Tags"):
                product.attributes["tags"] = [t.strip() for t in row["Tags"].split(",") if t]
            if row.get("Status", "active").lower() in ("draft", "archived"):
                product.availability = CatalogItem.Availability.OUT_OF_STOCK
            products[handle] = product
            prices[handle], stock[handle] = [], []
        if not product.image and row.get("Image Src"):
            product.image = row["Image Src"]
        if not row.get("Variant Price") and not row.get("Variant SKU"):
            continue  # an extra image row
        variant: dict[str, Any] = {"sku": row.get("Variant SKU", "")}
        if price is not None:
            variant["price"] = str(price)
            prices[handle].append(price)
        names = option_names.setdefault(handle, {})
        for n in (1, 2, 3):
            # Only a product's first row names its options; variant rows give the values.
            name = names.setdefault(n, row.get(f"Option{n} Name", "")) or row.get(
                f"Option{n} Name", ""
            )
            value = row.get(f"Option{n} Value", "")
            if value and value != "Default Title":
                option = normalise_key(name or f"option{n}")
                variant[option] = value
                seen = product.attributes.setdefault(option, [])
                if value not in seen:
                    seen.append(value)
        qty = row.get("Variant Inventory Qty", "")
        tracked = bool(row.get("Variant Inventory Tracker"))
        stock[handle].append(int(qty) if tracked and re.fullmatch(r"-?\d+", qty) else None)
        product.attributes["variants"].append(variant)
    for handle, product in products.items():
        if prices[handle]:
            product.price = min(prices[handle])
        if product.price is not None and not product.currency:
            feed.errors.append(
                RowError(product.row, "Shopify exports no currency: give the feed one", handle)
            )
            continue
        counts = stock[handle]
        if (
            product.availability == CatalogItem.Availability.IN_STOCK
            and counts
            and all(c is not None and c <= 0 for c in counts)
        ):
            product.availability = CatalogItem.Availability.OUT_OF_STOCK
        feed.rows.append(product)
    return feed


# --- Entry point --------------------------------------------------------------------------


def detect(name: str, data: bytes) -> str:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    lower = name.lower()
    if head.startswith(b"<") or lower.endswith((".xml", ".rss")):
        return "merchant_xml"
    if lower.endswith((".jsonl", ".ndjson")) or head.startswith(b"{"):
        return "manifest_jsonl"
    first = head.split(b"\n", 1)[0]
    if b"\t" in first:
        return "merchant_tsv"
    header = {normalise_key(c) for c in first.decode("utf-8", "replace").split(",")}
    if "handle" in header and ("variant_price" in header or "title" in header):
        return "shopify_csv"
    return "manifest_csv"


def is_feed_name(name: str) -> bool:
    return name.lower().endswith((".tsv", ".txt", ".xml", ".rss", ".csv", ".jsonl", ".ndjson"))


def has_product_ids(data: bytes, kind: str) -> bool:
    """Whether a manifest is a product feed (keyed by product id) or a plain picture manifest."""
    if kind in ("merchant_tsv", "merchant_xml", "shopify_csv"):
        return True
    text = data[:65536].decode("utf-8-sig", "replace")
    if kind == "manifest_jsonl":
        line = next((ln for ln in text.splitlines() if ln.strip()), "")
        try:
            first = json.loads(line)
        except ValueError:
            return False
        return isinstance(first, dict) and any(
            normalise_key(str(k)) in ("id", "product_id") for k in first
        )
    header = text.splitlines()[0] if text else ""
    return any(normalise_key(c) in ("id", "product_id") for c in header.split(","))


def parse(data: bytes, name: str = "", *, default_currency: str = "") -> Feed:
    """Every row of a feed as a ProductRow or a RowError; FeedError if the feed is unreadable."""
    if default_currency:
        default_currency = currency(default_currency)
    kind = detect(name, data)
    if kind == "merchant_xml":
        return _collect(_xml_rows(data), kind, default_currency)
    text = _text(data)
    if kind == "shopify_csv":
        return _shopify(text, default_currency)
    if kind == "manifest_jsonl":
        return _collect(_jsonl_rows(text), kind, default_currency)
    rows = _delimited(text, "\t" if kind == "merchant_tsv" else ",")
    if not rows:
        raise FeedError("the feed has no rows")
    return _collect(rows, kind, default_currency)
