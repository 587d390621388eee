"""Packed storage of sub-byte codes: the bytes that vendors and communication studies count.

Layout (little-endian bit order): code i of a group occupies bits [b*i, b*i + b) of the group's
little-endian integer, where a group is the smallest whole number of bytes holding whole codes
(FP4: 2 codes per byte, low nibble first; FP6: 4 codes in 3 bytes; b = 8: the bytes themselves).
The last group is zero-padded; ``unpack`` needs the code count back.
"""

from __future__ import annotations

import math

import torch

from .formats import FloatFormat, get_format


def _geometry(bits: int) -> tuple[int, int]:
    """(codes per group, bytes per group) for ``bits``-wide codes."""
    group_bits = math.lcm(bits, 8)
    return group_bits // bits, group_bits // 8


def _bits_of(fmt_or_bits: FloatFormat | str | int) -> int:
    bits = fmt_or_bits if isinstance(fmt_or_bits, int) else get_format(fmt_or_bits).bits
    if not 1 <= bits <= 8:
        raise ValueError(f"pack/unpack handle 1..8-bit codes, got {bits}-bit")
    return bits


def packed_nbytes(n_codes: int, fmt_or_bits: FloatFormat | str | int) -> int:
    """Bytes that ``n_codes`` codes take once packed (padding of the last group included)."""
    per_group, group_bytes = _geometry(_bits_of(fmt_or_bits))
    return -(-n_codes // per_group) * group_bytes


def pack(codes: torch.Tensor, fmt_or_bits: FloatFormat | str | int) -> torch.Tensor:
    """Flatten ``codes`` (integers < 2^bits) and pack them into a uint8 tensor (see module doc)."""
    bits = _bits_of(fmt_or_bits)
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError("pack needs an integer tensor of codes")
    c = codes.reshape(-1).to(torch.int64)
    if c.numel() and bool(((c < 0) | (c >= (1 << bits))).any()):
        raise ValueError(f"codes must lie in [0, 2^{bits}) to pack as {bits}-bit")
    per_group, group_bytes = _geometry(bits)
    pad = (-c.numel()) % per_group
    groups = torch.nn.functional.pad(c, (0, pad)).view(-1, per_group)
    shifts = torch.arange(per_group, device=c.device) * bits
    word = (groups << shifts).sum(dim=1)                     # <= 56 bits: exact in int64
    byte_shifts = torch.arange(group_bytes, device=c.device) * 8
    return ((word[:, None] >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack(packed: torch.Tensor, fmt_or_bits: FloatFormat | str | int, count: int) -> torch.Tensor:
    """Inverse of ``pack``: the first ``count`` codes, as uint8."""
    bits = _bits_of(fmt_or_bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError("unpack needs a uint8 tensor")
    if count < 0 or packed_nbytes(count, bits) > packed.numel():
        raise ValueError(f"{packed.numel()} bytes cannot hold {count} packed {bits}-bit codes")
    per_group, group_bytes = _geometry(bits)
    n_bytes = packed_nbytes(count, bits)
    b = packed.reshape(-1)[:n_bytes].to(torch.int64).view(-1, group_bytes)
    word = (b << (torch.arange(group_bytes, device=b.device) * 8)).sum(dim=1)
    codes = (word[:, None] >> (torch.arange(per_group, device=b.device) * bits)) & ((1 << bits) - 1)
    return codes.reshape(-1)[:count].to(torch.uint8)
