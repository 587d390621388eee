"""Every CUDA source of the native backend compiles with nvcc for Ampere (sm_80), Hopper (sm_90) and Blackwell
(sm_100), with the flags the native build uses (compile only, ``-c``: no GPU needed), so a broken kernel cannot
land on a machine without a GPU. Skipped when nvcc is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lowprec.native import NVCCFLAGS, source_dir

SOURCES = sorted(source_dir().glob("*.cu")) if source_dir() is not None else []
ARCHS = ("sm_80", "sm_90", "sm_100")


def test_there_are_cuda_sources():
    assert {p.name for p in SOURCES} >= {"accum_cuda.cu"}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", SOURCES, ids=[p.name for p in SOURCES])
def test_cuda_source_compiles(src: Path, arch: str, tmp_path: Path):
    flags = [f for f in NVCCFLAGS if f != "-shared"]          # an object file, not a library
    cmd = ["nvcc", *flags, "-c", f"-gencode=arch=compute_{arch[3:]},code={arch}", "-I", str(src.parent),
           "-o", str(tmp_path / f"{src.stem}.o"), str(src)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}{p.stdout}"
    assert (tmp_path / f"{src.stem}.o").stat().st_size > 0
