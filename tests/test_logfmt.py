"""LogFMT-nBit: exact by brute force over every level of every tile, plus the paper's definition."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lowprec import logfmt
from lowprec.testing.strategies import heavy_tailed_tensors


def brute_force(x: torch.Tensor, enc: logfmt.LogFMTTensor) -> torch.Tensor:
    """For every element, the nearest of {0} and all 2^(n-1)-1 levels of its tile, ties to the larger."""
    kmax = (1 << (enc.nbits - 1)) - 1
    rows, cols = enc.codes.shape
    x2 = x.reshape(rows, cols).double()
    out = torch.empty_like(x2)
    all_k = torch.arange(1, kmax + 1)
    for r in range(rows):
        for j in range(-(-cols // enc.tile)):
            seg = slice(j * enc.tile, min((j + 1) * enc.tile, cols))
            vals = x2[r, seg]
            if torch.isnan(enc.min[r, j]):
                out[r, seg] = math.nan
                continue
            grid = torch.cat([torch.zeros(1, dtype=torch.float64),
                              logfmt.levels(enc.min[r, j], enc.step[r, j], all_k).double()])
            d = (vals.abs()[:, None] - grid[None, :]).abs()
            best = d.min(dim=1, keepdim=True).values
            # ties to the larger magnitude: the last index achieving the minimum (grid ascending)
            idx = (grid.numel() - 1) - torch.argmax((d == best).flip(1).to(torch.int8), dim=1)
            out[r, seg] = torch.copysign(grid[idx], vals)
    return out


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.double(), b.double()
    return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()]))


@pytest.mark.parametrize("nbits", [3, 4, 5, 8, 10, 12, 16])
def test_nearest_level_by_brute_force(nbits):
    g = torch.Generator().manual_seed(nbits)
    x = torch.randn(6, 256, generator=g) * torch.exp2(torch.randint(-30, 30, (6, 256), generator=g).float())
    x[0, :5] = 0.0
    enc = logfmt.encode(x, nbits)
    assert same(logfmt.decode(enc), brute_force(x, enc))


@given(x=heavy_tailed_tensors(max_rows=4, max_cols=260), nbits=st.sampled_from([8, 10]),
       tile=st.sampled_from([32, 128]))
def test_heavy_tailed_roundtrips(x, nbits, tile):
    enc = logfmt.encode(x, nbits, tile, pad=True)
    dq = logfmt.decode(enc)
    assert same(dq, brute_force(x, enc))
    level1 = torch.exp(enc.min.double()).repeat_interleave(tile, 1)[:, : x.shape[1]]
    assert (dq[x == 0] == 0).all()                                     # zeros stay zero; others only
    assert ((x.double().abs() < level1) | (dq != 0) | (x == 0)).all()  # when below the 2^32-range clamp
    assert torch.equal(torch.signbit(dq), torch.signbit(x))
    assert same(logfmt.decode(logfmt.encode(-x, nbits, tile, pad=True)), -dq)   # sign symmetry


def test_definition_from_the_paper():
    """Code 1 = min, top code = max, step = (max - min) / (2^(n-1) - 2), in ln space."""
    x = torch.tensor([[0.5, 2.0, 8.0, -32.0] + [0.0] * 4])
    enc = logfmt.encode(x, 5, tile=8)
    lo, hi = math.log(0.5), math.log(32.0)
    assert enc.min.item() == pytest.approx(lo, rel=1e-7)
    assert enc.step.item() == pytest.approx((hi - lo) / (2**4 - 2), rel=1e-6)
    k = enc.codes[0] & 0xF
    assert k[0].item() == 1 and k[3].item() == 15 and (enc.codes[0, 3] >> 4).item() == 1
    assert (k[4:] == 0).all()


def test_dynamic_range_clamped_to_2_pow_32():
    x = torch.tensor([[1.0, 2.0**-40, 2.0**-31, 2.0**-33]])
    enc = logfmt.encode(x, 8, tile=4)
    assert enc.min.item() == pytest.approx(-32 * math.log(2), rel=1e-6)
    dq = logfmt.decode(enc)[0]
    level1 = logfmt.levels(enc.min, enc.step, torch.tensor(1)).item()
    assert dq[1].item() == 0.0                                          # far below level 1: to zero
    assert dq[3].item() in (0.0, level1)
    assert dq[3].item() == (level1 if abs(2.0**-33 - level1) <= 2.0**-33 else 0.0)


def test_monotone_in_each_tile():
    g = torch.Generator().manual_seed(1)
    x, _ = torch.sort(torch.randn(1, 128, generator=g).abs() * 100)
    dq = logfmt.quantize(x, 8)
    assert (dq[0, 1:] >= dq[0, :-1]).all()


def test_special_tiles():
    x = torch.zeros(4, 8)
    x[1] = 3.0                                                         # all equal
    x[2, 5] = -7.0                                                     # one non-zero
    x[3, 2] = math.nan
    enc = logfmt.encode(x, 8, tile=8)
    dq = logfmt.decode(enc)
    assert torch.equal(dq[0], torch.zeros(8)) and enc.min[0].item() == 0 and enc.step[0].item() == 0
    assert torch.allclose(dq[1], torch.full((8,), 3.0), rtol=2**-22) and enc.step[1].item() == 0
    assert dq[2, 5].item() == pytest.approx(-7.0, rel=2**-22) and (dq[2, :5] == 0).all()
    assert dq[3].isnan().all() and not dq[:3].isnan().any()
    inf = logfmt.decode(logfmt.encode(torch.tensor([[1.0, math.inf, 2.0, 3.0]]), 8, tile=2))
    assert inf[0, :2].isnan().all() and not inf[0, 2:].isnan().any()


def test_stochastic_rounding_is_unbiased():
    x = torch.full((2000, 128), 1.0)
    x[:, 0] = 100.0                                                    # sets the top level
    x[:, 1] = 0.01                                                     # sets level 1
    x[:, 2:] = 3.3
    dq = logfmt.quantize(x, 5, rounding="stochastic", generator=torch.Generator().manual_seed(0))
    near = logfmt.quantize(x[:1], 5)
    assert not torch.equal(dq[:, 2:].min(), dq[:, 2:].max())            # both neighbours are used
    mean = dq[:, 2:].double().mean().item()
    assert abs(mean - 3.3) < 0.01 * 3.3 and abs(near[0, 2].item() - 3.3) > abs(mean - 3.3)


def test_packed_bytes():
    x = torch.randn(3, 256)
    enc = logfmt.encode(x, 10)
    assert enc.packed().numel() == 3 * 256 * 10 // 8
    assert enc.nbytes() == 3 * 256 * 10 // 8 + 3 * 2 * 8


def test_bad_input():
    with pytest.raises(ValueError, match="nbits"):
        logfmt.encode(torch.ones(128), 2)
    with pytest.raises(ValueError, match="nbits"):
        logfmt.encode(torch.ones(128), 17)
    with pytest.raises(ValueError, match="pad=True"):
        logfmt.encode(torch.ones(2, 100), 8)
    with pytest.raises(TypeError):
        logfmt.encode(torch.ones(128, dtype=torch.int32), 8)
    with pytest.raises(ValueError, match="rounding"):
        logfmt.encode(torch.ones(128), 8, rounding="log")
