"""lowprec: a numerics lab for low-precision formats, scaling recipes and accumulators (FP8 and friends)."""

from .formats import FloatFormat, get_format, list_formats, register_format
from .packing import pack, packed_nbytes, unpack
from .rounding import ROUNDINGS, decode, encode, quantize

__all__ = [
    "FloatFormat", "get_format", "list_formats", "register_format",
    "ROUNDINGS", "encode", "decode", "quantize",
    "pack", "unpack", "packed_nbytes",
]
__version__ = "0.1.0"
