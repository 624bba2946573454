"""CLIP BPE tokenizer files (vocab.json, merges.txt) derived from open_clip's bundled merges.

Hugging Face's ``CLIPTokenizer`` needs these two files and they cannot be downloaded offline. They
are rebuilt here from ``bpe_simple_vocab_16e6.txt.gz`` with the same derivation CLIP uses: the 256
byte-level characters, the same characters with the ``</w>`` end-of-word suffix, one token per
merge (in merge order), then ``<|startoftext|>`` and ``<|endoftext|>``: 49408 ids in total.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

CLIP_VOCAB_SIZE = 49408
# First line of the merges file is a version header; CLIP keeps 49152 - 256 - 2 merges after it.
_N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def default_bpe_path() -> Path:
    # find_spec locates the package without importing it (open_clip's __init__ imports torch).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it ships the CLIP BPE merges")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def byte_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters (GPT-2/CLIP)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def clip_merges(bpe_path: Path | None = None) -> list[tuple[str, str]]:
    with gzip.open(bpe_path or default_bpe_path()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    return [(a, b) for a, b in (line.split() for line in lines[1 : _N_MERGES + 1])]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    chars = list(byte_to_unicode().values())
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), BOS, EOS]
    return {token: index for index, token in enumerate(tokens[:CLIP_VOCAB_SIZE])}


def write_clip_tokenizer_files(dest: Path, bpe_path: Path | None = None) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` into ``dest``; returns their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    merges = clip_merges(bpe_path)
    vocab = clip_vocab(merges)
    vocab_file, merges_file = dest / "vocab.json", dest / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    body = "\n".join(f"{a} {b}" for a, b in merges)
    merges_file.write_text(f"#version: 0.2\n{body}\n", encoding="utf-8")
    return vocab_file, merges_file
