"""Bit-exact encode / decode / quantize for every ``FloatFormat``, vectorised in torch.

Numerical contract
------------------
* The input (float16, bfloat16, float32, float64 or any torch float8) is widened exactly to a float
  word (float32 where that is exact and every intermediate fits int32, else float64: ``_word_for``),
  then rounded **once**, in integer arithmetic on its significand, to the target format: there is no
  double rounding through an intermediate format.
* Rounding modes (``codes.Rounding``, or their names): ``rne`` nearest, ties to the even code; ``rna`` nearest,
  ties away from zero (microxcaling's element rounding, ml_dtypes' E8M0 cast); ``rtz`` toward zero; ``rup``
  toward +inf; ``rdown`` toward -inf; ``rto`` round to odd (an inexact result takes the odd code of its
  two neighbours); ``stochastic``: with ``n = sr_bits`` uniform random bits ``u`` per element, the
  fraction ``f`` of an ulp that was cut is rounded to n bits (nearest-even) giving ``t``; the result
  rounds away from zero iff ``t + u >= 2^n``, so P(away) = t / 2^n. The same rule as gfloat's
  ``RoundMode.Stochastic``, and bit for bit the same given the same ``u``.
* "Even"/"odd" refer to the **code's** last bit, so for E8M0 (no mantissa) ties go to the even exponent.
* Overflow (IEEE 754 rules): a finite value whose rounded magnitude exceeds ``max`` becomes ``max``
  when the mode rounds toward zero for its sign (``rtz``; ``rdown`` for positives; ``rup`` for
  negatives) or when ``saturate=True``; otherwise Inf, or NaN in formats without Inf (E4M3: 464 -> 448
  under RNE but 465 -> NaN). Formats with neither Inf nor NaN (E2M3, E3M2, E2M1) always saturate.
* Inf in: ``saturate`` -> +-max; else Inf, else NaN, else (finite formats) +-max.
* NaN in: the format's canonical NaN (sign kept where the format has signed NaNs); a ``ValueError`` for
  formats without NaN. Signed zeros are kept where the format has -0 (fnuz: -0 and negative underflow
  give +0). Unsigned formats reject negative non-zero inputs; E8M0 also rejects zeros (it has none) and
  clamps inputs below 2^-127 to 2^-127.
* Formats without subnormals flush: values below the smallest normal round, by the mode, between 0 and
  the smallest normal. Their decode maps biased-exponent-0 codes to zero.
* ``decode`` returns float32 when every value of the format is a float32 (all formats <= 16 bits and
  E8M13, TF32, FP32), float64 otherwise.
* Backends (``BACKENDS``) give the same bits: ``eager`` is the integer-arithmetic encoder above;
  ``compiled`` fuses it with torch.compile; ``native`` is its C transcription (``cuda_ext/lowprec_round.h``,
  the ``lowprec::encode`` op); ``auto`` (the default) takes torch's own cast for RNE of float32, float16 and
  bfloat16 CPU tensors to a format torch has a dtype for (``TORCH_CASTS``), the eager encoder's results for
  its NaN, Inf and overflowing elements; else native for large CPU tensors it covers; else eager.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from . import ops
from .codes import Rounding
from .formats import FloatFormat, get_format
from .native import library_status

TORCH_FLOAT8: dict[str, torch.dtype] = {   # formats torch has a dtype for (its casts are RNE: tested)
    "e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "e4m3fnuz": torch.float8_e4m3fnuz,
    "e5m2fnuz": torch.float8_e5m2fnuz}
# the formats backend="auto" rounds to with torch's cast (RNE from float32 in range: tests/test_rounding.py)
TORCH_CASTS: dict[FloatFormat, torch.dtype] = {
    **{get_format(name): dtype for name, dtype in TORCH_FLOAT8.items()},
    get_format("bf16"): torch.bfloat16, get_format("fp16"): torch.float16}


class _Word(NamedTuple):
    """The binary word the rounding works on: the input widened exactly to ``ftype``, its bits as ``itype``."""

    ftype: torch.dtype
    itype: torch.dtype
    exp_bits: int
    frac_bits: int
    cap: int            # largest shift used: every bit of a significand is cut by then

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def mag_mask(self) -> int:
        return (1 << (self.exp_bits + self.frac_bits)) - 1

    @property
    def inf_bits(self) -> int:
        return ((1 << self.exp_bits) - 1) << self.frac_bits


_W64 = _Word(torch.float64, torch.int64, 11, 52, 62)
_W32 = _Word(torch.float32, torch.int32, 8, 23, 30)


def _word_for(x: torch.Tensor, fmt: FloatFormat, rounding: Rounding) -> _Word:
    """32-bit words for float32/bf16/fp16 inputs when that is exact and every intermediate fits int32:
    at least one bit is cut (mbits <= 22), codes stay below 2^31, and float32's subnormals (whose
    exponent field does not give their leading bit) all fall below the format's normal range, where
    only the subnormal quantum 2^(emin - mbits) matters. Else 64-bit words (float64 inputs, E8M0,
    stochastic rounding)."""
    narrow = x.dtype in (torch.float32, torch.bfloat16, torch.float16) and rounding != "stochastic"
    below = fmt.emin > -126 or (fmt.subnormals and fmt.emin == -126)
    fits = fmt.mbits <= 22 and fmt.emax <= 128 and below and (256 << fmt.mbits) < (1 << 31)
    return _W32 if narrow and fits else _W64


def code_dtype(fmt: FloatFormat) -> torch.dtype:
    """Integer dtype of ``encode``'s codes: uint8 up to 8 bits, int32 up to 16, int64 above."""
    return torch.uint8 if fmt.bits <= 8 else torch.int32 if fmt.bits <= 16 else torch.int64


# (fraction bits, emax, smallest power of two) of the torch dtypes values can be returned in
_DTYPE_RANGE = {torch.float64: (52, 1023, -1074), torch.float32: (23, 127, -149),
                torch.bfloat16: (7, 127, -133), torch.float16: (10, 15, -24)}


def holds(dtype: torch.dtype, fmt: FloatFormat) -> bool:
    """True when every finite value of ``fmt`` is exactly a value of ``dtype``."""
    return dtype in _DTYPE_RANGE and fmt.fits_in(*_DTYPE_RANGE[dtype])


def decode_dtype(fmt: FloatFormat) -> torch.dtype:
    """float32 when every value of ``fmt`` is a float32, else float64."""
    return torch.float32 if holds(torch.float32, fmt) else torch.float64


# ---- input handling ------------------------------------------------------------------------------
def _as_float_tensor(x: Any, what: str) -> tuple[torch.Tensor, bool]:
    """(tensor, was_numpy). Floating tensors/arrays only (ml_dtypes floats too): integers are a TypeError."""
    was_numpy = isinstance(x, np.ndarray)
    if was_numpy:
        if x.dtype.kind == "f":
            x = torch.from_numpy(np.ascontiguousarray(x))
        elif x.dtype.name.startswith(("float", "bfloat")):  # ml_dtypes' float8/bfloat16: widen exactly
            x = torch.from_numpy(x.astype(np.float64))
        else:
            raise TypeError(f"{what} needs a floating-point array, got numpy dtype {x.dtype}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} needs a torch tensor or numpy array, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{what} needs a floating-point tensor, got {x.dtype}")
    return x, was_numpy


def _has_nan(x: torch.Tensor) -> bool:
    """Whether ``x`` holds a NaN: one max reduction where torch has it for the dtype (torch's max propagates NaN;
    several times cheaper than ``isnan(x).any()``, which costs more than a cast), else ``isnan``."""
    if x.numel() and x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return bool(torch.amax(x).isnan())
    return bool(torch.isnan(x).any())


def _validate_special_inputs(x: torch.Tensor, fmt: FloatFormat) -> None:
    """Reject inputs the format cannot represent at all (checked before any rounding work)."""
    if not fmt.has_nan and _has_nan(x):
        raise ValueError(f"format {fmt.name} has no NaN, but the input contains NaN")
    if not fmt.signed and bool((x < 0).any()):
        raise ValueError(f"format {fmt.name} is unsigned, but the input has negative values")
    if not fmt.has_zero and bool((x == 0).any()):
        raise ValueError(f"format {fmt.name} has no zero, but the input contains zeros")


def _random_bits(shape: torch.Size, device: torch.device, sr_bits: int, generator: torch.Generator | None,
                 random_bits: torch.Tensor | None) -> torch.Tensor:
    if not 1 <= sr_bits <= 32:
        raise ValueError(f"sr_bits must be in 1..32, got {sr_bits}")
    if random_bits is None:
        return torch.randint(0, 1 << sr_bits, shape, generator=generator, dtype=torch.int64, device=device)
    if not isinstance(random_bits, torch.Tensor) or random_bits.dtype.is_floating_point:
        raise TypeError("random_bits must be an integer tensor")
    if random_bits.shape != shape:
        raise ValueError(f"random_bits has shape {tuple(random_bits.shape)}, expected {tuple(shape)}")
    rb = random_bits.to(device=device, dtype=torch.int64)
    if bool(((rb < 0) | (rb >= (1 << sr_bits))).any()):
        raise ValueError(f"random_bits must lie in [0, 2^{sr_bits})")
    return rb


# ---- the rounding core ---------------------------------------------------------------------------
def _shl(one_like: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return torch.bitwise_left_shift(one_like, n)


def encode_reference(x: torch.Tensor, fmt: FloatFormat, rounding: Rounding, saturate: bool,
                     rand: torch.Tensor | None, sr_bits: int) -> torch.Tensor:
    """The readable reference encoder (``encode``'s eager backend, without its validation): codes
    (``code_dtype``) of float ``x`` for a canonical ``rounding`` name, widened exactly to a float word
    (float64, or float32 where that is exact and fits, see ``_word_for``), then one rounding in integer
    arithmetic on the significand (see module doc). ``rand``: the random bits of stochastic rounding."""
    M, emin = fmt.mbits, fmt.emin
    W = _word_for(x, fmt, rounding)
    P = W.frac_bits
    bits = x.to(W.ftype).view(W.itype)
    neg = bits < 0
    ab = bits & W.mag_mask
    bexp = ab >> P
    is_normal = bexp != 0
    frac = ab & ((1 << P) - 1)
    sig = torch.where(is_normal, frac | (1 << P), frac)          # |x| = sig * 2^(e - P)
    e = torch.where(is_normal, bexp - W.bias, torch.full_like(bexp, 1 - W.bias))

    if fmt.subnormals:
        e_eff = torch.clamp(e, min=emin)
        q = e_eff - M                                             # exponent of one ulp at |x|
        code_base = (e_eff - emin) << M                           # code of the binade, before adding r
        tiny = None
    else:  # grid below the smallest normal is {0, 2^emin}
        tiny = e < emin
        q = torch.where(tiny, torch.full_like(e, emin), e - M)
        code_base = torch.where(tiny, torch.zeros_like(e), ((e - emin + int(fmt.has_zero)) << M) - (1 << M))

    shift_exact = q - (e - P)                                     # bits of sig below the ulp (>= 1 here)
    shift = torch.clamp(shift_exact, min=1, max=W.cap)            # beyond the cap every bit is cut anyway
    one = torch.ones_like(sig)
    r = torch.bitwise_right_shift(sig, shift)
    rem = sig & (_shl(one, shift) - 1)
    if tiny is not None and fmt.has_zero:
        code_trunc = torch.where(tiny, r << M, code_base + r)
    else:
        code_trunc = code_base + r
    inexact = rem != 0
    odd = (code_trunc & 1) == 1

    if rounding == "rne":
        half = _shl(one, shift - 1)
        up = (rem > half) | ((rem == half) & odd)
    elif rounding == "rna":
        up = rem >= _shl(one, shift - 1)
    elif rounding == "rtz":
        up = torch.zeros_like(inexact)
    elif rounding == "rup":
        up = inexact & ~neg
    elif rounding == "rdown":
        up = inexact & neg
    elif rounding == "rto":
        up = inexact & ~odd
    else:  # stochastic: t = RNE(rem / 2^shift * 2^n), away iff t + u >= 2^n
        assert rand is not None
        n = sr_bits
        drop = torch.clamp(shift_exact - n, min=0, max=62)       # > 62: t rounds to 0 (sig < 2^53)
        t = torch.bitwise_right_shift(rem, drop)
        low = rem & (_shl(one, drop) - 1)
        half_low = torch.bitwise_right_shift(_shl(one, drop), 1)
        t = t + ((drop > 0) & ((low > half_low) | ((low == half_low) & ((t & 1) == 1)))).to(torch.int64)
        t = torch.bitwise_left_shift(t, torch.clamp(n - shift, min=0))
        # t + u >= 2^n, written as a shift: torch.compile (2.13, CPU) mis-compiles a 2^32 literal here
        up = ((t + rand) >> n) != 0

    if tiny is not None and fmt.has_zero:
        mag = torch.where(tiny, (r + up.to(torch.int64)) << M, code_trunc + up.to(torch.int64))
    else:
        mag = code_trunc + up.to(torch.int64)
    if tiny is not None and not fmt.has_zero:
        mag = torch.where(tiny, torch.zeros_like(mag), mag)      # E8M0: below 2^-127 clamps to 2^-127

    # overflow of finite inputs and Inf inputs: +-max, or Inf/NaN (decided per element), then NaN inputs
    max_code = fmt.max_code
    is_inf = ab == W.inf_bits
    over = (mag > max_code) | is_inf
    if saturate or not fmt.has_nan:
        to_special = torch.zeros_like(over)
    elif rounding in ("rtz", "rup", "rdown"):
        away = {"rtz": torch.zeros_like(neg), "rup": ~neg, "rdown": neg}[rounding]
        to_special = over & (away | is_inf)
    else:
        to_special = over
    mag = torch.where(over, max_code, mag)
    if fmt.has_inf:
        mag = torch.where(to_special, fmt.inf_code, mag)
    is_nan = ab > W.inf_bits
    if fmt.has_nan:
        is_nan = is_nan | (to_special if not fmt.has_inf else torch.zeros_like(is_nan))

    sign_mask = fmt.sign_mask
    code = mag
    if fmt.signed:
        keep_sign = neg if fmt.has_negative_zero else neg & (mag != 0)
        code = torch.where(keep_sign, mag | sign_mask, mag)
    if fmt.has_nan:
        nan_code: torch.Tensor | int = fmt.nan_code
        if fmt.special != "fnuz" and fmt.signed:
            nan_code = torch.where(neg, fmt.nan_code | sign_mask, fmt.nan_code)
        code = torch.where(is_nan, nan_code, code)
    return code.to(code_dtype(fmt))


def _quantize_core(x: torch.Tensor, fmt: FloatFormat, rounding: Rounding, saturate: bool,
                   rand: torch.Tensor | None, sr_bits: int, table: torch.Tensor) -> torch.Tensor:
    """Values of ``encode_reference``'s codes looked up in the format's decode ``table``."""
    return table[encode_reference(x, fmt, rounding, saturate, rand, sr_bits).long()]


BACKENDS: tuple[str, ...] = ("auto", "eager", "compiled", "native")   # every op's backend vocabulary
AUTO_NATIVE_MIN_NUMEL = 1 << 16     # below this, backend="auto" stays eager: no native build for a small tensor


def resolve_backend(backend: str, native_why: Callable[[], str | None], numel: int | None = None) -> str:
    """The backend one call takes: the one dispatch rule of every op. ``native_why()`` says why the native
    kernel cannot run the call (None: it can). ``"auto"`` is native when it can run and, where ``numel`` is
    given, the tensor has at least ``AUTO_NATIVE_MIN_NUMEL`` elements (no native build for a small tensor), else
    eager -- never compiled. An explicit ``"native"`` that cannot run is a ValueError saying why; an unknown
    name is a ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        if numel is not None and numel < AUTO_NATIVE_MIN_NUMEL:
            return "eager"
        return "native" if native_why() is None else "eager"
    if backend == "native" and (why := native_why()):
        raise ValueError(why)
    return backend


COMPILED_VARIANTS = 256    # compiled variants (formats, roundings, models...) per function before an error


@functools.lru_cache(maxsize=None)
def compiled(fn: Any) -> Any:
    """``fn`` fused by torch.compile (C++/OpenMP loops on CPU, Triton kernels on CUDA), shared by every
    ``backend="compiled"`` path. Compiled on first use per combination of Python constants (format,
    rounding, model...): 10-40 s on CPU. Shapes are specialised on the first call and generalised
    (dynamic) when a second shape arrives (torch.compile's default). torch.compile keeps 8 variants of a
    function and then silently runs it uncompiled; here it keeps ``COMPILED_VARIANTS`` and then raises,
    so ``backend="compiled"`` never quietly means eager."""
    fast = torch.compile(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with torch._dynamo.config.patch(recompile_limit=COMPILED_VARIANTS, fail_on_recompile_limit_hit=True):
            return fast(*args, **kwargs)

    return call


def _prepare(x: Any, fmt: FloatFormat | str, rounding: Rounding | str, generator: torch.Generator | None,
             random_bits: torch.Tensor | None, sr_bits: int, backend: str, what: str):
    """Validate everything before any work: (tensor, was_numpy, format, rounding, random bits)."""
    fmt = get_format(fmt)
    rounding = Rounding.parse(rounding)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                        "(e.g. torch.Generator().manual_seed(0))")
    t, was_numpy = _as_float_tensor(x, what)
    _validate_special_inputs(t, fmt)
    rand = (_random_bits(t.shape, t.device, sr_bits, generator, random_bits)
            if rounding == "stochastic" else None)
    return t, was_numpy, fmt, rounding, rand


def native_unsupported(t: torch.Tensor, fmt: FloatFormat, rounding: Rounding) -> str | None:
    """Why ``backend="native"`` (the ``lowprec::encode`` op: ``cuda_ext/quant_cpu.c`` on the bit logic of
    ``cuda_ext/lowprec_round.h``) cannot cast ``t`` to ``fmt`` with ``rounding`` (canonical), or None. The request
    is checked first; then the native CPU build (made on first use; ``lowprec.native.library_status`` warns once
    when it cannot be made)."""
    if t.device.type != "cpu":
        return f"the native cast runs on CPU tensors, not {t.device.type}"
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"the native cast takes float32, float16 or bfloat16 inputs, not {t.dtype}"
    if rounding == "stochastic":
        return "the native cast covers the deterministic rounding modes, not stochastic"
    if fmt.bits > 8 or not (fmt.signed and fmt.subnormals and fmt.has_zero) or fmt.emin < -126:
        return f"the native cast covers signed <= 8-bit formats with subnormals and a zero, not {fmt.name}"
    return library_status("quant_cpu")


def _cast_backend(t: torch.Tensor, fmt: FloatFormat, rounding: Rounding, backend: str) -> str:
    """The path a validated cast takes: ``"torch"`` (torch's cast, ``torch_cast_dtype``), ``"native"``,
    ``"eager"`` or ``"compiled"``. ``"auto"``: torch's cast where it is proven, else native for tensors of at
    least ``AUTO_NATIVE_MIN_NUMEL`` elements that it covers, else eager. An explicit ``"native"`` that cannot
    run is a ValueError saying why."""
    if backend == "auto" and torch_cast_dtype(t, fmt, rounding) is not None:
        return "torch"
    return resolve_backend(backend, lambda: native_unsupported(t, fmt, rounding), t.numel())


def _native_cast(t: torch.Tensor, fmt: FloatFormat, rounding: Rounding, saturate: bool, values: bool) -> torch.Tensor:
    """The codes (``values=False``) or their float32 values of ``t`` by the ``lowprec::encode`` op."""
    codes, vals = ops.encode(t.detach().float(), ops.format_args(fmt), int(Rounding(rounding).code), saturate,
                             values)
    return vals if values else codes


def torch_cast_dtype(t: torch.Tensor, fmt: FloatFormat, rounding: Rounding) -> torch.dtype | None:
    """The dtype whose torch cast ``backend="auto"`` rounds ``t`` with, or None (the eager encoder): RNE of
    a float32, float16 or bfloat16 CPU tensor (widened exactly to float32; torch casts float64 through
    float32, a double rounding) to a format of ``TORCH_CASTS``, outside torch.compile (whose bit-cast of
    float8 tensors lost the values of ragged tiles in torch 2.13)."""
    if (rounding != "rne" or t.dtype not in (torch.float32, torch.float16, torch.bfloat16) or t.device.type != "cpu"
            or torch.compiler.is_compiling()):
        return None
    return TORCH_CASTS.get(fmt)


@functools.cache
def _overflow_threshold(fmt: FloatFormat) -> float:
    """The smallest float32 whose RNE result exceeds ``fmt.max``: the midpoint between max and the next step
    up when max's code is odd (the tie goes to the even code above), else the float32 just above it
    (E4M3: 464 -> 448, but 464.00003 -> NaN)."""
    mid = fmt.max + math.ldexp(1.0, fmt.emax - fmt.mbits - 1)
    return mid if fmt.max_code & 1 else float(np.nextafter(np.float32(mid), np.float32(np.inf)))


def _cast_codes(y: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The codes (``code_dtype``) of a tensor ``y`` of ``fmt``'s torch dtype: its bits."""
    return y.view(torch.uint8) if fmt.bits == 8 else y.view(torch.uint16).to(torch.int32)


def _maybe_special(y: torch.Tensor, fmt: FloatFormat) -> bool:
    """False when the codes of torch's 8-bit result ``y`` prove that no input was NaN, Inf or overflowed:
    every magnitude code is below ``max_code`` and no code is 0x80 in fnuz formats. torch maps such inputs
    to max (E4M3FN saturates) or to an Inf/NaN code (the others; tests/test_rounding.py checks every
    special input), so this holds whichever it does. Two reductions over the codes, far cheaper than one
    over the float32 inputs. True for 16-bit formats (no cheap test of their codes)."""
    if fmt.bits != 8:
        return True
    lo, hi = torch.aminmax(y.view(torch.int8))                   # hi: the largest code of a positive value
    top = y.view(torch.uint8).max()                               # the largest code of a negative value
    fnuz_nan = fmt.special == "fnuz" and bool(lo == -128)
    return fnuz_nan or bool(hi >= fmt.max_code) or bool(top >= (fmt.sign_mask | fmt.max_code))


def _torch_round(t: torch.Tensor, fmt: FloatFormat,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(y, special)``: torch's cast ``y`` (contiguous) of ``t`` (widened to float32) to ``dtype`` (see
    ``torch_cast_dtype``), RNE and so the lab's result for every finite value below the overflow
    threshold (tests/test_rounding.py), and the flat indices of the other elements (NaN, +-Inf, overflow),
    whose results the caller takes from the eager encoder, or None when there are none (decided by
    ``_maybe_special``, then one min/max pass over the inputs)."""
    x = t.detach().float().contiguous()
    y = x.to(dtype)
    if x.numel() == 0 or not _maybe_special(y, fmt):
        return y, None
    threshold = _overflow_threshold(fmt)
    lo, hi = torch.aminmax(x)                                     # NaN propagates: then both compare False
    if bool((lo > -threshold) & (hi < threshold)):
        return y, None
    inside = x > -threshold
    inside &= x < threshold
    return y, inside.logical_not_().view(-1).nonzero().squeeze(1)


def encode(x: Any, fmt: FloatFormat | str, rounding: Rounding | str = Rounding.RNE, *, saturate: bool = False,
           generator: torch.Generator | None = None, random_bits: torch.Tensor | None = None,
           sr_bits: int = 32, backend: str = "auto") -> Any:
    """Round ``x`` to ``fmt`` and return the integer codes (see the module doc for the full contract).

    ``x``: floating torch tensor (any device) or numpy array (numpy in -> numpy out).
    ``rounding``: a ``Rounding`` or its name; ``stochastic`` draws ``sr_bits`` random bits per element from
    ``generator`` (reproducible) unless ``random_bits`` (integers in [0, 2^sr_bits)) are passed.
    ``saturate``: overflow and Inf go to +-max instead of Inf/NaN.
    ``backend``: ``"auto"`` (the default: torch's cast, with the eager encoder's codes for NaN, Inf and
    overflowing elements, for RNE of float32/float16/bfloat16 CPU tensors to ``TORCH_CASTS``' formats;
    else native for tensors of at least ``AUTO_NATIVE_MIN_NUMEL`` elements that it covers; else eager),
    ``"eager"`` (op by op, no compiler needed), ``"compiled"`` (the same function fused by torch.compile:
    a one-off compile per format and mode) or ``"native"`` (the ``lowprec::encode`` op, C: every
    deterministic mode, float32/float16/bfloat16 CPU tensors, signed <= 8-bit formats with subnormals, FP6
    and FP4 included: see ``native_unsupported``). Every backend gives the same bits.
    """
    t, was_numpy, f, mode, rand = _prepare(x, fmt, rounding, generator, random_bits, sr_bits, backend,
                                           "encode")
    path = _cast_backend(t, f, mode, backend)
    if path == "torch":
        y, special = _torch_round(t, f, TORCH_CASTS[f])
        code = _cast_codes(y, f)
        if special is not None:
            code.view(-1)[special] = encode_reference(t.detach().reshape(-1)[special], f, mode, bool(saturate),
                                                  None, sr_bits)
    elif path == "native":
        code = _native_cast(t, f, mode, bool(saturate), values=False)
    else:
        core = compiled(encode_reference) if backend == "compiled" else encode_reference
        code = core(t, f, mode, bool(saturate), rand, sr_bits)
    return code.numpy() if was_numpy else code


# ---- decode ---------------------------------------------------------------------------------------
def _decode_arith(codes: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """float64 values of int64 ``codes`` by the format's formula (the readable definition)."""
    M, emin = fmt.mbits, fmt.emin
    mag_mask = (1 << (fmt.ebits + M)) - 1
    mag = codes & mag_mask
    be = mag >> M
    mant = (mag & ((1 << M) - 1)).to(torch.float64)
    implicit = float(1 << M)
    if fmt.has_zero:
        sub = be == 0
        sub_val = torch.ldexp(mant, torch.full_like(be, emin - M)) if fmt.subnormals else torch.zeros_like(mant)
        val = torch.where(sub, sub_val, torch.ldexp(mant + implicit, emin + be - 1 - M))
    else:
        val = torch.ldexp(mant + implicit, emin + be - M)
    if fmt.has_inf:
        top = be == (1 << fmt.ebits) - 1
        val = torch.where(top, torch.where(mant == 0, torch.inf, torch.nan), val)
    if fmt.signed:
        val = torch.where((codes & fmt.sign_mask) != 0, -val, val)
    if fmt.special == "fn":
        val = torch.where(mag == mag_mask, torch.nan, val)
    elif fmt.special == "fnuz":
        val = torch.where(codes == fmt.sign_mask, torch.nan, val)
    return val


@functools.lru_cache(maxsize=64)
def _decode_table(fmt: FloatFormat, device: torch.device) -> torch.Tensor:
    return _decode_arith(torch.arange(1 << fmt.bits, dtype=torch.int64), fmt).to(decode_dtype(fmt)).to(device)


@functools.lru_cache(maxsize=64)
def _table_nans(fmt: FloatFormat, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded NaN of an 8-bit format's codes below 0x80 and of those from 0x80 (each half decodes
    all its NaN codes to one value; tests/test_rounding.py checks every code)."""
    table = _decode_table(fmt, device)
    codes = torch.isnan(table).nonzero().flatten()
    lo, hi = codes[codes < 0x80], codes[codes >= 0x80]
    return table[(lo if lo.numel() else hi)[0]], table[(hi if hi.numel() else lo)[0]]


def decode(codes: Any, fmt: FloatFormat | str) -> Any:
    """Values of integer ``codes`` in ``fmt``: float32 (float64 when the format needs it).

    Codes must lie in [0, 2^bits); anything else is a ``ValueError``. Table lookup for <= 16-bit
    formats (the table is built by ``_decode_arith``), the formula otherwise.
    """
    fmt = get_format(fmt)
    was_numpy = isinstance(codes, np.ndarray)
    c = torch.from_numpy(np.ascontiguousarray(codes)) if was_numpy else codes
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"decode needs a torch tensor or numpy array of codes, got {type(codes).__name__}")
    if c.dtype.is_floating_point or c.dtype.is_complex or c.dtype == torch.bool:
        raise TypeError(f"decode needs integer codes, got {c.dtype}")
    if c.dtype == torch.uint8 and fmt.name in TORCH_FLOAT8:   # every uint8 is a code: torch's exact widening
        out = c.view(TORCH_FLOAT8[fmt.name]).float()
        nan = torch.isnan(out)
        if bool(nan.any()):                                    # NaN codes: the table's NaN bits, not torch's
            nan_pos, nan_neg = _table_nans(fmt, c.device)
            out = torch.where(nan, torch.where(c >= 0x80, nan_neg, nan_pos), out)
        return _finish_decode(out, was_numpy)
    if c.dtype == torch.uint8 and fmt.bits == 8:               # every uint8 is a code: no range check
        return _finish_decode(torch.take(_decode_table(fmt, c.device), c.long()), was_numpy)
    c = c.to(torch.int64)
    if c.numel() and bool(((c < 0) | (c >= (1 << fmt.bits))).any()):
        bad = c[(c < 0) | (c >= (1 << fmt.bits))][0].item()
        raise ValueError(f"code {bad} is out of range for {fmt.bits}-bit format {fmt.name}")
    if fmt.bits <= 16:
        out = _decode_table(fmt, c.device)[c]
    else:
        out = _decode_arith(c, fmt).to(decode_dtype(fmt))
    return _finish_decode(out, was_numpy)


def _finish_decode(out: torch.Tensor, was_numpy: bool) -> Any:
    return out.numpy() if was_numpy else out


def quantize(x: Any, fmt: FloatFormat | str, rounding: Rounding | str = Rounding.RNE, *, saturate: bool = False,
             generator: torch.Generator | None = None, random_bits: torch.Tensor | None = None,
             sr_bits: int = 32, backend: str = "auto", out_dtype: torch.dtype | None = None) -> Any:
    """``decode(encode(x))`` without materialising codes for <= 16-bit formats: ``x`` rounded to
    ``fmt``, as ``out_dtype`` -- by default the input's dtype when that holds every value of the
    format exactly, else ``decode``'s dtype. Arguments as for ``encode``."""
    t, was_numpy, f, mode, rand = _prepare(x, fmt, rounding, generator, random_bits, sr_bits, backend,
                                           "quantize")
    if out_dtype is None:
        out_dtype = t.dtype if holds(t.dtype, f) else decode_dtype(f)
    path = _cast_backend(t, f, mode, backend)
    if path == "torch":                                            # torch's exact widening of its rounded values
        y, special = _torch_round(t, f, TORCH_CASTS[f])
        vals = y.float()
        if special is not None:
            vals.view(-1)[special] = _quantize_core(t.detach().reshape(-1)[special], f, mode, bool(saturate),
                                                    None, sr_bits, _decode_table(f, t.device))
    elif path == "native":
        vals = _native_cast(t, f, mode, bool(saturate), values=True)
    elif f.bits <= 16:
        core = compiled(_quantize_core) if backend == "compiled" else _quantize_core
        vals = core(t, f, mode, bool(saturate), rand, sr_bits, _decode_table(f, t.device))
    else:
        core = compiled(encode_reference) if backend == "compiled" else encode_reference
        vals = _decode_arith(core(t, f, mode, bool(saturate), rand, sr_bits).long(), f)
    vals = vals.to(out_dtype)
    return vals.numpy() if was_numpy else vals


def round_values(x: torch.Tensor, fmt: FloatFormat, rounding: Rounding | str = Rounding.RNE,
                 saturate: bool = False) -> torch.Tensor:
    """float64 ``x`` rounded to ``fmt``, float64 out: ``quantize`` without validation or dispatch, for
    use inside other fused computations (x must be representable input: see ``encode``'s checks)."""
    return _decode_arith(encode_reference(x, fmt, Rounding.parse(rounding), saturate, None, 32).long(), fmt)


def pow2(e: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """2.0 ** e for integer tensors e within ``dtype``'s normal range, built from the bits (exact, cheap)."""
    if dtype == torch.float32:
        return ((e.to(torch.int32) + 127) << 23).view(torch.float32)
    return ((e.to(torch.int64) + 1023) << 52).view(torch.float64)


def floor_log2(v: torch.Tensor) -> torch.Tensor:
    """Exact floor(log2(v)) (int64) of positive normal float64 ``v``, read from the exponent bits."""
    return ((v.view(torch.int64) >> 52) & 0x7FF) - 1023


def add_round_to_odd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + y in float64 rounded to odd (exact sum via TwoSum): rounding that to any format with
    <= 51 significand bits then gives the correctly rounded exact sum -- no double rounding."""
    s = x + y
    bb = s - x
    err = (x - (s - bb)) + (y - bb)
    even = (s.view(torch.int64) & 1) == 0
    toward = torch.where(err > 0, torch.inf, -torch.inf).to(s.dtype)
    return torch.where((err != 0) & even & torch.isfinite(s), torch.nextafter(s, toward), s)


# ---- scalar reference in exact arithmetic -------------------------------------------------------
def round_to_integer(v: Fraction, rounding: Rounding | str) -> int:
    """The exact ``v`` rounded to an integer by ``rounding``: ``rtz`` (toward zero), ``rdown`` (toward -inf),
    ``rup`` (toward +inf), ``rne`` (nearest, ties to even), ``rna`` (nearest, ties away from zero)."""
    if rounding == "rtz":
        return math.trunc(v)
    if rounding == "rdown":
        return math.floor(v)
    if rounding == "rup":
        return math.ceil(v)
    if rounding == "rne":
        return round(v)                                 # Python rounds a Fraction half to even
    if rounding == "rna":
        return int(math.copysign(math.floor(abs(v) + Fraction(1, 2)), v))
    raise ValueError(f"unknown rounding {rounding!r} for an integer; expected rtz, rdown, rup, rne or rna")


INTEGER_ROUNDINGS = (Rounding.RTZ, Rounding.RNE, Rounding.RDOWN, Rounding.RUP, Rounding.RNA)   # round_to_integer's


def round_to_multiple(v: Fraction, quantum: Fraction, rounding: Rounding | str) -> Fraction:
    """The exact ``v`` rounded to a multiple of ``quantum`` by ``rounding`` (``round_to_integer``'s modes)."""
    return round_to_integer(v / quantum, rounding) * quantum


def round_bits(x: Fraction, bits: int, rounding: Rounding | str) -> Fraction:
    """The exact ``x`` rounded to ``bits`` fraction bits of its own binade by ``rounding`` (no range limits)."""
    return round_to_multiple(x, Fraction(2) ** (floor_log2_exact(abs(x)) - bits), rounding) if x else x


def floor_log2_exact(q: Fraction) -> int:
    """floor(log2(q)) of a positive rational, exactly."""
    e = q.numerator.bit_length() - q.denominator.bit_length()
    return e - 1 if Fraction(2) ** e > q else e


def round_exact(value: Fraction, fmt: FloatFormat | str, rounding: Rounding | str = Rounding.RNE, *,
                saturate: bool = False) -> float:
    """Round an exact rational ``value`` to ``fmt`` (finite in, value out as a Python float / +-inf / nan).

    The readable scalar twin of ``encode`` for the deterministic modes, written from the definitions:
    ulp = 2^(max(floor(log2|v|), emin) - mbits); pick floor or ceil of v/ulp by the mode; overflow per
    the module doc. Used by the accumulator reference and as an oracle in the tests.
    """
    fmt = get_format(fmt)
    rounding = Rounding.parse(rounding)
    if rounding == "stochastic":
        raise ValueError("round_exact is deterministic; stochastic rounding has no scalar reference here")
    if value == 0:
        return 0.0
    neg, mag = value < 0, abs(value)
    e = floor_log2_exact(mag)                                   # 2^e <= mag < 2^(e+1)
    if not fmt.subnormals and e < fmt.emin:
        ulp = Fraction(2) ** fmt.emin                           # the grid below min normal is {0, min normal}
    else:
        ulp = Fraction(2) ** (max(e, fmt.emin) - fmt.mbits)
    lo = math.floor(mag / ulp)
    frac = mag / ulp - lo
    lo_code_odd = _is_odd_code(fmt, lo * ulp)
    if frac == 0:
        n = lo
    elif rounding == "rne":
        n = lo + (frac > Fraction(1, 2) or (frac == Fraction(1, 2) and lo_code_odd))
    elif rounding == "rna":
        n = lo + (frac >= Fraction(1, 2))
    elif rounding == "rtz":
        n = lo
    elif rounding == "rup":
        n = lo + (not neg)
    elif rounding == "rdown":
        n = lo + neg
    else:  # rto
        n = lo + (not lo_code_odd)
    result = n * ulp
    if not fmt.has_zero and result < Fraction(fmt.min_normal):
        result = Fraction(fmt.min_normal)
    if result > Fraction(fmt.max):
        toward_zero = rounding == "rtz" or (rounding == "rup" and neg) or (rounding == "rdown" and not neg)
        if saturate or toward_zero or not fmt.has_nan:
            result = Fraction(fmt.max)
        else:
            return -math.inf if neg and fmt.has_inf else math.inf if fmt.has_inf else math.nan
    if result == 0 and not fmt.has_negative_zero:
        neg = False
    return -float(result) if neg else float(result)


def _is_odd_code(fmt: FloatFormat, mag: Fraction) -> bool:
    """Parity of the magnitude code of the representable value ``mag`` (may be max + 1 ulp)."""
    if mag == 0:
        return False
    e = floor_log2_exact(mag)
    if e < fmt.emin:                                            # subnormal: code = mag / min_subnormal
        return int(mag / Fraction(2) ** (fmt.emin - fmt.mbits)) % 2 == 1
    sig = int(mag / Fraction(2) ** (e - fmt.mbits))             # in [2^M, 2^(M+1))
    code = ((e - fmt.emin + int(fmt.has_zero)) << fmt.mbits) + sig - (1 << fmt.mbits)
    return code % 2 == 1
