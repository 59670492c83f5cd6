"""The oracle (tmoe.reference, DESIGN.md §1.1) tested hard.

* Hand-made cases: weights built from E2M1 codes and scale bytes chosen by hand (packed here, not by
  formats.py), expected outputs written out as literal numbers, derived step by step from §1.1.
* A pure-Python emulation of §1.1 (struct-based fp32/bf16 rounding, own MXFP8 quantizer) that must
  agree bitwise with the oracle on random exactly-representable weights, and variants of it
  (a step left out) that must NOT agree, so the comparison can actually fail.
* Loose agreement with the unquantized float64 MoE, invariances, EP, validation.
"""
from __future__ import annotations

import math
import random
import struct

import pytest
import torch
from hypothesis import given, strategies as st

from tmoe import formats as F
from py_numerics import E2M1, bf16_rn, bits_of_f32, e4m3_decode, f32, f32_from_bits, py_mxfp8_row, py_pack_words
from tmoe.reference import (MoEWeights, calc_diff, reference_moe, reference_moe_bf16,
                            reference_moe_ep, swiglu_fp32)

# ============================================================================ pure-Python numerics


def py_mxfp8(vals: list) -> tuple[list, list, list]:
    """fp32 values -> (e4m3 bytes, scale bytes, exact dequantized values), DESIGN §2.1."""
    qb, sb = py_mxfp8_row(vals)
    return qb, sb, [e4m3_decode(q) * math.ldexp(1.0, sb[i // 32] - 127) for i, q in enumerate(qb)]


def py_x_inputs(rows: list) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Token rows (fp32-valued floats) -> (x_fp8, x_sf) built by hand, plus exact dequantized rows."""
    qs, words, dqs = [], [], []
    for row in rows:
        q, s, d = py_mxfp8(row)
        qs.append(q)
        words.append(py_pack_words(s))
        dqs.append(d)
    h = len(rows[0]) if rows else 32
    x_fp8 = torch.tensor(qs, dtype=torch.uint8).reshape(len(rows), h).view(torch.float8_e4m3fn)
    x_sf = torch.tensor(words, dtype=torch.int32).reshape(len(rows), (h // 32 + 3) // 4)
    return x_fp8, x_sf, dqs


def silu_f32(g: float, nudge: int = 0) -> float:
    e = f32(math.exp(-g)) if -g < 709 else math.inf
    if nudge and math.isfinite(e) and e > 0:
        e = f32_from_bits(bits_of_f32(e) + nudge)          # model a 1-ulp different fp32 exp
    return f32(g / f32(1.0 + e))


def emulate_moe(xd_rows, idx, tw, W1, W2, clamp=None, *, round_h=True, round_o=True,
                weight_first=True, use_silu=True, nudge=0):
    """DESIGN §1.1 in Python floats. W1[e] = 2I rows of H floats, W2[e] = H rows of I floats."""
    out = []
    for t, xd in enumerate(xd_rows):
        hdim = len(xd)
        acc = [0.0] * hdim
        for k, e in enumerate(idx[t]):
            if e < 0:
                continue
            w = f32(tw[t][k])
            h = [math.fsum(a * b for a, b in zip(xd, row)) for row in W1[e]]
            h = [bf16_rn(v) if round_h else f32(v) for v in h]
            inter = len(h) // 2
            s = []
            for j in range(inter):
                g, u = h[j], h[inter + j]
                if clamp is not None:
                    c = f32(clamp)
                    g = min(g, c)
                    u = min(max(u, -c), c)
                a = silu_f32(g, nudge) if use_silu else g
                v = f32(a * u)
                s.append(f32(v * w) if weight_first else v)
            _, _, sd = py_mxfp8(s)
            o = [math.fsum(a * b for a, b in zip(sd, row)) for row in W2[e]]
            if not weight_first:
                o = [v * w for v in o]
            o = [bf16_rn(v) if round_o else f32(v) for v in o]
            acc = [f32(a + b) for a, b in zip(acc, o)]
        out.append([bf16_rn(a) for a in acc])
    return out


def encode_mxfp4(rows: list, scale_bytes: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact values (code magnitude * 2^(byte-127)) -> (int8 [N, K/2], uint8 [N, K/32]), by hand."""
    packed = []
    for r, row in enumerate(rows):
        codes = []
        for i, v in enumerate(row):
            sf = math.ldexp(1.0, scale_bytes[r][i // 32] - 127)
            c = E2M1.index(abs(v) / sf)                       # ValueError if not representable
            codes.append(c | (8 if v < 0 else 0))
        packed.append([codes[2 * j] | (codes[2 * j + 1] << 4) for j in range(len(codes) // 2)])
    return (torch.tensor(packed, dtype=torch.uint8).view(torch.int8),
            torch.tensor(scale_bytes, dtype=torch.uint8))


def make_weights(W1, W1_sb, W2, W2_sb) -> MoEWeights:
    a = [encode_mxfp4(W1[e], W1_sb[e]) for e in range(len(W1))]
    b = [encode_mxfp4(W2[e], W2_sb[e]) for e in range(len(W2))]
    return MoEWeights(torch.stack([p for p, _ in a]), torch.stack([s for _, s in a]),
                      torch.stack([p for p, _ in b]), torch.stack([s for _, s in b]))


def rows_of(y: torch.Tensor) -> list:
    return y.float().tolist()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int16), b.view(torch.int16))


# ============================================================================ the hand-made case
H = I = 32


def hand_expert():
    """Expert 0 of the hand case; every value is an exact E2M1 code times its row's scale.

    With x = [1, 0.5, 2^-6, 0...] (exact in MXFP8: amax 1 -> sf 2^-8, q = 256, 128, 4):
      gate h[0..4] = 256 + 32*0.5 + 32*2^-6 = 272.5 -> bf16 272,  1,  -2,  -288,  20
      up   h[32..36] = 1, 1.5, 3, -6, -12
    W2 rows 0..4 pick channel j, row 5 sums channels 0..4, the other rows are 0.
    """
    W1 = [[0.0] * H for _ in range(2 * I)]
    sb1 = [[127] for _ in range(2 * I)]
    W1[0][:3], sb1[0] = [256.0, 32.0, 32.0], [133]          # codes 4, .5, .5 at 2^6
    W1[1][0] = 1.0
    W1[2][0] = -2.0
    W1[3][:2], sb1[3] = [-256.0, -64.0], [133]              # -256 - 32 = -288
    W1[4][:2], sb1[4] = [16.0, 8.0], [129]                  # 16 + 4 = 20
    W1[I + 0][0] = 1.0
    W1[I + 1][0] = 1.5
    W1[I + 2][0] = 3.0
    W1[I + 3][0] = -6.0
    W1[I + 4][0], sb1[I + 4] = -12.0, [128]
    W2 = [[0.0] * I for _ in range(H)]
    sb2 = [[127] for _ in range(H)]
    for j in range(5):
        W2[j][j] = 1.0
        W2[5][j] = 1.0
    return W1, sb1, W2, sb2


HAND_X = [1.0, 0.5, 2.0 ** -6] + [0.0] * (H - 3)


def hand_setup():
    W1, sb1, W2, sb2 = hand_expert()
    weights = make_weights([W1], [sb1], [W2], [sb2])
    return weights, (W1, W2)


def test_hand_weights_dequantize_as_built():
    weights, (W1, W2) = hand_setup()
    assert F.dequantize_mxfp4(weights.w1[0], weights.w1_sf[0]).tolist() == W1
    assert F.dequantize_mxfp4(weights.w2[0], weights.w2_sf[0]).tolist() == W2
    assert (weights.num_experts, weights.hidden, weights.intermediate) == (1, H, I)


def test_hand_case_no_clamp_literal():
    weights, _ = hand_setup()
    x_fp8, x_sf, xd = py_x_inputs([HAND_X])
    assert xd[0] == HAND_X and x_fp8.view(torch.uint8)[0, :3].tolist() == [0x78, 0x70, 0x48]
    assert x_sf.tolist() == [[struct.unpack("<i", bytes([119, 127, 127, 127]))[0]]]
    idx = torch.tensor([[0]])
    tw = torch.tensor([[1.0]])
    y, o, h = reference_moe(x_fp8, x_sf, idx, tw, weights, return_slots=True)
    # h: 272.5 is rounded to bf16 272 (spacing 2 in [256, 512))
    assert h[0, 0, :5].float().tolist() == [272.0, 1.0, -2.0, -288.0, 20.0]
    assert h[0, 0, I:I + 5].float().tolist() == [1.0, 1.5, 3.0, -6.0, -12.0]
    assert not h[0, 0, 5:I].float().any() and not h[0, 0, I + 5:].float().any()
    # s = [272, silu(1)*1.5 = 1.09659, silu(-2)*3 = -0.71524, -0*-6 = 0, 20*-12 = -240], amax 272
    # -> sf = 1; e4m3: 272 is a tie between 256 and 288 -> 256 (even); 1.09659 -> 1.125;
    # -0.71524 -> -0.6875; -240 exact.  o5 = 256 + 1.125 - 0.6875 - 240 = 16.4375 -> bf16 tie -> 16.5
    want = [256.0, 1.125, -0.6875, 0.0, -240.0, 16.5] + [0.0] * (H - 6)
    assert rows_of(y) == [want]
    assert rows_of(o[:, 0]) == [want]
    assert y.dtype == torch.bfloat16 and tuple(y.shape) == (1, H)


def test_hand_case_routing_weight_before_requant_literal():
    weights, _ = hand_setup()
    x_fp8, x_sf, _ = py_x_inputs([HAND_X])
    y = reference_moe(x_fp8, x_sf, torch.tensor([[0]]), torch.tensor([[0.75]]), weights)
    # s * 0.75 = [204, 0.82244, -0.53643, 0, -180], amax 204 -> sf 0.5, q = 2s:
    # 408 -> 416, 1.64489 -> 1.625, -1.07286 -> -1.125, -360 -> -352  => sd = [208, .8125, -.5625, 0, -176]
    want = [208.0, 0.8125, -0.5625, 0.0, -176.0, 32.25] + [0.0] * (H - 6)
    assert rows_of(y) == [want]
    # applying the weight after requantization would give 0.75 * [256, 1.125, -0.6875, 0, -240]
    assert want[:5] != [192.0, 0.84375, -0.515625, 0.0, -180.0]


def test_hand_case_clamp_literal():
    weights, _ = hand_setup()
    x_fp8, x_sf, _ = py_x_inputs([HAND_X])
    y, _, h = reference_moe(x_fp8, x_sf, torch.tensor([[0]]), torch.tensor([[1.0]]), weights,
                            activation_clamp=10.0, return_slots=True)
    # h is returned before the clamp
    assert h[0, 0, :5].float().tolist() == [272.0, 1.0, -2.0, -288.0, 20.0]
    # gate one-sided: g = [10, 1, -2, -288 (kept), 10]; up two-sided: u = [1, 1.5, 3, -6, -10]
    # s = [9.99955, 1.09659, -0.71524, 0, -99.9955], amax -> sf 0.25; q = 4s:
    # 39.998 -> 40, 4.386 -> 4.5, -2.861 -> -2.75, -399.98 -> -384  => sd = [10, 1.125, -.6875, 0, -96]
    want = [10.0, 1.125, -0.6875, 0.0, -96.0, -85.5] + [0.0] * (H - 6)
    assert rows_of(y) == [want]


def test_hand_case_two_tokens_and_emulation():
    """Two tokens (weights 1 and 0.75) in one batch, a second expert, K = 2 with a masked slot."""
    W1, sb1, W2, sb2 = hand_expert()
    # expert 1: gate = 2 * x0 on every channel, up = x1 on every channel, W2 = 0.5 * identity-ish
    W1b = [[2.0] + [0.0] * (H - 1) for _ in range(I)] + [[0.0, 1.0] + [0.0] * (H - 2) for _ in range(I)]
    sb1b = [[127] for _ in range(2 * I)]
    W2b = [[0.5 if (i + j) % 7 == 0 else 0.0 for j in range(I)] for i in range(H)]
    sb2b = [[127] for _ in range(H)]
    weights = make_weights([W1, W1b], [sb1, sb1b], [W2, W2b], [sb2, sb2b])
    x2 = [0.25 * v for v in HAND_X]
    x2[7] = -3.0
    x_fp8, x_sf, xd = py_x_inputs([HAND_X, x2])
    idx = [[0, 1], [-1, 1]]
    tw = [[1.0, 0.75], [0.3, 0.75]]
    y = reference_moe(x_fp8, x_sf, torch.tensor(idx), torch.tensor(tw), weights)
    want = emulate_moe(xd, idx, tw, [W1, W1b], [W2, W2b])
    assert rows_of(y) == want
    # token 0, slot 0 is the literal case above; slot 1 adds 0.5 * sd on some channels
    assert want[0][:6] != [256.0, 1.125, -0.6875, 0.0, -240.0, 16.5]


# ============================================================================ random exact weights vs emulation
def random_exact_case(seed, E=3, T=3, K=3, h=64, inter=32):
    rnd = random.Random(seed)

    def mat(n, k, lo, hi):
        vals, sbs = [], []
        for _ in range(n):
            sb = [rnd.randint(lo, hi) for _ in range(k // 32)]
            row = []
            for i in range(k):
                c = rnd.randrange(16) if rnd.random() < 0.8 else 0
                row.append((-1.0 if c & 8 and c & 7 else 1.0) * E2M1[c & 7] * math.ldexp(1.0, sb[i // 32] - 127))
            vals.append(row)
            sbs.append(sb)
        return vals, sbs

    W1, S1, W2, S2 = [], [], [], []
    for _ in range(E):
        a, sa = mat(2 * inter, h, 122, 125)
        b, sbb = mat(h, inter, 122, 126)
        W1.append(a), S1.append(sa), W2.append(b), S2.append(sbb)
    xs = []
    for _ in range(T):
        row = []
        for _b in range(h // 32):
            m = 2.0 ** rnd.randint(-3, 3)
            row += [f32(bf16_rn(rnd.gauss(0, 1) * m)) for _ in range(32)]
        xs.append(row)
    idx = [[rnd.randrange(E) for _ in range(K)] for _ in range(T)]
    if T >= 2 and K >= 3:
        idx[0][1] = -1
        idx[1][2] = idx[1][0]                              # duplicate expert in a row
    tw = [[f32(rnd.uniform(0.05, 1.0)) for _ in range(K)] for _ in range(T)]
    return make_weights(W1, S1, W2, S2), W1, W2, xs, idx, tw


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("clamp", [None, 0.75])
def test_reference_matches_python_emulation(seed, clamp):
    weights, W1, W2, xs, idx, tw = random_exact_case(seed)
    x_fp8, x_sf, xd = py_x_inputs(xs)
    # the hand-built MXFP8 input equals formats' quantizer (separately tested)
    q2, s2 = F.quantize_mxfp8(torch.tensor(xs).to(torch.bfloat16))
    assert torch.equal(q2.view(torch.uint8), x_fp8.view(torch.uint8)) and torch.equal(s2, x_sf)
    y = reference_moe(x_fp8, x_sf, torch.tensor(idx), torch.tensor(tw), weights, activation_clamp=clamp)
    want = emulate_moe(xd, idx, tw, W1, W2, clamp)
    # the expectation is robust to a 1-ulp different fp32 exp (so this is not testing libm)
    assert emulate_moe(xd, idx, tw, W1, W2, clamp, nudge=1) == want
    assert emulate_moe(xd, idx, tw, W1, W2, clamp, nudge=-1) == want
    assert rows_of(y) == want
    # each step of §1.1 matters: leaving one out changes the result
    for variant in (dict(round_h=False), dict(round_o=False), dict(weight_first=False), dict(use_silu=False)):
        assert emulate_moe(xd, idx, tw, W1, W2, clamp, **variant) != want, variant


@given(data=st.data(), E=st.integers(1, 4), K=st.integers(1, 4), T=st.integers(0, 4),
       clamp=st.sampled_from([None, 0.5, 4.0]))
def test_reference_matches_emulation_property(data, E, K, T, clamp):
    """Routing (masks, duplicates, hot/empty experts, T = 0) and magnitudes drawn by hypothesis."""
    seed = data.draw(st.integers(0, 2 ** 16), label="weights seed")
    weights, W1, W2, _, _, _ = random_exact_case(seed, E=E, T=1, K=1, h=32, inter=32)
    idx = data.draw(st.lists(st.lists(st.integers(-1, E - 1), min_size=K, max_size=K),
                             min_size=T, max_size=T), label="topk_idx")
    tw = data.draw(st.lists(st.lists(st.floats(0.0, 2.0, width=32), min_size=K, max_size=K),
                            min_size=T, max_size=T), label="topk_weights")
    scales = data.draw(st.lists(st.integers(-12, 6), min_size=T, max_size=T), label="x log2 scale")
    rnd = random.Random(seed + 1)
    xs = [[f32(bf16_rn(rnd.gauss(0, 1) * 2.0 ** sc)) if rnd.random() < 0.9 else 0.0 for _ in range(32)]
          for sc in scales]
    x_fp8, x_sf, xd = py_x_inputs(xs)
    idx_t = torch.tensor(idx, dtype=torch.long).reshape(T, K)
    tw_t = torch.tensor(tw, dtype=torch.float32).reshape(T, K)
    y, o, h = reference_moe(x_fp8, x_sf, idx_t, tw_t, weights, activation_clamp=clamp, return_slots=True)
    assert tuple(y.shape) == (T, 32) and tuple(o.shape) == (T, K, 32) and tuple(h.shape) == (T, K, 64)
    assert rows_of(y) == emulate_moe(xd, idx, tw, W1, W2, clamp)
    for t in range(T):                                  # each token alone gives its batch row
        yt = reference_moe(x_fp8[t:t + 1], x_sf[t:t + 1], idx_t[t:t + 1], tw_t[t:t + 1], weights,
                           activation_clamp=clamp)
        assert same_bits(yt[0], y[t])


# ============================================================================ random data fixtures
def random_moe(seed=0, E=8, h=64, inter=32, T=12, K=4, mask_frac=0.2, dup=False):
    g = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(E, 2 * inter, h, generator=g) / math.sqrt(h)).to(torch.bfloat16)
    w2 = (torch.randn(E, h, inter, generator=g) / math.sqrt(inter)).to(torch.bfloat16)
    x = torch.randn(T, h, generator=g).to(torch.bfloat16)
    idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)]) if T else torch.zeros(0, K, dtype=torch.long)
    if T:
        idx = torch.where(torch.rand(T, K, generator=g) < mask_frac, -1, idx)
        if dup:
            idx[:, -1] = idx[:, 0].clamp(min=0)
    tw = torch.rand(T, K, generator=g) + 0.1
    weights = MoEWeights.quantize(w1, w2)
    x_fp8, x_sf = F.quantize_mxfp8(x)
    return dict(x=x, x_fp8=x_fp8, x_sf=x_sf, idx=idx, tw=tw, w1=w1, w2=w2, weights=weights)


def run(m, **kw):
    return reference_moe(m["x_fp8"], m["x_sf"], m["idx"], m["tw"], m["weights"], **kw)


@pytest.mark.parametrize("seed,E,h,inter,K,clamp", [
    (0, 8, 64, 32, 4, None), (1, 4, 128, 64, 2, None), (2, 16, 96, 64, 6, None), (3, 8, 64, 96, 4, 1.0),
])
def test_agrees_with_unquantized_moe(seed, E, h, inter, K, clamp):
    m = random_moe(seed, E=E, h=h, inter=inter, T=24, K=K, mask_frac=0.1)
    y = run(m, activation_clamp=clamp)
    y64 = reference_moe_bf16(m["x"], m["idx"], m["tw"], m["w1"], m["w2"], activation_clamp=clamp)
    assert not torch.isnan(y).any()
    # MXFP4 weights alone are ~0.007 calc_diff from their bf16 source (per matrix), so the whole
    # layer lands at ~0.02-0.03 of the unquantized MoE: loose bound
    d = calc_diff(y, y64)
    assert 1e-4 < d < 5e-2, d
    # against the same float64 MoE run on the exactly dequantized x / w1 / w2 only the MXFP8
    # requantization of s and the bf16 roundings remain: ~4e-4
    w = m["weights"]
    ydq = reference_moe_bf16(F.dequantize_mxfp8(m["x_fp8"], m["x_sf"]), m["idx"], m["tw"],
                             F.dequantize_mxfp4(w.w1, w.w1_sf), F.dequantize_mxfp4(w.w2, w.w2_sf),
                             activation_clamp=clamp)
    d2 = calc_diff(y, ydq)
    assert 1e-6 < d2 < 1.5e-3, d2


def test_unquantized_moe_hand_value():
    # one token, one expert, H = I = 32 with exactly known float math
    w1 = torch.zeros(1, 2 * I, H)
    w2 = torch.zeros(1, H, I)
    w1[0, 0, 0] = 2.0
    w1[0, I, 1] = 3.0
    w2[0, 5, 0] = 0.5
    x = torch.zeros(1, H)
    x[0, 0], x[0, 1] = 1.5, -1.0
    y = reference_moe_bf16(x, torch.tensor([[0, -1]]), torch.tensor([[0.5, 9.0]]), w1, w2)
    g, u = 3.0, -3.0
    assert y.dtype == torch.float64
    assert y[0, 5].item() == pytest.approx(0.5 * g / (1 + math.exp(-g)) * u * 0.5, rel=1e-12)
    assert y.abs().sum().item() == pytest.approx(abs(y[0, 5].item()))


# ============================================================================ invariances
def test_masked_slots_contribute_nothing():
    m = random_moe(4, mask_frac=0.3)
    y, o, _ = run(m, return_slots=True)
    masked = m["idx"] < 0
    assert masked.any() and (~masked).any()
    assert not o[masked].float().any()
    # dropping the masked slots (moving valid ones left, order kept) gives bitwise the same y
    T, K = m["idx"].shape
    idx2 = torch.full_like(m["idx"], -1)
    tw2 = torch.zeros_like(m["tw"])
    for t in range(T):
        keep = [k for k in range(K) if m["idx"][t, k] >= 0]
        idx2[t, :len(keep)] = m["idx"][t, keep]
        tw2[t, :len(keep)] = m["tw"][t, keep]
    y2 = reference_moe(m["x_fp8"], m["x_sf"], idx2, tw2, m["weights"])
    assert same_bits(y, y2)
    # the weight of a masked slot is never read (NaN there changes nothing)
    tw3 = torch.where(masked, torch.full_like(m["tw"], math.nan), m["tw"])
    y3 = reference_moe(m["x_fp8"], m["x_sf"], m["idx"], tw3, m["weights"])
    assert same_bits(y, y3)


def test_all_masked_token_is_exact_zero():
    m = random_moe(5)
    m["idx"][3] = -1
    m["idx"][7] = -1
    y = run(m)
    assert torch.equal(y[3].view(torch.int16), torch.zeros(y.shape[1], dtype=torch.int16))
    assert torch.equal(y[7].view(torch.int16), torch.zeros(y.shape[1], dtype=torch.int16))
    assert y[0].float().abs().sum() > 0 or y[1].float().abs().sum() > 0


def test_zero_tokens():
    m = random_moe(6, T=0, K=3)
    y, o, h = run(m, return_slots=True)
    assert y.dtype == torch.bfloat16 and tuple(y.shape) == (0, 64)
    assert tuple(o.shape) == (0, 3, 64) and tuple(h.shape) == (0, 3, 64)


def test_duplicate_expert_slots_are_independent():
    m = random_moe(7, T=6, K=3, mask_frac=0.0)
    e0, e1 = 2, 5
    m["idx"] = torch.tensor([[e0, e0, e1]] * 6)
    m["tw"] = torch.rand(6, 3, generator=torch.Generator().manual_seed(1)) + 0.1
    y, o, _ = run(m, return_slots=True)
    for k in range(3):
        single = reference_moe(m["x_fp8"], m["x_sf"], m["idx"][:, k:k + 1], m["tw"][:, k:k + 1],
                               m["weights"])
        assert same_bits(o[:, k], single), k           # a one-slot y is that slot's o
    assert not same_bits(o[:, 0], o[:, 1])             # different weights, different slots
    # y = bf16(((0 + o0) + o1) + o2) in fp32, slot order
    oy = o.float().tolist()
    want = [[bf16_rn(f32(f32(f32(0.0 + a) + b) + c)) for a, b, c in zip(*oy[t])] for t in range(6)]
    assert rows_of(y) == want
    # equal weights: the two slots are equal and y = 2 * o exactly
    tw = torch.ones(6, 2)
    y2, o2, _ = reference_moe(m["x_fp8"], m["x_sf"], torch.tensor([[e1, e1]] * 6), tw, m["weights"],
                              return_slots=True)
    assert same_bits(o2[:, 0], o2[:, 1])
    assert torch.equal(y2.float(), 2 * o2[:, 0].float())


def test_slot_sum_order_is_ascending_fp32():
    m = random_moe(8, T=16, K=6, E=8, mask_frac=0.25)
    y, o, _ = run(m, return_slots=True)
    valid = (m["idx"] >= 0).tolist()
    oy = o.float().tolist()
    for t in range(16):
        acc = [0.0] * 64
        for k in range(6):
            if valid[t][k]:
                acc = [f32(a + b) for a, b in zip(acc, oy[t][k])]
        assert y[t].float().tolist() == [bf16_rn(a) for a in acc], t


def test_slot_sum_order_and_fp32_precision_hand_case():
    """o = [small, 2^30, -2^30]: the fp32 ascending sum loses `small`; another order or a float64
    accumulator would keep it. Power-of-two routing weights scale the hand expert's o exactly."""
    W1, sb1, W2, sb2 = hand_expert()
    W2neg = [[-v for v in row] for row in W2]
    weights = make_weights([W1, W1], [sb1, sb1], [W2, W2neg], [sb2, sb2])
    x_fp8, x_sf, _ = py_x_inputs([HAND_X, HAND_X])
    big, small = 2.0 ** 22, 2.0 ** -8
    idx = torch.tensor([[0, 0, 1], [0, 1, 0]])
    tw = torch.tensor([[small, big, big], [big, big, small]])
    y, o, _ = reference_moe(x_fp8, x_sf, idx, tw, weights, return_slots=True)
    base = [256.0, 1.125, -0.6875, 0.0, -240.0, 16.5] + [0.0] * (H - 6)   # o for weight 1 (above)
    assert rows_of(o[0]) == [[v * small for v in base], [v * big for v in base], [-v * big for v in base]]
    assert rows_of(y) == [[0.0] * H, [v * small for v in base]]


def test_token_permutation_permutes_rows():
    m = random_moe(9, T=20)
    y = run(m)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(3))
    yp = reference_moe(m["x_fp8"][perm], m["x_sf"][perm], m["idx"][perm], m["tw"][perm], m["weights"])
    assert same_bits(yp, y[perm])


def test_token_alone_equals_token_in_batch():
    m = random_moe(10, T=33, E=8, K=4)
    # make the batch heterogeneous: some tokens with huge / tiny magnitudes
    x = m["x"].clone()
    x[5] *= 1e4
    x[6] *= 1e-4
    m["x_fp8"], m["x_sf"] = F.quantize_mxfp8(x)
    y = run(m)
    for t in (0, 5, 6, 17, 32):
        yt = reference_moe(m["x_fp8"][t:t + 1], m["x_sf"][t:t + 1], m["idx"][t:t + 1], m["tw"][t:t + 1],
                           m["weights"])
        assert same_bits(yt[0], y[t]), t
    # and in a different batch (other tokens replaced)
    sub = [32, 0, 17]
    ys = reference_moe(m["x_fp8"][sub], m["x_sf"][sub], m["idx"][sub], m["tw"][sub], m["weights"])
    assert same_bits(ys, y[sub])


@pytest.mark.parametrize("R", [1])
def test_reference_moe_ep_single_rank(R):
    m = random_moe(11, T=10, E=8)
    y = run(m)
    (out,) = reference_moe_ep([m["x_fp8"]], [m["x_sf"]], [m["idx"]], [m["tw"]], m["weights"], R)
    assert same_bits(out, y)


@pytest.mark.parametrize("R", [2, 4])
def test_reference_moe_ep_equals_reference(R):
    m = random_moe(12, T=14, E=8, K=4, mask_frac=0.15)
    y = run(m)
    # uneven per-rank token counts, including an empty rank
    cuts = [0, 5, 5, 11, 14][:R] + [14] if R == 4 else [0, 9, 14]
    xs = [m["x_fp8"][a:b] for a, b in zip(cuts, cuts[1:])]
    ss = [m["x_sf"][a:b] for a, b in zip(cuts, cuts[1:])]
    ids = [m["idx"][a:b] for a, b in zip(cuts, cuts[1:])]
    tws = [m["tw"][a:b] for a, b in zip(cuts, cuts[1:])]
    outs = reference_moe_ep(xs, ss, ids, tws, m["weights"], R)
    assert len(outs) == R
    assert same_bits(torch.cat(outs), y)


def test_ep_rejects_indivisible_ranks():
    m = random_moe(13, E=8)
    with pytest.raises(ValueError, match="3"):
        reference_moe_ep([m["x_fp8"]], [m["x_sf"]], [m["idx"]], [m["tw"]], m["weights"], 3)


def test_moe_weights_local_slices():
    m = random_moe(14, E=8, h=96, inter=64)
    w = m["weights"]
    assert (w.num_experts, w.hidden, w.intermediate) == (8, 96, 64)
    assert tuple(w.w1.shape) == (8, 128, 48) and tuple(w.w1_sf.shape) == (8, 128, 3)
    assert tuple(w.w2.shape) == (8, 96, 32) and tuple(w.w2_sf.shape) == (8, 96, 2)
    for R in (1, 2, 4, 8):
        n = 8 // R
        for r in range(R):
            loc = w.local(r, R)
            assert loc.num_experts == n and loc.hidden == 96 and loc.intermediate == 64
            for name in ("w1", "w1_sf", "w2", "w2_sf"):
                assert torch.equal(getattr(loc, name), getattr(w, name)[r * n:(r + 1) * n]), (R, r, name)
    with pytest.raises(ValueError, match="3"):
        w.local(0, 3)


def test_moe_weights_quantize_rounding_mode():
    w1 = torch.zeros(1, 64, 32)
    w1[0, :, 0] = 6.0
    w1[0, :, 1] = 0.75                               # a tie: toward zero -> 0.5, rtne -> 1.0
    w2 = torch.zeros(1, 32, 32)
    w2[0, :, 0] = 6.0
    w2[0, :, 1] = 5.0                                # a tie: toward zero -> 4, rtne -> 4 (even)
    w2[0, :, 2] = 3.5                                # a tie: toward zero -> 3, rtne -> 4
    a = MoEWeights.quantize(w1, w2)
    b = MoEWeights.quantize(w1, w2, rounding="rtne")
    da = F.dequantize_mxfp4(a.w1, a.w1_sf)[0, 0, :2].tolist()
    db = F.dequantize_mxfp4(b.w1, b.w1_sf)[0, 0, :2].tolist()
    assert da == [6.0, 0.5] and db == [6.0, 1.0]
    assert F.dequantize_mxfp4(a.w2, a.w2_sf)[0, 0, :3].tolist() == [6.0, 4.0, 3.0]
    assert F.dequantize_mxfp4(b.w2, b.w2_sf)[0, 0, :3].tolist() == [6.0, 4.0, 4.0]


def test_expert_offset_skips_lower_experts():
    """Last rank's local weights: slots of lower experts are skipped, the rest are bitwise equal."""
    m = random_moe(15, E=8, T=12, K=4)
    w = m["weights"]
    y_full, o_full, _ = run(m, return_slots=True)
    loc = w.local(1, 2)                             # experts 4..7
    y, o, _ = reference_moe(m["x_fp8"], m["x_sf"], m["idx"], m["tw"], loc, expert_offset=4,
                            return_slots=True)
    own = m["idx"] >= 4
    assert own.any() and ((m["idx"] >= 0) & ~own).any()
    assert same_bits(o[own], o_full[own])
    assert not o[~own].float().any()
    masked_idx = torch.where(own, m["idx"], -1)
    assert same_bits(y, reference_moe(m["x_fp8"], m["x_sf"], masked_idx, m["tw"], w))


def test_expert_offset_skips_higher_experts():
    m = random_moe(16, E=8, T=12, K=4)
    w = m["weights"]
    _, o_full, _ = run(m, return_slots=True)
    loc = w.local(0, 2)                             # experts 0..3; ids 4..7 must be skipped
    _, o, _ = reference_moe(m["x_fp8"], m["x_sf"], m["idx"], m["tw"], loc, expert_offset=0,
                            num_experts=8, return_slots=True)
    own = (m["idx"] >= 0) & (m["idx"] < 4)
    assert same_bits(o[own], o_full[own])
    assert not o[~own].float().any()


def test_return_slots_shapes_and_contents():
    m = random_moe(17, E=8, h=96, inter=64, T=5, K=3)
    y, o, h = run(m, return_slots=True)
    assert tuple(y.shape) == (5, 96) and tuple(o.shape) == (5, 3, 96) and tuple(h.shape) == (5, 3, 128)
    assert y.dtype == o.dtype == h.dtype == torch.bfloat16
    masked = m["idx"] < 0
    assert not h[masked].float().any()
    # h is the bf16 rounding of the exact GEMM1 on dequantized operands (float64 sum)
    xd = F.dequantize_mxfp8(m["x_fp8"], m["x_sf"]).double()
    w1d = F.dequantize_mxfp4(m["weights"].w1, m["weights"].w1_sf).double()
    for t in range(5):
        for k in range(3):
            e = int(m["idx"][t, k])
            if e < 0:
                continue
            exact = (w1d[e] @ xd[t]).tolist()
            assert h[t, k].float().tolist() == [bf16_rn(v) for v in exact]
    # y is returned identically with or without the slots
    assert same_bits(run(m), y)


def test_activation_clamp_only_matters_beyond_the_clamp():
    m = random_moe(18, E=8, T=16, K=4)
    y, _, h = run(m, return_slots=True)
    hmax = h.float().abs().max().item()
    assert hmax > 0.5
    assert same_bits(run(m, activation_clamp=hmax), y)
    assert same_bits(run(m, activation_clamp=hmax * 4 + 100), y)
    assert not same_bits(run(m, activation_clamp=hmax / 4), y)


def test_activation_clamp_gate_one_sided_up_two_sided():
    """Hand case: only gate values below -c exceed the clamp -> unchanged (gate is min(g, c))."""
    weights, _ = hand_setup()
    x_fp8, x_sf, _ = py_x_inputs([HAND_X])
    idx, tw = torch.tensor([[0]]), torch.tensor([[1.0]])
    y0 = reference_moe(x_fp8, x_sf, idx, tw, weights)
    # |h| values: gate 272, 1, -2, -288, 20; up 1, 1.5, 3, -6, -12. c = 272: only gate -288 < -c
    assert same_bits(reference_moe(x_fp8, x_sf, idx, tw, weights, activation_clamp=272.0), y0)
    # c = 11: up -12 -> -11 (two-sided) changes channel 4; gate 20 -> 11 too
    y11 = reference_moe(x_fp8, x_sf, idx, tw, weights, activation_clamp=11.0)
    assert y11[0, 4].item() != y0[0, 4].item()


def test_swiglu_fp32_matches_python():
    g = [-300.0, -50.0, -2.0, -0.5, 0.0, 0.5, 1.0, 3.0, 17.0, 40.0]
    u = [1.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0, -8.0, 9.0, -100.0]
    h = torch.tensor([g + u], dtype=torch.float32).to(torch.bfloat16)
    wt = torch.tensor([0.3])
    for c in (None, 5.0):
        s = swiglu_fp32(h, wt, c)
        assert s.dtype == torch.float32 and tuple(s.shape) == (1, 10)
        for j in range(10):
            gg, uu = g[j], u[j]
            if c is not None:
                gg, uu = min(gg, c), min(max(uu, -c), c)
            want = gg / (1 + math.exp(-gg)) * uu * f32(0.3) if gg > -700 else 0.0
            assert s[0, j].item() == pytest.approx(want, rel=1e-6, abs=1e-30), (c, j)
    # one-sided gate: -50 stays -50 under c = 5 (silu(-50) ~ -1e-20, not silu(-5))
    assert abs(swiglu_fp32(h, wt, 5.0)[0, 1].item()) < 1e-15


def test_calc_diff_values():
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([0.0, 1.0])
    assert calc_diff(a, b) == 1.0
    assert calc_diff(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(1 / 3, abs=1e-15)
    assert calc_diff(a, -a) == 2.0
    assert calc_diff(a, a) == 0.0
    assert calc_diff(torch.zeros(3), torch.zeros(3)) == 0.0
    x = torch.randn(100, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    assert 0 < calc_diff(x, x.float() * 1.01) < 1e-4


# ============================================================================ input validation
def test_input_validation():
    m = random_moe(19, E=8, h=64, T=3, K=2)
    x_fp8, x_sf, idx, tw, w = m["x_fp8"], m["x_sf"], m["idx"], m["tw"], m["weights"]
    with pytest.raises(ValueError, match="bfloat16"):
        reference_moe(m["x"], x_sf, idx, tw, w)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        reference_moe(x_fp8, torch.zeros(3, 2, dtype=torch.int32), idx, tw, w)
    with pytest.raises(ValueError, match="int64"):
        reference_moe(x_fp8, x_sf.long(), idx, tw, w)
    with pytest.raises(ValueError, match="32"):
        reference_moe(x_fp8[:, :32], x_sf, idx, tw, w)                 # hidden mismatch
    bad = idx.clone()
    bad[1, 0] = 8
    with pytest.raises(ValueError, match="8"):
        reference_moe(x_fp8, x_sf, bad, tw, w)
    bad[1, 0] = 1000
    with pytest.raises(ValueError, match="1000"):
        reference_moe(x_fp8, x_sf, bad, tw, w)
    bad = idx.clone()
    bad[2, 1] = -2
    with pytest.raises(ValueError, match="-2"):
        reference_moe(x_fp8, x_sf, bad, tw, w)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        reference_moe(x_fp8, x_sf, idx, torch.ones(3, 3), w)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        reference_moe(x_fp8, x_sf, idx[:2], tw[:2], w)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        reference_moe(x_fp8.view(torch.uint8), x_sf, idx, tw, w)
