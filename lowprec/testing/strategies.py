"""Hypothesis strategies for low-precision testing, reusable by other projects' CI.

``formats()``: registered formats and random custom ``eXmY``; ``codes(fmt)``: any code;
``float32_near_grid(fmt)``: float32 values concentrated where rounding is decided (the format's
values, their midpoints, one float32 ulp either side, overflow and underflow edges);
``heavy_tailed_tensors()``: float32 tensors shaped like LLM activations (Student-t body, rare huge
outliers, exact zeros).
"""

from __future__ import annotations


import numpy as np
import torch
from hypothesis import strategies as st

from lowprec.formats import FloatFormat, get_format, list_formats
from lowprec.rounding import decode


@st.composite
def custom_formats(draw: st.DrawFn, max_bits: int = 16) -> FloatFormat:
    ebits = draw(st.integers(2, 8))
    mbits = draw(st.integers(1, max(1, min(10, max_bits - 1 - ebits))))
    suffix = draw(st.sampled_from(["", "fn", "fnuz"]))
    return get_format(f"e{ebits}m{mbits}{suffix}")


def formats(max_bits: int = 32) -> st.SearchStrategy[FloatFormat]:
    named = [f for f in list_formats() if f.bits <= max_bits]
    return st.one_of(st.sampled_from(named), custom_formats(min(max_bits, 16)))


def codes(fmt: FloatFormat) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << fmt.bits) - 1)


def _value_of_magnitude_code(fmt: FloatFormat, c: int) -> float:
    return float(decode(torch.tensor([c]), fmt)[0])


@st.composite
def float32_near_grid(draw: st.DrawFn, fmt: FloatFormat, allow_special: bool = True) -> float:
    """A float32 value near a rounding decision of ``fmt`` (returned as a Python float)."""
    c = draw(st.integers(0, fmt.max_code))
    lo = _value_of_magnitude_code(fmt, c)
    hi = (_value_of_magnitude_code(fmt, c + 1) if c < fmt.max_code
          else fmt.max + 2.0 ** (fmt.emax - fmt.mbits))           # the first value past max
    kind = draw(st.sampled_from(["grid", "mid", "below_mid", "above_mid", "inside", "huge", "tiny"]))
    mid = np.float32((lo + hi) / 2)
    v = {
        "grid": np.float32(lo), "mid": mid,
        "below_mid": np.nextafter(mid, np.float32(-np.inf)), "above_mid": np.nextafter(mid, np.float32(np.inf)),
        "inside": np.float32(lo + (hi - lo) * draw(st.floats(0, 1))),
        "huge": np.float32(draw(st.floats(fmt.max, 3e38))) if fmt.max < 3e38 else np.float32(lo),
        "tiny": np.float32(draw(st.floats(0, fmt.min_subnormal))),
    }[kind]
    if not np.isfinite(v):
        v = np.finfo(np.float32).max
    if allow_special and draw(st.integers(0, 30)) == 0:
        v = np.float32(draw(st.sampled_from([np.inf, np.nan, 0.0])))
    if not fmt.has_zero and not v > 0:  # E8M0: no zero to round to or from
        v = np.float32(fmt.min_normal)
    if fmt.signed and draw(st.booleans()):
        v = -v
    return float(v)


@st.composite
def heavy_tailed_tensors(draw: st.DrawFn, max_rows: int = 8, max_cols: int = 300,
                         outlier_scale: float = 1e3) -> torch.Tensor:
    """float32 (rows, cols) tensors with a Student-t body, rare large outliers and exact zeros."""
    rows, cols = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    dof = draw(st.sampled_from([2.0, 3.0, 5.0, 30.0]))
    scale = 2.0 ** draw(st.integers(-20, 20))
    rng = np.random.default_rng(seed)
    x = rng.standard_t(dof, size=(rows, cols)) * scale
    mask = rng.random((rows, cols))
    x[mask < draw(st.sampled_from([0.0, 0.001, 0.01]))] *= outlier_scale
    x[mask > 1 - draw(st.sampled_from([0.0, 0.05, 0.5]))] = 0.0
    return torch.from_numpy(x.astype(np.float32))
