"""Adapters to the independent implementations we cross-check against (gfloat, ml_dtypes, torch)."""

from __future__ import annotations

import gfloat
import ml_dtypes
import numpy as np
import torch
from gfloat.formats import format_info_ocp_e8m0

from lowprec.formats import FloatFormat

GFLOAT_ROUNDING = {
    "rne": gfloat.RoundMode.TiesToEven, "rtz": gfloat.RoundMode.TowardZero,
    "rup": gfloat.RoundMode.TowardPositive, "rna": gfloat.RoundMode.TiesToAway,
    "rdown": gfloat.RoundMode.TowardNegative,
    "stochastic": gfloat.RoundMode.Stochastic,
}

ML_DTYPES = {"e4m3fn": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
             "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
             "bf16": ml_dtypes.bfloat16, "fp16": np.float16, "e2m3": ml_dtypes.float6_e2m3fn,
             "e3m2": ml_dtypes.float6_e3m2fn, "e2m1": ml_dtypes.float4_e2m1fn, "e8m0": ml_dtypes.float8_e8m0fnu}

TORCH_DTYPES = {"e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "e4m3fnuz": torch.float8_e4m3fnuz,
                "e5m2fnuz": torch.float8_e5m2fnuz, "bf16": torch.bfloat16, "fp16": torch.float16}


def gfloat_format(fmt: FloatFormat) -> gfloat.FormatInfo:
    """The same format described in gfloat's own terms (built from the format's defining fields)."""
    if fmt.name == "e8m0":
        return format_info_ocp_e8m0
    num_high_nans = {"ieee": (1 << fmt.mbits) - 1, "fn": 1, "fnuz": 0, "finite": 0}[fmt.special]
    domain = gfloat.Domain.Extended if fmt.special == "ieee" else gfloat.Domain.Finite
    return gfloat.FormatInfo(
        name=fmt.name, k=fmt.bits, precision=fmt.mbits + 1, bias=fmt.bias,
        has_nz=fmt.special != "fnuz", domain=domain, num_high_nans=num_high_nans,
        has_subnormals=fmt.subnormals, is_signed=fmt.signed, is_twos_complement=False)
