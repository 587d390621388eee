"""Packed sub-byte storage: layout from the documented bit order, and round trips for 1..8 bits."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lowprec as lp


def test_fp4_layout_low_nibble_first():
    assert lp.pack(torch.tensor([0x1, 0x2, 0xF]), "e2m1").tolist() == [0x21, 0x0F]


def test_fp6_layout_four_codes_in_three_bytes():
    codes = torch.tensor([0b000001, 0b000010, 0b000011, 0b111111])
    word = 1 | (2 << 6) | (3 << 12) | (63 << 18)           # code i at bits [6i, 6i+6)
    assert lp.pack(codes, "e3m2").tolist() == [word & 0xFF, (word >> 8) & 0xFF, word >> 16]
    assert lp.packed_nbytes(4, "e2m3") == 3 and lp.packed_nbytes(5, "e2m3") == 4   # ceil(30 bits / 8)


def test_ten_bit_layout():
    codes = torch.tensor([0x3FF, 0x001, 0x200])
    stream = 0x3FF | (0x001 << 10) | (0x200 << 20)                       # 30 bits, little-endian
    assert lp.pack(codes, 10).tolist() == [(stream >> (8 * i)) & 0xFF for i in range(4)]


@given(st.integers(1, 16), st.lists(st.integers(0, 65535), max_size=200))
def test_roundtrip_any_width(bits, raw):
    codes = torch.tensor(raw, dtype=torch.int64) & ((1 << bits) - 1)
    packed = lp.pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == lp.packed_nbytes(len(raw), bits)
    assert torch.equal(lp.unpack(packed, bits, len(raw)).long(), codes)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="lie in"):
        lp.pack(torch.tensor([16]), "e2m1")
    with pytest.raises(TypeError):
        lp.pack(torch.tensor([1.0]), "e2m1")
    with pytest.raises(ValueError, match="1..16-bit"):
        lp.pack(torch.tensor([1]), "e8m13")
    with pytest.raises(ValueError, match="cannot hold"):
        lp.unpack(torch.zeros(1, dtype=torch.uint8), "e2m1", 3)
