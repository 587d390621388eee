"""lowprec.nn: the three quantised GEMMs of a linear layer against independently quantised operands.

Every expectation is computed here from ``lp.quantize_tensor`` / ``lp.quantize`` with the operand
orientation that the ``lowprec.nn`` module doc states (not from ``lowprec.nn``'s own helpers), and the
GEMM against the float64 product of those dequantised operands:

    |fl32(A @ B) - A @ B| <= gamma_K(2^-24) |A| |B|        gamma_K(u) = K u / (1 - K u)

(any summation order, with or without FMA: Higham, Accuracy and Stability, Thm 3.5). The float64
reference itself carries at most gamma_K(2^-53) |A| |B|, added to the bound.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

import lowprec as lp
import lowprec.nn as lnn
from lowprec.nn import (LinearState, QuantizedLinear, RoundedRecipe, ScaledRecipe, get_training_recipe,
                        list_training_recipes, quantized_linear)
from lowprec.scaling import AmaxHistory, Recipe, ScalingConfig

RECIPES = ["fp32", "bf16", "deepseek_v3", "te_delayed", "mxfp8", "e5m2_tensor"]
FP8_RECIPES = ["deepseek_v3", "te_delayed", "mxfp8", "e5m2_tensor"]
SHAPES = [(128, 256, 128), (130, 130, 200)]          # (T, in, out): whole tiles, and ragged tiles


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small GEMMs: one intra-op thread (on a shared 2-core machine, thread hand-offs dominate); restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


def f32_gemm_bound(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 A @ B, its float32-accumulation error bound) for float32 operands A (M x K), B (K x N)."""
    k = a.shape[1]
    exact = a.double() @ b.double()
    bound = (gamma(k, 2.0**-24) + gamma(k, 2.0**-53)) * (a.double().abs() @ b.double().abs())
    return exact, bound


def assert_gemm(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, what: str) -> torch.Tensor:
    assert out.dtype == torch.float32 and out.shape == (a.shape[0], b.shape[1]), what
    exact, bound = f32_gemm_bound(a, b)
    err = (out.double() - exact).abs()
    assert bool((err <= bound).all()), f"{what}: error {float((err - bound).max())} above the gamma_K bound"
    return bound


def transposed_tile(cfg: ScalingConfig) -> ScalingConfig:
    return dataclasses.replace(cfg, tile=(cfg.tile[1], cfg.tile[0]))


def reference_operands(recipe, x, w, dy, histories: dict[str, AmaxHistory] | None = None):
    """The dequantised (A, B) of Fprop, Dgrad and Wgrad as the module doc states them, computed with
    lp.quantize_tensor / lp.quantize directly. Delayed scaling: each tensor updates its role's history
    once (x and W in Fprop, dy in Dgrad); the other orientation uses the history as it was before."""
    if isinstance(recipe, RoundedRecipe):
        r = (lambda t: t.clone()) if recipe.fmt is None else (lambda t: lp.quantize(t.contiguous(), recipe.fmt))
        return {"fprop": (r(x), r(w.t())), "dgrad": (r(dy), r(w)), "wgrad": (r(dy.t()), r(x))}
    histories = {} if histories is None else histories
    before = copy.deepcopy(histories)
    s = recipe.scaling

    def deq(t, role, *, transpose=False, commit=False):
        cfg = s.config(role)
        cfg = transposed_tile(cfg) if transpose else cfg
        hist = None
        if cfg.amax_source == "delayed":
            hist = (histories.setdefault(role, AmaxHistory()) if commit
                    else copy.deepcopy(before.get(role, AmaxHistory())))
        return lp.quantize_tensor(t.contiguous(), cfg, history=hist, backend="eager").dequantize()

    return {"fprop": (deq(x, "activation", commit=True), deq(w.t(), "weight", commit=True)),
            "dgrad": (deq(dy, "grad", commit=True), deq(w, "weight")),
            "wgrad": (deq(dy.t(), "grad"), deq(x, "activation", transpose=True))}


def run_layer(recipe, x, w, dy, state=None):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    y = quantized_linear(x, w, recipe, state=state)
    y.backward(dy)
    return y.detach(), x.grad, w.grad


def test_training_recipes_listed():
    names = [r.name for r in list_training_recipes()]
    assert set(RECIPES) <= set(names)
    for n in names:
        assert get_training_recipe(n).name == n
        assert get_training_recipe(get_training_recipe(n)) is get_training_recipe(n)


# ---- 1. forward and the three GEMMs against independently quantised operands ------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", RECIPES)
def test_three_gemms_match_dequantised_operands(name, shape):
    T, n_in, n_out = shape
    recipe = get_training_recipe(name)
    state, hist = LinearState(), {}
    # two steps: with delayed scaling the second uses the history of the first (a non-trivial scale)
    for step, scale in enumerate((1.0, 3.0)):
        x, w = rand(T, n_in, seed=10 * step + 1, scale=scale), rand(n_out, n_in, seed=10 * step + 2, scale=0.1)
        dy = rand(T, n_out, seed=10 * step + 3, scale=1e-3)
        y, dx, dw = run_layer(recipe, x, w, dy, state)
        ref = reference_operands(recipe, x, w, dy, hist)
        bounds = {"fprop": assert_gemm(y, *ref["fprop"], f"{name} fprop step {step}"),
                  "dgrad": assert_gemm(dx, *ref["dgrad"], f"{name} dgrad step {step}"),
                  "wgrad": assert_gemm(dw, *ref["wgrad"], f"{name} wgrad step {step}")}
        unquantised = {"fprop": (y, x, w.t()), "dgrad": (dx, dy, w), "wgrad": (dw, dy.t(), x)}
        for gemm, (out, a, b) in unquantised.items():
            diff = (out.double() - a.double() @ b.double()).abs().max()
            if name == "fp32":       # no rounding of operands: the bound holds for the plain product too
                assert diff <= bounds[gemm].max()
            else:                   # the bound is tight enough to see the operand rounding
                factor = 10 if name in FP8_RECIPES else 2
                assert diff > factor * bounds[gemm].max(), f"{name} {gemm}: quantisation invisible?"
    if name == "fp32":
        assert torch.equal(y, x @ w.t())
    if name == "te_delayed":        # the second step really ran with a delayed (non-unit) scale
        assert set(state.histories) == {"activation", "weight", "grad"}
        assert all(len(h.amaxes) == 2 for h in state.histories.values())
        assert state.histories["activation"].scale != 1.0


def test_three_gemms_3d_input():
    """Leading dims are tokens: (B, S, in) gives the same bits as its (B*S, in) view."""
    x, w = rand(2, 65, 256, seed=1), rand(128, 256, seed=2, scale=0.1)
    dy = rand(2, 65, 128, seed=3)
    y3, dx3, dw3 = run_layer("deepseek_v3", x, w, dy)
    y2, dx2, dw2 = run_layer("deepseek_v3", x.reshape(130, 256), w, dy.reshape(130, 128))
    assert y3.shape == (2, 65, 128) and dx3.shape == x.shape
    assert torch.equal(y3.reshape(130, 128), y2) and torch.equal(dx3.reshape(130, 256), dx2)
    assert torch.equal(dw3, dw2)


# ---- tile orientation of every operand ---------------------------------------------------------------
def record_quantize_calls(monkeypatch, tensors: dict[str, torch.Tensor]) -> list[tuple]:
    """Intercept lowprec.nn's quantize_tensor and fake_quantize (its one-pass twin, used by the float32
    GEMMs): (operand name, shape, tile, fmt, number of scales per dim) per call."""
    calls: list[tuple] = []

    def record(t, cfg):
        names = [n for n, v in tensors.items() if v.shape == t.shape and torch.equal(v, t)]
        assert len(names) == 1, f"quantised a tensor that is none of the operands: {tuple(t.shape)}"
        tiles = tuple(math.ceil(n / (n if k == -1 else k)) for n, k in zip(t.shape, cfg.tile))
        calls.append((names[0], tuple(t.shape), cfg.tile, cfg.fmt, tiles))

    for fn_name in ("quantize_tensor", "fake_quantize"):
        real = getattr(lnn, fn_name)

        def spy(t, cfg, *args, _real=real, **kwargs):
            record(t, cfg)
            return _real(t, cfg, *args, **kwargs)

        monkeypatch.setattr(lnn, fn_name, spy)
    return calls


T, IN, OUT = 130, 256, 384          # distinct sizes: every shape names one operand


@pytest.mark.parametrize("name, expected", [
    ("deepseek_v3", [("x", (T, IN), (1, 128), "e4m3fn", (T, 2)),               # Fprop A: 1x128 along in
                     ("w^T", (IN, OUT), (128, 128), "e4m3fn", (2, 3)),         # Fprop B: 128x128 blocks
                     ("dy", (T, OUT), (1, 128), "e4m3fn", (T, 3)),             # Dgrad A: 1x128 along out
                     # Dgrad B: W reused (a 128x128 block is its own transpose): no call
                     ("dy^T", (OUT, T), (1, 128), "e4m3fn", (OUT, 2)),         # Wgrad A: 1x128 along tokens
                     ("x", (T, IN), (128, 1), "e4m3fn", (2, IN))]),            # Wgrad B: 128x1 along tokens
    ("mxfp8", [("x", (T, IN), (1, 32), "e4m3fn", (T, 8)),
               ("w^T", (IN, OUT), (32, 1), "e4m3fn", (8, OUT)),
               ("dy", (T, OUT), (1, 32), "e4m3fn", (T, 12)),
               ("w", (OUT, IN), (32, 1), "e4m3fn", (12, IN)),                  # Dgrad B: new, along out
               ("dy^T", (OUT, T), (1, 32), "e4m3fn", (OUT, 5)),
               ("x", (T, IN), (32, 1), "e4m3fn", (5, IN))]),
    ("te_delayed", [("x", (T, IN), (-1, -1), "e4m3fn", (1, 1)),               # per-tensor: once each
                    ("w^T", (IN, OUT), (-1, -1), "e4m3fn", (1, 1)),
                    ("dy", (T, OUT), (-1, -1), "e5m2", (1, 1))]),
    ("e5m2_tensor", [("x", (T, IN), (-1, -1), "e5m2", (1, 1)),
                     ("w^T", (IN, OUT), (-1, -1), "e5m2", (1, 1)),
                     ("dy", (T, OUT), (-1, -1), "e5m2", (1, 1))]),
    ("bf16", []),
    ("fp32", []),
])
def test_operand_tile_orientation(monkeypatch, name, expected):
    x, w, dy = rand(T, IN, seed=1), rand(OUT, IN, seed=2, scale=0.05), rand(T, OUT, seed=3)
    calls = record_quantize_calls(monkeypatch, {"x": x, "w": w, "w^T": w.t().contiguous(), "dy": dy,
                                                "dy^T": dy.t().contiguous()})
    state = LinearState()
    run_layer(name, x, w, dy, state)
    assert calls == expected
    if name == "te_delayed":         # each tensor seen once by its delayed history
        assert {r: len(h.amaxes) for r, h in state.histories.items()} == {"activation": 1, "weight": 1, "grad": 1}


def test_mxfp8_dgrad_weight_is_quantised_along_out():
    """MXFP8's 32x1 weight blocks are not their own transpose: Dgrad's W is quantised again, in 32-blocks
    along ``out`` (its K), and differs from the transpose of Fprop's W^T (blocks along ``in``)."""
    x, w, dy = rand(64, 96, seed=1), rand(64, 96, seed=2), rand(64, 64, seed=3)
    w[::7, ::5] *= 1000.0            # outliers: the block direction changes the dequantised values
    _, dx, _ = run_layer("mxfp8", x, w, dy)
    cfg = lp.get_recipe("mxfp8").weight
    assert cfg.tile == (32, 1)
    along_out = lp.quantize_tensor(w, cfg).dequantize()
    along_in = lp.quantize_tensor(w.t().contiguous(), cfg).dequantize().t()
    dyq = lp.quantize_tensor(dy, lp.get_recipe("mxfp8"), "grad").dequantize()
    assert not torch.equal(along_out, along_in)
    bound = assert_gemm(dx, dyq, along_out, "mxfp8 dgrad")
    wrong = (dx.double() - dyq.double() @ along_in.double()).abs()
    assert bool((wrong > bound).any())


# ---- 2. the straight-through estimator ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["deepseek_v3", "mxfp8", "e5m2_tensor"])
def test_ste_gradient_is_the_gemm_of_quantised_operands(name):
    """The quantiser is the identity in the backward pass: for loss = sum(y), dy = 1 (exact in every
    format and scaling), so dx = 1 @ W_dgrad = column sums of the Dgrad weight operand and dW = 1^T @ x_wgrad
    = column sums of Wgrad's x operand -- not zero (the derivative of rounding) and not the unquantised sums."""
    recipe = get_training_recipe(name)
    x = rand(64, 128, seed=4).requires_grad_(True)
    w = rand(32, 128, seed=5, scale=0.1).requires_grad_(True)
    quantized_linear(x, w, recipe).sum().backward()
    ref = reference_operands(recipe, x.detach(), w.detach(), torch.ones(64, 32))
    assert torch.equal(ref["dgrad"][0], torch.ones(64, 32)) and torch.equal(ref["wgrad"][0], torch.ones(32, 64))
    # float64 autograd through the dequantised operands (quantisation as identity)
    wq = ref["dgrad"][1].double().requires_grad_(True)          # (out, in)
    xq = ref["wgrad"][1].double().requires_grad_(True)          # (T, in)
    xa = x.detach().double().requires_grad_(True)
    wa = w.detach().double().requires_grad_(True)
    (xa @ wq.t()).sum().backward()
    (xq @ wa.t()).sum().backward()
    assert_gemm(x.grad, torch.ones(64, 32), ref["dgrad"][1], f"{name} STE dx")
    assert_gemm(w.grad, torch.ones(32, 64), ref["wgrad"][1], f"{name} STE dW")
    _, bdx = f32_gemm_bound(torch.ones(64, 32), ref["dgrad"][1])
    assert bool(((x.grad.double() - xa.grad).abs() <= bdx).all())
    _, bdw = f32_gemm_bound(torch.ones(32, 64), ref["wgrad"][1])
    assert bool(((w.grad.double() - wa.grad).abs() <= bdw).all())
    assert float((x.grad != 0).float().mean()) > 0.9 and float((w.grad != 0).float().mean()) > 0.9
    unq_dx = w.detach().double().sum(0).expand(64, -1)
    assert (x.grad.double() - unq_dx).abs().max() > 10 * bdx.max()


# ---- 3. the bf16 recipe against torch's BF16 matmul ------------------------------------------------
def bf16_ulp(v: torch.Tensor) -> torch.Tensor:
    """The BF16 ulp at |v| (float64; 8 significant bits, subnormal spacing 2^-133)."""
    a = v.double().abs()
    e = torch.floor(torch.log2(torch.where(a > 0, a, 1.0)))
    return torch.exp2(torch.clamp(e, min=-126) - 7)


@pytest.mark.parametrize("shape", [(4, 8, 3), (16, 64, 16), (33, 130, 17), (64, 256, 64)])
def test_bf16_recipe_vs_torch_bf16_matmul(shape):
    """Ours: a float32 product of BF16-rounded operands (float32 out). torch.matmul on bfloat16 tensors
    sums the same products in float32 but in its own order (blocked kernels) and rounds its OUTPUT to
    BF16, so after rounding ours to BF16 the two agree to within 1 BF16 ulp (a float32 sum that lies
    near a BF16 rounding boundary can round either way), not bit for bit."""
    M, K, N = shape
    a, w = rand(M, K, seed=K), rand(N, K, seed=K + 1)
    ours = quantized_linear(a, w, "bf16")
    theirs = torch.matmul(a.bfloat16(), w.t().bfloat16())
    assert theirs.dtype == torch.bfloat16
    mine = ours.bfloat16()
    diff = (mine.double() - theirs.double()).abs()
    ulp = bf16_ulp(torch.maximum(mine.double().abs(), theirs.double().abs()))
    assert bool((diff <= ulp).all())
    # and ours is the float32 accumulation of the BF16-rounded operands
    ab, bb = lp.quantize(a, "bf16"), lp.quantize(w.t().contiguous(), "bf16")
    assert_gemm(ours, ab, bb, "bf16 fprop")


def wide_float32_sample(n: int = 1 << 16) -> torch.Tensor:
    """Random float32 bit patterns (every exponent: zeros, subnormals, normals, Inf, NaN) plus edge cases."""
    g = torch.Generator().manual_seed(7)
    bits = torch.randint(-(1 << 31), 1 << 31, (n,), generator=g, dtype=torch.int64).to(torch.int32)
    edges = torch.tensor([0.0, -0.0, 2.0**-133, 2.0**-134, 3 * 2.0**-134, 2.0**-149, 2.0**-126,
                          3.4028234663852886e38, 3.3895313892515355e38, 3.3961775292304126e38,
                          3.3961773e38, float("inf"), -float("inf"), float("nan"), 1.0 + 2.0**-8,
                          1.0 + 3 * 2.0**-8, -(1.0 + 2.0**-8 + 2.0**-20)], dtype=torch.float32)
    return torch.cat([bits.view(torch.float32), edges, -edges])


def test_bf16_operand_rounding_is_lowprec_quantize():
    """nn's bf16 operand rounding (torch's cast) is the eager encoder's bit for bit, NaN payloads aside (on the
    layer's operand quantiser), and on the public path: a (n, 1) x (1, 1) GEMM with W = 1 returns the
    rounded x (one product by 1) -- except that a GEMM's float32 sum starts at +0, so -0 comes out +0."""
    x = wide_float32_sample()
    ref = lp.quantize(x, "bf16", backend="eager")
    assert ref.dtype == torch.float32
    nan = torch.isnan(ref)
    assert int(nan.sum()) > 0 and bool(torch.isinf(ref).any()) and bool(((ref != 0) & (ref.abs() < 2.0**-126)).any())
    assert bool(torch.isinf(ref[x.abs() == 3.4028234663852886e38]).all())          # overflow: RNE to Inf
    ops = lnn._Operands(get_training_recipe("bf16"), LinearState(), "auto")
    for gemm in ("fprop", "dgrad"):
        got = ops.quantize(x, gemm, 0)
        assert torch.equal(torch.isnan(got), nan)
        assert torch.equal(got[~nan].view(torch.int32), ref[~nan].view(torch.int32))
    got = ops.quantize(x[:, None], "fprop", 1)[:, 0]
    assert torch.equal(got[~nan].view(torch.int32), ref[~nan].view(torch.int32))
    y = quantized_linear(x[:, None], torch.ones(1, 1), "bf16")[:, 0]
    assert torch.equal(torch.isnan(y), nan)
    nz = ~nan & (ref != 0)
    assert torch.equal(y[nz].view(torch.int32), ref[nz].view(torch.int32))
    assert bool((y[ref == 0] == 0).all())


# ---- 4. the bit-faithful accumulator path -------------------------------------------------------------
def test_accumulator_model_path_is_scaled_matmul():
    base = get_training_recipe("deepseek_v3")
    recipe = dataclasses.replace(base, name="deepseek_v3_hopper", accumulator="hopper_fp8_promoted")
    s = base.scaling
    x, w, dy = rand(4, 256, seed=1), rand(8, 256, seed=2, scale=0.1), rand(4, 8, seed=3)
    y, dx, _ = run_layer(recipe, x, w, dy)
    qx, qwt = lp.quantize_tensor(x, s, "activation"), lp.quantize_tensor(w.t().contiguous(), s, "weight")
    expected = lp.scaled_matmul(qx, qwt, accumulator="hopper_fp8_promoted")
    assert torch.equal(y, expected)
    expected_dx = lp.scaled_matmul(lp.quantize_tensor(dy, s, "grad"), lp.quantize_tensor(w, s, "weight"),
                                   accumulator="hopper_fp8_promoted", allow_mixed=True)
    assert torch.equal(dx, expected_dx)
    # the model's truncations make it differ from the float32 path (so bit equality above means something)
    assert not torch.equal(y, qx.dequantize() @ qwt.dequantize())


# ---- 5. bad input ---------------------------------------------------------------------------------------
def test_unknown_recipe_refused_before_any_work(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("quantize_tensor called for an unknown recipe")

    monkeypatch.setattr(lnn, "quantize_tensor", boom)
    seen = []

    class Obs:
        def observe(self, layer, tensors):
            seen.append(layer)

    with pytest.raises(ValueError, match="unknown training recipe 'nope'"):
        quantized_linear(torch.ones(2, 4), torch.ones(3, 4), "nope", observer=Obs())
    with pytest.raises(ValueError, match="unknown training recipe"):
        QuantizedLinear(4, 3, "nope")
    with pytest.raises(ValueError, match="unknown training recipe"):
        get_training_recipe("deepseek")
    assert seen == []


def test_bad_tensors_refused():
    x, w = torch.ones(2, 4), torch.ones(3, 4)
    with pytest.raises(TypeError):
        quantized_linear(x.double(), w, "bf16")
    with pytest.raises(TypeError):
        quantized_linear(x, w.half(), "deepseek_v3")
    with pytest.raises(TypeError):
        quantized_linear([[1.0] * 4], w, "fp32")
    with pytest.raises(ValueError, match="features"):
        quantized_linear(torch.ones(2, 5), w, "fp32")
    with pytest.raises(ValueError):
        quantized_linear(x, torch.ones(3, 4, 1), "fp32")


def test_bad_recipes_refused():
    delayed = ScalingConfig("e4m3fn", (-1, -1), amax_source="delayed", scale_op="mul_ratio")
    tiled = dataclasses.replace(delayed, tile=(1, 128))
    with pytest.raises(ValueError, match="delayed"):
        ScaledRecipe("bad", Recipe("bad", tiled, delayed, delayed))       # activation tile 1x128
    with pytest.raises(ValueError, match="delayed"):
        ScaledRecipe("bad", Recipe("bad", delayed, delayed, tiled))       # grad tile 1x128
    ScaledRecipe("ok", Recipe("ok", delayed, delayed, delayed))           # per-tensor: accepted
    with pytest.raises(TypeError):
        ScaledRecipe("bad", "deepseek_v3")
    with pytest.raises(ValueError):
        ScaledRecipe("bad", lp.get_recipe("deepseek_v3"), accumulator="no_such_model")
    with pytest.raises(ValueError):
        RoundedRecipe("bad", None, accumulator="hopper_fp8")
    with pytest.raises(ValueError):
        RoundedRecipe("bad", "no_such_format")


def test_delayed_weight_with_asymmetric_tile_refused():
    delayed = ScalingConfig("e4m3fn", (-1, -1), amax_source="delayed", scale_op="mul_ratio")
    rows = dataclasses.replace(delayed, tile=(1, -1))
    with pytest.raises(ValueError, match="delayed"):
        ScaledRecipe("bad", Recipe("bad", delayed, rows, delayed))


# ---- 6. eval mode leaves delayed-scaling state alone ------------------------------------------------
def test_eval_does_not_update_delayed_state():
    torch.manual_seed(0)
    layer = QuantizedLinear(64, 32, "te_delayed")
    x = rand(16, 64, seed=1)
    layer(x).sum().backward()                  # one training step: histories exist, scale still 1
    layer(x * 4).sum().backward()              # second: scale from the first step's amax
    before = copy.deepcopy(layer.state.state_dict())
    assert {r: len(h["amaxes"]) for r, h in before.items()} == {"activation": 2, "weight": 2, "grad": 2}
    layer.eval()
    with torch.no_grad():
        y1 = layer(x * 100)
        y2 = layer(x * 100)
    assert layer.state.state_dict() == before
    assert torch.equal(y1, y2)                 # same (current) scales both times
    # eval quantises with the current delayed scale: the expected result from the history as it stands
    h_act = AmaxHistory(**copy.deepcopy(before["activation"]))
    h_w = AmaxHistory(**copy.deepcopy(before["weight"]))
    s = get_training_recipe("te_delayed").scaling
    xq = lp.quantize_tensor(x * 100, s, "activation", history=h_act).dequantize()
    wq = lp.quantize_tensor(layer.weight.detach().t().contiguous(), s, "weight", history=h_w).dequantize()
    assert_gemm(y1, xq, wq, "te_delayed eval")
    layer.train()
    layer(x)
    assert layer.state.state_dict() != before  # training mode does update (the check above can fail)


# ---- observers see the high-precision operands -------------------------------------------------------
def test_observer_sees_unquantised_operands():
    seen: list[tuple[str, dict]] = []

    class Obs:
        def observe(self, layer, tensors):
            seen.append((layer, {k: v.clone() for k, v in tensors.items()}))

    x, w, dy = rand(8, 128, seed=1), rand(16, 128, seed=2), rand(8, 16, seed=3)
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    quantized_linear(xr, wr, "deepseek_v3", observer=Obs(), name="l0").backward(dy)
    assert [(n, sorted(t)) for n, t in seen] == [("l0", ["w", "x"]), ("l0", ["dy"])]
    assert torch.equal(seen[0][1]["x"], x) and torch.equal(seen[0][1]["w"], w)
    assert torch.equal(seen[1][1]["dy"], dy)


@pytest.mark.parametrize("recipe", ["nvfp4", "torchao_tensorwise", "deepseek_v3"])
def test_transpose_keeps_every_part_of_the_quantisation(recipe):
    """The transpose dequantises to the transpose, bit for bit: NVFP4's tensor scale and the encode multipliers of
    a dividing recipe travel with the codes and tile scales."""
    x = torch.randn(64, 96, generator=torch.Generator().manual_seed(3)) * 5
    q = lp.quantize_tensor(x, recipe, "weight")
    t = lnn.transpose_quantized(q)
    assert t.tensor_scale == q.tensor_scale
    assert torch.equal(t.dequantize().view(torch.int32), q.dequantize().t().contiguous().view(torch.int32))
