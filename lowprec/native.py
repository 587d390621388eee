"""Native builds of the C/CUDA sources of ``cuda_ext/`` (installed inside the package as
``lowprec/_native_src``): ``accum_cpu.c``, ``quant_cpu.c`` and ``logfmt_cpu.c`` with the system C compiler (the
native CPU backend), ``accum_cuda.cu`` with nvcc (the native CUDA backend), compiled on first use (about a second
each) and loaded through ctypes; ``lowprec.ops`` registers the kernels as torch custom ops. Builds are cached
under ``$LOWPREC_CACHE`` (default ``~/.cache/lowprec``) by ``build_key`` (sources, compiler, its version, every
flag, the target CPU) and written atomically (a uniquely named file renamed into place), so processes sharing the
cache never load a partial or foreign build. When a backend cannot be built,
``native_status`` (a whole backend) or ``library_status`` (one library) says why and warns once
(``NativeBuildWarning``, with the compiler's own message), and ``compiler`` returns None: callers then take the
pure-torch path, which gives the same bits."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

_HERE = Path(__file__).resolve().parent
SOURCE_DIRS = (_HERE / "_native_src", _HERE.parent / "cuda_ext")    # an installed package, then a source checkout
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-shared", "-fPIC"]
NVCCFLAGS = ["-O3", "--fmad=false", "-shared", "-Xcompiler", "-fPIC"]   # no contraction, as on the CPU
LIBRARIES: dict[str, bool] = {"accum_cpu": False, "quant_cpu": False, "logfmt_cpu": False,   # name -> built by nvcc
                               "accum_cuda": True}


class AccumModelC(ctypes.Structure):
    """``lp_accum_model`` of ``cuda_ext/lowprec_accum.h`` (same fields, same order: the int32 fields, then the two
    doubles), so ``AccumModelC(*INT_FIELDS values, acc_max, outer_max)`` builds one."""
    INT_FIELDS = ("group", "align_bits", "align_rounding", "align_with_acc", "zero_exp", "e_floor", "a_emin",
                  "b_emin", "prescaled", "a_offset", "b_offset", "acc_mbits", "acc_emin", "acc_rounding",
                  "acc_overflow_inf", "promote_every", "outer_mbits", "outer_emin", "outer_rounding", "sum_chunk")
    _fields_ = [*((name, ctypes.c_int32) for name in INT_FIELDS), ("acc_max", ctypes.c_double),
                ("outer_max", ctypes.c_double)]


class NativeBuildWarning(RuntimeWarning):
    """A native backend cannot be built or loaded here; lowprec takes the pure-torch path (same bits)."""


class NativeBuildError(RuntimeError):
    """Why a native library cannot be built or loaded here, the compiler's own message included."""


def source_dir() -> Path | None:
    """Where the native sources are (``lowprec/_native_src`` when installed, ``cuda_ext/`` in a source
    checkout), or None when neither has them."""
    return next((d for d in SOURCE_DIRS if (d / "lowprec_round.h").is_file()), None)


def cache_dir() -> Path:
    """Where builds are cached: ``$LOWPREC_CACHE``, default ``~/.cache/lowprec``."""
    return Path(os.environ.get("LOWPREC_CACHE") or Path.home() / ".cache" / "lowprec")


def compiler_command(cuda: bool) -> list[str]:
    """The compiler command: nvcc for CUDA, else ``$CC`` (split as a shell would, e.g. ``ccache gcc``), gcc or cc,
    with the executable resolved to its path. Raises NativeBuildError when it is not found."""
    if cuda:
        cmd, what = ["nvcc"], "nvcc"
    elif env := os.environ.get("CC", "").strip():
        cmd, what = shlex.split(env), f"$CC={env!r}"
    else:
        cmd, what = [shutil.which("gcc") or "cc"], "gcc or cc"
    exe = shutil.which(cmd[0])
    if exe is None:
        raise NativeBuildError(f"no {'CUDA' if cuda else 'C'} compiler: {what} is not found on PATH")
    return [exe, *cmd[1:]]


def _run(cmd: Sequence[str]) -> str:
    """The stdout of ``cmd`` (stdin empty); NativeBuildError with the command and its own output (last 40 lines)
    when it cannot start or fails."""
    try:
        p = subprocess.run(list(cmd), input="", capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NativeBuildError(f"`{shlex.join(cmd)}` could not run: {e}") from e
    if p.returncode:
        out = "\n".join((p.stderr + p.stdout).strip().splitlines()[-40:])
        raise NativeBuildError(f"`{shlex.join(cmd)}` failed (exit status {p.returncode}):\n{out}")
    return p.stdout


@functools.lru_cache(maxsize=None)
def _toolchain_identity(cmd: tuple[str, ...], flags: tuple[str, ...], cuda: bool) -> str:
    """The compiler's ``--version`` output and, for C, the macros ``flags`` predefine on this machine."""
    version = _run([*cmd, "--version"])
    return version if cuda else version + _run([*cmd, *flags, "-E", "-dM", "-x", "c", "-"])


def build_key(src_dir: Path, cmd: Sequence[str], flags: Sequence[str], cuda: bool) -> str:
    """The cache key of a build: a hash of every source file (name and bytes), the compiler command (its resolved
    path first), its ``--version`` output, every flag and, for C, the macros those flags predefine on this machine,
    which is how ``-march=native`` resolves here (``__znver3__``, ``__AVX512F__`` and the like). Runs the
    compiler; raises NativeBuildError when it fails."""
    h = hashlib.sha256()
    for p in sorted(src_dir.glob("*.*[chu]")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    for part in (*cmd, "\0", *flags, "\0", _toolchain_identity(tuple(cmd), tuple(flags), cuda)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _build_and_load(name: str) -> ctypes.CDLL:
    """Build ``<name>.c`` (or ``.cu``) unless a build with the same key is cached, then load it."""
    cuda = LIBRARIES[name]
    src_dir = source_dir()
    if src_dir is None:
        looked = " and ".join(map(str, SOURCE_DIRS))
        raise NativeBuildError(f"the native sources are not installed (looked in {looked})")
    cmd = compiler_command(cuda)
    flags = NVCCFLAGS if cuda else CFLAGS
    cache = cache_dir()
    so = cache / f"{name}-{build_key(src_dir, cmd, flags, cuda)}.so"
    if not so.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NativeBuildError(f"cannot create the build cache {cache}: {e}") from e
        tmp = cache / f".{so.name}.{uuid.uuid4().hex}.tmp"      # unique per process and thread
        src = src_dir / f"{name}.{'cu' if cuda else 'c'}"
        try:
            _run([*cmd, *flags, "-I", str(src_dir), "-o", str(tmp), str(src), *([] if cuda else ["-lm"])])
            os.replace(tmp, so)                                  # atomic: a reader sees no build or a whole one
        finally:
            tmp.unlink(missing_ok=True)
    try:
        return ctypes.CDLL(str(so))
    except OSError as e:
        raise NativeBuildError(f"the build {so} does not load: {e}") from e


@functools.lru_cache(maxsize=None)
def _load(name: str) -> ctypes.CDLL | NativeBuildError:
    """``_build_and_load``'s library, or its error: either is remembered for the process."""
    try:
        return _build_and_load(name)
    except NativeBuildError as e:
        return e


def library(name: str = "accum_cpu") -> ctypes.CDLL:
    """The loaded native library ``name`` (a key of ``LIBRARIES``), built on first use. Raises NativeBuildError
    (a RuntimeError) saying why it cannot be built or loaded here."""
    if name not in LIBRARIES:
        raise ValueError(f"unknown native library {name!r}; expected one of {tuple(LIBRARIES)}")
    lib = _load(name)
    if isinstance(lib, NativeBuildError):
        raise NativeBuildError(str(lib))
    return lib


@functools.lru_cache(maxsize=None)
def native_status(cuda: bool) -> str | None:
    """Why the native backend for CUDA (``cuda=True``) or CPU tensors is unusable here (sources missing, no compiler,
    a library that does not build or load: the compiler's own message included), or None when every library of
    ``LIBRARIES`` for it builds and loads. Builds on the first call; warns once (``NativeBuildWarning``) when
    unusable."""
    return next(filter(None, (library_status(name) for name, nv in LIBRARIES.items() if nv == cuda)), None)


@torch.compiler.assume_constant_result      # torch.compile runs it while tracing, a constant in the graph
def library_status(name: str) -> str | None:
    """Why the native library ``name`` (a key of ``LIBRARIES``) is unusable here, the compiler's own message
    included, or None when it builds and loads: what an op that needs only this library asks. Builds on the first
    call; warns once (``NativeBuildWarning``) when unusable."""
    return _library_status(name)


@functools.lru_cache(maxsize=None)
def _library_status(name: str) -> str | None:
    if isinstance(err := _load(name), NativeBuildError):
        why = f"the native {'CUDA' if LIBRARIES[name] else 'CPU'} backend is unavailable: {err}"
        if LIBRARIES[name] not in _WARNED:                # one warning per backend (CPU, CUDA) and process
            _WARNED.add(LIBRARIES[name])
            warnings.warn(f"{why}\nlowprec takes the pure-torch path instead (same bits, slower)",
                          NativeBuildWarning, stacklevel=3)
        return why
    return None


_WARNED: set[bool] = set()     # the backends (built by nvcc or not) whose NativeBuildWarning has been given


def compiler(cuda: bool) -> str | None:
    """The compiler of the native backend for CUDA (nvcc) or CPU tensors ($CC, gcc or cc), or None when that backend
    is unusable here: ``native_status`` says why (and warns once)."""
    return None if native_status(cuda) else compiler_command(cuda)[0]


def reset() -> None:
    """Forget this process's build outcomes and warnings (after installing a compiler or changing ``$CC`` or
    ``$LOWPREC_CACHE``): the next use checks and builds again."""
    for fn in (_toolchain_identity, _load, native_status, _library_status):
        fn.cache_clear()
    _WARNED.clear()


def backends_report() -> list[dict[str, Any]]:
    """One row per backend (eager, compiled, native CPU, native CUDA) with ``backend``, ``available`` and ``detail``
    (what it runs, or why it cannot run here). Checking a native backend builds it unless cached (seconds, once)."""
    cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")   # inductor's compiler
    if not torch._dynamo.is_dynamo_supported():
        compiled_why = f"torch {torch.__version__} does not support torch.compile on this Python"
    elif shutil.which(cxx) is None:
        compiled_why = f"torch.compile (inductor) on CPU needs a C++ compiler: {cxx} is not found on PATH"
    else:
        compiled_why = None
    cpu_why = native_status(False)
    cuda_why: str | None = "no CUDA device (torch.cuda.is_available() is False)"
    if torch.cuda.is_available():
        cuda_why = native_status(True)
    return [
        {"backend": "eager", "available": True, "detail": "pure torch, op by op: the reference, every op and device"},
        {"backend": "compiled", "available": compiled_why is None,
         "detail": compiled_why or "torch.compile of the eager code, same bits; compiles on first use per shape, "
                                   "format and mode (seconds)"},
        {"backend": "native CPU", "available": cpu_why is None,
         "detail": cpu_why or f"C (quant_cpu.c: quantize_tensor, encode, quantize; logfmt_cpu.c: logfmt; "
                              f"accum_cpu.c: emulated_matmul) built by "
                              f"{compiler(False)}, cached in {cache_dir()}"},
        {"backend": "native CUDA", "available": cuda_why is None,
         "detail": cuda_why or f"CUDA (accum_cuda.cu: emulated_matmul) built by {compiler(True)}, cached in "
                               f"{cache_dir()}"},
    ]


class FormatC(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in ("mbits", "emin", "max_code", "sign_mask", "has_inf", "has_nan",
                                                    "has_negative_zero", "signed_nan", "inf_code", "nan_code")]


def format_struct(fmt) -> FormatC:
    """The ``lp_format`` of ``cuda_ext/lowprec_round.h`` for a ``FloatFormat``."""
    return FormatC(fmt.mbits, fmt.emin, fmt.max_code, fmt.sign_mask, int(fmt.has_inf), int(fmt.has_nan),
                   int(fmt.has_negative_zero), int(fmt.special in ("ieee", "fn") and fmt.signed),
                   fmt.inf_code if fmt.has_inf else 0, fmt.nan_code if fmt.has_nan else 0)


class ScalingC(ctypes.Structure):
    """``lp_scaling`` of ``cuda_ext/quant_cpu.c`` (same fields, same order)."""
    _fields_ = [*((name, ctypes.c_int32) for name in ("tr", "tc", "scale_op", "pow2", "tile_nan", "e8m0", "mx_rule",
                                                      "emax")),
                ("target", ctypes.c_float), ("amax_floor", ctypes.c_float), ("fmax", ctypes.c_double)]
