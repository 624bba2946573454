"""Product feeds for tests and bench/feed_sync.py: Merchant Center TSV of N products whose images
are served by a local ``ImageServer``, and the "second version" edits of the issue."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from tests.factories import image_bytes
from tests.image_server import ImageServer

COLUMNS = [
    "id",
    "title",
    "description",
    "link",
    "image_link",
    "price",
    "availability",
    "brand",
    "product_type",
    "color",
    "size",
    "material",
]
COLORS = ["red", "blue", "green", "black", "white"]


def picture(n: int, version: int = 0) -> bytes:
    """A distinct small PNG per (product, version)."""
    return image_bytes("RGB", (24, 24), ((n * 7) % 256, (n // 256 * 31 + version * 97) % 256, 90))


@dataclass
class Product:
    id: str
    title: str
    price: Decimal
    image: str
    color: str
    availability: str = "in_stock"
    extra: dict[str, str] = field(default_factory=dict)

    def row(self) -> list[str]:
        return [
            self.id,
            self.title,
            f"A {self.color} thing, number {self.id}.",
            f"https://shop.example/p/{self.id}",
            self.image,
            f"{self.price:.2f} EUR",
            self.availability,
            "ACME",
            "Apparel > Dresses",
            self.color,
            "M",
            "cotton",
        ]


def catalog_products(server: ImageServer, n: int) -> list[Product]:
    out = []
    for i in range(n):
        url = server.add(f"/img/{i}-0.png", picture(i))
        out.append(Product(f"SKU{i:05d}", f"Dress {i}", Decimal(10 + i % 90), url, COLORS[i % 5]))
    return out


def tsv(products: list[Product], broken: dict[str, str] | None = None) -> bytes:
    """The feed; ``broken`` maps a product id to the raw price its row carries instead."""
    lines = ["\t".join(COLUMNS)]
    for product in products:
        cells = product.row()
        if broken and product.id in broken:
            cells[5] = broken[product.id]
        lines.append("\t".join(cells))
    return ("\n".join(lines) + "\n").encode()


@dataclass
class SecondVersion:
    products: list[Product]
    broken: dict[str, str]
    priced: list[str]
    reimaged: list[str]
    removed: list[str]


def second_version(
    server: ImageServer,
    products: list[Product],
    *,
    prices: int,
    images: int,
    removed: int,
    broken: int,
) -> SecondVersion:
    """Changes disjoint sets of products: new prices, new pictures (new URL, new bytes), rows
    dropped, rows whose price cannot be read."""
    kept = [Product(**vars(p)) for p in products]
    priced = kept[:prices]
    for p in priced:
        p.price += Decimal("1.50")
    reimaged = kept[prices : prices + images]
    for index, p in enumerate(reimaged):
        n = int(p.id[3:])
        p.image = server.add(f"/img/{n}-1.png", picture(n, version=1 + index))
    bad = kept[prices + images : prices + images + broken]
    gone = kept[len(kept) - removed :]
    return SecondVersion(
        products=kept[: len(kept) - removed],
        broken={p.id: "twelve euros" for p in bad},
        priced=[p.id for p in priced],
        reimaged=[p.id for p in reimaged],
        removed=[p.id for p in gone],
    )
