"""Helpers shared by the study scripts: resumable CSV results and the synthetic input distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch


class ResultsCSV:
    """Rows appended one at a time (flushed), keyed so that a re-run skips what is already there."""

    def __init__(self, path: Path, key: Iterable[str]) -> None:
        self.path, self.key = Path(path), tuple(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[tuple] = set()
        if self.path.exists() and self.path.stat().st_size:
            old = pd.read_csv(self.path)
            self.done = {tuple(str(v) for v in r) for r in old[list(self.key)].itertuples(index=False)}

    def has(self, **key: object) -> bool:
        return tuple(str(key[k]) for k in self.key) in self.done

    def add(self, row: dict) -> None:
        header = not self.path.exists() or self.path.stat().st_size == 0
        pd.DataFrame([row]).to_csv(self.path, mode="a", header=header, index=False)
        self.done.add(tuple(str(row[k]) for k in self.key))

    def frame(self) -> pd.DataFrame:
        return pd.read_csv(self.path)


def student_t(shape: tuple[int, ...], g: torch.Generator, dof: float = 3.0) -> torch.Tensor:
    z = torch.randn(shape, generator=g)
    chi2 = torch.randn((*shape, int(dof)), generator=g).pow(2).sum(-1)
    return z / torch.sqrt(chi2 / dof)


DISTRIBUTIONS: dict[str, Callable[[tuple[int, ...], torch.Generator], torch.Tensor]] = {
    "normal": lambda s, g: torch.randn(s, generator=g),
    "uniform_pos": lambda s, g: torch.rand(s, generator=g),
    "half_normal": lambda s, g: torch.randn(s, generator=g).abs(),
    "student_t3": student_t,
}
