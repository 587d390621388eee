"""Native builds of ``cuda_ext/``'s shared header: ``accum_cpu.c`` with the system C compiler, and
``accum_cuda.cu`` with nvcc (for CUDA tensors), compiled on first use (seconds) and loaded through
ctypes; cached under ``$LOWPREC_CACHE`` (default ``~/.cache/lowprec``), keyed by the sources' hash."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCES = Path(__file__).resolve().parent.parent / "cuda_ext"
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-shared", "-fPIC"]
NVCCFLAGS = ["-O3", "--fmad=false", "-shared", "-Xcompiler", "-fPIC"]   # no contraction, as on the CPU


class AccumModelC(ctypes.Structure):
    _fields_ = [("group", ctypes.c_int32), ("align_bits", ctypes.c_int32), ("align_rounding", ctypes.c_int32),
                ("align_with_acc", ctypes.c_int32), ("acc_mbits", ctypes.c_int32), ("acc_emin", ctypes.c_int32),
                ("acc_rounding", ctypes.c_int32), ("acc_max", ctypes.c_double), ("promote_every", ctypes.c_int32),
                ("outer_mbits", ctypes.c_int32), ("outer_emin", ctypes.c_int32), ("outer_rounding", ctypes.c_int32),
                ("outer_max", ctypes.c_double)]


def compiler(cuda: bool) -> str | None:
    """The compiler a build needs (nvcc for CUDA, else $CC, gcc or cc), or None when there is none."""
    if cuda:
        return shutil.which("nvcc")
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


@functools.lru_cache(maxsize=None)
def library(name: str = "accum_cpu") -> ctypes.CDLL:
    """Build (once per source version) and load ``cuda_ext/<name>.c`` or ``cuda_ext/<name>.cu``."""
    cuda = name.endswith("_cuda")
    src = SOURCES / f"{name}.{'cu' if cuda else 'c'}"
    if not src.exists():
        raise RuntimeError(f"native sources not found at {SOURCES}: the native backend needs the source tree")
    cc = compiler(cuda)
    if cc is None:
        raise RuntimeError(f"the native backend needs {'nvcc' if cuda else 'a C compiler (gcc or cc)'} on PATH")
    flags = NVCCFLAGS if cuda else CFLAGS
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(SOURCES.glob("*.*[chu]")))
                            + " ".join(flags).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("LOWPREC_CACHE", Path.home() / ".cache" / "lowprec"))
    cache.mkdir(parents=True, exist_ok=True)
    so = cache / f"{name}-{digest}.so"
    if not so.exists():
        tmp = so.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([cc, *flags, "-I", str(SOURCES), "-o", str(tmp), str(src), *([] if cuda else ["-lm"])],
                       check=True, capture_output=True, text=True)
        tmp.replace(so)
    return ctypes.CDLL(str(so))


class FormatC(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in ("mbits", "emin", "max_code", "sign_mask", "has_inf", "has_nan",
                                                    "has_negative_zero", "signed_nan", "inf_code", "nan_code")]


def format_struct(fmt) -> FormatC:
    """The ``lp_format`` of ``cuda_ext/lowprec_round.h`` for a ``FloatFormat``."""
    return FormatC(fmt.mbits, fmt.emin, fmt.max_code, fmt.sign_mask, int(fmt.has_inf), int(fmt.has_nan),
                   int(fmt.has_negative_zero), int(fmt.special in ("ieee", "fn") and fmt.signed),
                   fmt.inf_code if fmt.has_inf else 0, fmt.nan_code if fmt.has_nan else 0)


class ScalingC(ctypes.Structure):
    _fields_ = [("tr", ctypes.c_int32), ("tc", ctypes.c_int32), ("scale_op", ctypes.c_int32),
                ("pow2", ctypes.c_int32), ("tile_nan", ctypes.c_int32), ("target", ctypes.c_float),
                ("amax_floor", ctypes.c_float)]
