"""The choice enums of the API and the integer codes the native kernels take.

``Rounding`` is the one rounding vocabulary of the library: every function that rounds (``encode``,
``quantize``, the accumulator models' alignment and accumulator roundings, LogFMT) takes a ``Rounding`` or its
string value (``"rne"``), case-insensitive, and refuses any other name with a ``ValueError`` that lists the
modes it offers. There are no aliases: one name per mode.

The integer codes are mirrored from ``cuda_ext/lowprec_codes.h`` (the one definition for C, CUDA and Python;
tests/test_codes.py parses the header and checks every name and value both ways).

Each IntEnum is named after the field it encodes, and its members after the Python names of that field
(``RoundingCode["rne"]``, ``ScaleOpCode[cfg.scale_op]``, ``MxRuleCode[cfg.mx_rule]``), so a value passed
to C is looked up by the name the Python API uses. ``C_ENUMS`` maps each C ``typedef enum`` to its mirror
and the prefix its enumerators carry (``LP_RNE`` is ``RoundingCode.rne``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum, StrEnum


class Rounding(StrEnum):
    """A rounding mode. Members are strings (``Rounding.RNE == "rne"``), so a config holding one prints, hashes
    and serialises as its name; ``Rounding.parse`` is the one place a user's string becomes a member."""

    RNE = "rne"                 #: nearest, ties to the even code
    RNA = "rna"                 #: nearest, ties away from zero
    RTZ = "rtz"                 #: toward zero
    RUP = "rup"                 #: toward +inf
    RDOWN = "rdown"             #: toward -inf
    RTO = "rto"                 #: round to odd: an inexact result takes the odd code of its two neighbours
    STOCHASTIC = "stochastic"   #: away from zero with probability proportional to the cut fraction

    def __repr__(self) -> str:
        return f"Rounding.{self.name}"

    @classmethod
    def parse(cls, value: object, allowed: Iterable["Rounding"] | None = None, what: str = "rounding") -> "Rounding":
        """``value`` (a member, or its name in any case) as a member of ``allowed`` (default: every mode); a
        ``TypeError`` for a non-string, a ``ValueError`` naming ``what`` and the modes offered otherwise."""
        offered = tuple(cls) if allowed is None else tuple(allowed)
        if isinstance(value, cls) and value in offered:
            return value
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a Rounding or its name, got {type(value).__name__}")
        member = cls._value2member_map_.get(value.lower())
        if not isinstance(member, cls) or member not in offered:
            names = ", ".join(repr(r.value) for r in offered)
            raise ValueError(f"unknown {what} {value!r}; expected one of {names}")
        return member

    @property
    def code(self) -> "RoundingCode":
        """The native kernels' code of this mode (``ValueError`` for ``stochastic``, which they do not take)."""
        if self is Rounding.STOCHASTIC:
            raise ValueError("the native kernels take no code for stochastic rounding")
        return RoundingCode[self.value]


class RoundingCode(IntEnum):
    """The native codes of the deterministic ``Rounding`` modes (``Rounding.code``)."""

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
