"""torch custom ops over the native kernels of ``cuda_ext/``: ``torch.ops.lowprec.<name>``.

Registering the kernels with ``torch.library`` lets torch.compile trace through them (no graph break) and lets
autograd functions and meta/fake tensors use them. Each op computes exactly what its kernel does; the public
functions (``lowprec.quantize_tensor``, ``encode``, ``quantize``, ``logfmt.encode``/``decode``) call these ops
on their native path and document the contract (the same bits as their eager reference).

Registration pattern (every op of this module follows it)
--------------------------------------------------------
1. ``@torch.library.custom_op("lowprec::<name>", mutates_args=(), device_types="cpu")`` on a function of
   tensors and plain values (``int``, ``float``, ``bool``, ``list[int]``) that returns new tensors: the CPU
   implementation, which validates nothing the caller already did and calls the ctypes entry point of
   ``lowprec.native.library(<library>)``; the native library is built on first use.
2. ``@<op>.register_fake``: the outputs' shapes and dtypes from the inputs', without computing anything.
3. A ``torch.library.opcheck`` test in tests/test_ops.py.
Each op has its own section under a ``# ---- lowprec::<name>`` rule; a new op is a new section at the end of the
file (several agents share this file: edit only your own sections).
Formats travel as ``format_args(fmt)``: the defining fields of a ``FloatFormat`` as a list of ints.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from .codes import MxRuleCode, RoundingCode, ScaleOpCode
from .formats import SPECIALS, FloatFormat
from .native import AccumModelC, ScalingC, format_struct, library

__all__ = ["format_args", "args_format", "decode_table_f32", "quantize_tiles", "encode", "logfmt_encode",
           "logfmt_decode", "emulated_gemm", "emulated_scaled_gemm", "RoundingCode", "ScaleOpCode", "MxRuleCode"]


def format_args(fmt: FloatFormat) -> list[int]:
    """``[ebits, mbits, bias, special, signed, subnormals, has_zero]`` (``special`` as its index in
    ``formats.SPECIALS``): every field that defines the format's values, as an op argument."""
    return [fmt.ebits, fmt.mbits, fmt.bias, SPECIALS.index(fmt.special), int(fmt.signed), int(fmt.subnormals),
            int(fmt.has_zero)]


@functools.lru_cache(maxsize=64)
def _format_of(args: tuple[int, ...]) -> FloatFormat:
    ebits, mbits, bias, special, signed, subnormals, has_zero = args
    return FloatFormat(f"e{ebits}m{mbits}_b{bias}", ebits, mbits, bias, SPECIALS[special], bool(signed),
                       bool(subnormals), bool(has_zero))


def args_format(args: list[int]) -> FloatFormat:
    """The ``FloatFormat`` of ``format_args``' list (its name aside)."""
    if len(args) != 7:
        raise ValueError(f"a format travels as 7 ints (format_args), got {len(args)}")
    return _format_of(tuple(int(a) for a in args))


@functools.lru_cache(maxsize=64)
def _decode_table_cached(fmt: FloatFormat) -> torch.Tensor:
    from .rounding import decode      # here, not at the top: rounding calls these ops

    return decode(torch.arange(256, dtype=torch.int64) % (1 << fmt.bits), fmt).to(torch.float32).contiguous()


def decode_table_f32(fmt: FloatFormat) -> torch.Tensor:
    """value(code) of every code of an 8-bit-or-narrower format, float32 (``decode``'s bits), 256 entries
    (codes at and above 2^bits repeat the table)."""
    return _decode_table_cached(fmt)


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() if t is not None else None)


# ---- lowprec::quantize_tiles -------------------------------------------------------------------------------
@torch.library.custom_op("lowprec::quantize_tiles", mutates_args=(), device_types="cpu")
def quantize_tiles(x: torch.Tensor, fmt: list[int], tile: list[int], scale_op: int, pow2: bool, tile_nan: bool,
                   e8m0: bool, mx_rule: int, target: float, amax_floor: float, dequantize: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tile scaling of the 2-D float32 ``x`` by ``cuda_ext/quant_cpu.c``: (codes uint8 like ``x``,
    dequantisation scales float32 (ceil(R / tr), ceil(C / tc)), dequantised values float32 like ``x`` when
    ``dequantize`` else an empty tensor). ``scale_op``: a ``ScaleOpCode``; ``e8m0``: MX scales by ``mx_rule``
    (an ``MxRuleCode``); ``target``: the format's max / 2^margin in float32."""
    f = args_format(fmt)
    xc = x.contiguous()
    R, C = xc.shape
    tr, tc = tile
    codes = torch.empty(R, C, dtype=torch.uint8)
    sf = torch.empty(-(-R // tr), -(-C // tc), dtype=torch.float32)
    deq = torch.empty(R, C, dtype=torch.float32) if dequantize else torch.empty(0, dtype=torch.float32)
    sc = ScalingC(tr, tc, scale_op, int(pow2), int(tile_nan), int(e8m0), mx_rule, f.emax, target, amax_floor, f.max)
    if xc.numel():
        library("quant_cpu").lp_quantize_tiles(_ptr(xc), ctypes.c_int64(R), ctypes.c_int64(C),
                                               ctypes.byref(format_struct(f)), ctypes.byref(sc), _ptr(codes),
                                               _ptr(sf), _ptr(decode_table_f32(f) if dequantize else None),
                                               _ptr(deq if dequantize else None))
    return codes, sf, deq


@quantize_tiles.register_fake
def _quantize_tiles_fake(x: torch.Tensor, fmt: list[int], tile: list[int], scale_op: int, pow2: bool, tile_nan: bool,
                         e8m0: bool, mx_rule: int, target: float, amax_floor: float, dequantize: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    R, C = x.shape
    return (x.new_empty((R, C), dtype=torch.uint8),
            x.new_empty((-(-R // tile[0]), -(-C // tile[1])), dtype=torch.float32),
            x.new_empty((R, C) if dequantize else (0,), dtype=torch.float32))


# ---- lowprec::encode ---------------------------------------------------------------------------------------
@torch.library.custom_op("lowprec::encode", mutates_args=(), device_types="cpu")
def encode(x: torch.Tensor, fmt: list[int], rounding: int, saturate: bool, values: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The elementwise cast of float32 ``x`` to a <= 8-bit format by ``cuda_ext/quant_cpu.c``: (codes uint8
    like ``x``, and their values float32 like ``x`` when ``values`` else an empty tensor). ``rounding``: a
    ``RoundingCode``; ``saturate``: overflow and Inf go to +-max."""
    f = args_format(fmt)
    xc = x.contiguous()
    codes = torch.empty(xc.shape, dtype=torch.uint8)
    vals = torch.empty(xc.shape if values else (0,), dtype=torch.float32)
    if xc.numel():
        library("quant_cpu").lp_encode_tensor(_ptr(xc), ctypes.c_int64(xc.numel()), ctypes.byref(format_struct(f)),
                                              ctypes.c_int32(rounding), ctypes.c_int32(int(saturate)), _ptr(codes),
                                              _ptr(decode_table_f32(f) if values else None),
                                              _ptr(vals if values else None))
    return codes, vals


@encode.register_fake
def _encode_fake(x: torch.Tensor, fmt: list[int], rounding: int, saturate: bool, values: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape, dtype=torch.uint8), x.new_empty(x.shape if values else (0,), dtype=torch.float32)


# ---- lowprec::emulated_matmul, lowprec::emulated_scaled_matmul ----------------------------------------------
# The emulated GEMM of cuda_ext/lowprec_accum.h (accum_cpu.c, accum_cuda.cu): a CPU and a CUDA implementation,
# the CUDA one launched on the current stream of the operands' device. Operands travel as float32 values of the
# model's input formats (NaN/Inf count as 0); the model as the int32 fields of ``AccumModelC`` in order
# (``lowprec.accum._native_model_args``) and its two doubles; block-scaled operands (E8M0 scales inside the fused
# step) as the int32 scale exponents of each ``scale_block`` elements along K.
def _gemm(a: torch.Tensor, b: torch.Tensor, seed: torch.Tensor | None, model: list[int], acc_max: float,
          outer_max: float, k_block: int, scale_a: torch.Tensor | None, scale_b: torch.Tensor | None,
          ieee: torch.Tensor | None, exp_a: torch.Tensor | None = None, exp_b: torch.Tensor | None = None,
          scale_block: int = 0) -> torch.Tensor:
    a, b = a.contiguous(), b.contiguous()
    seed, scale_a, scale_b, ieee, exp_a, exp_b = (
        t if t is None else t.contiguous() for t in (seed, scale_a, scale_b, ieee, exp_a, exp_b))
    M, K = a.shape
    N = b.shape[1]
    out = torch.zeros(M, N, dtype=torch.float32, device=a.device)
    if not out.numel():
        return out
    cm = AccumModelC(*model, acc_max, outer_max)
    args = [_ptr(a), _ptr(b), _ptr(seed), ctypes.c_int64(M), ctypes.c_int64(K), ctypes.c_int64(N), ctypes.byref(cm),
            ctypes.c_int64(k_block), *map(_ptr, (scale_a, scale_b, ieee, exp_a, exp_b)),
            ctypes.c_int64(scale_block if exp_a is not None else 0), _ptr(out)]
    if a.device.type == "cuda":
        stream = torch.cuda.current_stream(a.device).cuda_stream
        rc = library("accum_cuda").lp_emulated_matmul_cuda(*args, ctypes.c_int(a.device.index),
                                                           ctypes.c_void_p(stream))
        if rc:
            raise RuntimeError(f"the CUDA emulated GEMM failed to launch (cudaError {rc})")
    else:
        library("accum_cpu").lp_emulated_matmul(*args)
    return out


@torch.library.custom_op("lowprec::emulated_matmul", mutates_args=(), device_types=("cpu", "cuda"))
def emulated_gemm(a: torch.Tensor, b: torch.Tensor, seed: torch.Tensor, model: list[int], acc_max: float,
                  outer_max: float, exp_a: torch.Tensor | None = None, exp_b: torch.Tensor | None = None,
                  scale_block: int = 0) -> torch.Tensor:
    """The model's ``seed + a @ b`` (float32 (M, N)), steps 1-6: ``a`` (M, K) and ``b`` (K, N) float32 values of
    the input formats, NaN/Inf counting as 0; ``seed`` (M, N) float64 the accumulator's seed (the outer
    accumulator's when the model promotes). Block-scaled operands (a fused sum with E8M0 scales, whose model has
    ``prescaled`` 0): ``exp_a`` (M, ceil(K / scale_block)) and ``exp_b`` (ceil(K / scale_block), N) int32, the
    scale exponents of each ``scale_block`` elements along K, added to the operands' exponents in step 1."""
    return _gemm(a, b, seed, model, acc_max, outer_max, 0, None, None, None, exp_a, exp_b, scale_block)


@emulated_gemm.register_fake
def _emulated_gemm_fake(a: torch.Tensor, b: torch.Tensor, seed: torch.Tensor, model: list[int], acc_max: float,
                        outer_max: float, exp_a: torch.Tensor | None = None, exp_b: torch.Tensor | None = None,
                        scale_block: int = 0) -> torch.Tensor:
    return a.new_empty((a.shape[0], b.shape[1]), dtype=torch.float32)


@torch.library.custom_op("lowprec::emulated_scaled_matmul", mutates_args=(), device_types=("cpu", "cuda"))
def emulated_scaled_gemm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                         ieee: torch.Tensor | None, k_block: int, model: list[int], acc_max: float,
                         outer_max: float) -> torch.Tensor:
    """The block-scaled GEMM (float32 (M, N)): per K block of ``k_block`` products the model's partial from a zero
    accumulator, folded in as ``out = float32(out + float32(scale_a * scale_b) * partial)`` (one rounding);
    ``scale_a`` (M, nblocks), ``scale_b`` (nblocks, N) float32; a non-finite ``ieee[blk, m, n]`` (float32
    (nblocks, M, N), or None when every operand is finite) replaces that block's partial."""
    return _gemm(a, b, None, model, acc_max, outer_max, k_block, scale_a, scale_b, ieee)


@emulated_scaled_gemm.register_fake
def _emulated_scaled_gemm_fake(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                               ieee: torch.Tensor | None, k_block: int, model: list[int], acc_max: float,
                               outer_max: float) -> torch.Tensor:
    return a.new_empty((a.shape[0], b.shape[1]), dtype=torch.float32)


# ---- lowprec::logfmt_encode / lowprec::logfmt_decode -------------------------------------------------------
@torch.library.custom_op("lowprec::logfmt_encode", mutates_args=(), device_types="cpu")
def logfmt_encode(x: torch.Tensor, nbits: int, tile: int, log_range: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LogFMT-``nbits`` of the 2-D float32 ``x`` per ``tile`` elements of each row (a last tile may be ragged)
    by ``cuda_ext/logfmt_cpu.c``: (codes int32 like ``x``, min and step float32 (rows, ceil(cols / tile))).
    ``log_range``: the largest max - min of a tile's ln|x| (``logfmt.LOG_RANGE``)."""
    xc = x.contiguous()
    R, C = xc.shape
    nt = -(-C // tile)
    codes = torch.empty(R, C, dtype=torch.int32)
    mins, steps = torch.empty(R, nt, dtype=torch.float32), torch.empty(R, nt, dtype=torch.float32)
    if xc.numel():
        library("logfmt_cpu").lp_logfmt_encode(_ptr(xc), ctypes.c_int64(R), ctypes.c_int64(C), ctypes.c_int32(nbits),
                                               ctypes.c_int32(tile), ctypes.c_double(log_range), _ptr(codes),
                                               _ptr(mins), _ptr(steps))
    return codes, mins, steps


@logfmt_encode.register_fake
def _logfmt_encode_fake(x: torch.Tensor, nbits: int, tile: int, log_range: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    R, C = x.shape
    nt = -(-C // tile)
    return (x.new_empty((R, C), dtype=torch.int32), x.new_empty((R, nt), dtype=torch.float32),
            x.new_empty((R, nt), dtype=torch.float32))


@torch.library.custom_op("lowprec::logfmt_decode", mutates_args=(), device_types="cpu")
def logfmt_decode(codes: torch.Tensor, mins: torch.Tensor, steps: torch.Tensor, nbits: int, tile: int
                  ) -> torch.Tensor:
    """float32 values (like ``codes``, 2-D int32) of LogFMT-``nbits`` codes with their per-tile float32 min and
    step, by ``cuda_ext/logfmt_cpu.c``."""
    cc, mc, sc = codes.to(torch.int32).contiguous(), mins.contiguous(), steps.contiguous()
    R, C = cc.shape
    out = torch.empty(R, C, dtype=torch.float32)
    if cc.numel():
        library("logfmt_cpu").lp_logfmt_decode(_ptr(cc), _ptr(mc), _ptr(sc), ctypes.c_int64(R), ctypes.c_int64(C),
                                               ctypes.c_int32(nbits), ctypes.c_int32(tile), _ptr(out))
    return out


@logfmt_decode.register_fake
def _logfmt_decode_fake(codes: torch.Tensor, mins: torch.Tensor, steps: torch.Tensor, nbits: int, tile: int
                        ) -> torch.Tensor:
    return codes.new_empty(codes.shape, dtype=torch.float32)
