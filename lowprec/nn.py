"""Quantised linear layers: the three GEMMs of ``y = x W^T`` with quantised operands, for training.

Numerical contract
------------------
A linear layer with input ``x`` (T tokens x ``in``) and weight ``W`` (``out`` x ``in``) runs three GEMMs,
each written ``A (M x K) @ B (K x N)``; every operand is quantised along that GEMM's reduction dim K:

========  =====================  =========================  ===========  ==================================
GEMM      A (M x K)              B (K x N)                  K            result
========  =====================  =========================  ===========  ==================================
Fprop     ``x``, activation      ``W^T``, weight            ``in``       ``y``
Dgrad     ``dy``, grad           ``W``, weight              ``out``      ``dx`` (gradient of the input)
Wgrad     ``dy^T``, grad         ``x``, activation          tokens       ``dW`` (gradient of the weight)
========  =====================  =========================  ===========  ==================================

* Tiles. A recipe's activation and grad configs are written for an A operand (K last: DeepSeek-V3's
  1x128 tiles are 1 token x 128 channels) and its weight config for a B operand (K first: 128x128
  blocks). An A operand uses its role's tile as written; the weight (B in Fprop and Dgrad) uses the
  weight tile as written; the activation as the B operand of Wgrad uses its tile TRANSPOSED, so that
  tiles still run along K: DeepSeek-V3's ``x`` for Wgrad has 128x1 tiles (128 tokens x 1 channel), and
  ``dy^T`` for Wgrad has 1x128 tiles along the tokens. Where a tile equals its transpose (per-tensor,
  128x128 blocks) the transposed operand is the transpose of the same quantisation (same codes, same
  scales), so ``W`` is quantised once per step and delayed-scaling histories see each tensor once.
* GEMM. ``accumulator="float32"``: a float32 matmul of the dequantised operands (each element
  ``value(code) * scale`` rounded once to float32), what FP32 promotion approximates (fast). Any
  accumulator preset name: the bit-faithful block-scaled GEMM, ``scaled_matmul(A_q, B_q, accumulator=...)``
  (for replay and short runs; slow).
* Rounded recipes: ``fp32`` (operands as they are) and ``bf16`` (operands rounded RNE to BF16, products
  accumulated in float32: on CPU a float32 matmul of BF16-rounded operands; torch's own BF16 matmul
  differs only in the order of the float32 sum and in rounding its output to BF16).
* Straight-through estimator: quantisation counts as the identity in the backward pass; ``dx`` is the
  Dgrad result and ``dW`` the Wgrad result, each from quantised operands. Master weights stay float32.

Observers (the trace recorder of ``lowprec.training``) see each layer's high-precision operands
``x``, ``W`` and ``dy`` (before quantisation) through the ``GemmObserver`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from .accum import emulated_matmul, get_accumulator
from .formats import get_format
from .rounding import quantize
from .gemm import scaled_matmul
from .scaling import AmaxHistory, QuantizedTensor, Recipe, ScalingConfig, fake_quantize, get_recipe, quantize_tensor

FLOAT32 = "float32"


@dataclass(frozen=True)
class RoundedRecipe:
    """Operands rounded element-wise (RNE), no scales: ``fmt=None`` keeps float32 (the ``fp32`` recipe)."""

    name: str
    fmt: str | None
    accumulator: str = FLOAT32
    description: str = ""

    def __post_init__(self) -> None:
        if self.fmt is not None:
            get_format(self.fmt)
        _check_accumulator(self.accumulator)
        if self.fmt is None and self.accumulator != FLOAT32:
            raise ValueError("the fp32 recipe (fmt=None) runs float32 matmuls; an accumulator model needs a fmt")


@dataclass(frozen=True)
class ScaledRecipe:
    """Operands quantised by a ``lowprec.scaling.Recipe`` (per role), GEMM by ``accumulator``."""

    name: str
    scaling: Recipe
    accumulator: str = FLOAT32
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.scaling, Recipe):
            raise TypeError(f"scaling must be a lowprec Recipe, got {type(self.scaling).__name__}")
        _check_accumulator(self.accumulator)
        for role in ("activation", "weight", "grad"):
            cfg = self.scaling.config(role)
            if cfg.amax_source == "delayed" and _transposed(cfg.tile) != cfg.tile:
                raise ValueError(f"recipe {self.name}: delayed scaling of the {role} needs a tile equal to its "
                                 f"transpose (per-tensor), got {cfg.tile}: each tensor must be scaled once a step")


TrainingRecipe = RoundedRecipe | ScaledRecipe


def _transposed(tile: tuple[int, int]) -> tuple[int, int]:
    return tile[1], tile[0]


def _check_accumulator(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"accumulator must be a name, got {type(name).__name__}")
    if name != FLOAT32:
        get_accumulator(name)


_E5M2_TENSOR = ScalingConfig("e5m2", (-1, -1), scale_op="mul_ratio")


def _by_name(*recipes: TrainingRecipe) -> dict[str, TrainingRecipe]:
    return {r.name: r for r in recipes}


_TRAINING_RECIPES = _by_name(
    RoundedRecipe("fp32", None, description="float32 operands and accumulation (no rounding)"),
    RoundedRecipe("bf16", "bf16", description="the baseline: operands rounded to BF16, float32 accumulation"),
    ScaledRecipe("deepseek_v3", get_recipe("deepseek_v3"),
                 description="DeepSeek-V3: E4M3, 1x128 activation/gradient tiles, 128x128 weight blocks, "
                             "FP32-promoted accumulation approximated by a float32 matmul"),
    ScaledRecipe("te_delayed", get_recipe("te_delayed"),
                 description="Transformer Engine delayed scaling: per-tensor, amax history, E4M3 forward, "
                             "E5M2 gradients"),
    ScaledRecipe("mxfp8", get_recipe("mxfp8"),
                 description="OCP MXFP8: E4M3 elements, 32-element blocks along K, E8M0 scales"),
    ScaledRecipe("e5m2_tensor", Recipe("e5m2_tensor", _E5M2_TENSOR, _E5M2_TENSOR, _E5M2_TENSOR),
                 description="deliberately coarse: E5M2 (2 mantissa bits) everywhere, one scale per tensor"),
)


def list_training_recipes() -> list[TrainingRecipe]:
    return list(_TRAINING_RECIPES.values())


def get_training_recipe(name: TrainingRecipe | str) -> TrainingRecipe:
    """A training recipe by name, or the recipe itself."""
    if isinstance(name, RoundedRecipe | ScaledRecipe):
        return name
    if name not in _TRAINING_RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; known: {', '.join(_TRAINING_RECIPES)}")
    return _TRAINING_RECIPES[name]


class GemmObserver(Protocol):
    """Receives a linear layer's high-precision operands: ``x`` and ``w`` after Fprop, ``dy`` in the backward."""

    def observe(self, layer: str, tensors: dict[str, torch.Tensor]) -> None: ...


GEMM_ROLES = {"fprop": ("activation", "weight"), "dgrad": ("grad", "weight"), "wgrad": ("grad", "activation")}


def operand_configs(scaling: Recipe, gemm: str) -> tuple[ScalingConfig, ScalingConfig]:
    """The configs that quantise A (M x K) and B (K x N) of ``gemm`` (fprop, dgrad, wgrad) under ``scaling``,
    tiles along K as the module doc's table says (the activation as Wgrad's B: its tile transposed)."""
    if gemm not in GEMM_ROLES:
        raise ValueError(f"unknown GEMM {gemm!r}; expected one of {tuple(GEMM_ROLES)}")
    role_a, role_b = GEMM_ROLES[gemm]
    cfg_b = scaling.config(role_b)
    if role_b == "activation":
        cfg_b = replace(cfg_b, tile=_transposed(cfg_b.tile))
    return scaling.config(role_a), cfg_b


def transpose_quantized(q: QuantizedTensor) -> QuantizedTensor:
    """The transpose of a 2-D quantised tensor: codes, scales and tile transposed (the same quantisation)."""
    if len(q.shape) != 2:
        raise ValueError(f"transpose_quantized needs a 2-D tensor, got shape {q.shape}")
    return QuantizedTensor(q.codes.t().contiguous(), q.scales.t().contiguous(),
                           replace(q.config, tile=_transposed(q.config.tile)), (q.shape[1], q.shape[0]),
                           q.tensor_scale, None if q.multipliers is None else q.multipliers.t().contiguous())


class LinearState:
    """Per-layer quantisation state: one ``AmaxHistory`` per role for delayed scaling (saved in checkpoints)."""

    def __init__(self) -> None:
        self.histories: dict[str, AmaxHistory] = {}

    def history(self, role: str, cfg: ScalingConfig) -> AmaxHistory | None:
        if cfg.amax_source != "delayed":
            return None
        return self.histories.setdefault(role, AmaxHistory())

    def copy(self) -> "LinearState":
        """An independent copy (evaluation quantises with the current scales without updating them)."""
        other = LinearState()
        other.load_state_dict(self.state_dict())
        return other

    def state_dict(self) -> dict[str, Any]:
        return {role: {"length": h.length, "reduction": h.reduction, "amaxes": list(h.amaxes), "scale": h.scale}
                for role, h in self.histories.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.histories = {role: AmaxHistory(s["length"], s["reduction"], list(s["amaxes"]), s["scale"])
                          for role, s in state.items()}


class _Operands:
    """Quantises the operands of one layer's three GEMMs with the configs of ``operand_configs``; returns what
    the GEMM consumes (a float32 tensor for float32 matmuls, a ``QuantizedTensor`` for accumulator models)."""

    def __init__(self, recipe: TrainingRecipe, state: LinearState, backend: str) -> None:
        self.recipe, self.state, self.backend = recipe, state, backend

    def quantize(self, t: torch.Tensor, gemm: str, side: int) -> Any:
        """Operand ``side`` (0: A, 1: B) of ``gemm``, quantised along that GEMM's K."""
        r = self.recipe
        if isinstance(r, RoundedRecipe):
            if r.fmt == "bf16":    # the baseline's hot path: torch's RNE cast alone, no overflow/NaN scan (the same
                return t.to(torch.bfloat16).to(torch.float32)   # bits as the encoder, NaN payloads aside: test_nn)
            return t if r.fmt is None else quantize(t, r.fmt, out_dtype=torch.float32)
        cfg = operand_configs(r.scaling, gemm)[side]
        history = self.state.history(GEMM_ROLES[gemm][side], cfg)
        if r.accumulator == FLOAT32:                  # only the dequantised values are needed: one fused pass
            return fake_quantize(t, cfg, history=history, backend=self.backend)
        return quantize_tensor(t, cfg, history=history, backend=self.backend)

    def symmetric(self, role: str) -> bool:
        """Whether ``role``'s quantisation of a transposed tensor is the transpose of its quantisation (a
        tile equal to its own transpose, or no scales at all): then one quantisation serves both GEMMs."""
        if isinstance(self.recipe, RoundedRecipe):
            return True
        tile = self.recipe.scaling.config(role).tile
        return _transposed(tile) == tile

    def transposed(self, q: Any) -> Any:
        """The transpose of what ``quantize`` returned."""
        return transpose_quantized(q) if isinstance(q, QuantizedTensor) else q.t()

    def gemm(self, a: Any, b: Any) -> torch.Tensor:
        """``A @ B`` for what ``quantize`` returned: float32 matmul, or the model's bit-faithful GEMM."""
        r = self.recipe
        if r.accumulator == FLOAT32:
            return a @ b
        if isinstance(r, ScaledRecipe):
            return scaled_matmul(a, b, accumulator=r.accumulator, allow_mixed=True)
        return emulated_matmul(a, b, r.accumulator, check_inputs=False)


class _QuantizedLinearFn(torch.autograd.Function):
    """The three GEMMs with a straight-through estimator (see the module doc)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, ops: _Operands, observer: GemmObserver | None,
                name: str) -> torch.Tensor:
        xa = ops.quantize(x, "fprop", 0)
        wq = ops.quantize(w.t(), "fprop", 1)
        ctx.save_for_backward(x, w)
        ctx.ops, ctx.observer, ctx.name, ctx.xa, ctx.wq = ops, observer, name, xa, wq
        if observer is not None:
            observer.observe(name, {"x": x.detach(), "w": w.detach()})
        return ops.gemm(xa, wq)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        ops: _Operands = ctx.ops
        dy = dy.contiguous()
        if ctx.observer is not None:
            ctx.observer.observe(ctx.name, {"dy": dy.detach()})
        dyq = ops.quantize(dy, "dgrad", 0)              # quantised once: a delayed history sees dy once
        dx = dw = None
        if ctx.needs_input_grad[0]:
            w_kn = ops.transposed(ctx.wq) if ops.symmetric("weight") else ops.quantize(w, "dgrad", 1)
            dx = ops.gemm(dyq, w_kn)
        if ctx.needs_input_grad[1]:
            dy_t = ops.transposed(dyq) if ops.symmetric("grad") else ops.quantize(dy.t().contiguous(), "wgrad", 0)
            x_b = ctx.xa if ops.symmetric("activation") else ops.quantize(x, "wgrad", 1)
            dw = ops.gemm(dy_t, x_b)
        ctx.xa = ctx.wq = None
        return dx, dw, None, None, None


def quantized_linear(x: torch.Tensor, weight: torch.Tensor, recipe: TrainingRecipe | str, *,
                     state: LinearState | None = None, backend: str = "auto", observer: GemmObserver | None = None,
                     name: str = "linear") -> torch.Tensor:
    """``x @ weight^T`` (``x``: (..., in), ``weight``: (out, in)) with the recipe's three quantised GEMMs.

    ``backend`` is the scaling backend (``"auto"``: native where it covers the config, else eager; the
    same bits). ``state`` carries delayed-scaling histories between calls.
    """
    recipe = get_training_recipe(recipe)
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("quantized_linear needs torch tensors for x and weight")
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features but weight is {tuple(weight.shape)} (out, in)")
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise TypeError(f"quantized_linear runs on float32 tensors (master weights), got {x.dtype} and {weight.dtype}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    ops = _Operands(recipe, state if state is not None else LinearState(), backend)
    y = _QuantizedLinearFn.apply(x2, weight, ops, observer, name)
    return y.reshape(*lead, weight.shape[0])


class QuantizedLinear(torch.nn.Module):
    """A bias-free linear layer (float32 master weight) whose GEMMs follow a training recipe."""

    def __init__(self, in_features: int, out_features: int, recipe: TrainingRecipe | str = "fp32", *,
                 backend: str = "auto", name: str = "linear") -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        torch.nn.init.normal_(self.weight, std=in_features ** -0.5)
        self.recipe = get_training_recipe(recipe)
        self.backend, self.name = backend, name
        self.state = LinearState()
        self.observer: GemmObserver | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.state if self.training else self.state.copy()
        return quantized_linear(x, self.weight, self.recipe, state=state, backend=self.backend,
                                observer=self.observer, name=self.name)

    def get_extra_state(self) -> dict[str, Any]:
        return self.state.state_dict()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.state.load_state_dict(state)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, recipe={self.recipe.name}"
