"""The Triton MXFP8 quantizer is bit-exact with tmoe.formats.quantize_mxfp8 (DESIGN.md §2.1)."""
import pytest
import torch
from hypothesis import given, strategies as st

import tmoe
from tmoe import formats


def _assert_bitwise(x):
    q, sf = tmoe.per_token_cast_to_fp8(x)
    rq, rsf = formats.quantize_mxfp8(x.cpu())
    assert q.dtype == torch.float8_e4m3fn and sf.dtype == torch.int32
    assert tuple(sf.shape) == (x.shape[0], (x.shape[1] + 127) // 128)
    assert torch.equal(sf.cpu(), rsf), "scale words differ"
    qb, rqb = q.view(torch.uint8).cpu(), rq.view(torch.uint8)
    bad = (qb != rqb).nonzero()
    assert bad.numel() == 0, f"{bad.shape[0]} codes differ, first at {bad[0].tolist()}: " \
        f"x={x[tuple(bad[0])].item()} got {qb[tuple(bad[0])].item():#x} want {rqb[tuple(bad[0])].item():#x}"
    return q, sf


HIDDENS = [32, 64, 96, 128, 160, 224, 2880 // 9 * 1]   # 320 = 2880/9: not a multiple of 128


@given(t=st.integers(1, 9), h=st.sampled_from(HIDDENS), log_scale=st.integers(-40, 40),
       dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float32]), seed=st.integers(0, 2**16))
def test_random_rows_bitwise(device, t, h, log_scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    scale = 2.0 ** log_scale if dtype != torch.float16 else 2.0 ** max(min(log_scale, 8), -8)
    x = (torch.randn(t, h, generator=g) * scale).to(dtype)
    _assert_bitwise(x.to(device))


def test_edge_values_bitwise(device):
    rows = []
    h = 160
    def row(vals):
        r = torch.zeros(h)
        r[: len(vals)] = torch.tensor(vals, dtype=torch.float32)
        return r
    rows.append(torch.zeros(h))                                           # zeros (amax floor)
    rows.append(torch.full((h,), -0.0))                                   # negative zeros
    for k in (-20, -3, 0, 5, 60):                                         # amax exactly 448 * 2^k
        rows.append(row([448 * 2.0 ** k, -448 * 2.0 ** k / 3, 2.0 ** k, 1.0]))
        rows.append(row([448 * 2.0 ** k * (1 + 2 ** -7), 3.0 * 2.0 ** k]))  # just above (bf16 ulp)
    rows.append(row([5e-5, -3e-5, 1e-6]))                                 # amax below 1e-4
    rows.append(row([3.3e38, -3.0e38, 1.0]))                             # near bf16 max
    rows.append(row([1e-38, 5e-39, -1e-39]))                              # subnormal-ish
    g = torch.Generator().manual_seed(0)
    rows.append(torch.randn(h, generator=g) * torch.exp2(torch.randint(-12, 12, (h,), generator=g).float()))
    x = torch.stack(rows).to(torch.bfloat16)
    _assert_bitwise(x.to(device))
    _assert_bitwise(x.float().to(device))


def test_every_e4m3_rounding_boundary(device):
    """With amax pinned at 448 (scale 1), sweep values around every E4M3 code and midpoint."""
    codes = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    mids = (codes[1:] + codes[:-1]) / 2
    vals = torch.cat([codes, mids, mids.nextafter(torch.tensor(0.0)), mids.nextafter(torch.tensor(1e9))])
    vals = torch.cat([vals, -vals])
    pad = (-vals.numel()) % 31
    vals = torch.cat([vals, torch.zeros(pad)]).reshape(-1, 31)
    x = torch.cat([torch.full((vals.shape[0], 1), 448.0), vals], dim=1).reshape(1, -1)
    _assert_bitwise(x.to(device))


def test_non_finite_confined_to_block_and_row(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 128, generator=g).to(torch.bfloat16)
    bad = x.clone()
    bad[1, 40] = float("nan")
    bad[2, 100] = float("inf")
    bad[3, 0] = -float("inf")
    q, sf = tmoe.per_token_cast_to_fp8(bad.to(device))
    q0, sf0 = tmoe.per_token_cast_to_fp8(x.to(device))
    qb, qb0 = q.view(torch.uint8).cpu(), q0.view(torch.uint8).cpu()
    # Row 0 untouched; other rows differ only inside the block holding the bad value.
    assert torch.equal(qb[0], qb0[0]) and torch.equal(sf[0].cpu(), sf0[0].cpu())
    for r, col in ((1, 40), (2, 100), (3, 0)):
        blk = col // 32
        outside = torch.ones(128, dtype=torch.bool)
        outside[blk * 32:(blk + 1) * 32] = False
        assert torch.equal(qb[r][outside], qb0[r][outside])
        sbytes = formats.unpack_ue8m0(sf[r:r + 1].cpu(), 4)[0]
        assert int(sbytes[blk]) == 254
    assert qb[1, 40] & 0x7F == 0x7F                       # NaN stays NaN
    assert qb[2, 100] == 0x7E and qb[3, 0] == 0xFE        # +-Inf saturate to +-448
    _assert_bitwise(bad.to(device))


def test_out_argument_writes_into_views(device):
    x = torch.randn(5, 96).to(torch.bfloat16).to(device)
    q_buf = torch.empty(8, 96, dtype=torch.float8_e4m3fn, device=device)
    s_buf = torch.zeros(8, 1, dtype=torch.int32, device=device)
    q, sf = tmoe.per_token_cast_to_fp8(x, out=(q_buf, s_buf))
    assert q.data_ptr() == q_buf.data_ptr()
    rq, rsf = formats.quantize_mxfp8(x.cpu())
    assert torch.equal(q_buf[:5].view(torch.uint8).cpu(), rq.view(torch.uint8)) and torch.equal(s_buf[:5].cpu(), rsf)
    assert int(s_buf[5:].abs().sum()) == 0                 # rows past T untouched


def test_zero_tokens(device):
    q, sf = tmoe.per_token_cast_to_fp8(torch.empty(0, 64, dtype=torch.bfloat16, device=device))
    assert q.shape == (0, 64) and sf.shape == (0, 1)


@pytest.mark.parametrize("make, match", [
    (lambda d: torch.zeros(4, 48, dtype=torch.bfloat16, device=d), "48"),
    (lambda d: torch.zeros(4, 64, dtype=torch.int32, device=d), "int32"),
    (lambda d: torch.zeros(2, 4, 64, dtype=torch.bfloat16, device=d), r"\(2, 4, 64\)"),
    (lambda d: torch.zeros(64, 4, dtype=torch.bfloat16, device=d).t(), "contiguous"),
    (lambda d: [[1.0] * 32], "list"),
])
def test_bad_input(device, make, match):
    with pytest.raises(ValueError, match=match):
        tmoe.per_token_cast_to_fp8(make(device))
