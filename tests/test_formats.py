"""Bit-exactness of tmoe.formats against DESIGN.md §2, checked independently.

Every expected value here is computed a different way from formats.py: pure-Python floats with
`struct` for fp32 rounding, `math.frexp` for powers of two, a hand-decoded table of the 256 E4M3
bytes with an explicit nearest/ties-to-even search, explicit per-element loops, and nibble/byte
layouts assembled with Python integers.
"""
from __future__ import annotations

import math
import random
import struct

import pytest
import torch
from hypothesis import given, strategies as st

from tmoe import formats as F
from py_numerics import (E2M1, E4M3_POS, F32_1EM4, bits_of_f32, e4m3_decode, e4m3_encode, f32, f32_from_bits,
                         pow2_byte, py_mxfp8_row, py_pack_words)

# ============================================================================ pure-Python helpers
FLT_MAX = struct.unpack("<f", struct.pack("<I", 0x7F7FFFFF))[0]
BF16_MAX = (2 - 2 ** -7) * 2.0 ** 127
F32_1EM3 = struct.unpack("<f", struct.pack("<f", 1e-3))[0]


def e8m0_value(b: int) -> float:
    return math.nan if b == 255 else math.ldexp(1.0, b - 127)




def e2m1_mag_code(a: float, mode: str) -> int:
    """Nearest E2M1 magnitude code; ties toward zero (DeepGEMM) or to the even code (RTNE)."""
    d = [abs(a - v) for v in E2M1]
    best = min(d)
    cands = [c for c in range(8) if d[c] == best]
    if len(cands) == 1:
        return cands[0]
    assert len(cands) == 2
    return min(cands) if mode == "toward_zero" else [c for c in cands if c % 2 == 0][0]


def py_mxfp4_row(vals: list, mode: str) -> tuple[list, list]:
    """One row of K fp32-valued floats -> (codes 0..15, scale bytes), DESIGN §2.2."""
    codes, sb = [], []
    for b0 in range(0, len(vals), 32):
        blk = vals[b0:b0 + 32]
        amax = max(max(abs(v) for v in blk), F32_1EM4)
        sfb = pow2_byte(f32(amax / 6.0))
        sb.append(sfb)
        inv = math.ldexp(1.0, 127 - sfb)
        for v in blk:
            s = f32(v * inv)
            m = e2m1_mag_code(abs(s), mode)
            codes.append(m | (8 if (s < 0 and m > 0) else 0))
    return codes, sb


def bytes_u8(t: torch.Tensor) -> list:
    return t.contiguous().view(torch.uint8).flatten().tolist()


def check_mxfp8(x: torch.Tensor) -> None:
    """quantize_mxfp8(x) must equal the pure-Python quantizer byte for byte."""
    q, sf = F.quantize_mxfp8(x)
    t, h = x.shape
    assert q.dtype == torch.float8_e4m3fn and tuple(q.shape) == (t, h)
    assert sf.dtype == torch.int32 and tuple(sf.shape) == (t, (h + 127) // 128)
    xv = x.float().tolist()
    qb = q.view(torch.uint8).tolist()
    words = sf.tolist()
    for r in range(t):
        eq, es = py_mxfp8_row(xv[r])
        assert qb[r] == eq, f"row {r}: first mismatch at {next(i for i in range(h) if qb[r][i] != eq[i])}"
        assert words[r] == py_pack_words(es), f"row {r} scales"


# ============================================================================ sanity of the helpers
def test_helper_tables_are_right():
    # hand-checked E4M3 landmarks (independent of the decoder's formula)
    assert E4M3_POS[0x7E] == 448.0 and E4M3_POS[0x38] == 1.0 and E4M3_POS[0x01] == 2.0 ** -9
    assert E4M3_POS[0x08] == 2.0 ** -6 and E4M3_POS[0x07] == 7 * 2.0 ** -9
    assert all(a < b for a, b in zip(E4M3_POS, E4M3_POS[1:]))
    assert e4m3_encode(17.0) == 0x58 and e4m3_encode(18.0) == 0x59  # 16 = 0x58; 17 ties to 16 (even)
    assert e4m3_encode(19.0) == 0x5A and e4m3_encode(-1e-9) == 0x80  # 19 ties to 20 (even)
    assert pow2_byte(1.0) == 127 and pow2_byte(1.0000001) == 128 and pow2_byte(0.75) == 127


# ============================================================================ UE8M0
UE8M0_CASES = [
    # (fp32 input, expected byte)
    (1.0, 127), (2.0, 128), (0.5, 126), (0.75, 127), (1.5, 128), (3.0, 129),
    (f32_from_bits(0x3F800001), 128),            # just above 1
    (f32_from_bits(0x3F7FFFFF), 127),            # just below 1
    (f32_from_bits(0x40000001), 129),            # just above 2
    (f32_from_bits(0x3FFFFFFF), 128),            # just below 2
    (2.0 ** -126, 1),                            # smallest normal: byte 1
    (f32_from_bits(0x00800001), 2),              # just above 2^-126
    (2.0 ** -125, 2),
    (2.0 ** -127, 1),                            # subnormal -> clamped to byte 1 (2^-126)
    (2.0 ** -149, 1),                            # smallest subnormal
    (f32_from_bits(0x007FFFFF), 1),              # largest subnormal
    (0.0, 1),                                    # zero -> exponent 0 -> clamped
    (2.0 ** 126, 253), (f32_from_bits(0x7E800001), 254),   # just above 2^126
    (2.0 ** 127, 254),                           # byte 254 exactly
    (f32_from_bits(0x7F000001), 254),            # above 2^127: 255 clamped to 254
    (FLT_MAX, 254),
    (math.inf, 254), (math.nan, 254),
    (1e-4, 114),                                 # fp32(1e-4) in (2^-14, 2^-13] -> 127-13
]


@pytest.mark.parametrize("value,byte", UE8M0_CASES)
def test_ue8m0_exponent_edges(value, byte):
    assert pow2_byte(f32(value)) == byte          # the table itself agrees with frexp
    x = torch.tensor([value], dtype=torch.float32)
    got = F.ue8m0_exponent(x)
    assert got.dtype == torch.uint8
    assert int(got[0]) == byte, (value, int(got[0]), byte)
    sf = F.ceil_to_ue8m0(x)
    assert sf.dtype == torch.float32
    assert float(sf[0]) == math.ldexp(1.0, byte - 127)
    if math.isfinite(value) and value >= 2.0 ** -126 and value <= 2.0 ** 127:
        assert float(sf[0]) >= value and float(sf[0]) / 2 < value   # smallest power of two >= x


@given(st.integers(min_value=0, max_value=0x7FFFFFFF))
def test_ue8m0_exponent_any_positive_fp32(bits):
    v = f32_from_bits(bits)                    # every non-negative fp32 incl. subnormals, inf, NaN
    x = torch.tensor([bits], dtype=torch.int32).view(torch.float32)
    assert int(F.ue8m0_exponent(x)[0]) == pow2_byte(v)


def test_ue8m0_exponent_vectorised_edges():
    vals = [c[0] for c in UE8M0_CASES]
    got = F.ue8m0_exponent(torch.tensor(vals, dtype=torch.float32)).tolist()
    assert got == [c[1] for c in UE8M0_CASES]


@pytest.mark.parametrize("byte,value", [
    (0, 2.0 ** -127), (1, 2.0 ** -126), (126, 0.5), (127, 1.0), (128, 2.0), (200, 2.0 ** 73),
    (254, 2.0 ** 127),
])
def test_e8m0_to_float_exact(byte, value):
    got = F.e8m0_to_float(torch.tensor([byte], dtype=torch.uint8))
    assert got.dtype == torch.float32
    assert float(got[0]) == value
    # bit pattern, not just value: byte 0 is the subnormal 0x00400000
    exp_bits = 0x00400000 if byte == 0 else byte << 23
    assert int(got.view(torch.int32)[0]) == exp_bits


def test_e8m0_to_float_nan_and_all_bytes():
    got = F.e8m0_to_float(torch.arange(256, dtype=torch.int32).to(torch.uint8)).tolist()
    assert math.isnan(got[255])
    for b in range(255):
        assert got[b] == e8m0_value(b), b


def test_ue8m0_rejects_non_fp32():
    with pytest.raises(ValueError, match="float64"):
        F.ue8m0_exponent(torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="bfloat16"):
        F.ue8m0_exponent(torch.ones(2, dtype=torch.bfloat16))


# ============================================================================ fp32 -> E4M3
@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_fp32_to_e4m3_any_bits(bits):
    v = f32_from_bits(bits)
    x = torch.tensor([bits - (1 << 32) if bits >= 1 << 31 else bits], dtype=torch.int32).view(torch.float32)
    got = bytes_u8(F.fp32_to_e4m3(x))[0]
    assert got == e4m3_encode(v, negative=bool(bits >> 31)), (hex(bits), v)


def test_fp32_to_e4m3_ties_and_saturation():
    vals, want = [], []
    for i in range(0x7E):                       # every midpoint between neighbours is a tie
        lo, hi = E4M3_POS[i], E4M3_POS[i + 1]
        mid = (lo + hi) / 2
        vals += [mid, -mid, f32_from_bits(bits_of_f32(mid) + 1), f32_from_bits(bits_of_f32(mid) - 1)]
        even = i if i % 2 == 0 else i + 1
        want += [even, 0x80 | even, i + 1, i]
    vals += [448.0, 449.0, 463.99, 464.0, 1e6, math.inf, -math.inf, -500.0, 0.0, -0.0, 2.0 ** -10,
             2.0 ** -10 + 2.0 ** -30, -(2.0 ** -11)]
    want += [0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0xFE, 0xFE, 0x00, 0x80, 0x00, 0x01, 0x80]
    got = bytes_u8(F.fp32_to_e4m3(torch.tensor(vals, dtype=torch.float32)))
    assert got == want


# ============================================================================ MXFP8 quantizer
@pytest.mark.parametrize("h", [32, 64, 96, 128, 160, 2880])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_quantize_mxfp8_random_rows_bit_exact(h, dtype):
    g = torch.Generator().manual_seed(1000 + h)
    t = 2 if h == 2880 else 4
    x = torch.randn(t, h, generator=g)
    # a different magnitude per block, so scale bytes differ across the row
    nb = h // 32
    lim = 10 if dtype == torch.float16 else 40
    mag = torch.randint(-lim, lim // 2, (t, nb, 1), generator=g).float().exp2()
    x = (x.reshape(t, nb, 32) * mag).reshape(t, h).to(dtype)
    check_mxfp8(x)


def test_quantize_mxfp8_packed_layout_2880():
    # scale bytes 127+k for block k (k cycling) -> check byte j of word i = block 4i + j, pad 127
    h = 2880
    nb = h // 32
    ks = [(k % 40) - 20 for k in range(nb)]
    vals = []
    for k in ks:
        vals += [448.0 * 2.0 ** k] + [1.0 * 2.0 ** k] * 31   # amax exactly 448*2^k -> byte 127+k
    x = torch.tensor([vals], dtype=torch.float32).to(torch.bfloat16)
    _, sf = F.quantize_mxfp8(x)
    assert tuple(sf.shape) == (1, 23)
    raw = struct.pack("<23i", *sf[0].tolist())
    assert list(raw[:nb]) == [127 + k for k in ks]
    assert list(raw[nb:]) == [127, 127]
    check_mxfp8(x)


@pytest.mark.parametrize("h", [32, 96, 160])
def test_quantize_mxfp8_pad_bytes(h):
    x = torch.full((3, h), 1000.0, dtype=torch.bfloat16)    # amax 1000 -> sf 4 -> byte 129
    _, sf = F.quantize_mxfp8(x)
    nb = h // 32
    for row in sf.tolist():
        raw = struct.pack(f"<{len(row)}i", *row)
        assert list(raw) == [129] * nb + [127] * (-nb % 4)


def test_quantize_mxfp8_special_blocks():
    rows = []
    # zeros (amax floored to 1e-4) and +-0
    rows.append([0.0] * 32 + [-0.0] * 32 + [0.0, -0.0] * 16)
    # amax exactly 448*2^k, and the bf16 neighbours just above / below
    for k in (-20, -13, -12, -3, 0, 5, 30, 100, 119):
        a = 448.0 * 2.0 ** k
        up = f32_from_bits(bits_of_f32(a) + 0x10000)       # next bf16 value
        dn = f32_from_bits(bits_of_f32(a) - 0x10000)
        rows.append([a] + [-a / 3] * 31 + [-up] + [a / 7] * 31 + [dn] + [1e-3 * a] * 31)
    # tiny amax below 1e-4 (floored), and right around the floor
    rows.append([3e-5, -7e-6] * 16 + [1e-4] * 32 + [9.9e-5, 1.01e-4] * 16)
    # huge values near the bf16 max, mixed signs
    rows.append([BF16_MAX, -BF16_MAX] * 16 + [BF16_MAX / 3] * 32 + [-1e38, 2e37] * 16)
    # bf16 subnormals
    rows.append([2.0 ** -133, -(2.0 ** -130)] * 16 + [2.0 ** -126, 2.0 ** -133] * 16 + [1.0] + [2.0 ** -128] * 31)
    x = torch.tensor(rows, dtype=torch.float32).to(torch.bfloat16)
    check_mxfp8(x)
    # spot checks written out by hand
    q, sf = F.quantize_mxfp8(x)
    raw0 = struct.pack("<i", sf[0, 0].item())
    assert list(raw0) == [105, 105, 105, 127]               # fp32(1e-4)/448 -> 2^-22 -> 105
    assert bytes_u8(q[0, 32:34]) == [0x80, 0x80]            # -0 stays -0
    assert bytes_u8(q[0, 0:1]) == [0x00]


def test_quantize_mxfp8_fp32_subnormal_inputs():
    sub = [f32_from_bits(b) for b in (1, 2, 3, 0x7FFFFF, 0x400000, 0x123456)]
    row = (sub * 6)[:32]
    row2 = [v * (-1) ** i for i, v in enumerate(row)]
    x = torch.tensor([row + row2, [1.0] * 32 + row], dtype=torch.float32)
    check_mxfp8(x)
    _, sf = F.quantize_mxfp8(x)
    assert list(struct.pack("<i", sf[0, 0].item()))[:2] == [105, 105]


def test_quantize_mxfp8_e4m3_ties_inside_block():
    # sf = 1 (amax 448): every e4m3 midpoint in [1, 448) is an exact tie; also ties near 2^k scales
    mids = [(E4M3_POS[i] + E4M3_POS[i + 1]) / 2 for i in range(0x38, 0x7E)]
    vals = [v for v in mids if f32(v) == v and bf16_exact(v)]
    vals = (vals * 4)[:31 * 3]
    rows = []
    for c in range(3):
        blk = [448.0] + vals[31 * c:31 * (c + 1)]
        rows.append(blk + [-v * 0.5 for v in blk])          # second block: sf = 0.5, negated
    x = torch.tensor(rows, dtype=torch.float32).to(torch.bfloat16)
    check_mxfp8(x)


def bf16_exact(v: float) -> bool:
    return bits_of_f32(v) & 0xFFFF == 0


@given(
    t=st.integers(1, 3),
    nb=st.integers(1, 5),
    dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float32]),
    data=st.data(),
)
def test_quantize_mxfp8_property(t, nb, dtype, data):
    fin = {torch.bfloat16: BF16_MAX, torch.float16: 65504.0, torch.float32: FLT_MAX}[dtype]
    elems = st.one_of(
        st.floats(-fin, fin, allow_nan=False, allow_infinity=False, width=32),
        st.floats(-F32_1EM3, F32_1EM3, width=32),
        st.sampled_from([0.0, -0.0, 448.0, -448.0, 1e-4, 2.0 ** -130, 1.0, -1.0, 3.0]),
    )
    vals = data.draw(st.lists(elems, min_size=t * nb * 32, max_size=t * nb * 32))
    x = torch.tensor(vals, dtype=torch.float32).reshape(t, nb * 32).to(dtype)
    check_mxfp8(x)
    # round trip: exact dequantization, bounded error
    q, sf = F.quantize_mxfp8(x)
    dq = F.dequantize_mxfp8(q, sf)
    check_dequant_mxfp8(q, sf, dq)
    check_roundtrip_bound(x, dq, sf)


def check_dequant_mxfp8(q, sf, dq):
    t, h = q.shape
    assert dq.dtype == torch.float32 and tuple(dq.shape) == (t, h)
    qb = q.view(torch.uint8).tolist()
    dv = dq.tolist()
    for r in range(t):
        sb = list(struct.pack(f"<{sf.shape[1]}i", *sf[r].tolist()))
        for i in range(h):
            want = f32(e4m3_decode(qb[r][i]) * e8m0_value(sb[i // 32]))
            assert dv[r][i] == want or (math.isnan(want) and math.isnan(dv[r][i])), (r, i)


def check_roundtrip_bound(x, dq, sf):
    """|dq - x| bounded; measured on the exact (double) dequantized value, because near the bf16
    max the exact value can be 2^128, which fp32 `dq` holds as inf (checked in check_dequant)."""
    t, h = x.shape
    xv = x.float().tolist()
    qb = F.quantize_mxfp8(x)[0].view(torch.uint8).tolist()
    for r in range(t):
        sb = list(struct.pack(f"<{sf.shape[1]}i", *sf[r].tolist()))
        for i in range(h):
            s = e8m0_value(sb[i // 32])
            exact = e4m3_decode(qb[r][i]) * s
            err = abs(exact - xv[r][i])
            # 3 mantissa bits: half an ulp is |x| * 2^-4; subnormal step of e4m3 is 2^-9 * sf
            assert err <= max(abs(xv[r][i]) * 2.0 ** -4, s * 2.0 ** -10), (r, i, xv[r][i], exact)
            assert abs(xv[r][i]) <= 448.0 * s


@pytest.mark.parametrize("h", [64, 2880])
def test_mxfp8_roundtrip_random(h):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(3, h, generator=g) * torch.rand(3, 1, generator=g) * 50).to(torch.bfloat16)
    q, sf = F.quantize_mxfp8(x)
    dq = F.dequantize_mxfp8(q, sf)
    check_roundtrip_bound(x, dq, sf)
    rel = (dq - x.float()).norm() / x.float().norm()
    assert rel < 0.04


def test_dequantize_mxfp8_overflows_to_inf_near_bf16_max():
    # 3.2965e38 / 2^120 = 248 ties up to e4m3 256, and 256 * 2^120 = 2^128 is not an fp32 value
    x = torch.zeros(1, 32, dtype=torch.bfloat16)
    x[0, 0] = 3.2964854295465914e+38
    q, sf = F.quantize_mxfp8(x)
    assert bytes_u8(q)[0] == 0x78 and list(struct.pack("<i", sf[0, 0].item()))[0] == 247
    assert F.dequantize_mxfp8(q, sf)[0, 0].item() == math.inf


def test_quantize_mxfp8_zero_tokens():
    q, sf = F.quantize_mxfp8(torch.zeros(0, 160, dtype=torch.bfloat16))
    assert tuple(q.shape) == (0, 160) and q.dtype == torch.float8_e4m3fn
    assert tuple(sf.shape) == (0, 2) and sf.dtype == torch.int32


# ---------------------------------------------------------------------------- non-finite inputs
def _set_bits_bf16(x: torch.Tensor, r: int, c: int, bits16: int) -> None:
    x.view(torch.int16)[r, c] = bits16 - (1 << 16) if bits16 >= 1 << 15 else bits16


NONFINITE_BF16 = {"nan": 0x7FC0, "-nan": 0xFFC0, "inf": 0x7F80, "-inf": 0xFF80}


@pytest.mark.parametrize("kind", ["nan", "-nan", "inf", "-inf", "mixed"])
def test_quantize_mxfp8_nonfinite_confined_to_block(kind):
    g = torch.Generator().manual_seed(3)
    h = 160
    clean = (torch.randn(3, h, generator=g) * 5).to(torch.bfloat16)
    clean[1, 64:96] *= 1e10                                     # bad block has large finite values too
    clean[1, 65] = 1e38                                         # 1e38 * 2^-127 ~ 0.59: not flushed
    clean[1, 66] = -3e38
    bad = clean.clone()
    hits = {"mixed": [(1, 70, "nan"), (1, 75, "-inf"), (1, 80, "-nan"), (1, 85, "inf")]}.get(
        kind, [(1, 70, kind), (1, 90, kind)])
    for r, c, k in hits:
        _set_bits_bf16(bad, r, c, NONFINITE_BF16[k])
    qc, sc = F.quantize_mxfp8(clean)
    qb, sb = F.quantize_mxfp8(bad)
    ub, uc = qb.view(torch.uint8), qc.view(torch.uint8)
    # rows 0 and 2 bit-identical; row 1 identical outside block 2 (channels 64..95)
    assert torch.equal(ub[0], uc[0]) and torch.equal(ub[2], uc[2])
    assert torch.equal(sb[0], sc[0]) and torch.equal(sb[2], sc[2])
    assert torch.equal(ub[1, :64], uc[1, :64]) and torch.equal(ub[1, 96:], uc[1, 96:])
    scale_bytes = list(struct.pack("<2i", *sb[1].tolist()))
    clean_bytes = list(struct.pack("<2i", *sc[1].tolist()))
    assert scale_bytes[2] == 254
    assert scale_bytes[:2] == clean_bytes[:2] and scale_bytes[3:] == clean_bytes[3:]
    # inside the bad block: NaN -> 0x7F with its sign, Inf -> +-448, finite -> e4m3(x * 2^-127)
    xv = bad.float()[1].tolist()
    for c in range(64, 96):
        got = int(ub[1, c])
        k = next((k for (_, cc, k) in hits if cc == c), None)
        if k in ("nan", "-nan"):
            assert got == (0xFF if k == "-nan" else 0x7F), (c, hex(got))
        elif k in ("inf", "-inf"):
            assert got == (0xFE if k == "-inf" else 0x7E), (c, hex(got))
        else:
            assert got == e4m3_encode(f32(xv[c] * 2.0 ** -127)), c
    # dequantized NaN stays NaN
    dq = F.dequantize_mxfp8(qb, sb)
    for _, c, k in hits:
        if "nan" in k:
            assert math.isnan(float(dq[1, c]))


def test_quantize_mxfp8_nonfinite_fp32_input():
    x = torch.ones(2, 64, dtype=torch.float32)
    x[0, 3] = math.inf
    x.view(torch.int32)[1, 40] = -4194304            # 0xFFC00000: negative quiet NaN
    q, sf = F.quantize_mxfp8(x)
    u = q.view(torch.uint8)
    assert int(u[0, 3]) == 0x7E and int(u[1, 40]) == 0xFF
    assert list(struct.pack("<i", sf[0, 0].item()))[:2] == [254, 119]      # amax 1 -> 2^-8
    assert list(struct.pack("<i", sf[1, 0].item()))[:2] == [119, 254]
    # finite ones in the bad block are 1 * 2^-127 -> 0
    assert int(u[0, 0]) == 0 and int(u[1, 33]) == 0
    assert int(u[0, 40]) == e4m3_encode(1.0 * 2.0 ** 8) == 0x78  # 1 / 2^-8 = 256


# ---------------------------------------------------------------------------- bad inputs
def test_quantize_mxfp8_bad_inputs():
    with pytest.raises(ValueError, match="48"):
        F.quantize_mxfp8(torch.ones(2, 48, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="int32"):
        F.quantize_mxfp8(torch.ones(2, 64, dtype=torch.int32))
    with pytest.raises(ValueError, match="float64"):
        F.quantize_mxfp8(torch.ones(2, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(64,\)"):
        F.quantize_mxfp8(torch.ones(64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"\(2, 2, 64\)"):
        F.quantize_mxfp8(torch.ones(2, 2, 64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="got 0"):
        F.quantize_mxfp8(torch.ones(2, 0, dtype=torch.bfloat16))


def test_quantize_mxfp4_bad_inputs():
    with pytest.raises(ValueError, match="48"):
        F.quantize_mxfp4(torch.ones(2, 48))
    with pytest.raises(ValueError, match="int32"):
        F.quantize_mxfp4(torch.ones(2, 64, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\(64,\)"):
        F.quantize_mxfp4(torch.ones(64))
    w = torch.ones(2, 3, 64)
    w[1, 2, 5] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        F.quantize_mxfp4(w)
    w = torch.ones(3, 64, dtype=torch.bfloat16)
    w[0, 0] = -math.inf
    with pytest.raises(ValueError, match="Inf"):
        F.quantize_mxfp4(w)
    with pytest.raises(ValueError, match="bogus"):
        F.quantize_mxfp4(torch.ones(2, 64), rounding="bogus")


def test_pack_unpack_bad_inputs():
    with pytest.raises(ValueError, match="int32"):
        F.pack_ue8m0(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="int64"):
        F.unpack_ue8m0(torch.ones(2, 3, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match="9"):
        F.unpack_ue8m0(torch.ones(2, 2, dtype=torch.int32), 9)
    with pytest.raises(ValueError, match="7"):
        F.pack_fp4(torch.zeros(2, 7, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3"):
        F.dequantize_mxfp4(torch.zeros(2, 32, dtype=torch.int8), torch.zeros(2, 3, dtype=torch.uint8))


# ============================================================================ MXFP4 weights
TIES_TZ = {0.25: 0, 0.75: 1, 1.25: 2, 1.75: 3, 2.5: 4, 3.5: 5, 5.0: 6}      # ties toward zero
TIES_RTNE = {0.25: 0, 0.75: 2, 1.25: 2, 1.75: 4, 2.5: 4, 3.5: 6, 5.0: 6}    # ties to even code


def unpack_codes_py(packed: torch.Tensor) -> list:
    """int8 [..., K/2] -> flat list of codes per row, low nibble = element 2j."""
    rows = packed.reshape(-1, packed.shape[-1]).view(torch.uint8).tolist()
    out = []
    for row in rows:
        r = []
        for byte in row:
            r += [byte & 0xF, byte >> 4]
        out.append(r)
    return out


@pytest.mark.parametrize("mode,table", [("toward_zero", TIES_TZ), ("rtne", TIES_RTNE)])
@pytest.mark.parametrize("k", [-3, 0, 4])
def test_quantize_mxfp4_every_tie(mode, table, k):
    scale = 2.0 ** k
    ties = list(table)
    row = [6.0 * scale]                                     # amax 6*2^k -> scale byte 127+k
    for v in ties:
        row += [v * scale, -v * scale]
        row += [f32_from_bits(bits_of_f32(v * scale) + 1), f32_from_bits(bits_of_f32(v * scale) - 1)]
    row += [0.0] * (32 - len(row))
    codes_mt = [7]
    for v in ties:
        c = table[v]
        codes_mt += [c, c | 8 if c else 0, ties_up(v), ties_up(v) - 1]
    codes_mt += [0] * (32 - len(codes_mt))
    w = torch.tensor([row], dtype=torch.float32)
    args = () if mode == "toward_zero" else (mode,)
    codes, sf = F.quantize_mxfp4(w, *args)
    assert codes.dtype == torch.int8 and tuple(codes.shape) == (1, 16)
    assert sf.dtype == torch.uint8 and sf.tolist() == [[127 + k]]
    assert unpack_codes_py(codes)[0] == codes_mt


def ties_up(v: float) -> int:
    """Code of the larger neighbour of tie value v."""
    return [c for c in range(8) if E2M1[c] > v][0]


def test_quantize_mxfp4_default_is_toward_zero():
    w = torch.tensor([[6.0, 5.0, 3.5, 0.75] + [0.0] * 28])
    a, _ = F.quantize_mxfp4(w)
    b, _ = F.quantize_mxfp4(w, rounding="toward_zero")
    assert unpack_codes_py(a)[0][:4] == [7, 6, 5, 1]
    assert torch.equal(a, b)


def test_quantize_mxfp4_no_negative_zero():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, 8, 64, generator=g)
    w[..., ::3] *= 1e-3                                     # many values that round to zero
    w[0, 0, :32] = -0.0
    w[0, 1, :] = -torch.rand(64, generator=g) * 0.2         # negatives, some tie/underflow
    w[0, 1, 0] = -6.0
    for mode in ("toward_zero", "rtne"):
        codes, _ = F.quantize_mxfp4(w, mode)
        flat = [c for row in unpack_codes_py(codes) for c in row]
        assert 8 not in flat, mode


def test_quantize_mxfp4_scale_rule():
    rows, want = [], []
    # fp32(1e-4)/6 = 1.67e-5 lies in (2^-16, 2^-15] -> byte 112; FLT_MAX/6 in (2^125, 2^126] -> 253
    for amax, byte in [(6.0, 127), (6.000001, 128), (5.999999, 127), (3.0, 126), (3.01, 127),
                       (0.0, 112), (1e-4, 112), (1e-5, 112), (1e-3, 127 - 12),
                       (6.0 * 2.0 ** 100, 227), (FLT_MAX, 253), (2.0 ** -140, 112)]:
        a = f32(amax)
        rows.append([a, -a / 2] + [0.0] * 30)
        want.append([pow2_byte(f32(max(a, F32_1EM4) / 6.0))])
        assert want[-1] == [byte], amax                     # hand value agrees with frexp rule
    _, sf = F.quantize_mxfp4(torch.tensor(rows, dtype=torch.float32))
    assert sf.tolist() == want


@given(
    lead=st.sampled_from([(), (2,), (2, 1)]),
    n=st.integers(1, 3),
    kb=st.integers(1, 3),
    mode=st.sampled_from(["toward_zero", "rtne"]),
    dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    data=st.data(),
)
def test_quantize_mxfp4_property(lead, n, kb, mode, dtype, data):
    k = kb * 32
    count = math.prod(lead) * n * k
    elems = st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False, width=32),
        st.floats(-F32_1EM3, F32_1EM3, width=32),
        st.sampled_from([0.0, -0.0, 6.0, -6.0, 0.25, -0.75, 1.25, 5.0, 2.5, 1e-4, 2.0 ** -130]),
    )
    vals = data.draw(st.lists(elems, min_size=count, max_size=count))
    w = torch.tensor(vals, dtype=torch.float32).reshape(*lead, n, k).to(dtype)
    codes, sf = F.quantize_mxfp4(w, mode)
    assert tuple(codes.shape) == (*lead, n, k // 2) and codes.dtype == torch.int8
    assert tuple(sf.shape) == (*lead, n, kb) and sf.dtype == torch.uint8
    got_codes = unpack_codes_py(codes)
    got_sf = sf.reshape(-1, kb).tolist()
    rows = w.float().reshape(-1, k).tolist()
    for r, row in enumerate(rows):
        ec, es = py_mxfp4_row(row, mode)
        assert got_codes[r] == ec, r
        assert got_sf[r] == es, r
    # dequantization: exact value = magnitude * 2^(byte-127), and within half a step of the input
    dq = F.dequantize_mxfp4(codes, sf).reshape(-1, k).tolist()
    for r, row in enumerate(rows):
        for i, v in enumerate(row):
            c = got_codes[r][i]
            s = e8m0_value(got_sf[r][i // 32])
            want = f32((-1.0 if c & 8 else 1.0) * E2M1[c & 7] * s)
            assert dq[r][i] == want
            assert abs(want - v) <= max(abs(v) / 4, 0.25 * s) + 1e-45


def test_quantize_mxfp4_leading_dims_independent():
    g = torch.Generator().manual_seed(11)
    w = torch.randn(3, 4, 96, generator=g).to(torch.bfloat16)
    codes, sf = F.quantize_mxfp4(w)
    for e in range(3):
        ce, se = F.quantize_mxfp4(w[e])
        assert torch.equal(codes[e], ce) and torch.equal(sf[e], se)


def test_dequantize_mxfp4_hand_made():
    # codes 0..15 across one row of 32, two rows with different scale bytes
    codes = list(range(16)) + [15 - c for c in range(16)]
    packed_row = [codes[2 * j] | (codes[2 * j + 1] << 4) for j in range(16)]
    packed = torch.tensor([packed_row, packed_row, packed_row, packed_row], dtype=torch.uint8).view(torch.int8)
    scales = torch.tensor([[127], [130], [0], [254]], dtype=torch.uint8)
    got = F.dequantize_mxfp4(packed, scales)
    assert got.dtype == torch.float32 and tuple(got.shape) == (4, 32)
    mags = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    vals = [m for m in mags] + [-m for m in mags]
    row127 = [vals[c] for c in codes]
    assert got[0].tolist() == row127
    assert got[1].tolist() == [8 * v for v in row127]
    assert got[2].tolist() == [v * 2.0 ** -127 for v in row127]     # 0.5 * 2^-127 is subnormal
    row254 = got[3].tolist()
    for c, v in zip(codes, row254):
        want = vals[c] * 2.0 ** 127
        assert v == (f32(want)), (c, v)                               # 2*2^127 and above -> inf
    # code 8 is negative zero
    assert math.copysign(1.0, got[0, 8].item()) == -1.0


@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), min_size=1, max_size=32),
       st.integers(1, 3))
def test_pack_fp4_roundtrip(pairs, rows):
    codes = [c for p in pairs for c in p]
    c = torch.tensor([codes] * rows, dtype=torch.uint8)
    packed = F.pack_fp4(c)
    assert packed.dtype == torch.int8 and tuple(packed.shape) == (rows, len(codes) // 2)
    want = [codes[2 * j] | (codes[2 * j + 1] << 4) for j in range(len(codes) // 2)]
    assert packed.view(torch.uint8).tolist() == [want] * rows
    back = F.unpack_fp4(packed)
    assert back.dtype == torch.uint8 and back.tolist() == [codes] * rows
    # e2m1_to_float by table
    vals = F.e2m1_to_float(back).tolist()
    assert vals[0] == [(-1.0 if x & 8 else 1.0) * E2M1[x & 7] for x in codes]


@given(st.lists(st.integers(0, 255), min_size=1, max_size=40), st.integers(1, 2))
def test_unpack_fp4_any_bytes(raw, rows):
    p = torch.tensor([raw] * rows, dtype=torch.uint8).view(torch.int8)
    got = F.unpack_fp4(p).tolist()
    want = []
    for b in raw:
        want += [b % 16, b // 16]
    assert got == [want] * rows
    assert torch.equal(F.pack_fp4(F.unpack_fp4(p)), p)


@given(st.lists(st.integers(0, 255), min_size=1, max_size=13), st.integers(1, 3))
def test_pack_ue8m0_roundtrip(scale_bytes, rows):
    b = torch.tensor([scale_bytes] * rows, dtype=torch.uint8)
    words = F.pack_ue8m0(b)
    nw = (len(scale_bytes) + 3) // 4
    assert words.dtype == torch.int32 and tuple(words.shape) == (rows, nw)
    assert F.packed_scale_words(32 * len(scale_bytes)) == nw
    assert words.tolist() == [py_pack_words(scale_bytes)] * rows
    back = F.unpack_ue8m0(words, len(scale_bytes))
    assert back.dtype == torch.uint8 and back.tolist() == [scale_bytes] * rows


@given(st.lists(st.integers(-(2 ** 31), 2 ** 31 - 1), min_size=1, max_size=5), st.data())
def test_unpack_ue8m0_any_words(words, data):
    nblocks = data.draw(st.integers(1, 4 * len(words)))
    w = torch.tensor([words], dtype=torch.int32)
    raw = list(struct.pack(f"<{len(words)}i", *words))
    assert F.unpack_ue8m0(w, nblocks).tolist() == [raw[:nblocks]]
    if nblocks == 4 * len(words):
        assert F.pack_ue8m0(F.unpack_ue8m0(w, nblocks)).tolist() == [words]


def test_check_hidden_and_packed_words():
    for h, words in [(32, 1), (128, 1), (160, 2), (2880, 23), (7168, 56)]:
        assert F.packed_scale_words(h) == words
        F.check_hidden("hidden", h)
    for bad in (0, -32, 48, 33):
        with pytest.raises(ValueError, match=str(bad)):
            F.check_hidden("hidden", bad)


def test_module_constants():
    assert F.BLOCK == 32 and F.E4M3_MAX == 448.0 and F.E2M1_MAX == 6.0 and F.PAD_SCALE_BYTE == 127
    assert tuple(F.E2M1_VALUES) == E2M1


def test_quantize_mxfp8_matches_python_on_random_seeds():
    rnd = random.Random(1234)
    for h in (32, 96, 160):
        rows = []
        for _ in range(3):
            row = []
            for _b in range(h // 32):
                e = rnd.randint(-30, 30)
                row += [rnd.gauss(0, 1) * 2.0 ** e for _ in range(32)]
            rows.append(row)
        check_mxfp8(torch.tensor(rows, dtype=torch.float32).to(torch.bfloat16))
