"""Scaling: granularities, scale choice, ``QuantizedTensor`` and named recipes (the GEMM of quantised tensors is
``lowprec.gemm``).

Conventions (one mechanism for every recipe)
-------------------------------------------
* A tensor is viewed as 2-D ``(rows, cols)``: leading dims flattened into rows, the last dim (the GEMM
  reduction dim of activations) is ``cols``. A ``tile=(tr, tc)`` shares one scale; ``-1`` spans the
  whole dim: per-tensor ``(-1, -1)``, per-row ``(1, -1)``, per-column ``(-1, 1)``, DeepSeek activations
  ``(1, 128)``, weights ``(128, 128)``, MX ``(1, 32)``. A last, ragged tile is allowed by default and is
  exactly a zero-padded tile (zeros do not change an amax); ``allow_ragged=False`` makes it an error.
* Stored scales are **dequantisation** scales ``sf`` (``x ~= value(code) * sf``), float32, shape
  ``(ceil(rows / tr), ceil(cols / tc))``: what GEMMs multiply by (``lowprec.gemm``). Transformer Engine's and
  torchao's multiplier ``scale`` is ``1 / sf``.
* ``dequantize`` -- how ``QuantizedTensor.dequantize`` undoes the scale: ``"mul"`` (default) ``value * sf``;
  ``"div"`` ``value / m`` with ``m`` the float32 **encode multiplier** the cast took (``x * m``; torchao's
  ``to_original_precision``). With ``"div"`` the ``QuantizedTensor`` keeps ``multipliers`` (``m`` per tile,
  float32, the shape of ``scales``, NaN where ``scales`` is) and ``scales`` stays ``float32(1 / m)`` -- what
  torchao hands ``torch._scaled_mm``. ``value / m`` and ``value * float32(1 / m)`` differ in the last bit for
  some ``m`` that are not powers of two, so ``"div"`` needs an encode by such a multiplier: current or delayed
  scaling, ``scale_op`` ``"mul_ratio"`` or ``"mul_rcp_ratio"``, ``pow2=False`` (elsewhere it is refused).
* Non-MX scale choice, in float32 as the libraries compute it: ``amax`` of the tile's finite values,
  raised to ``amax_floor``; ``sf = amax / (fmt.max / 2^margin)``; ``pow2="up"`` rounds ``sf`` up to a
  power of two (DeepGEMM UE8M0: exponent + 1 when any mantissa bit is set; biased exponent clamped to
  [1, 254]) -- for ``scale_op="mul_ratio"`` the multiplier is rounded down instead (TE's 0xFF800000
  mask), the same intent. ``amax == 0`` (or no finite value) gives ``sf = 1`` (TE current scaling).
* ``scale_op`` -- the arithmetic that makes the scaled value, because implementations differ by an ulp
  before the cast: ``"mul_inv"`` ``x * (1 / sf)`` (DeepGEMM today, the ``deepseek_v3`` default),
  ``"mul_ratio"`` ``x * (max / amax)`` with a true division (TE's kernels), ``"mul_rcp_ratio"``
  ``x * (max * (1 / amax))`` -- what older DeepGEMM's ``x * (448.0 / amax)`` computes when run by
  PyTorch, whose ``scalar / tensor`` is a reciprocal times the scalar (found by our oracle test; it
  differs from the true division in about a third of the near-boundary cases), ``"div"`` ``x / sf``
  (DeepSeek-V3 inference kernels). With ``mul_inv`` the scale is at least 2^-126 so that ``1 / sf``
  stays finite for tiles whose amax is below ~5e-36 (DeepGEMM's 1e-4 amax floor never gets there). The
  scaled value is cast RNE with saturation; non-finite elements are cast without saturation (NaN stays NaN,
  Inf becomes Inf or NaN as the format defines), so a NaN never spreads to its neighbours unless
  ``nonfinite="tile_nan"`` asks for it.
* MX (OCP MX v1.0, ``scale_format="e8m0"``): ``X = 2^(floor(log2 amax) - emax_elem)`` with the exact
  ``floor(log2)`` (from the exponent bits, not a float log), exponent clamped to [-127, 127]; options
  ``mx_rule``: ``floor`` (OCP), ``ceil``, ``even`` (torchao: amax rounded to the element mantissa
  first), ``rceil`` (TE: ``2^ceil(log2(amax / max_elem))``, exact). Elements ``RNE(V / X)`` with values above
  the element max clamped. All-zero block: ``X = 2^-127``, and every block whose rule gives an exponent at or
  below -127 (code 0) keeps ``X = 2^-127`` and its values (TE and torchao differ: ``Quirk``). NaN/Inf in a
  block: ``nonfinite="tile_nan"`` (default for MX: E8M0 0xFF, the whole block decodes NaN -- as torchao for a
  block holding NaN, whose element codes torchao makes 0 or NaN; a block holding +-Inf and no NaN torchao
  scales as finite: ``Quirk.MX_INF_BLOCK``) or ``"element"``.
* Delayed scaling (TE): ``AmaxHistory`` holds the window; the scale comes from the history's reduction
  (``max`` or ``most_recent``) *before* this step's amax is pushed; an amax of 0/Inf/NaN keeps the
  previous scale; the first step uses ``sf = 1``; an infinite multiplier becomes FP32 max.
* Framework quirks (``Quirk``, ``ScalingConfig.quirks``; every one off by default -- the published rule is the
  default -- and refused where it has no effect):

  - ``pow2_log2_f32`` (torchao float8; current scaling, ``pow2=True``, ``scale_op`` ``mul_ratio`` or
    ``mul_rcp_ratio``): the multiplier rounded to a power of two as ``exp2(floor(log2(m)))`` in float32, which
    rounds *up* an ``m`` a few ulps below 2^k, k outside [-1, 2] (``m = 511.99994 -> 512``, up to 5 ulps below
    512; the rule, TE's bit mask, gives 256). It gives ``m = inf`` for ``m >= 2^128 (1 - 2^-25)``, reachable
    only without an amax floor.
  - ``mx_code0_clamp`` (torchao MX ``floor``/``ceil``/``even``): a code-0 block (amax below about
    ``2^(emax_elem - 126)``) is divided by 2^-126 (float32's smallest normal) while its stored scale stays
    2^-127, so it dequantises at half its value.
  - ``rceil_code0_one`` (TE's MXFP8 kernels and torchao's ``rceil``, copied from TE): a code-0 block is
    multiplied by 1 instead of 2^127, so it dequantises to ~0.
  - ``rceil_log2_f32`` (torchao's eager ``rceil``): ``e = ceil(log2(d))`` with ``d = float32(amax / max_elem)``
    and ``log2`` in float32 (torch's), clamped to [-127, 127]: a ``d`` a few ulps above 2^k, k outside [-4, 3],
    has a float32 ``log2`` of exactly ``k``: one binade too small (the block's top elements then clamp to max).
    (A subnormal ``d`` is rounded before the log.)
  - ``mx_inf_block`` (torchao MX): a block holding +-Inf takes the exponent of ``amax = 2^128`` (the exponent
    field of Inf: ``128 - emax_elem``) under ``floor``/``ceil``/``even`` and code 254 under ``rceil``; its
    elements are cast as finite ones (finite ones mostly 0, +-Inf saturating to +-max) and it is no NaN block
    (NaN blocks follow ``nonfinite``).

  ``TORCHAO_MX_QUIRKS[mx_rule]`` is the set torchao 0.18's ``to_mx`` has for each rule (``torchao_mxfp8`` uses
  the ``rceil`` one): with it, any MX element format reproduces torchao's scales and values bit for bit.
* torchao 0.18 float8 (``torchao_tensorwise``, ``torchao_rowwise``): its multiplier
  ``float32(fp8_max / max(float64(amax), 1e-12))`` is ``scale_op="mul_ratio"`` with ``amax_floor=1e-12`` bit for
  bit: a float64 quotient of two float32 values rounds to float32 as their float32 quotient does (53 >= 2 * 24
  + 2), and ``float32(max / 1e-12) == float32(max / float32(1e-12))`` for every float8 max (the only float32
  amax the two floors treat differently is ``float32(1e-12)`` itself). A tile holding NaN or +-Inf dequantises
  to NaN, as torchao's (its scale is NaN or 0 there); its codes are not part of the contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import torch

from . import ops
from .codes import Rounding
from .formats import E8M0, FloatFormat, get_format
from .native import library_status
from .rounding import (compiled, decode, encode, encode_reference, floor_log2, pow2, resolve_backend, round_values,
                       torch_cast_dtype)

SCALE_OPS = ("mul_inv", "mul_ratio", "mul_rcp_ratio", "div")
SCALE_FORMATS = ("fp32", "e8m0", "ue4m3")
NVFP4_TENSOR_TARGET = 448.0 * 6.0     # the per-tensor encode scale maps the tensor's amax to E4M3 max x E2M1 max
MX_RULES = ("floor", "ceil", "even", "rceil")
NONFINITE = ("element", "tile_nan")
MULTIPLIER_OPS = ("mul_ratio", "mul_rcp_ratio")   # the scale ops that make the multiplier max / amax first
DEQUANTIZE = ("mul", "div")
_F32_MAX = torch.finfo(torch.float32).max
_F32_TINY = torch.finfo(torch.float32).tiny        # 2^-126


class Quirk(StrEnum):
    """A framework's departure from the published scaling rule, reproduced on request (``ScalingConfig.quirks``;
    the module doc gives each one's exact rule and where it applies)."""

    POW2_LOG2_F32 = "pow2_log2_f32"        #: torchao float8: power-of-2 multiplier exp2(floor(log2(m))) in float32
    MX_CODE0_CLAMP = "mx_code0_clamp"      #: torchao MX floor/ceil/even: code-0 blocks divided by 2^-126
    RCEIL_CODE0_ONE = "rceil_code0_one"    #: TE / torchao RCEIL: code-0 blocks multiplied by 1
    RCEIL_LOG2_F32 = "rceil_log2_f32"      #: torchao eager RCEIL: ceil(log2(float32(amax / max))) in float32
    MX_INF_BLOCK = "mx_inf_block"          #: torchao MX: a block holding +-Inf scaled as if its amax were 2^128

    def __repr__(self) -> str:
        return f"Quirk.{self.name}"


@dataclass(frozen=True)
class ScalingConfig:
    """How one tensor is quantised: element format, tile, and how the tile's scale is chosen/stored."""

    fmt: str = "e4m3fn"
    tile: tuple[int, int] = (1, 128)
    amax_source: Literal["current", "delayed"] = "current"
    margin: int = 0
    amax_floor: float = 0.0
    pow2: bool = False
    scale_op: str = "mul_inv"
    scale_format: Literal["fp32", "e8m0", "ue4m3"] = "fp32"
    mx_rule: str = "floor"
    nonfinite: str | None = None
    allow_ragged: bool = True
    dequantize: Literal["mul", "div"] = "mul"
    quirks: tuple[Quirk, ...] = ()    # a set, kept sorted: the repr (recipe identities hash it) is deterministic

    def __post_init__(self) -> None:
        f = get_format(self.fmt)
        if not isinstance(self.tile, (tuple, list)):
            raise TypeError(f"tile must be a pair (rows, cols), e.g. (1, 128) or (-1, -1) for per-tensor, "
                            f"got {self.tile!r}")
        if len(self.tile) != 2 or any((not isinstance(t, int)) or (t < 1 and t != -1) for t in self.tile):
            raise ValueError(f"tile must be two positive ints or -1 (whole dim), got {self.tile!r}")
        object.__setattr__(self, "tile", tuple(self.tile))
        if self.nonfinite is None:          # the default that works for the element format: a NaN code, or the tile
            object.__setattr__(self, "nonfinite", "element" if f.has_nan else "tile_nan")
        object.__setattr__(self, "quirks", _parse_quirks(self.quirks))
        if not isinstance(self.margin, int) or isinstance(self.margin, bool) or self.margin < 0:
            raise ValueError(f"margin must be an int >= 0 (scales leave 2^margin headroom), got {self.margin!r}")
        ignored = self._ignored_fields()
        if ignored:
            raise ValueError(f"{', '.join(ignored)} {'has' if len(ignored) == 1 else 'have'} no effect with "
                             f"{self._family()} scaling; leave {'it' if len(ignored) == 1 else 'them'} at the default")
        if self.scale_op not in SCALE_OPS:
            raise ValueError(f"unknown scale_op {self.scale_op!r}; expected one of {SCALE_OPS}")
        if self.mx_rule not in MX_RULES:
            raise ValueError(f"unknown mx_rule {self.mx_rule!r}; expected one of {MX_RULES}")
        if self.nonfinite not in NONFINITE:
            raise ValueError(f"unknown nonfinite policy {self.nonfinite!r}; expected one of {NONFINITE}")
        if self.scale_format not in SCALE_FORMATS:
            raise ValueError(f"scale_format must be one of {SCALE_FORMATS}, got {self.scale_format!r}")
        if self.scale_format == "ue4m3" and (self.amax_source != "current" or self.pow2 or self.amax_floor
                                             or self.margin or self.scale_op != "mul_inv"):
            raise ValueError("NVFP4 (ue4m3) scaling has its own two-level rule: current amax, and no pow2, "
                             "amax_floor, margin or scale_op")
        if self.amax_source not in ("current", "delayed"):
            raise ValueError(f"amax_source must be 'current' or 'delayed', got {self.amax_source!r}")
        if self.amax_floor < 0 or not math.isfinite(self.amax_floor):
            raise ValueError(f"amax_floor must be finite and >= 0, got {self.amax_floor}")
        if self.scale_format == "e8m0" and self.amax_source == "delayed":
            raise ValueError("MX (e8m0) scales are computed from the current block; delayed scaling is per-tensor")
        if not f.signed:
            raise ValueError(f"element format {f.name} is unsigned; scaling needs a signed element format")
        if not f.has_nan and self.nonfinite == "element":
            raise ValueError(f"element format {f.name} has no NaN to hold a NaN/Inf element: use "
                             "nonfinite='tile_nan'")
        if self.dequantize not in DEQUANTIZE:
            raise ValueError(f"dequantize must be one of {DEQUANTIZE}, got {self.dequantize!r}")
        if self.dequantize == "div" and not _DIV_SCOPE[1](self):
            raise ValueError(f"dequantize='div' has no effect with this {self._family()} scaling config; it applies to "
                             f"{_DIV_SCOPE[0]}")
        for quirk in self.quirks:
            where, applies = _QUIRK_SCOPE[quirk]
            if not applies(self):
                raise ValueError(f"quirk {quirk.value!r} has no effect with this {self._family()} scaling config; it "
                                 f"applies to {where}")

    @property
    def format(self) -> FloatFormat:
        return get_format(self.fmt)

    def _family(self) -> str:
        return {"e8m0": "MX (e8m0)", "ue4m3": "NVFP4 (ue4m3)"}.get(
            self.scale_format, "delayed" if self.amax_source == "delayed" else "current")

    def _ignored_fields(self) -> list[str]:
        """The fields set away from their defaults that this scaling family does not use (module doc)."""
        used = {"MX (e8m0)": {"mx_rule"}, "NVFP4 (ue4m3)": set(),
                "delayed": {"margin", "scale_op"},
                "current": {"margin", "amax_floor", "pow2", "scale_op"}}[self._family()]
        defaults = {"margin": 0, "amax_floor": 0.0, "pow2": False, "scale_op": "mul_inv", "mx_rule": "floor"}
        return [k for k, v in defaults.items() if k not in used and getattr(self, k) != v]


def _parse_quirks(quirks: object) -> tuple[Quirk, ...]:
    """``quirks`` (a collection of ``Quirk`` members or their names) as the sorted tuple of distinct members."""
    if isinstance(quirks, str) or not isinstance(quirks, Iterable):
        raise TypeError(f"quirks must be a set of Quirk names, e.g. {{'mx_inf_block'}}, got {quirks!r}")
    names = {q.value for q in Quirk}
    unknown = [q for q in quirks if not (isinstance(q, str) and q in names)]
    if unknown:
        raise ValueError(f"unknown quirk {unknown[0]!r}; known: {', '.join(sorted(names))}")
    return tuple(sorted({Quirk(q) for q in quirks}))


_MX_FLOOR_RULES = ("floor", "ceil", "even")
TORCHAO_MX_QUIRKS: dict[str, tuple[Quirk, ...]] = {   # torchao 0.18's to_mx, per mx_rule (its ScaleCalculationMode)
    **dict.fromkeys(_MX_FLOOR_RULES, (Quirk.MX_CODE0_CLAMP, Quirk.MX_INF_BLOCK)),
    "rceil": (Quirk.MX_INF_BLOCK, Quirk.RCEIL_CODE0_ONE, Quirk.RCEIL_LOG2_F32)}
_Scope = tuple[str, Callable[[ScalingConfig], bool]]
_DIV_SCOPE: _Scope = (
    "current or delayed scaling that encodes by a float32 multiplier that is not a power of two (scale_op "
    "'mul_ratio' or 'mul_rcp_ratio', pow2=False)",
    lambda c: c._family() in ("current", "delayed") and c.scale_op in MULTIPLIER_OPS and not c.pow2)
_RCEIL_SCOPE: _Scope = ("MX scaling with mx_rule 'rceil'", lambda c: c.scale_format == "e8m0" and c.mx_rule == "rceil")
_QUIRK_SCOPE: dict[Quirk, _Scope] = {
    Quirk.POW2_LOG2_F32: ("current scaling with pow2=True and scale_op 'mul_ratio' or 'mul_rcp_ratio'",
                          lambda c: c._family() == "current" and c.pow2 and c.scale_op in MULTIPLIER_OPS),
    Quirk.MX_CODE0_CLAMP: ("MX scaling with mx_rule 'floor', 'ceil' or 'even'",
                           lambda c: c.scale_format == "e8m0" and c.mx_rule in _MX_FLOOR_RULES),
    Quirk.RCEIL_CODE0_ONE: _RCEIL_SCOPE,
    Quirk.RCEIL_LOG2_F32: _RCEIL_SCOPE,
    Quirk.MX_INF_BLOCK: ("MX scaling", lambda c: c.scale_format == "e8m0"),
}


@dataclass
class AmaxHistory:
    """Transformer Engine's delayed-scaling state for one tensor: a rolling window of amaxes and the
    current multiplier ``scale`` (q = x * scale; our dequantisation scale is 1 / scale)."""

    length: int = 1024
    reduction: Literal["max", "most_recent"] = "max"
    amaxes: list[float] = field(default_factory=list)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"history length must be >= 1, got {self.length}")
        if self.reduction not in ("max", "most_recent"):
            raise ValueError(f"reduction must be 'max' or 'most_recent', got {self.reduction!r}")

    def update_scale(self, fmt_max: float, margin: int) -> float:
        """This step's multiplier, from the history before this step's amax (float32 arithmetic)."""
        if self.amaxes:
            amax = max(self.amaxes) if self.reduction == "max" else self.amaxes[-1]
            if amax > 0 and math.isfinite(amax):
                f32 = torch.float32
                mult = float(torch.tensor(fmt_max, dtype=f32) / torch.tensor(amax, dtype=f32) / 2.0**margin)
                self.scale = mult if math.isfinite(mult) else _F32_MAX
        return self.scale

    def push(self, amax: float) -> None:
        self.amaxes = (self.amaxes + [amax])[-self.length:]


@dataclass(frozen=True)
class QuantizedTensor:
    """Codes of one element format with per-tile dequantisation scales, and for ``dequantize="div"`` the encode
    multipliers (see the module doc)."""

    codes: torch.Tensor          # uint8, the 2-D (rows, cols) view of the input
    scales: torch.Tensor         # float32, (ceil(rows / tr), ceil(cols / tc)); NaN where a tile is NaN
    config: ScalingConfig
    shape: tuple[int, ...]       # the original shape
    tensor_scale: float = 1.0    # NVFP4's per-tensor float32 decode scale (1 for one-level scaling)
    multipliers: torch.Tensor | None = None   # the encode multipliers, kept iff config.dequantize == "div"

    def __post_init__(self) -> None:
        if not isinstance(self.codes, torch.Tensor) or self.codes.dim() != 2 or self.codes.dtype.is_floating_point:
            raise TypeError("codes must be a 2-D integer tensor")
        if math.prod(self.shape) != self.codes.numel():
            raise ValueError(f"shape {self.shape} does not match {self.codes.numel()} codes")
        want = tuple(-(-s // t) for s, t in zip(self.codes.shape, self.tile))
        if not isinstance(self.scales, torch.Tensor) or tuple(self.scales.shape) != want:
            got = tuple(self.scales.shape) if isinstance(self.scales, torch.Tensor) else type(self.scales).__name__
            raise ValueError(f"scales have shape {got}; tile {self.tile} over codes {tuple(self.codes.shape)} "
                             f"needs {want}")
        if (self.multipliers is not None) != (self.config.dequantize == "div"):
            raise ValueError("multipliers (the encode multipliers) go with dequantize='div' and only with it: the "
                             f"config has dequantize={self.config.dequantize!r}, multipliers are "
                             f"{'missing' if self.multipliers is None else 'given'}")
        if self.multipliers is not None and (not isinstance(self.multipliers, torch.Tensor)
                                             or self.multipliers.shape != self.scales.shape):
            raise ValueError(f"multipliers must be a tensor of the scales' shape {tuple(self.scales.shape)}")

    @property
    def fmt(self) -> FloatFormat:
        return self.config.format

    @property
    def tile(self) -> tuple[int, int]:
        return _resolve_tile(self.config.tile, _shape2d(self.codes))

    @property
    def scale_codes(self) -> torch.Tensor:
        """The scales as E8M0 codes (MX and UE8M0 storage); a ValueError if a scale is not a power of 2."""
        finite = torch.isfinite(self.scales)
        m, _ = torch.frexp(self.scales[finite])
        if bool((m.abs() != 0.5).any()):
            raise ValueError("scales are not powers of two; they have no E8M0 encoding")
        return encode(self.scales, E8M0)

    def values(self) -> torch.Tensor:
        """The unscaled element values (float32, 2-D)."""
        return decode(self.codes, self.fmt)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``value(code) * scale`` (``* tensor_scale``), or ``value(code) / multiplier`` for ``dequantize="div"``, in
        the original shape, correctly rounded to ``dtype`` (with NVFP4's tensor scale: value * scale is exact, a
        2-bit times a 4-bit significand).

        For float32 out of float32 values and scales, one IEEE float32 multiply (or divide) per element,
        broadcast over the tiles; otherwise the product (exact) or the quotient (correctly rounded) in float64,
        rounded to ``dtype`` -- for a quotient a second rounding, harmless for float64 and every ``dtype`` of at
        most 25 significand bits (53 >= 2 * 25 + 2).
        """
        vals = self.values()
        per_tile, op = (self.scales, torch.mul) if self.multipliers is None else (self.multipliers, torch.div)
        if dtype == torch.float32 and vals.dtype == torch.float32 and per_tile.dtype == torch.float32:
            t = _tiles(vals, self.tile)
            out = op(t, per_tile[:, None, :, None])
            if self.tensor_scale != 1.0:
                out = out * self.tensor_scale
            R, C = self.codes.shape
            return out.reshape(t.shape[0] * t.shape[1], t.shape[2] * t.shape[3])[:R, :C].reshape(self.shape)
        m = _expand(per_tile.double(), self.tile, _shape2d(self.codes))
        return (op(vals.double(), m) * self.tensor_scale).to(dtype).reshape(self.shape)

    def nbytes(self, packed: bool = True) -> int:
        """Bytes on the wire: codes (packed for sub-byte formats) plus scales (1 byte for E8M0 and UE4M3, else 4;
        4 more for NVFP4's tensor scale)."""
        bits = self.fmt.bits if packed else 8
        scale_bytes = 4 if self.config.scale_format == "fp32" else 1
        extra = 4 if self.config.scale_format == "ue4m3" else 0
        return math.ceil(self.codes.numel() * bits / 8) + self.scales.numel() * scale_bytes + extra


# ---- tiles ---------------------------------------------------------------------------------------
def _resolve_tile(tile: tuple[int, int], shape2d: tuple[int, int]) -> tuple[int, int]:
    return tuple(max(1, s) if t == -1 else t for t, s in zip(tile, shape2d))  # type: ignore[return-value]


def _tiles(x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """(R, C) -> (R/tr, tr, C/tc, tc) view of x zero-padded to whole tiles (a reshape, no copy when
    the tiles divide): per-tile reductions are over dims (1, 3)."""
    R, C = x.shape
    tr, tc = tile
    pr, pc = (-R) % tr, (-C) % tc
    if pr or pc:
        x = torch.nn.functional.pad(x, (0, pc, 0, pr))
    return x.reshape((R + pr) // tr, tr, (C + pc) // tc, tc)


def _expand(per_tile: torch.Tensor, tile: tuple[int, int], shape2d: tuple[int, int]) -> torch.Tensor:
    """Broadcast a per-tile tensor back to the elements of a (R, C) tensor."""
    tr, tc = tile
    return per_tile.repeat_interleave(tr, 0).repeat_interleave(tc, 1)[: shape2d[0], : shape2d[1]]


def _shape2d(x: torch.Tensor) -> tuple[int, int]:
    return x.shape[0], x.shape[1]


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, -1) if x.dim() < 2 else x.reshape(math.prod(x.shape[:-1]), x.shape[-1])


# ---- scale choice ---------------------------------------------------------------------------------
def _pow2_up(sf: torch.Tensor) -> torch.Tensor:
    """Round positive float32 ``sf`` up to a power of two; biased exponent clamped to [1, 254]."""
    bits = sf.view(torch.int32)
    exp = ((bits >> 23) & 0xFF) + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return (torch.clamp(exp, 1, 254) << 23).view(torch.float32)


def _pow2_down(m: torch.Tensor) -> torch.Tensor:
    """Round positive float32 ``m`` down to a power of two (TE: keep sign and exponent bits)."""
    return (m.view(torch.int32) & torch.tensor(0xFF800000 - (1 << 32), dtype=torch.int32)).view(torch.float32)


def _mx_exponent(amax: torch.Tensor, cfg: ScalingConfig) -> torch.Tensor:
    """Shared exponent of each MX block (int64, clamped to [-127, 127]); amax float64 >= 0 finite."""
    f = cfg.format
    pos = amax > 0
    a = torch.where(pos, amax, 1.0)
    if cfg.mx_rule == "floor":
        e = floor_log2(a) - f.emax
    elif cfg.mx_rule == "ceil":
        fl = floor_log2(a)
        e = fl + (a != pow2(fl)).to(torch.int64) - f.emax
    elif cfg.mx_rule == "even":  # amax rounded (RNE) to the element's mantissa width, then floor
        e = floor_log2(round_values(a, FloatFormat("amax_even", 10, f.mbits, 511, "ieee"))) - f.emax
    elif Quirk.RCEIL_LOG2_F32 in cfg.quirks:  # torchao's eager rceil: float32 quotient, float32 log2 (module doc)
        e = torch.ceil(torch.log2(a.float() / f.max)).clamp(-127, 127).to(torch.int64)
    else:  # rceil: 2^ceil(log2(amax / max_elem))
        r = a / f.max
        fl = floor_log2(r)
        e = fl + (r != pow2(fl)).to(torch.int64)
    return torch.where(pos, torch.clamp(e, -127, 127), torch.full_like(e, -127))


def _mx_scales(t: torch.Tensor, amax: torch.Tensor, cfg: ScalingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per MX block of ``t``: (X, multiplier), X = 2^e of ``_mx_exponent`` and the multiplier its exact reciprocal
    (2^-127..2^127, all float32 values), but where a quirk changes them (module doc)."""
    e = _mx_exponent(amax.double(), cfg)
    if Quirk.MX_INF_BLOCK in cfg.quirks:
        e = torch.where(torch.isinf(t).any(dim=(1, 3)), 127 if cfg.mx_rule == "rceil" else 128 - cfg.format.emax, e)
    mult = pow2(-e).float()
    if Quirk.MX_CODE0_CLAMP in cfg.quirks:
        mult = torch.where(e == -127, 2.0**126, mult)
    if Quirk.RCEIL_CODE0_ONE in cfg.quirks:
        mult = torch.where(e == -127, 1.0, mult)
    return pow2(e).float(), mult


def _tile_scales(t: torch.Tensor, finite: torch.Tensor, cfg: ScalingConfig, delayed_mult: float | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile of ``t`` (float32, (nr, tr, nc, tc); ``finite`` = ``isfinite(t)``): (sf, multiplier). The
    multiplier is what the cast's input is multiplied by (unused by ``scale_op="div"``)."""
    f = cfg.format
    amax = torch.where(finite, t.abs(), 0.0).amax(dim=(1, 3))
    if cfg.scale_format == "e8m0":
        return _mx_scales(t, amax, cfg)
    target = torch.tensor(f.max / 2.0**cfg.margin, dtype=torch.float32)
    if delayed_mult is not None:
        mult = torch.full_like(amax, delayed_mult)
        return 1.0 / mult, mult
    amax = torch.clamp(amax, min=cfg.amax_floor) if cfg.amax_floor > 0 else amax
    ok = amax > 0
    if cfg.scale_op in MULTIPLIER_OPS:
        safe = torch.where(ok, amax, 1.0)
        ratio = target / safe if cfg.scale_op == "mul_ratio" else target * torch.reciprocal(safe)
        mult = torch.where(ok, ratio, 1.0)
        mult = torch.where(torch.isinf(mult), _F32_MAX, mult)
        if cfg.pow2:
            mult = torch.exp2(torch.floor(torch.log2(mult))) if Quirk.POW2_LOG2_F32 in cfg.quirks else _pow2_down(mult)
        return 1.0 / mult, mult
    sf = torch.where(ok, amax / target, 1.0)
    if cfg.scale_op == "mul_inv":   # keep 1 / sf finite: a subnormal sf would make the multiplier Inf
        sf = torch.clamp(sf, min=_F32_TINY)
    if cfg.pow2:
        sf = _pow2_up(sf)
    return sf, 1.0 / sf


def _two_level_scales(t: torch.Tensor, finite: torch.Tensor, cfg: ScalingConfig
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NVFP4 (``scale_format="ue4m3"``), in float32: the tensor's encode scale ``S = 448 * 6 / amax`` (1 when the
    tensor has no finite non-zero value, FP32 max when it overflows), each tile's scale
    ``s = UE4M3(RNE, saturating)((amax_tile / 6) * S)``, the element multiplier ``S / s`` (0 for a zero scale) and
    the tensor's decode scale ``1 / S``: (s, multiplier, decode scale). Elements are then cast RNE with
    saturation as every recipe's; ``value * s * (1 / S)`` dequantises."""
    f = cfg.format
    amax = torch.where(finite, t.abs(), 0.0).amax(dim=(1, 3))
    tensor_amax = amax.amax() if amax.numel() else torch.zeros((), dtype=torch.float32)
    enc = torch.where(tensor_amax > 0, torch.tensor(NVFP4_TENSOR_TARGET, dtype=torch.float32) / tensor_amax, 1.0)
    enc = torch.clamp(enc, max=_F32_MAX)
    s = round_values((amax / f.max) * enc, get_format("ue4m3"), Rounding.RNE, saturate=True).float()
    mult = torch.where(s > 0, enc / s, 0.0)
    return s, mult, 1.0 / enc


def _scaled(t: torch.Tensor, sf: torch.Tensor, mult: torch.Tensor, cfg: ScalingConfig) -> torch.Tensor:
    """The values that are cast, computed as ``cfg.scale_op`` says (float32). MX multiplies by a power of two
    (the exact reciprocal of X but for the quirks), the same bits as dividing by X: exact in float32 wherever the
    product is a normal float32; a product below 2^-126 rounds to zero in any element format whose smallest
    subnormal is >= 2^-125, so float32 serves those (every MX element format); other formats multiply in
    float64, exactly."""
    if cfg.scale_format == "e8m0" and cfg.format.emin - cfg.format.mbits < -125:
        return t.double() * mult[:, None, :, None].double()
    if cfg.scale_op == "div" and cfg.scale_format == "fp32":
        return t / sf[:, None, :, None]
    return t * mult[:, None, :, None]


# ---- the public API -------------------------------------------------------------------------------
def quantize_tensor(x: torch.Tensor, recipe_or_scaling: "Recipe | ScalingConfig | str", role: str = "activation", *,
                    history: AmaxHistory | None = None, backend: str = "auto", **overrides: Any) -> QuantizedTensor:
    """Quantise ``x`` with a recipe (name or ``Recipe``; ``role`` picks its config) or a ``ScalingConfig``.

    ``overrides`` replace config fields (e.g. ``tile=(1, 64)``, ``scale_op="div"``). Delayed scaling
    needs ``history`` (an ``AmaxHistory``), which is updated. ``backend``: ``"eager"`` (torch, op by
    op), ``"compiled"`` (the same work fused by torch.compile), ``"native"`` (``cuda_ext/quant_cpu.c``:
    current scaling, float32 or E8M0 scales, <= 8-bit formats, CPU: see ``native_unsupported``) or ``"auto"``
    (native when it covers the call and ``x`` has at least ``AUTO_NATIVE_MIN_NUMEL`` elements, else
    eager; never compiled); the same bits either way.
    """
    cfg, x2, tile, backend, delayed_mult = _prepare_quantize(x, recipe_or_scaling, role, history, backend, overrides)
    if backend == "native":
        codes, sf, _ = _native_quantize(x2, cfg, tile, dequantized=False)
        return QuantizedTensor(codes, sf, cfg, tuple(x.shape))
    return _torch_quantize(x2, cfg, tile, backend, delayed_mult, tuple(x.shape))


def fake_quantize(x: torch.Tensor, recipe_or_scaling: "Recipe | ScalingConfig | str", role: str = "activation", *,
                  history: AmaxHistory | None = None, backend: str = "auto", **overrides: Any) -> torch.Tensor:
    """``quantize_tensor(x, ...).dequantize()`` (float32, ``x``'s shape), bit for bit (a NaN element or tile is
    NaN; its payload is not part of the contract); the native backend writes the dequantised values in the
    same pass as the codes (what quantised training needs)."""
    cfg, x2, tile, backend, delayed_mult = _prepare_quantize(x, recipe_or_scaling, role, history, backend, overrides)
    if backend == "native":
        _, _, deq = _native_quantize(x2, cfg, tile, dequantized=True)
        assert deq is not None
        return deq.reshape(x.shape)
    return _torch_quantize(x2, cfg, tile, backend, delayed_mult, tuple(x.shape)).dequantize()


def _torch_quantize(x2: torch.Tensor, cfg: ScalingConfig, tile: tuple[int, int], backend: str,
                    delayed_mult: float | None, shape: tuple[int, ...]) -> QuantizedTensor:
    """``_quantize_core`` (eager, or fused by torch.compile) as a ``QuantizedTensor`` of ``shape``."""
    core = compiled(_quantize_core) if backend == "compiled" else _quantize_core
    codes, sf, mult, tensor_scale = core(x2, cfg, tile, delayed_mult)
    return QuantizedTensor(codes, sf, cfg, shape, float(tensor_scale), mult if cfg.dequantize == "div" else None)


def _prepare_quantize(x: torch.Tensor, recipe_or_scaling: Any, role: str, history: AmaxHistory | None, backend: str,
                      overrides: dict[str, Any]) -> tuple[ScalingConfig, torch.Tensor, tuple[int, int], str,
                                                          float | None]:
    """Validate a quantisation request (before any work) and resolve its config, 2-D view, tile, backend and
    delayed multiplier (pushing this step's amax into the history)."""
    cfg = _resolve_config(recipe_or_scaling, role, overrides)
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"quantize_tensor needs a floating-point torch tensor, got "
                        f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if cfg.amax_source == "delayed" and history is None:
        raise ValueError("delayed scaling needs history=AmaxHistory(...)")
    backend = resolve_backend(backend, lambda: native_unsupported(cfg, x.device), x.numel())
    if x.dtype == torch.float64 and x.numel():
        mag = torch.where(torch.isfinite(x), x.abs(), 0.0)
        if bool((mag > _F32_MAX).any()) or bool(((mag > 0) & (mag < 2.0**-149)).any()):
            raise ValueError("quantize_tensor works in float32, as the libraries it models: this float64 input "
                             "holds values float32 cannot hold (|x| > 3.4e38 or 0 < |x| < 1.4e-45); scale it into "
                             "float32's range first, or use lowprec.quantize (exact for float64)")
    x2 = _as_2d(x).to(torch.float32)
    tile = _resolve_tile(cfg.tile, _shape2d(x2))
    if not cfg.allow_ragged and (x2.shape[0] % tile[0] or x2.shape[1] % tile[1]):
        raise ValueError(f"tile {tile} does not divide the (rows, cols) = {tuple(x2.shape)} view and "
                         "allow_ragged=False")
    delayed_mult = None
    if cfg.amax_source == "delayed":
        assert history is not None
        delayed_mult = history.update_scale(cfg.format.max, cfg.margin)
        history.push(float(torch.where(_finite(x2), x2.abs(), 0.0).max()) if x2.numel() else 0.0)
    return cfg, x2, tile, backend, delayed_mult


def native_unsupported(cfg: ScalingConfig, device: torch.device) -> str | None:
    """Why ``backend="native"`` (``cuda_ext/quant_cpu.c`` through the ``lowprec::quantize_tiles`` op) cannot
    quantise with ``cfg`` here, or None. The configuration is checked first; then the native CPU build (made
    on first use; when it cannot be made, ``lowprec.native.library_status`` warns once with the compiler's
    message)."""
    f = cfg.format
    if device.type != "cpu":
        return f"the native scaling backend runs on CPU tensors, not {device.type}"
    if cfg.amax_source != "current":
        return "the native scaling backend covers current scaling (not delayed)"
    if cfg.quirks or cfg.dequantize != "mul":
        return "the native scaling backend implements the published rules: no quirks, no dequantize='div'"
    if cfg.scale_format == "ue4m3":
        return "the native scaling backend covers fp32 and e8m0 scales, not NVFP4's two-level ue4m3 scaling"
    if f.bits > 8 or not (f.subnormals and f.has_zero) or f.emin < -126:
        return f"the native scaling backend covers <= 8-bit element formats with subnormals, not {f.name}"
    if cfg.scale_format == "e8m0" and f.emin - f.mbits < -125:
        return f"the native scaling backend's MX path divides in float32: {f.name}'s subnormals are too small"
    return library_status("quant_cpu")


def _native_quantize(x2: torch.Tensor, cfg: ScalingConfig, tile: tuple[int, int], dequantized: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``_quantize_core`` by the ``lowprec::quantize_tiles`` op (``cuda_ext/quant_cpu.c``; same bits, tested
    against the torch path), and the dequantised values when asked."""
    target = float(torch.tensor(cfg.format.max / 2.0**cfg.margin, dtype=torch.float32))
    codes, sf, deq = ops.quantize_tiles(x2, ops.format_args(cfg.format), list(tile), int(ops.ScaleOpCode[cfg.scale_op]),
                                        cfg.pow2, cfg.nonfinite == "tile_nan", cfg.scale_format == "e8m0",
                                        int(ops.MxRuleCode[cfg.mx_rule]), target, cfg.amax_floor, dequantized)
    return codes, sf, deq if dequantized else None


def _quantize_core(x2: torch.Tensor, cfg: ScalingConfig, tile: tuple[int, int], delayed_mult: float | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes (R, C), sf per tile, the encode multiplier per tile, the tensor's decode scale: 1 but for NVFP4) of the
    float32 2-D ``x2``: scale choice, scaled values and the cast, with no data-dependent Python branches (so
    torch.compile can fuse it). ``sf`` and the multiplier are NaN for a NaN tile (``nonfinite="tile_nan"``)."""
    fmt = cfg.format
    t = _tiles(x2, tile)
    finite = _finite(t)
    # the elements the saturating cast does not take: NaN, and +-Inf unless torchao's Inf blocks saturate them
    special = torch.isnan(t) if Quirk.MX_INF_BLOCK in cfg.quirks else ~finite
    if cfg.scale_format == "ue4m3":
        sf, mult, tensor_scale = _two_level_scales(t, finite, cfg)
    else:
        sf, mult = _tile_scales(t, finite, cfg, delayed_mult)
        tensor_scale = torch.ones((), dtype=torch.float32)
    y = _scaled(t, sf, mult, cfg)
    # a NaN in y comes from a special element (masked below); a scaled value that overflowed float32
    # (delayed scaling) saturates like any other value above the format's max
    codes = _cast_rne_saturated(torch.nan_to_num(y, nan=0.0, posinf=math.inf, neginf=-math.inf), fmt)
    # special elements are cast unsaturated (NaN -> NaN, Inf -> Inf or NaN), or are code 0 in a format
    # without NaN (then nonfinite="tile_nan" is required and the tile's scale is NaN)
    if torch.compiler.is_compiling() or bool(special.any()):     # eager skips this when there is none
        codes = torch.where(special, _nonfinite_codes(t, fmt) if fmt.has_nan else torch.zeros_like(codes), codes)
    codes = codes.reshape(t.shape[0] * tile[0], t.shape[2] * tile[1])
    if tuple(codes.shape) != tuple(x2.shape):
        codes = codes[: x2.shape[0], : x2.shape[1]].contiguous()
    # always new tensors: torch 2.13's inductor miscompiles a ragged tile's codes when sf is returned as it is
    nan_tile = special.any(dim=(1, 3)) if cfg.nonfinite == "tile_nan" else torch.zeros_like(sf, dtype=torch.bool)
    return codes, torch.where(nan_tile, torch.nan, sf), torch.where(nan_tile, torch.nan, mult), tensor_scale


def _cast_rne_saturated(y: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Codes of finite ``y``, RNE with saturation: torch's own cast of the clamped values where
    ``rounding.torch_cast_dtype`` says it gives ``encode``'s bits (an 8-bit format torch has, a float32 CPU
    tensor, outside torch.compile); otherwise the lab's encoder."""
    tdtype = torch_cast_dtype(y, fmt, Rounding.RNE) if fmt.bits == 8 else None
    if tdtype is None:
        return encode_reference(y, fmt, Rounding.RNE, True, None, 32)
    return torch.clamp(y, -fmt.max, fmt.max).to(tdtype).view(torch.uint8)


def _finite(t: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite(t)`` for a float tensor, as ``t - t == 0`` (NaN and +-Inf give NaN): the same mask,
    two vectorised ops (torch 2.13's CPU isfinite is ~40x slower than one multiply)."""
    return (t - t) == 0


def _nonfinite_codes(t: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The unsaturated RNE codes of +-NaN and +-Inf (from the encoder, four values), selected for each
    non-finite element of ``t``; finite elements get an arbitrary code (the caller masks them)."""
    special = torch.tensor([math.nan, -math.nan, math.inf, -math.inf], dtype=torch.float32, device=t.device)
    c = encode_reference(special, fmt, Rounding.RNE, False, None, 32)
    nan_code = torch.where(torch.signbit(t), c[1], c[0])
    return torch.where(torch.isnan(t), nan_code, torch.where(t > 0, c[2], c[3]))


def _resolve_config(recipe_or_scaling: Any, role: str, overrides: dict[str, Any]) -> ScalingConfig:
    if isinstance(recipe_or_scaling, str):
        recipe_or_scaling = get_recipe(recipe_or_scaling)
    if isinstance(recipe_or_scaling, Recipe):
        cfg = recipe_or_scaling.config(role)
    elif isinstance(recipe_or_scaling, ScalingConfig):
        cfg = recipe_or_scaling
    else:
        raise TypeError(f"expected a recipe name, Recipe or ScalingConfig, got {type(recipe_or_scaling).__name__}")
    return replace(cfg, **overrides) if overrides else cfg


# ---- recipes --------------------------------------------------------------------------------------
ROLES = ("activation", "weight", "grad")


@dataclass(frozen=True)
class Recipe:
    """A named set of ScalingConfigs, one per tensor role (activation, weight, grad). Weight configs
    are written for the (K, N) operand of ``scaled_matmul`` (b = W^T), so K runs down the rows."""

    name: str
    activation: ScalingConfig
    weight: ScalingConfig
    grad: ScalingConfig
    description: str = ""

    def config(self, role: str) -> ScalingConfig:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        return getattr(self, role)


def _same(cfg: ScalingConfig, name: str, description: str, **grad: Any) -> Recipe:
    return Recipe(name, cfg, cfg, replace(cfg, **grad) if grad else cfg, description)


_DS = ScalingConfig("e4m3fn", (1, 128), amax_floor=1e-4, scale_op="mul_inv")
_TE_DELAYED = ScalingConfig("e4m3fn", (-1, -1), amax_source="delayed", scale_op="mul_ratio")
_TE_CURRENT = ScalingConfig("e4m3fn", (-1, -1), scale_op="mul_ratio")
_MX = ScalingConfig("e4m3fn", (1, 32), scale_format="e8m0", mx_rule="floor", nonfinite="tile_nan")
_MXFP4 = replace(_MX, fmt="e2m1")
_NVFP4 = ScalingConfig("e2m1", (1, 16), scale_format="ue4m3", nonfinite="tile_nan")
_TAO = ScalingConfig("e4m3fn", (-1, -1), amax_floor=1e-12, scale_op="mul_ratio", nonfinite="tile_nan")
_TAO_ROWWISE = replace(_TAO, tile=(1, -1), pow2=True, quirks=(Quirk.POW2_LOG2_F32,))
_TAO_MX = replace(_MX, mx_rule="rceil", quirks=TORCHAO_MX_QUIRKS["rceil"])

_RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("deepseek_v3", _DS, replace(_DS, tile=(128, 128)), _DS,
           "DeepSeek-V3 / DeepGEMM: E4M3 everywhere, 1x128 activation and gradient tiles, 128x128 weight "
           "blocks, online amax (clamped to 1e-4), sf = amax / 448, x * (1 / sf), float32 scales"),
    Recipe("deepseek_v3_ue8m0", replace(_DS, pow2=True), replace(_DS, tile=(128, 128), pow2=True),
           replace(_DS, pow2=True), "deepseek_v3 with DeepGEMM's UE8M0 scales (sf rounded up to a power of "
           "two); also the paper's power-of-2 tensors (attention-output linear input, MoE up-projection "
           "input, gradient before the MoE down-projection)"),
    _same(_TE_DELAYED, "te_delayed", "Transformer Engine DelayedScaling (HYBRID): per-tensor, amax history 1024 "
          "(max), E4M3 forward, E5M2 gradients", fmt="e5m2"),
    _same(_TE_CURRENT, "te_current", "Transformer Engine current scaling: per-tensor, E4M3 forward, E5M2 "
          "gradients", fmt="e5m2"),
    Recipe("rowwise", ScalingConfig("e4m3fn", (1, -1), scale_op="mul_ratio"),
           ScalingConfig("e4m3fn", (-1, 1), scale_op="mul_ratio"),
           ScalingConfig("e4m3fn", (1, -1), scale_op="mul_ratio"),
           "row-wise current scaling, E4M3: one scale per token (activation row) and per output channel "
           "(weight column in the (K, N) layout)"),
    Recipe("mxfp8", _MX, replace(_MX, tile=(32, 1)), _MX,
           "OCP MX v1.0 MXFP8: E4M3 elements, 32-element blocks along the reduction dim, E8M0 scales "
           "(floor rule)"),
    Recipe("mxfp8_te", replace(_MX, mx_rule="rceil"), replace(_MX, tile=(32, 1), mx_rule="rceil"),
           replace(_MX, mx_rule="rceil"), "MXFP8 with Transformer Engine's RCEIL scale rounding (exact); a block whose "
           "scale is code 0 (amax <= 448 * 2^-127) keeps its values at X = 2^-127, where TE multiplies it by 1 "
           "and so zeroes it (Quirk.RCEIL_CODE0_ONE reproduces that)"),
    Recipe("mxfp4", _MXFP4, replace(_MXFP4, tile=(32, 1)), _MXFP4,
           "OCP MX v1.0 MXFP4: E2M1 elements, 32-element blocks along the reduction dim, E8M0 scales (floor rule)"),
    Recipe("nvfp4", _NVFP4, replace(_NVFP4, tile=(16, 1)), _NVFP4,
           "NVFP4: E2M1 elements, 16-element blocks along the reduction dim with unsigned E4M3 scales, times one "
           "float32 scale per tensor (448 * 6 / amax), as Blackwell's kind::mxf4nvf4 consumes them"),
    _same(replace(_TAO, dequantize="div"), "torchao_tensorwise", "torchao 0.18 float8 TENSORWISE, bit for bit: "
          "per-tensor, E4M3 forward, E5M2 gradients, multiplier float32(max / max(amax, 1e-12)), q = x * multiplier "
          "cast with saturation; dequantize divides by the multiplier (scales hold its float32 reciprocal, as "
          "torch._scaled_mm gets it)", fmt="e5m2"),
    Recipe("torchao_rowwise", _TAO_ROWWISE, replace(_TAO_ROWWISE, tile=(-1, 1)), _TAO_ROWWISE,
           "torchao 0.18 float8 ROWWISE, bit for bit: E4M3 everywhere, one scale per row (activations, gradients) "
           "and per output channel (weight column), multiplier float32(max / max(amax, 1e-12)) rounded to a power "
           "of two as torchao does (exp2(floor(log2)) in float32: up, not down, within a few ulps below a power "
           "of two)"),
    Recipe("torchao_mxfp8", _TAO_MX, replace(_TAO_MX, tile=(32, 1)), _TAO_MX,
           "torchao 0.18 MXFP8 as its eager path computes it with RCEIL (the mode of its MXFP8 inference and MoE "
           "training configs): E4M3 elements, 32-element blocks along the reduction dim, E8M0 scales "
           "2^ceil(log2(amax / 448)) with the log2 in float32, code-0 blocks multiplied by 1 (zeroed), a block "
           "holding +-Inf given code 254 (its Inf saturates to +-448)"),
]}


def register_recipe(recipe: Recipe) -> Recipe:
    """Make a user-composed recipe available by name."""
    if recipe.name in _RECIPES and _RECIPES[recipe.name] != recipe:
        raise ValueError(f"recipe {recipe.name!r} already exists")
    _RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(_RECIPES)}")
    return _RECIPES[name]


def list_recipes() -> list[Recipe]:
    return list(_RECIPES.values())
