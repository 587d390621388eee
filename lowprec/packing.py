"""Packed storage of codes narrower than their container: the bytes vendors and communication
studies count.

Layout (little-endian bit order): code i occupies bits [b*i, b*i + b) of the little-endian bit
stream, byte j holding stream bits [8j, 8j + 8). So FP4 puts two codes per byte, low nibble first;
FP6 puts 4 codes in 3 bytes; 10-bit LogFMT codes take 5 bytes per 4 codes. The last byte is
zero-padded; ``unpack`` needs the code count back.
"""

from __future__ import annotations

import torch

from .formats import FloatFormat, get_format

MAX_PACK_BITS = 16


def _bits_of(fmt_or_bits: FloatFormat | str | int) -> int:
    bits = fmt_or_bits if isinstance(fmt_or_bits, int) else get_format(fmt_or_bits).bits
    if not 1 <= bits <= MAX_PACK_BITS:
        raise ValueError(f"pack/unpack handle 1..{MAX_PACK_BITS}-bit codes, got {bits}-bit")
    return bits


def packed_nbytes(n_codes: int, fmt_or_bits: FloatFormat | str | int) -> int:
    """Bytes that ``n_codes`` codes take once packed (the padding of the last byte included)."""
    return -(-n_codes * _bits_of(fmt_or_bits) // 8)


def pack(codes: torch.Tensor, fmt_or_bits: FloatFormat | str | int) -> torch.Tensor:
    """Flatten ``codes`` (integers < 2^bits) and pack them into a uint8 tensor (see module doc)."""
    bits = _bits_of(fmt_or_bits)
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError("pack needs an integer tensor of codes")
    c = codes.reshape(-1).to(torch.int64)
    if c.numel() and bool(((c < 0) | (c >= (1 << bits))).any()):
        raise ValueError(f"codes must lie in [0, 2^{bits}) to pack as {bits}-bit")
    stream = ((c[:, None] >> torch.arange(bits, device=c.device)) & 1).reshape(-1)
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8))
    return (stream.view(-1, 8) << torch.arange(8, device=c.device)).sum(dim=1).to(torch.uint8)


def unpack(packed: torch.Tensor, fmt_or_bits: FloatFormat | str | int, count: int) -> torch.Tensor:
    """Inverse of ``pack``: the first ``count`` codes (uint8 up to 8 bits, int32 above)."""
    bits = _bits_of(fmt_or_bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError("unpack needs a uint8 tensor")
    if count < 0 or packed_nbytes(count, bits) > packed.numel():
        raise ValueError(f"{packed.numel()} bytes cannot hold {count} packed {bits}-bit codes")
    b = packed.reshape(-1)[: packed_nbytes(count, bits)].to(torch.int64)
    stream = ((b[:, None] >> torch.arange(8, device=b.device)) & 1).reshape(-1)[: count * bits]
    codes = (stream.view(count, bits) << torch.arange(bits, device=b.device)).sum(dim=1)
    return codes.to(torch.uint8 if bits <= 8 else torch.int32)
