"""Real text, offline, on every machine: the Python standard library's own source files, as bytes.

Contract
--------
* Files: every ``*.py`` under the running interpreter's ``sysconfig.get_paths()["stdlib"]``, excluding
  ``site-packages`` and ``dist-packages`` (installed third-party code, which differs between machines),
  sorted by their POSIX path relative to that root. Tokens are bytes (vocabulary 256).
* Split by file, fixed: a file is in the validation split when the first byte of the SHA-256 of its
  relative path is below ``256 * val_fraction`` (stable when files are added or removed); the rest is
  training text. Files are joined with a 0x00 byte (never in Python source) as the separator.
* ``Corpus.sha256`` hashes every (relative path, contents) pair in order and the split rule; it is
  recorded with every result, so results from different interpreters never mix silently.
* Batches: step ``s`` of a run with seed ``seed`` reads ``batch`` windows of ``seq + 1`` bytes at
  offsets drawn by a generator seeded with ``(seed, s)`` alone: every recipe sees the same data in the
  same order, and a resumed run reads exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


@dataclass(frozen=True)
class Corpus:
    """Training and validation bytes (uint8 tensors) and the hash that identifies them."""

    train: torch.Tensor
    val: torch.Tensor
    sha256: str
    n_files: tuple[int, int]          # (train, validation)
    root: str

    def batch(self, split: str, step: int, seed: int, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), int64 (batch, seq): windows at offsets drawn from ``(seed, step)`` alone."""
        data = self._split(split)
        if data.numel() < seq + 2:
            raise ValueError(f"the {split} split has {data.numel()} bytes, too few for windows of {seq + 1}")
        g = torch.Generator().manual_seed(_mix(seed, step))
        starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=g)
        idx = starts[:, None] + torch.arange(seq + 1)
        win = data[idx].long()
        return win[:, :-1], win[:, 1:]

    def _split(self, split: str) -> torch.Tensor:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val


def _mix(seed: int, step: int) -> int:
    """A generator seed for (seed, step): distinct pairs give distinct seeds (within 2^31 steps)."""
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got {seed}, {step}")
    return seed * (1 << 31) + step


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The sorted source files of the standard library (see the module doc)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py")
             if p.is_file() and not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@lru_cache(maxsize=4)
def load_corpus(val_fraction: float = 0.05, root: str | None = None) -> Corpus:
    """The standard-library corpus of the running interpreter (or of ``root``), split by file."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    base = Path(root or sysconfig.get_paths()["stdlib"])
    files = stdlib_files(base)
    if not files:
        raise ValueError(f"no Python source files under {base}")
    h = hashlib.sha256(f"split:path-sha256-first-byte<{int(256 * val_fraction)}".encode())
    parts: dict[str, list[bytes]] = {"train": [], "val": []}
    for p in files:
        rel = p.relative_to(base).as_posix()
        data = p.read_bytes()
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        split = "val" if hashlib.sha256(rel.encode()).digest()[0] < int(256 * val_fraction) else "train"
        parts[split].append(data)
    if not parts["val"] or not parts["train"]:
        raise ValueError(f"val_fraction={val_fraction} leaves a split empty")
    as_tensor = {k: torch.frombuffer(bytearray(b"\0".join(v)), dtype=torch.uint8) for k, v in parts.items()}
    return Corpus(as_tensor["train"], as_tensor["val"], h.hexdigest(), (len(parts["train"]), len(parts["val"])),
                  str(base))
