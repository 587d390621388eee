"""The GEMM of quantised tensors: ``scaled_matmul(a_q, b_q, accumulator=...)``, above scaling (``QuantizedTensor``)
and accumulation (``AccumulatorModel``).

Numerical contract. ``a_q`` is (M, K) and ``b_q`` (K, N); their codes decode to element values, their scales are
dequantisation scales (``lowprec.scaling``). The scales meet the products in one of two places:

* outside the matrix unit, per K block (fine-grained FP8 on Hopper: DeepSeek-V3, DeepGEMM). K is cut into blocks of
  the K tile (the tile both operands share along K, or the one that does not span all of K); per block,
  ``partial = values(a_blk) @ values(b_blk)`` accumulated by ``accumulator``, then
  ``out = fma_fp32(float32(scale_a * scale_b), partial, out)``, rounded once to float32 (nearest even):
  - ``"float64"``: the exact partial, the outer sum kept exact in float64, nothing rounded before ``out_dtype`` (the
    reference; not the ``"exact"`` accumulator preset, which rounds to float32 once per dot product);
  - ``"fp32"``: the exact partial rounded once to float32;
  - an ``AccumulatorModel`` or preset name without block scales: the partial as the model computes it, bit for bit
    (``lowprec.accum.emulated_scaled_matmul``: the same loop, native where it covers the model);
* inside the unit (block-scaled MMA: Blackwell ``kind::mxf8f6f4`` and ``kind::mxf4nvf4``): a model with
  ``block_scale`` takes the operands' scales into its fused step (``emulated_matmul(..., a_scales, b_scales)``), one
  call over all of K. The operands must be scaled as the model says: ``a_q`` in tiles (1, block) and ``b_q`` in
  (block, 1) along K, with scales of the model's scale format (``mxfp8``/``mxfp4`` for E8M0, ``nvfp4`` for UE4M3).

NVFP4's per-tensor scales meet the result in the epilogue, as on Blackwell: ``out = float32(alpha * acc)`` with
``alpha = float32(tensor_scale_a * tensor_scale_b)`` (exact in float64 for ``"float64"``).

A model's ``input_formats`` are set to the operands' element formats (an E5M2 operand is split as E5M2, as the
hardware decodes it).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .accum import AccumulatorModel, emulated_matmul, emulated_scaled_matmul, get_accumulator
from .rounding import BACKENDS, add_round_to_odd
from .scaling import QuantizedTensor

GEMM_ACCUMULATORS = ("float64", "fp32")   # besides AccumulatorModels and preset names


def k_block(a_q: QuantizedTensor, b_q: QuantizedTensor, K: int) -> int:
    """The K block of a per-block scaled GEMM: the K tile the operands share, or the one that does not span K."""
    ka, kb = a_q.tile[1], b_q.tile[0]
    if ka == kb or kb >= K:
        return min(ka, K)
    if ka >= K:
        return min(kb, K)
    raise ValueError(f"a's K tile ({ka}) and b's K tile ({kb}) differ; one must match the other or span all of K")


def block_scales(a_q: QuantizedTensor, b_q: QuantizedTensor, kb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The scales of each K block of ``kb`` as (M, nb) for ``a_q`` and (nb, N) for ``b_q`` (nb = ceil(K / kb)): the
    scale of the tile holding the block's first element (every tile along K spans whole blocks, ``k_block``)."""
    (M, K), N = a_q.codes.shape, b_q.codes.shape[1]
    first = torch.arange(0, K, kb, device=a_q.scales.device)
    sa = a_q.scales.repeat_interleave(a_q.tile[0], dim=0)[:M][:, first // a_q.tile[1]]
    sb = b_q.scales.repeat_interleave(b_q.tile[1], dim=1)[:, :N][first // b_q.tile[0]]
    return sa, sb


def _check_block_scaled_operands(a_q: QuantizedTensor, b_q: QuantizedTensor, model: AccumulatorModel) -> None:
    bs = model.block_scale
    assert bs is not None
    if a_q.config.scale_format != bs.scale_format or b_q.config.scale_format != bs.scale_format:
        recipe = "nvfp4" if bs.scale_format == "ue4m3" else "an MX recipe, e.g. 'mxfp8' or 'mxfp4'"
        raise ValueError(f"model {model.name} takes {bs.scale_format} scales inside the unit; a_q has "
                         f"{a_q.config.scale_format} and b_q {b_q.config.scale_format} scales (quantise both with "
                         f"{recipe}, block {bs.block})")
    if a_q.tile[0] != 1 or a_q.tile[1] != bs.block or b_q.tile[0] != bs.block or b_q.tile[1] != 1:
        raise ValueError(f"model {model.name} scales every {bs.block} elements of K: a_q needs tile (1, {bs.block}) "
                         f"and b_q ({bs.block}, 1), got {a_q.tile} and {b_q.tile}")


def scaled_matmul(a_q: QuantizedTensor, b_q: QuantizedTensor, out_dtype: torch.dtype = torch.float32, *,
                  accumulator: AccumulatorModel | str = "fp32", allow_mixed: bool = False,
                  backend: str = "auto") -> torch.Tensor:
    """``dequant(a) @ dequant(b)`` the way block-scaled FP8/MX GEMMs compute it (module doc), as ``out_dtype``.

    ``accumulator``: ``"float64"``, ``"fp32"``, or an ``AccumulatorModel``/preset name (emulated bit for bit).
    ``allow_mixed`` allows operands of different element formats. ``backend`` runs the accumulator model
    (``"auto"``: native where it covers the model, else eager; ``"eager"``, ``"compiled"``, ``"native"``: the
    same bits).
    """
    for q, nm in ((a_q, "a_q"), (b_q, "b_q")):
        if not isinstance(q, QuantizedTensor) or q.codes.dim() != 2 or len(q.shape) != 2:
            raise TypeError(f"{nm} must be a 2-D QuantizedTensor")
    (M, K), (K2, N) = a_q.codes.shape, b_q.codes.shape
    if K != K2:
        raise ValueError(f"shape mismatch: a is {(M, K)}, b is {(K2, N)}")
    if a_q.fmt != b_q.fmt and not allow_mixed:
        raise ValueError(f"a is {a_q.fmt.name} but b is {b_q.fmt.name}; pass allow_mixed=True to mix formats")
    if a_q.config.scale_format != b_q.config.scale_format:
        raise ValueError("a and b use different scale formats (e8m0 vs fp32)")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    model = None if isinstance(accumulator, str) and accumulator in GEMM_ACCUMULATORS else get_accumulator(accumulator)
    if model is not None and model.input_formats != (a_q.fmt.name, b_q.fmt.name):
        model = replace(model, input_formats=(a_q.fmt.name, b_q.fmt.name))   # the operands' formats, as the unit
    if model is not None and model.block_scale is not None:
        _check_block_scaled_operands(a_q, b_q, model)
        acc = emulated_matmul(a_q.values(), b_q.values(), model, a_scales=a_q.scales, b_scales=b_q.scales,
                              check_inputs=False, backend=backend)
        return _tensor_scaled(acc, a_q, b_q, out_dtype, exact=False)
    kb = k_block(a_q, b_q, K)
    sa, sb = block_scales(a_q, b_q, kb)
    if model is not None:
        acc = emulated_scaled_matmul(a_q.values(), b_q.values(), model, sa, sb, kb, check_inputs=False,
                                     backend=backend)
        return _tensor_scaled(acc, a_q, b_q, out_dtype, exact=False)
    av, bv = a_q.values().double(), b_q.values().double()
    out = torch.zeros(M, N, dtype=torch.float64, device=av.device)
    for blk, k0 in enumerate(range(0, K, kb)):
        sl = slice(k0, min(k0 + kb, K))
        partial = av[:, sl] @ bv[sl]                            # exact for <= 8-bit elements and kb <= 2^17
        if accumulator == "fp32":
            partial = partial.float().double()
        s = sa[:, blk, None].double() * sb[None, blk].double()
        if accumulator != "float64":
            s = s.float().double()                              # scale_a * scale_b in float32, as DeepGEMM
        prod = s * partial                                      # exact: 24 x 24 bits
        out = out + prod if accumulator == "float64" else add_round_to_odd(out, prod).float().double()
    return _tensor_scaled(out, a_q, b_q, out_dtype, exact=accumulator == "float64")


def _tensor_scaled(acc: torch.Tensor, a_q: QuantizedTensor, b_q: QuantizedTensor, out_dtype: torch.dtype,
                   exact: bool) -> torch.Tensor:
    """The epilogue of two-level (NVFP4) scaling: ``alpha * acc`` with ``alpha = float32(tensor_scale_a *
    tensor_scale_b)``, rounded once to float32 (exact in float64 for the ``"float64"`` accumulator); ``acc`` as it
    is when both tensor scales are 1."""
    if a_q.tensor_scale == 1.0 and b_q.tensor_scale == 1.0:
        return acc.to(out_dtype)
    alpha = a_q.tensor_scale * b_q.tensor_scale                 # exact in float64 (two float32 values)
    if exact:
        return (acc.double() * alpha).to(out_dtype)
    alpha32 = float(torch.tensor(alpha, dtype=torch.float32))
    return (acc.double() * alpha32).float().to(out_dtype)      # 24 x 24 bits: exact, then one rounding


