"""The quad byte order (default on Hopper) of the Triton backend's weights (kernels/weight_layout.py):
a permutation within 64-byte blocks, undone exactly by the kernels (same bits as canonical)."""
import numpy as np
import pytest
import torch

import ptx_subset
import tmoe
from tmoe.kernels import weight_layout, wgmma_gemm
from tmoe.kernels.configs import GemmConfig, is_hopper
from tmoe.reference import calc_diff, reference_moe

from moe_cases import make_routing, make_tokens, make_weights, run_layer

U32 = np.uint32


def test_round_trip_and_mapping():
    codes = torch.randint(0, 256, (3, 5, 192), dtype=torch.uint8)
    quad = weight_layout.to_quad(codes)
    assert torch.equal(weight_layout.from_quad(quad), codes) and not torch.equal(quad, codes)
    blk, qblk = codes[1, 2, 64:128], quad[1, 2, 64:128]
    for t in range(4):
        for r in range(4):
            for q in range(4):       # the magnitudes move with their bytes (the signs: test_sign_bits_in_words)
                assert qblk[16 * t + 4 * r + q] & 0x77 == blk[16 * r + 4 * q + t] & 0x77
    for half_k in (72, 48):                      # K % 32 != 0; K < 128
        with pytest.raises(ValueError, match="K >= 128 and K % 32 == 0"):
            weight_layout.to_quad(torch.zeros(2, half_k, dtype=torch.uint8))


def _words(codes: torch.Tensor) -> torch.Tensor:
    b = codes.reshape(-1, 4).to(torch.int64)
    return sum(b[:, i] << (8 * i) for i in range(4))


def test_signed_word_bits():
    """"signed" (the default): inside each 32-bit word of a quad-ordered block (the 8 codes of one lane's
    A-fragment word), code j's sign sits at bit 8j + 7 (j < 4) and code 4 + j's at bit 8j + 3; magnitudes
    stay in their nibbles."""
    codes = torch.randint(0, 256, (2, 3, 128), dtype=torch.uint8)
    word = _words(weight_layout._permute_blocks(codes, (2, 0, 1)))
    got = _words(weight_layout.to_quad(codes))
    assert torch.equal(got & 0x77777777, word & 0x77777777)
    for n in range(8):
        at = 8 * n + 7 if n < 4 else 8 * (n - 4) + 3
        assert torch.equal((got >> at) & 1, (word >> (4 * n + 3)) & 1), n
    assert torch.equal(weight_layout.from_quad(weight_layout.to_quad(codes)), codes)


def test_arith_word_bits_give_the_decoders_registers():
    """"arith": the shifts and masks of wgmma_gemm._FP4_PAIRS_ARITH_ASM turn a word into the four registers
    (codes 2i, 2i+1), each code as sign << 15 | magnitude << 6 (+16 for the second code of the pair)."""
    codes = torch.randint(0, 256, (2, 3, 128), dtype=torch.uint8)
    word = _words(weight_layout._permute_blocks(codes, (2, 0, 1)))
    w = _words(weight_layout.to_quad(codes, "arith"))
    m = 0x81C081C0
    rot10 = ((w << 10) | (w >> 22)) & 0xFFFFFFFF
    regs = [w & m, (w << 4) & m, rot10 & m, ((w << 6) & 0x80C080C0) | ((w >> 2) & 0x01000100)]
    for i, reg in enumerate(regs):
        want = 0
        for half, code in enumerate((2 * i, 2 * i + 1)):
            nib = (word >> (4 * code)) & 0xF
            want = want | ((((nib >> 3) << 15) | ((nib & 7) << 6)) << (16 * half))
        assert torch.equal(reg & 0xFFFFFFFF, want), i
    assert torch.equal(weight_layout.from_quad(weight_layout.to_quad(codes, "arith"), "arith"), codes)
    assert weight_layout.word_bits_for(torch.tensor([0, 128], dtype=torch.uint8)) == "arith"
    assert weight_layout.word_bits_for(torch.tensor([0, 129], dtype=torch.uint8)) == "signed"


@pytest.mark.parametrize("half_k", [64, 80, 96, 1440])
def test_partial_last_block_stays_canonical(half_k):
    """K % 128 != 0 (gpt-oss: K = 2880, 22 whole blocks + 32 bytes): whole blocks permuted, the rest as is."""
    codes = torch.randint(0, 256, (3, 4, half_k), dtype=torch.uint8)
    quad = weight_layout.to_quad(codes)
    whole = half_k // 64 * 64
    assert torch.equal(quad[..., whole:], codes[..., whole:])
    assert torch.equal(quad[..., :whole], weight_layout.to_quad(codes[..., :whole].contiguous()))
    assert not torch.equal(quad, codes)
    assert torch.equal(weight_layout.from_quad(quad), codes)


@pytest.mark.parametrize("half_k", [64, 96, 1440])
def test_tiled_layout_chunks(half_k):
    """to_tiled: step s of 32-row block b is one contiguous chunk of 32 quad-ordered 64-byte rows (the partial
    last step: 32 rows of K/2 % 64 bytes after the whole steps); from_tiled inverts it."""
    codes = torch.randint(0, 256, (2, 96, half_k), dtype=torch.uint8)
    tiled, quad = weight_layout.to_tiled(codes), weight_layout.to_quad(codes)
    assert tiled.shape == codes.shape and tiled.is_contiguous()
    assert torch.equal(weight_layout.from_tiled(tiled), codes)
    whole, flat = half_k // 64 * 64, tiled.reshape(2, -1)
    for b in range(3):
        for s in range(whole // 64):
            chunk = flat[1, b * 32 * half_k + s * 2048:][:2048].reshape(32, 64)
            assert torch.equal(chunk, quad[1, 32 * b:32 * b + 32, 64 * s:64 * s + 64])
        rest = flat[1, b * 32 * half_k + 32 * whole:][:32 * (half_k - whole)].reshape(32, half_k - whole)
        assert torch.equal(rest, codes[1, 32 * b:32 * b + 32, whole:])
    with pytest.raises(ValueError, match="N % 32 == 0"):
        weight_layout.to_tiled(torch.zeros(2, 48, 64, dtype=torch.uint8))


def test_quad_order_is_what_the_gluon_exchange_delivers():
    """Lane t's 16 bytes of a quad-ordered block = the exchange's output from canonical bytes with the signs
    moved, so the Gluon kernel skips the exchange (QUAD) and decodes the same values (_FP4_PAIRS_SIGNED_ASM)."""
    rng = np.random.default_rng(2)
    chunk = rng.integers(0, 256, (8, 64), dtype=np.uint8)
    quad = weight_layout.to_quad(torch.from_numpy(chunk)).numpy()
    lane = np.arange(32)
    g, t = lane // 4, lane % 4
    loaded = chunk[g].reshape(32, 4, 16)[lane, t].copy().view(np.uint32)
    ops = {4 + r: loaded[:, r] for r in range(4)}
    for r in range(4):
        p = (t ^ r).astype(U32)
        ops[8 + r] = (p + U32(4)) * U32(16) + p
    out = ptx_subset.run(wgmma_gemm._QUAD_EXCHANGE_ASM.value, ops)
    exchanged = np.stack([out[r] for r in range(4)], -1).view(np.uint8).reshape(32, 16)
    signed = weight_layout._permute_word_bits(torch.from_numpy(np.tile(exchanged, (1, 4))), "signed",
                                              True).numpy()[:, :16]
    quad_words = quad[g].reshape(32, 4, 16)[lane, t].copy()            # + the word bits ("signed", the default)
    np.testing.assert_array_equal(signed.reshape(32, 4, 4), quad_words.reshape(32, 4, 4))


@pytest.mark.parametrize("layout", ["quad", "tiled"])
@pytest.mark.parametrize("hidden,inter,weight_scale", [(256, 128, 0.05), (384, 192, 0.05), (160, 64, 0.05),
                                                       (352, 96, 0.05), (64, 32, 0.05), (512, 512, 0.05),
                                                       (256, 128, 40.0), (352, 96, 40.0)])
def test_layer_in_quad_order_matches_canonical_bitwise(device, hidden, inter, weight_scale, layout, monkeypatch):
    """Whole and partial last K blocks (352 = 2 * 128 + 96, like gpt-oss's 2880 = 22 * 128 + 64); K < 128
    stays canonical; K = 512: scale rows of 16 bytes (the stride the Triton B-operand tiles could not
    compile with, grouped_gemm's do_not_specialize)."""
    weights = make_weights(4, hidden, inter, seed=hidden, device=device, scale=weight_scale)
    x = make_tokens(11, hidden, seed=1, device=device)
    idx, w = make_routing(11, 4, 2, "duplicates", seed=2, device=device)
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf),
                                                 layout=layout)
    assert l1.code_order == (layout if hidden >= 128 else "canonical")
    assert l2.code_order == (layout if inter >= 128 else "canonical")
    bits = "arith" if weight_scale < 1 else "signed"        # scales > 128 (weights > 12) need the lookup decode
    assert (l1.code_bits if hidden >= 128 else bits) == bits and (l2.code_bits if inter >= 128 else bits) == bits
    cfgs = [(None, None)] if device.type == "cpu" else [
        (None, None), (GemmConfig(16, 64, True, 4, 3),) * 2, (GemmConfig(128, 128, False, 8, 3),) * 2]
    if device.type != "cpu" and is_hopper(device):      # (gemm1, gemm2) Gluon pairs: 4 / 8 warps, tail tiles
        cfgs += [(GemmConfig(8, 32, True, 4, 3, kernel="gluon"), GemmConfig(8, 64, True, 4, 3, kernel="gluon")),
                 (GemmConfig(128, 64, True, 8, 2, kernel="gluon"), GemmConfig(128, 128, True, 8, 2, kernel="gluon")),
                 (GemmConfig(256, 64, True, 8, 2, kernel="gluon", tail_block_m=32),
                  GemmConfig(256, 128, True, 8, 2, kernel="gluon", tail_block_m=32))]
    monkeypatch.setenv("TMOE_WEIGHT_LAYOUT", "canonical")          # run_layer's own weights: the reference bits
    for cfg1, cfg2 in cfgs:
        y_ref, buf = run_layer(weights, x, idx, w, gemm1_config=cfg1, gemm2_config=cfg2)
        buf2 = tmoe.get_symm_buffer_for_mega_moe(None, 4, 11, 2, hidden, inter, device=device)
        tmoe.layer.fill_buffer(buf2, x, idx, w)
        y = torch.full_like(y_ref, float("nan"))
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf2, gemm1_config=cfg1, gemm2_config=cfg2)
        assert torch.equal(y.view(torch.int16), y_ref.view(torch.int16)), f"configs {cfg1} {cfg2}"
    ref = reference_moe(buf.x[:11], buf.x_sf[:11], idx, w, weights)
    assert calc_diff(y, ref) <= 1e-4


@pytest.mark.parametrize("groups", [1, 3, 4, 5, 90, 224])
def test_scale_rows_padded_for_word_loads(groups):
    """pad_scale_rows: same values, rows 4-byte aligned, padding 127; wgmma_gemm.scale_words accepts exactly
    the tensors whose 4-byte reads stay aligned and inside the storage (else the kernel loads bytes)."""
    g = torch.Generator().manual_seed(groups)
    sf = torch.randint(0, 256, (3, 5, groups), dtype=torch.uint8, generator=g)
    padded = weight_layout.pad_scale_rows(sf)
    row = -(-groups // 4) * 4
    assert torch.equal(padded, sf) and padded.stride() == (5 * row, row, 1)
    whole = padded.as_strided((3, 5, row), padded.stride())
    assert (whole[..., groups:] == 127).all()
    assert wgmma_gemm.scale_words(padded)
    assert wgmma_gemm.scale_words(sf) == (groups % 4 == 0)
    if groups % 4:      # aligned rows, but the last row's padding lies past the storage
        tight = torch.zeros(14 * row + groups, dtype=torch.uint8).as_strided((3, 5, groups), (5 * row, row, 1))
        assert not wgmma_gemm.scale_words(tight)
        assert not wgmma_gemm.scale_words(whole[:, :, 1:])          # rows not 4-byte aligned
    w = make_weights(2, 32 * groups, 96, seed=groups, device=torch.device("cpu"))
    l1, l2 = tmoe.transform_weights_for_mega_moe((w.w1, w.w1_sf), (w.w2, w.w2_sf))
    assert wgmma_gemm.scale_words(l1[1]) and wgmma_gemm.scale_words(l2[1])
    assert torch.equal(l1[1], l1.canonical[1])


def test_bad_layout_raises(monkeypatch):
    w = make_weights(2, 128, 64, seed=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="layout must be one of"):
        tmoe.transform_weights_for_mega_moe((w.w1, w.w1_sf), (w.w2, w.w2_sf), layout="zigzag")
    monkeypatch.setenv("TMOE_WEIGHT_LAYOUT", "zigzag")
    with pytest.raises(ValueError, match="TMOE_WEIGHT_LAYOUT"):
        tmoe.transform_weights_for_mega_moe((w.w1, w.w1_sf), (w.w2, w.w2_sf))


def test_auto_layout_is_tiled_only_on_hopper(device, monkeypatch):
    """The default ("auto") stores tiled codes exactly when the weights sit on an sm_90 GPU."""
    monkeypatch.delenv("TMOE_WEIGHT_LAYOUT", raising=False)
    w = make_weights(2, 128, 128, seed=0, device=device)
    l1, l2 = tmoe.transform_weights_for_mega_moe((w.w1, w.w1_sf), (w.w2, w.w2_sf))
    want = "tiled" if is_hopper(device) else "canonical"
    assert (l1.code_order, l2.code_order) == (want, want)
    codes = weight_layout.from_tiled(l1[0], l1.code_bits) if want == "tiled" else l1[0]
    assert torch.equal(codes, w.w1.view(torch.uint8))
    for layout in ("quad", "tiled"):
        forced, _ = tmoe.transform_weights_for_mega_moe((w.w1, w.w1_sf), (w.w2, w.w2_sf), layout=layout)
        assert forced.code_order == layout
        assert weight_layout.is_quad(forced) and weight_layout.is_tiled(forced) == (layout == "tiled")
    monkeypatch.setenv("TMOE_WEIGHT_LAYOUT", "canonical")
    assert tmoe.transform_weights_for_mega_moe((w.w1, w.w1_sf), (w.w2, w.w2_sf))[0].code_order == "canonical"


def test_tiled_codes_must_be_whole_contiguous_experts():
    from tmoe.kernels import grouped_gemm
    codes = torch.zeros(2, 64, 128, dtype=torch.uint8)
    grouped_gemm.check_tiled("w1", codes, True)
    grouped_gemm.check_tiled("w1", codes[:, :48], False)            # only checked for tiled codes
    for bad in (codes[:, :48], codes[:, :, :64], torch.zeros(2, 64, 48, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="tiled codes must be contiguous"):
            grouped_gemm.check_tiled("w1", bad, True)
