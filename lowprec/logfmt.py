"""LogFMT-nBit (DeepSeek-V3 hardware paper, ISCA 2025, sec. 3.2): a per-tile logarithmic format.

Codec contract (``n`` from 3 to 16 bits, tiles of ``tile`` elements along the last dim)
--------------------------------------------------------------------------------------
* A code is a sign bit (bit n-1) and an (n-1)-bit magnitude code K. K = 0 is zero; K in 1 .. Kmax
  (Kmax = 2^(n-1) - 1) decodes to ``sign * exp(min + step * (K - 1))``.
* Per tile, over the non-zero elements: ``lo = min ln|x|``, ``hi = max ln|x|``; ``lo`` is raised to
  ``hi - 32 ln 2`` (a dynamic range of 2^32, about a 5-bit exponent's); ``step = (hi - lo) / (Kmax - 1)``.
  ``min`` and ``step`` are stored as **float32**; they are all the metadata (8 bytes a tile).
* The levels are evaluated in float64 from the stored float32 metadata and rounded to float32:
  ``level(K) = float32(exp(float64(min) + float64(step) * (K - 1)))``; ``decode`` returns these.
* Rounding is in linear space: each |x| goes to the nearest of the tile's levels and zero, by linear
  distance, ties to the larger magnitude (so values below level 1 go to the nearer of 0 and level 1,
  values above the top level to the top level): ``rounding="rna"`` (the default; ``Rounding.RNA``, nearest
  with ties away from zero, on the tile's grid of levels). ``rounding="stochastic"`` picks between the two
  neighbouring levels with probability proportional to linear distance (reproducible via ``generator``).
* Zeros stay zero (sign kept: -0 encodes with the sign bit). An all-zero tile has min = step = 0 and
  all codes 0. A tile of equal magnitudes has step = 0: every non-zero element is level 1.
* NaN or Inf anywhere in a tile: the format has no code for them, so the tile's metadata are NaN and
  the whole tile decodes to NaN (the input had one; it never spreads beyond its tile).
* A last dim that ``tile`` does not divide is a ``ValueError`` unless ``pad=True`` (a ragged last tile,
  metadata from its own elements).

Backends (``backend=``, the same bits): ``eager`` (the torch reference below), ``compiled`` (the same functions
fused by torch.compile: a compile per shape and setting on first use), ``native`` (``cuda_ext/logfmt_cpu.c``
through the ``lowprec::logfmt_encode`` / ``logfmt_decode`` ops: CPU tensors, ``rounding="rna"``; its log
and exp are libm's, torch's are its own vectorised ones: both are within an ulp of the exact float64 result,
so a float32 metadata value or level could only differ where that float64 result lies within an ulp of a
float32 rounding boundary -- none seen in the tests' data) and ``auto`` (the default: native where it covers the
call and the tensor has at least ``rounding.AUTO_NATIVE_MIN_NUMEL`` elements, else eager; never compiled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import ops
from .codes import Rounding
from .native import library_status
from .packing import pack
from .rounding import compiled, resolve_backend

MIN_BITS, MAX_BITS = 3, 16
LOG_RANGE = 32 * math.log(2.0)
ROUNDINGS = (Rounding.RNA, Rounding.STOCHASTIC)   # the modes LogFMT offers (of ``codes.Rounding``)


@dataclass(frozen=True)
class LogFMTTensor:
    """Codes (int32, sign in bit n-1) with per-tile float32 ``min``/``step`` of ln|x|."""

    codes: torch.Tensor      # (rows, cols): the 2-D view, last dim = the tiled dim
    min: torch.Tensor        # float32 (rows, n_tiles)
    step: torch.Tensor       # float32 (rows, n_tiles)
    nbits: int
    tile: int
    shape: tuple[int, ...]

    def packed(self) -> torch.Tensor:
        """The codes as the packed little-endian bit stream (``lowprec.pack``)."""
        return pack(self.codes, self.nbits)

    def nbytes(self) -> int:
        """Bytes on the wire: packed codes plus 8 bytes (two float32) of metadata per tile."""
        return -(-self.codes.numel() * self.nbits // 8) + 8 * self.min.numel()


def native_unsupported(device: torch.device, rounding: Rounding = Rounding.RNA) -> str | None:
    """Why ``backend="native"`` (``cuda_ext/logfmt_cpu.c``) cannot run here, or None: CPU tensors and ``rna``
    rounding; then the native build (made on first use; ``lowprec.native.library_status`` warns once when it
    cannot be made)."""
    if device.type != "cpu":
        return f"the native LogFMT codec runs on CPU tensors, not {device.type}"
    if rounding != Rounding.RNA:
        return f"the native LogFMT codec rounds to nearest (rna), not {rounding.value!r}"
    return library_status("logfmt_cpu")


def _resolve_backend(backend: str, x: torch.Tensor, rounding: Rounding = Rounding.RNA) -> str:
    """The backend a validated call takes (``auto`` resolved; an explicit ``native`` that cannot run is a
    ValueError saying why)."""
    return resolve_backend(backend, lambda: native_unsupported(x.device, rounding), x.numel())


def _check(x: torch.Tensor, nbits: int, tile: int, pad: bool, rounding: Rounding | str) -> Rounding:
    """``rounding`` as a member, after every argument of an ``encode`` call is checked (errors before work)."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"LogFMT needs a floating-point torch tensor, got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(nbits, int) or not MIN_BITS <= nbits <= MAX_BITS:
        raise ValueError(f"nbits must be an int in {MIN_BITS}..{MAX_BITS}, got {nbits!r}")
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    if x.dim() and x.shape[-1] % tile and not pad:
        raise ValueError(f"tile {tile} does not divide the last dim {x.shape[-1]}; "
                         "pass pad=True for a ragged last tile")
    return Rounding.parse(rounding, ROUNDINGS, "LogFMT rounding")


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    """The (rows, cols) view: the last dim is cols (a 0-d or 1-d tensor is one row)."""
    return x.reshape(1, -1) if x.dim() < 2 else x.reshape(-1, x.shape[-1])


def _tiled(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(rows, cols) -> (rows, n_tiles, tile), zero-padded (zeros take no part in min/max)."""
    x2 = _as_2d(x)
    return torch.nn.functional.pad(x2, (0, (-x2.shape[1]) % tile)).view(x2.shape[0], -1, tile)


def levels(min_: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """level(K) = float32(exp(min + step * (K - 1))) in float64 from the float32 metadata (K >= 1)."""
    return torch.exp(min_.double() + step.double() * (k.double() - 1)).float()


def encode(x: torch.Tensor, nbits: int, tile: int = 128, rounding: Rounding | str = Rounding.RNA, *, pad: bool = False,
           generator: torch.Generator | None = None, backend: str = "auto") -> LogFMTTensor:
    """Encode ``x`` to LogFMT-``nbits`` per ``tile`` elements of the last dim (see the module doc).
    ``backend``: ``auto``, ``eager``, ``compiled`` or ``native`` (the module doc; the same bits)."""
    rounding = _check(x, nbits, tile, pad, rounding)
    backend = _resolve_backend(backend, x, rounding)
    if backend == "native":
        codes, min32, step32 = ops.logfmt_encode(_as_2d(x.detach().float()), nbits, tile, LOG_RANGE)
    else:
        core = compiled(encode_reference) if backend == "compiled" else encode_reference
        codes, min32, step32 = core(x, nbits, tile, rounding, generator)
    return LogFMTTensor(codes, min32, step32, nbits, tile, tuple(x.shape))


def encode_reference(x: torch.Tensor, nbits: int, tile: int, rounding: Rounding, generator: torch.Generator | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int32 (rows, cols), min, step) of a validated ``encode`` call: the torch reference."""
    kmax = (1 << (nbits - 1)) - 1
    t = _tiled(x.float(), tile)
    mag = t.abs().double()
    nonzero = mag > 0
    finite_tile = torch.isfinite(t).all(dim=2)
    logs = torch.log(torch.where(nonzero, mag, 1.0))
    hi = torch.where(nonzero, logs, -math.inf).amax(dim=2)
    lo = torch.where(nonzero, logs, math.inf).amin(dim=2)
    any_nz = nonzero.any(dim=2) & finite_tile
    lo = torch.maximum(lo, hi - LOG_RANGE)
    min32 = torch.where(any_nz, lo, 0.0).float()
    step32 = torch.where(any_nz, (hi - lo) / (kmax - 1), 0.0).float()
    m, s = min32[:, :, None], step32[:, :, None]

    # candidate K from the log position, then the exact nearest among its neighbours' float32 levels
    pos = (logs - m.double()) / torch.where(s > 0, s.double(), 1.0) + 1
    k0 = torch.clamp(torch.floor(torch.where(s > 0, pos, 1.0)), 1, kmax)
    k_lo = torch.clamp(k0 - 1, min=1)
    cands = torch.stack([k_lo, torch.clamp(k_lo + 1, max=kmax), torch.clamp(k_lo + 2, max=kmax),
                         torch.clamp(k_lo + 3, max=kmax)], dim=-1)
    lv = levels(m[..., None], s[..., None], cands).double()
    below = (lv <= mag[..., None]).sum(dim=-1)                      # levels at or below |x| (ascending)
    idx_lo = torch.clamp(below - 1, min=0)
    lo_lv = torch.gather(lv, -1, idx_lo[..., None])[..., 0]
    k_at_lo = torch.gather(cands, -1, idx_lo[..., None])[..., 0]
    idx_hi = torch.clamp(below, max=3)
    hi_lv = torch.gather(lv, -1, idx_hi[..., None])[..., 0]
    k_at_hi = torch.gather(cands, -1, idx_hi[..., None])[..., 0]
    under = below == 0                                              # below the lowest candidate level
    lo_lv = torch.where(under & (k_lo == 1), 0.0, lo_lv)            # ... below level 1: the neighbour is 0
    k_at_lo = torch.where(under & (k_lo == 1), 0.0, k_at_lo)
    if rounding == Rounding.RNA:
        up = (hi_lv - mag) <= (mag - lo_lv)                         # ties to the larger magnitude
    else:
        u = torch.rand(mag.shape, generator=generator, dtype=torch.float64, device=mag.device)
        up = u * (hi_lv - lo_lv) < (mag - lo_lv)
    k = torch.where(up, k_at_hi, k_at_lo)
    k = torch.where(nonzero & finite_tile[..., None], k, 0).to(torch.int64)
    sign = torch.signbit(t).to(torch.int64) << (nbits - 1)
    codes = (k | sign).reshape(t.shape[0], -1)
    rows, cols = codes.shape[0], (x.shape[-1] if x.dim() else 1)
    nan = ~finite_tile
    return (codes[:, :cols].to(torch.int32).reshape(rows, cols), torch.where(nan, torch.nan, min32),
            torch.where(nan, torch.nan, step32))


def decode(enc: LogFMTTensor, *, backend: str = "auto") -> torch.Tensor:
    """float32 values of a ``LogFMTTensor``, in the original shape. ``backend``: as for ``encode``."""
    backend = _resolve_backend(backend, enc.codes)
    if backend == "native":
        v = ops.logfmt_decode(enc.codes, enc.min, enc.step, enc.nbits, enc.tile)
    else:
        core = compiled(_decode_core) if backend == "compiled" else _decode_core
        v = core(enc.codes, enc.min, enc.step, enc.nbits, enc.tile)
    return v.reshape(enc.shape)


def _decode_core(codes: torch.Tensor, min_: torch.Tensor, step: torch.Tensor, nbits: int, tile: int) -> torch.Tensor:
    """float32 values (rows, cols) of codes with their tiles' metadata: the torch reference."""
    rows, cols = codes.shape
    c = torch.nn.functional.pad(codes.long(), (0, (-cols) % tile)).view(rows, -1, tile)
    k = c & ((1 << (nbits - 1)) - 1)
    neg = (c >> (nbits - 1)) & 1
    v = levels(min_[:, :, None], step[:, :, None], torch.clamp(k, min=1))
    v = torch.where(k == 0, 0.0, v)
    v = torch.where(torch.isnan(min_)[:, :, None], torch.nan, v)
    v = torch.where(neg == 1, -v, v)
    return v.reshape(rows, -1)[:, :cols]


def quantize(x: torch.Tensor, nbits: int, tile: int = 128, rounding: Rounding | str = Rounding.RNA, *,
             pad: bool = False, generator: torch.Generator | None = None, backend: str = "auto") -> torch.Tensor:
    """``decode(encode(x))``: x rounded to LogFMT-``nbits`` (float32); ``backend`` as for ``encode``."""
    return decode(encode(x, nbits, tile, rounding, pad=pad, generator=generator, backend=backend), backend=backend)
