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
  ``(ceil(rows / tr), ceil(cols / tc))``. Transformer Engine's multiplier ``scale`` is ``1 / sf``.
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
  stays finite for tiles whose amax is below ~5e-36 (DeepGEMM's 1e-4 amax floor never gets there). The scaled value is cast RNE with saturation; non-finite elements are cast
  without saturation (NaN stays NaN, Inf becomes Inf or NaN as the format defines), so a NaN never
  spreads to its neighbours unless ``nonfinite="tile_nan"`` asks for it.
* MX (OCP MX v1.0, ``scale_format="e8m0"``): ``X = 2^(floor(log2 amax) - emax_elem)`` with the exact
  ``floor(log2)`` (from the exponent bits, not a float log), exponent clamped to [-127, 127]; options
  ``mx_rule``: ``floor`` (OCP), ``ceil``, ``even`` (torchao: amax rounded to the element mantissa
  first), ``rceil`` (TE: ``2^ceil(log2(amax / max_elem))``). Elements ``RNE(V / X)`` with values above
  the element max clamped. All-zero block: ``X = 2^-127``. NaN/Inf in a block: ``nonfinite="tile_nan"``
  (default for MX: E8M0 0xFF, the whole block decodes NaN, as torchao) or ``"element"``.
* Delayed scaling (TE): ``AmaxHistory`` holds the window; the scale comes from the history's reduction
  (``max`` or ``most_recent``) *before* this step's amax is pushed; an amax of 0/Inf/NaN keeps the
  previous scale; the first step uses ``sf = 1``; an infinite multiplier becomes FP32 max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from . import ops
from .formats import E8M0, FloatFormat, get_format
from .native import library_status
from .rounding import (compiled, decode, encode, encode_reference, floor_log2, pow2, resolve_backend, round_values,
                       torch_cast_dtype)

SCALE_OPS = ("mul_inv", "mul_ratio", "mul_rcp_ratio", "div")
SCALE_FORMATS = ("fp32", "e8m0", "ue4m3")
NVFP4_TENSOR_TARGET = 448.0 * 6.0     # the per-tensor encode scale maps the tensor's amax to E4M3 max x E2M1 max
MX_RULES = ("floor", "ceil", "even", "rceil")
NONFINITE = ("element", "tile_nan")
_F32_MAX = torch.finfo(torch.float32).max
_F32_TINY = torch.finfo(torch.float32).tiny        # 2^-126


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
    """Codes of one element format with per-tile dequantisation scales (see the module doc)."""

    codes: torch.Tensor          # uint8, the 2-D (rows, cols) view of the input
    scales: torch.Tensor         # float32, (ceil(rows / tr), ceil(cols / tc)); NaN where a tile is NaN
    config: ScalingConfig
    shape: tuple[int, ...]       # the original shape
    tensor_scale: float = 1.0    # NVFP4's per-tensor float32 decode scale (1 for one-level scaling)

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

    @property
    def fmt(self) -> FloatFormat:
        return self.config.format

    @property
    def tile(self) -> tuple[int, int]:
        return _resolve_tile(self.config.tile, tuple(self.codes.shape))

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
        """value(code) * scale (* tensor_scale) in the original shape, the exact product rounded once to ``dtype``
        (with NVFP4's tensor scale: value * scale is exact, a 2-bit times a 4-bit significand).

        For float32 out of float32 values and scales, one IEEE float32 multiply per element (it is
        correctly rounded: the same bits as the exact product rounded once), broadcast over the tiles;
        otherwise the product is formed exactly in float64 and rounded once to ``dtype``.
        """
        vals = self.values()
        if dtype == torch.float32 and vals.dtype == torch.float32 and self.scales.dtype == torch.float32:
            t = _tiles(vals, self.tile)
            out = t * self.scales[:, None, :, None]
            if self.tensor_scale != 1.0:
                out = out * self.tensor_scale
            R, C = self.codes.shape
            return out.reshape(t.shape[0] * t.shape[1], t.shape[2] * t.shape[3])[:R, :C].reshape(self.shape)
        sf = _expand(self.scales.double(), self.tile, tuple(self.codes.shape))
        return (vals.double() * sf * self.tensor_scale).to(dtype).reshape(self.shape)

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
    else:  # rceil: 2^ceil(log2(amax / max_elem))
        r = a / f.max
        fl = floor_log2(r)
        e = fl + (r != pow2(fl)).to(torch.int64)
    return torch.where(pos, torch.clamp(e, -127, 127), torch.full_like(e, -127))


def _tile_scales(t: torch.Tensor, finite: torch.Tensor, cfg: ScalingConfig, delayed_mult: float | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per tile of ``t`` (float32, (nr, tr, nc, tc); ``finite`` = ``isfinite(t)``): (sf, multiplier, nan_tile).
    The multiplier is what ``mul_*`` scale ops multiply by (for ``div`` and MX it is unused)."""
    f = cfg.format
    amax = torch.where(finite, t.abs(), 0.0).amax(dim=(1, 3))
    nan_tile = ~finite.all(dim=(1, 3)) if cfg.nonfinite == "tile_nan" else torch.zeros_like(amax, dtype=torch.bool)
    if cfg.scale_format == "e8m0":
        sf = pow2(_mx_exponent(amax.double(), cfg)).float()
        return sf, 1.0 / sf, nan_tile
    target = torch.tensor(f.max / 2.0**cfg.margin, dtype=torch.float32)
    if delayed_mult is not None:
        mult = torch.full_like(amax, delayed_mult)
        return 1.0 / mult, mult, nan_tile
    amax = torch.clamp(amax, min=cfg.amax_floor) if cfg.amax_floor > 0 else amax
    ok = amax > 0
    if cfg.scale_op in ("mul_ratio", "mul_rcp_ratio"):
        safe = torch.where(ok, amax, 1.0)
        ratio = target / safe if cfg.scale_op == "mul_ratio" else target * torch.reciprocal(safe)
        mult = torch.where(ok, ratio, 1.0)
        mult = torch.where(torch.isinf(mult), _F32_MAX, mult)
        if cfg.pow2:
            mult = _pow2_down(mult)
        return 1.0 / mult, mult, nan_tile
    sf = torch.where(ok, amax / target, 1.0)
    if cfg.scale_op == "mul_inv":   # keep 1 / sf finite: a subnormal sf would make the multiplier Inf
        sf = torch.clamp(sf, min=_F32_TINY)
    if cfg.pow2:
        sf = _pow2_up(sf)
    return sf, 1.0 / sf, nan_tile


def _two_level_scales(t: torch.Tensor, finite: torch.Tensor, cfg: ScalingConfig
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NVFP4 (``scale_format="ue4m3"``), in float32: the tensor's encode scale ``S = 448 * 6 / amax`` (1 when the
    tensor has no finite non-zero value, FP32 max when it overflows), each tile's scale
    ``s = UE4M3(RNE, saturating)((amax_tile / 6) * S)``, the element multiplier ``S / s`` (0 for a zero scale) and
    the tensor's decode scale ``1 / S``: (s, multiplier, nan_tile, decode scale). Elements are then cast RNE with
    saturation as every recipe's; ``value * s * (1 / S)`` dequantises."""
    f = cfg.format
    amax = torch.where(finite, t.abs(), 0.0).amax(dim=(1, 3))
    nan_tile = ~finite.all(dim=(1, 3)) if cfg.nonfinite == "tile_nan" else torch.zeros_like(amax, dtype=torch.bool)
    tensor_amax = amax.amax() if amax.numel() else torch.zeros((), dtype=torch.float32)
    enc = torch.where(tensor_amax > 0, torch.tensor(NVFP4_TENSOR_TARGET, dtype=torch.float32) / tensor_amax, 1.0)
    enc = torch.clamp(enc, max=_F32_MAX)
    s = round_values((amax / f.max) * enc, get_format("ue4m3"), "rne", saturate=True).float()
    mult = torch.where(s > 0, enc / s, 0.0)
    return s, mult, nan_tile, 1.0 / enc


def _scaled(t: torch.Tensor, sf: torch.Tensor, mult: torch.Tensor, cfg: ScalingConfig) -> torch.Tensor:
    """The values that are cast, computed as ``cfg.scale_op`` says (float32). MX divides by a power of two:
    exact in float32 wherever the quotient is a normal float32; a quotient below 2^-126 rounds to zero
    in any element format whose smallest subnormal is >= 2^-125, so float32 serves those (every MX
    element format); other formats divide in float64, exactly."""
    if cfg.scale_format == "e8m0":
        f = cfg.format
        if f.emin - f.mbits >= -125:
            return t / sf[:, None, :, None]
        return t.double() / sf[:, None, :, None].double()
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
    else:
        core = compiled(_quantize_core) if backend == "compiled" else _quantize_core
        codes, sf, tensor_scale = core(x2, cfg, tile, delayed_mult)
        return QuantizedTensor(codes, sf, cfg, tuple(x.shape), float(tensor_scale))
    return QuantizedTensor(codes, sf, cfg, tuple(x.shape))


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
    core = compiled(_quantize_core) if backend == "compiled" else _quantize_core
    codes, sf, tensor_scale = core(x2, cfg, tile, delayed_mult)
    return QuantizedTensor(codes, sf, cfg, tuple(x.shape), float(tensor_scale)).dequantize()


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
    tile = _resolve_tile(cfg.tile, tuple(x2.shape))
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
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes (R, C), sf per tile, the tensor's decode scale: 1 but for NVFP4) of the float32 2-D ``x2``: scale
    choice, scaled values and the cast, with no data-dependent Python branches (so torch.compile can fuse it)."""
    fmt = cfg.format
    t = _tiles(x2, tile)
    finite = _finite(t)
    if cfg.scale_format == "ue4m3":
        sf, mult, nan_tile, tensor_scale = _two_level_scales(t, finite, cfg)
    else:
        sf, mult, nan_tile = _tile_scales(t, finite, cfg, delayed_mult)
        tensor_scale = torch.ones((), dtype=torch.float32)
    y = _scaled(t, sf, mult, cfg)
    # a NaN in y comes from a non-finite element (masked below); a scaled value that overflowed float32
    # (delayed scaling) saturates like any other value above the format's max
    codes = _cast_rne_saturated(torch.nan_to_num(y, nan=0.0, posinf=math.inf, neginf=-math.inf), fmt)
    # non-finite elements are cast unsaturated (NaN -> NaN, Inf -> Inf or NaN), or are code 0 in a format
    # without NaN (then nonfinite="tile_nan" is required and the tile's scale is NaN)
    if torch.compiler.is_compiling() or not bool(finite.all()):     # eager skips this when all is finite
        codes = torch.where(finite, codes, _nonfinite_codes(t, fmt) if fmt.has_nan else torch.zeros_like(codes))
    codes = codes.reshape(t.shape[0] * tile[0], t.shape[2] * tile[1])
    if tuple(codes.shape) != tuple(x2.shape):
        codes = codes[: x2.shape[0], : x2.shape[1]].contiguous()
    return codes, torch.where(nan_tile, torch.nan, sf), tensor_scale


def _cast_rne_saturated(y: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Codes of finite ``y``, RNE with saturation: torch's own cast of the clamped values where
    ``rounding.torch_cast_dtype`` says it gives ``encode``'s bits (an 8-bit format torch has, a float32 CPU
    tensor, outside torch.compile); otherwise the lab's encoder."""
    tdtype = torch_cast_dtype(y, fmt, "rne") if fmt.bits == 8 else None
    if tdtype is None:
        return encode_reference(y, fmt, "rne", True, None, 32)
    return torch.clamp(y, -fmt.max, fmt.max).to(tdtype).view(torch.uint8)


def _finite(t: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite(t)`` for a float tensor, as ``t - t == 0`` (NaN and +-Inf give NaN): the same mask,
    two vectorised ops (torch 2.13's CPU isfinite is ~40x slower than one multiply)."""
    return (t - t) == 0


def _nonfinite_codes(t: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The unsaturated RNE codes of +-NaN and +-Inf (from the encoder, four values), selected for each
    non-finite element of ``t``; finite elements get an arbitrary code (the caller masks them)."""
    special = torch.tensor([math.nan, -math.nan, math.inf, -math.inf], dtype=torch.float32, device=t.device)
    c = encode_reference(special, fmt, "rne", False, None, 32)
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
           ScalingConfig("e4m3fn", (-1, 1), scale_op="mul_ratio"), ScalingConfig("e4m3fn", (1, -1), scale_op="mul_ratio"),
           "row-wise current scaling, E4M3: one scale per token (activation row) and per output channel "
           "(weight column in the (K, N) layout)"),
    Recipe("mxfp8", _MX, replace(_MX, tile=(32, 1)), _MX,
           "OCP MX v1.0 MXFP8: E4M3 elements, 32-element blocks along the reduction dim, E8M0 scales "
           "(floor rule)"),
    Recipe("mxfp8_te", replace(_MX, mx_rule="rceil"), replace(_MX, tile=(32, 1), mx_rule="rceil"),
           replace(_MX, mx_rule="rceil"), "MXFP8 with Transformer Engine's RCEIL scale rounding"),
    Recipe("mxfp4", _MXFP4, replace(_MXFP4, tile=(32, 1)), _MXFP4,
           "OCP MX v1.0 MXFP4: E2M1 elements, 32-element blocks along the reduction dim, E8M0 scales (floor rule)"),
    Recipe("nvfp4", _NVFP4, replace(_NVFP4, tile=(16, 1)), _NVFP4,
           "NVFP4: E2M1 elements, 16-element blocks along the reduction dim with unsigned E4M3 scales, times one "
           "float32 scale per tensor (448 * 6 / amax), as Blackwell's kind::mxf4nvf4 consumes them"),
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
