"""Binary floating-point formats: one frozen description, derived properties, a registry of names.

A format is ``[sign] exponent mantissa`` with an exponent bias. Four encodings of the special values
cover every format the lab needs (``FloatFormat.special``):

* ``"ieee"``   -- exponent field all ones is Inf (mantissa 0) or NaN (mantissa != 0): E5M2, FP16, BF16, TF32.
* ``"fn"``     -- no Inf; only the all-ones magnitude code is NaN: OCP E4M3 (``e4m3fn``), E8M0 (0xFF).
* ``"fnuz"``   -- no Inf, no negative zero; the negative-zero code (sign bit alone) is the single NaN.
* ``"finite"`` -- every code is a finite number: the MX element formats E2M3, E3M2, E2M1.

``has_zero=False`` (E8M0) makes biased exponent 0 an ordinary binade: code c is 2^(c - bias), no zero.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

Special = Literal["ieee", "fn", "fnuz", "finite"]
SPECIALS: tuple[Special, ...] = ("ieee", "fn", "fnuz", "finite")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format, validated on construction.

    ``ebits``/``mbits``: exponent and stored mantissa (fraction) bits; ``bias``: exponent bias;
    ``signed``: a sign bit is present; ``subnormals``: biased exponent 0 holds subnormals (otherwise
    those codes decode to zero, and encode flushes values below the smallest normal by the rounding
    mode); ``has_zero=False`` is the E8M0 layout (see module docstring).
    """

    name: str
    ebits: int
    mbits: int
    bias: int
    special: Special = "ieee"
    signed: bool = True
    subnormals: bool = True
    has_zero: bool = True
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for attr in ("ebits", "mbits", "bias"):
            if not isinstance(getattr(self, attr), int) or isinstance(getattr(self, attr), bool):
                raise TypeError(f"FloatFormat.{attr} must be an int, got {getattr(self, attr)!r}")
        if self.special not in SPECIALS:
            raise ValueError(f"unknown special-value encoding {self.special!r}; expected one of {SPECIALS}")
        if self.ebits < 1:
            raise ValueError(f"format {self.name!r} needs at least 1 exponent bit, got ebits={self.ebits}")
        if self.ebits > 10:
            raise ValueError(f"format {self.name!r}: ebits={self.ebits} > 10 exceeds the float64 range we emulate in")
        if self.mbits < 0:
            raise ValueError(f"format {self.name!r}: mbits must be >= 0, got {self.mbits}")
        if self.bits > 32:
            raise ValueError(f"format {self.name!r} has {self.bits} bits; at most 32 are supported")
        if self.special == "ieee" and (self.ebits < 2 or self.mbits < 1):
            raise ValueError(f"format {self.name!r}: Inf and NaN in the top binade need >= 2 exponent bits"
                             " and >= 1 mantissa bit")
        if self.special == "fnuz" and not self.signed:
            raise ValueError(f"format {self.name!r}: 'fnuz' puts NaN on the negative-zero code, which needs a sign bit")
        if not self.has_zero and (self.subnormals or self.signed):
            raise ValueError(f"format {self.name!r}: has_zero=False is only defined for unsigned formats "
                             "without subnormals")
        if self.emax > 1023 or self.emin - self.mbits < -1074:
            raise ValueError(f"format {self.name!r}: exponent range [{self.emin}, {self.emax}] exceeds float64")
        if self.max_code < 1:
            raise ValueError(f"format {self.name!r} has no finite non-zero value")

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Total storage bits."""
        return int(self.signed) + self.ebits + self.mbits

    # ---- exponent range ----------------------------------------------------------------------
    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return 1 - self.bias if self.has_zero else -self.bias

    @property
    def max_code(self) -> int:
        """Largest magnitude code (sign bit clear) that is a finite number."""
        top = (1 << (self.ebits + self.mbits)) - 1
        if self.special == "ieee":
            return ((1 << self.ebits) - 1 << self.mbits) - 1
        if self.special == "fn":
            return top - 1
        return top

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        return self.emin + (self.max_code >> self.mbits) - int(self.has_zero)

    # ---- values ------------------------------------------------------------------------------
    @property
    def max(self) -> float:
        """Largest finite value."""
        mant = (self.max_code & ((1 << self.mbits) - 1)) + (1 << self.mbits)
        return math.ldexp(mant, self.emax - self.mbits)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (the smallest normal when there are no subnormals)."""
        return math.ldexp(1.0, self.emin - self.mbits) if self.subnormals and self.mbits > 0 else self.min_normal

    @property
    def has_inf(self) -> bool:
        return self.special == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.special != "finite"

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.has_zero and self.special != "fnuz"

    @property
    def sign_mask(self) -> int:
        return 1 << (self.bits - 1) if self.signed else 0

    @property
    def nan_code(self) -> int:
        """Canonical NaN code (positive sign): quiet NaN for 'ieee', all ones for 'fn', 0x80.. for 'fnuz'."""
        if self.special == "ieee":
            return ((1 << self.ebits) - 1 << self.mbits) | (1 << max(self.mbits - 1, 0))
        if self.special == "fn":
            return (1 << (self.ebits + self.mbits)) - 1
        if self.special == "fnuz":
            return self.sign_mask
        raise ValueError(f"format {self.name!r} has no NaN")

    @property
    def inf_code(self) -> int:
        if not self.has_inf:
            raise ValueError(f"format {self.name!r} has no Inf")
        return (1 << self.ebits) - 1 << self.mbits

    def fits_in(self, mbits: int, emax: int, min_exp: int) -> bool:
        """True when every finite value is exactly representable in a binary format with ``mbits``
        fraction bits, largest binade ``emax`` and smallest representable power of two 2^``min_exp``."""
        return self.mbits <= mbits and self.emax <= emax and self.emin - self.mbits >= min_exp

    def __str__(self) -> str:
        return self.name


# ---- registry --------------------------------------------------------------------------------
_REGISTRY: dict[str, FloatFormat] = {}


def register_format(fmt: FloatFormat) -> FloatFormat:
    """Register ``fmt`` under its name and aliases (lower-case). Re-registering a name is an error."""
    for key in (fmt.name, *fmt.aliases):
        k = key.lower()
        if k in _REGISTRY and _REGISTRY[k] != fmt:
            raise ValueError(f"format name {key!r} is already registered to {_REGISTRY[k]!r}")
        _REGISTRY[k] = fmt
    return fmt


E4M3FN = register_format(FloatFormat("e4m3fn", 4, 3, 7, "fn", aliases=(
    "e4m3", "float8_e4m3fn", "fp8_e4m3", "fp8e4m3", "ocp_e4m3", "f8e4m3fn")))
E5M2 = register_format(FloatFormat("e5m2", 5, 2, 15, "ieee", aliases=(
    "float8_e5m2", "fp8_e5m2", "fp8e5m2", "ocp_e5m2", "f8e5m2")))
E4M3FNUZ = register_format(FloatFormat("e4m3fnuz", 4, 3, 8, "fnuz", aliases=("float8_e4m3fnuz", "f8e4m3fnuz")))
E5M2FNUZ = register_format(FloatFormat("e5m2fnuz", 5, 2, 16, "fnuz", aliases=("float8_e5m2fnuz", "f8e5m2fnuz")))
E8M0 = register_format(FloatFormat("e8m0", 8, 0, 127, "fn", signed=False, subnormals=False, has_zero=False,
                                   aliases=("e8m0fnu", "float8_e8m0fnu", "ue8m0", "ocp_e8m0")))
UE4M3 = register_format(FloatFormat("ue4m3", 4, 3, 7, "fn", signed=False, aliases=("e4m3_unsigned",)))
E2M3 = register_format(FloatFormat("e2m3", 2, 3, 1, "finite", aliases=("fp6_e2m3", "float6_e2m3fn", "e2m3fn")))
E3M2 = register_format(FloatFormat("e3m2", 3, 2, 3, "finite", aliases=("fp6_e3m2", "float6_e3m2fn", "e3m2fn")))
E2M1 = register_format(FloatFormat("e2m1", 2, 1, 1, "finite", aliases=("fp4", "fp4_e2m1", "float4_e2m1fn", "e2m1fn")))
BF16 = register_format(FloatFormat("bf16", 8, 7, 127, "ieee", aliases=("bfloat16", "e8m7")))
FP16 = register_format(FloatFormat("fp16", 5, 10, 15, "ieee", aliases=("float16", "half", "binary16", "e5m10")))
TF32 = register_format(FloatFormat("tf32", 8, 10, 127, "ieee", aliases=("tensorfloat32", "e8m10")))
FP32 = register_format(FloatFormat("fp32", 8, 23, 127, "ieee", aliases=("float32", "binary32", "e8m23")))
E8M13 = register_format(FloatFormat("e8m13", 8, 13, 127, "ieee", aliases=("fp22",)))

_EXMY = re.compile(r"^e(\d+)m(\d+)(fn|fnuz)?$")


def get_format(fmt: FloatFormat | str) -> FloatFormat:
    """Look a format up by name or alias (case-insensitive); ``"eXmY"`` builds an IEEE-style format.

    ``eXmY`` has bias 2^(X-1)-1, subnormals, and Inf/NaN in the top binade; ``eXmYfn`` reserves only
    the all-ones code for NaN; ``eXmYfnuz`` has bias 2^(X-1) and NaN on the negative-zero code.
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"a format is a FloatFormat or a name, got {type(fmt).__name__}")
    key = fmt.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    m = _EXMY.match(key)
    if m is None:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(f.name for f in set(_REGISTRY.values())))}"
                         " or any 'eXmY[fn|fnuz]'")
    ebits, mbits, suffix = int(m.group(1)), int(m.group(2)), m.group(3)
    if not 1 <= ebits <= 10 or (suffix is None and ebits < 2) or (suffix is None and mbits < 1) \
            or 1 + ebits + mbits > 32:
        raise ValueError(f"format {fmt!r}: 'eXmY' needs 1 <= X <= 10 exponent bits (X >= 2 and Y >= 1 for the "
                         "IEEE-style layout with Inf and NaN; 'eXmYfn' or 'eXmYfnuz' allow X = 1 or Y = 0) and at "
                         "most 32 bits with the sign")
    if suffix == "fnuz":
        return FloatFormat(key, ebits, mbits, 1 << (ebits - 1), "fnuz")
    return FloatFormat(key, ebits, mbits, (1 << (ebits - 1)) - 1, "fn" if suffix == "fn" else "ieee")


def list_formats() -> list[FloatFormat]:
    """The registered formats, each once, in registration order."""
    seen: dict[str, FloatFormat] = {}
    for f in _REGISTRY.values():
        seen.setdefault(f.name, f)
    return list(seen.values())
