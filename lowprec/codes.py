"""The integer codes the native kernels take, mirrored from ``cuda_ext/lowprec_codes.h`` (the one definition
for C, CUDA and Python; tests/test_codes.py parses the header and checks every name and value both ways).

Each IntEnum is named after the field it encodes, and its members after the Python names of that field
(``RoundingCode["rne"]``, ``ScaleOpCode[cfg.scale_op]``, ``MxRuleCode[cfg.mx_rule]``), so a value passed
to C is looked up by the name the Python API uses. ``C_ENUMS`` maps each C ``typedef enum`` to its mirror
and the prefix its enumerators carry (``LP_RNE`` is ``RoundingCode.rne``).
"""

from __future__ import annotations

from enum import IntEnum


class RoundingCode(IntEnum):
    """Rounding modes: element rounding (``rounding.ROUNDINGS`` but stochastic), accumulator alignment
    (rtz, rdown, rne) and accumulator rounding (rtz, rne)."""

    rne = 0
    rna = 1
    rtz = 2
    rup = 3
    rdown = 4
    rto = 5


class ScaleOpCode(IntEnum):
    """How a scaled value is formed (``scaling.SCALE_OPS``)."""

    mul_inv = 0
    mul_ratio = 1
    mul_rcp_ratio = 2
    div = 3


class MxRuleCode(IntEnum):
    """The shared exponent rule of an MX block (``scaling.MX_RULES``)."""

    floor = 0
    ceil = 1
    even = 2
    rceil = 3


C_ENUMS: dict[str, tuple[type[IntEnum], str]] = {
    "lp_rounding_code": (RoundingCode, "LP_"),
    "lp_scale_op_code": (ScaleOpCode, "LP_"),
    "lp_mx_rule_code": (MxRuleCode, "LP_MX_"),
}
