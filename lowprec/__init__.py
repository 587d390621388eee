"""lowprec: a numerics lab for low-precision formats, scaling recipes and accumulators (FP8 and friends)."""

from .codes import Rounding
from .formats import FloatFormat, get_format, list_formats, register_format
from .packing import pack, packed_nbytes, unpack
from .rounding import decode, encode, quantize

__all__ = [
    "FloatFormat", "get_format", "list_formats", "register_format",
    "Rounding", "encode", "decode", "quantize",
    "pack", "unpack", "packed_nbytes",
]
__version__ = "0.4.0"

from .accum import AccumulatorModel, emulated_matmul, get_accumulator, list_accumulators, reference_dot  # noqa: E402

__all__ += ["AccumulatorModel", "get_accumulator", "list_accumulators", "emulated_matmul", "reference_dot"]

from .scaling import (  # noqa: E402
    AmaxHistory, QuantizedTensor, Quirk, Recipe, ScalingConfig, fake_quantize, get_recipe, list_recipes,
    quantize_tensor, register_recipe,
)
from .gemm import scaled_matmul  # noqa: E402

__all__ += ["ScalingConfig", "Quirk", "AmaxHistory", "QuantizedTensor", "Recipe", "quantize_tensor", "fake_quantize",
            "get_recipe", "list_recipes", "register_recipe", "scaled_matmul"]
