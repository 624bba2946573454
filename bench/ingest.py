"""Catalog ingest: images per second from files to stored embeddings, against the decode floor.

    python -m bench.ingest                  # 200 synthetic product photos, offline models
    python -m bench.ingest --images 10000   # the 10,000-image run

A folder of generated photos (JPEG and PNG, with a CSV manifest of titles) goes through
``ingest.import_paths`` (what ``import_catalog`` and the admin upload call), which queues
``gpu.embed_items`` jobs group by group while it imports; a real Celery worker (threads of this
process, so its calls can be timed) embeds them. The figures are wall time per stage, summed over
all images (stages of the decoding processes are not in the table: they run beside it).

The clock stops when every item is embedded and the HNSW indexes exist (a model's first load
builds them once at the end: ``catalog.services.index_builds``).

In the same run, on the same files, the decode-only floor: read, decode (JPEG draft mode), orient,
resize to 224 px, nothing else, on one core (and on every core, in processes). The product's
figure is printed as a fraction of the one-core floor, so runs on a busy machine compare.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from bench import cpu_use
from bench.common import bench_database, print_table, setup_django
from bench.instrument import Meter, celery_worker, instrumented

PHASE_IMPORT, PHASE_EMBED = "import", "embed"
POLLING = "bench polling"


def make_photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A product-shot-like picture: a lit background, a few shapes and sensor noise, so that
    decoding and re-encoding cost what real photos cost (flat colours compress to nothing)."""
    w, h = size, int(size * 0.75)
    base = rng.integers(120, 255, 3)
    ramp = np.linspace(0.7, 1.0, h)[:, None, None] * base[None, None, :]
    pixels = np.broadcast_to(ramp, (h, w, 3)).copy()
    img = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1, y1 = x0 + int(rng.integers(w // 8, w // 2)), y0 + int(rng.integers(h // 8, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    noise = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def _make_one(job: tuple[str, int, int]) -> int:
    path, size, seed = job
    make_photo(np.random.default_rng(seed), size).save(path, quality=90)
    return Path(path).stat().st_size


def make_folder(folder: Path, count: int, size: int, seed: int) -> int:
    """Write ``count`` photos (one in four PNG) and a manifest, on every core; returns bytes."""
    from concurrent.futures import ProcessPoolExecutor

    names = [f"p{i:05d}." + ("png" if i % 4 == 3 else "jpg") for i in range(count)]
    jobs = [(str(folder / name), size, seed * 1_000_003 + i) for i, name in enumerate(names)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        written = sum(pool.map(_make_one, jobs, chunksize=32))
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "title", "description"])
        writer.writeheader()
        writer.writerows(
            {"path": n, "title": f"Product {i}", "description": "a bench product"}
            for i, n in enumerate(names)
        )
    return written


def decode_floor_one(path: str) -> int:
    """The least any ingest must do per file: read, decode at the smallest JPEG scale covering
    224 px, orient, resize to 224 on the shorter side."""
    with open(path, "rb") as handle, Image.open(io.BytesIO(handle.read())) as img:
        img.draft("RGB", (224, 224))
        img.load()
        oriented = ImageOps.exif_transpose(img) or img
        w, h = oriented.size
        scale = 224 / min(w, h)
        small = oriented.convert("RGB").resize((round(w * scale), round(h * scale)))
        return small.width


def decode_floor(folder: Path, processes: int) -> float:
    """Images per second of ``decode_floor_one`` over the folder's photos."""
    from concurrent.futures import ProcessPoolExecutor

    paths = sorted(str(p) for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    start = time.perf_counter()
    if processes == 1:
        for path in paths:
            decode_floor_one(path)
    else:
        with ProcessPoolExecutor(max_workers=processes) as pool:
            list(pool.map(decode_floor_one, paths, chunksize=16))
    return len(paths) / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> None:
    from catalog.models import CatalogItem
    from catalog.services import (
        catalogs,
        decoding,
        embedding,
        ingest,
        progress,
        storing,
        validation,
        vectors,
    )
    from workers.models.config import model_plan

    catalog, _ = catalogs.ensure_catalog(
        "bench", "bench-ingest", shop_name="Bench", name="Bench ingest"
    )
    with tempfile.TemporaryDirectory(prefix="dar-bench-ingest-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        size_bytes = make_folder(folder, args.images, args.size, args.seed)
        gen_s = time.perf_counter() - start

        floor_1 = decode_floor(folder, 1)
        cores = len(os.sched_getaffinity(0))
        floor_n = decode_floor(folder, cores)
        load_before = os.getloadavg()[0]

        meter = Meter()
        spans = [
            (validation, "sha256_of", "hash (before decoding)"),
            (decoding.Decoder, "result", "wait for the decoding processes"),
            (storing, "store_item_files", "store rendition + original (threads)"),
            (embedding, "_open_stored", "open stored image"),
            (vectors, "store", "vector store (upsert + HNSW)"),
            (vectors, "ensure_index", "HNSW index build (after the load)"),
        ]
        # The import finishes (and only then queues its jobs) before the worker starts embedding,
        # so the phases never overlap: the meter's totals at t1 belong to the import.
        # Models load once per worker process; loaded here first (the worker runs in this process)
        # so that the figures are the steady state, and the load time is reported on its own.
        start = time.perf_counter()
        from workers.models.registry import get_encoder, get_text_embedder

        get_encoder(), get_text_embedder()
        load_s = time.perf_counter() - start
        import torch

        torch_threads = torch.get_num_threads()
        postgres_pid = cpu_use.postgres_server_pid()
        with celery_worker(concurrency=args.worker_threads), instrumented(meter, spans):
            cpu_t0 = cpu_use.snapshot(postgres_pid)
            t0 = time.perf_counter()
            report = ingest.import_paths(catalog, [str(folder / "manifest.csv")])
            t1 = time.perf_counter()
            at_t1 = meter.snapshot()
            with meter.span(POLLING):  # the benchmark's own queries are not the product's
                counts = progress.wait_until_done(catalog, timeout=args.timeout, interval=0.05)
                # The load's last job builds the HNSW indexes after marking its items embedded:
                # the clock stops once they exist.
                wait_for_indexes(timeout=args.timeout)
            t2 = time.perf_counter()
            at_t2 = meter.snapshot()
            cpu = cpu_use.difference(cpu_use.snapshot(postgres_pid), cpu_t0)
        decoding.shutdown()
    phases = {
        PHASE_IMPORT: at_t1,
        PHASE_EMBED: {
            k: v - at_t1.get(k, 0.0)
            for k, v in at_t2.items()
            if v - at_t1.get(k, 0.0) and k != POLLING
        },
    }

    embedded = CatalogItem.objects.filter(catalog=catalog, status="embedded").count()
    n = len(report.imported)
    plan = model_plan()
    product = embedded / (t2 - t0)
    print(
        f"ingest bench: {args.images} photos {args.size}x{int(args.size * 0.75)} "
        f"({size_bytes / 2**20:.1f} MB, generated in {gen_s:.1f} s); encoder {plan.encoder_name}; "
        f"DAR_EMBED_BATCH={_setting('DAR_EMBED_BATCH')}; worker threads {args.worker_threads} "
        f"(torch threads {torch_threads}); "
        f"decoding processes "
        f"{decoding.processes()}; {cores} cores; load average before the run {load_before:.2f}; "
        f"models loaded first in {load_s:.1f} s"
    )
    print(
        f"  imported {n}, rejected {len(report.rejected)}, embedded {embedded}, "
        f"pending {counts['pending']}, failed {counts['failed']}"
    )
    print(
        f"  decode-only floor on the same files: {floor_1:.1f} images/s on one core, "
        f"{floor_n:.1f} images/s on {cores} processes"
    )
    print(
        f"  import returned after {t1 - t0:.1f} s ({n / (t1 - t0):.1f} images/s, embedding "
        f"already running); last embedding {t2 - t1:.1f} s later"
    )
    print(
        f"  files to stored embeddings {t2 - t0:.1f} s = {product:.1f} images/s = "
        f"{product / floor_1:.2f} x the one-core floor, {product / floor_n:.2f} x the "
        f"{cores}-process floor"
    )
    print_cpu(cpu, n, t2 - t0, cores)
    rows = []
    for phase, wall in ((PHASE_IMPORT, t1 - t0), (PHASE_EMBED, t2 - t1)):
        totals = phases[phase]
        ranked = sorted(((k, v) for k, v in totals.items() if v >= 0.0005), key=lambda kv: -kv[1])
        for bucket, seconds in ranked:
            rows.append([phase, bucket, seconds, 1000 * seconds / max(n, 1), 100 * seconds / wall])
    print_table(
        "where the time goes (seconds summed over threads; import = until import_paths "
        "returned, embedding threads included; embed = the rest)",
        ["phase", "stage", "total s", "ms/image", "% of phase wall"],
        rows,
    )


def print_cpu(cpu: dict[str, float], n: int, wall: float, cores: int) -> None:
    """CPU per image by process, and the most images/s the cores allow at that cost."""
    total = sum(cpu.values())
    rows: list[list[object]] = [
        [part, seconds, 1000 * seconds / max(n, 1)] for part, seconds in cpu.items()
    ]
    rows.append(["all", total, 1000 * total / max(n, 1)])
    print_table(
        f"CPU used from files to stored embeddings ({total / wall / cores:.0%} of {cores} cores "
        f"over the {wall:.1f} s)",
        ["process", "CPU s", "CPU ms/image"],
        rows,
    )
    if total:
        print(
            f"  at {1000 * total / max(n, 1):.1f} CPU ms per image, {cores} cores allow at most "
            f"{cores * n / total:.0f} images/s"
        )


def wait_for_indexes(timeout: float, interval: float = 0.05) -> None:
    from catalog.models import DeferredIndex

    deadline = time.monotonic() + timeout
    while DeferredIndex.objects.exists() and time.monotonic() < deadline:
        time.sleep(interval)


def _setting(name: str) -> object:
    from django.conf import settings

    return getattr(settings, name)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, default=200, help="photos to import (200)")
    parser.add_argument("--size", type=int, default=640, help="photo width in pixels (640)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=2,
        help="embedding worker threads (2; an instance's gpu worker runs 32)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="give up waiting for embeddings after (900 s)"
    )
    args = parser.parse_args(argv)
    setup_django()
    with bench_database():
        run(args)


if __name__ == "__main__":
    main()
