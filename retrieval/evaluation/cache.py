"""The evaluation's disk cache: corpus embeddings, LLM refinements, generated images, query vectors.

Every file is written to a temporary name in its final folder and renamed into place, so an
interrupted run leaves either the complete file or nothing, and the next run resumes from what is
there. Keys include the model names, so switching a model never reuses another model's output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def digest(*parts: Any) -> str:
    """A stable key for JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def slug(name: str) -> str:
    """A folder name for a model name (readable, with a hash so distinct names stay distinct)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "model"
    return f"{readable}-{digest(name)[:8]}"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiskCache:
    """A folder of cached evaluation artefacts; ``None`` root disables caching."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        # JSON entries (LLM refinements) are also kept in memory, so modes of one run share them
        # even without a cache folder: reformulated and dar ask the LLM the same question.
        self._memory: dict[tuple[str, ...], Any] = {}

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, *parts: str) -> Path:
        assert self.root is not None
        return self.root.joinpath(*parts)

    def load_array(self, *parts: str) -> np.ndarray | None:
        if self.root is None:
            return None
        path = self.path(*parts)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged file is recomputed, never trusted

    def save_array(self, array: np.ndarray, *parts: str) -> None:
        if self.root is None:
            return
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        write_atomic(self.path(*parts), buffer.getvalue())

    def load_json(self, *parts: str) -> Any:
        if parts in self._memory:
            return self._memory[parts]
        if self.root is None:
            return None
        path = self.path(*parts)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save_json(self, value: Any, *parts: str) -> None:
        self._memory[parts] = value
        if self.root is not None:
            data = json.dumps(value, ensure_ascii=False).encode()
            write_atomic(self.path(*parts), data)

    def load_images(self, count: int, folder: str, key: str) -> list[Image.Image] | None:
        """``count`` PNGs saved under one key, or None unless all of them are there."""
        if self.root is None:
            return None
        images = []
        for j in range(count):
            path = self.path(folder, f"{key}-{j}.png")
            if not path.is_file():
                return None
            try:
                with Image.open(path) as img:
                    img.load()
                    images.append(img.convert("RGB"))
            except OSError:
                return None
        return images

    def save_images(self, images: list[Image.Image], folder: str, key: str) -> None:
        if self.root is None:
            return
        for j, image in enumerate(images):
            buffer = io.BytesIO()
            # PNG: lossless, so a resumed run encodes exactly the pixels the first run did.
            image.save(buffer, format="PNG")
            write_atomic(self.path(folder, f"{key}-{j}.png"), buffer.getvalue())
