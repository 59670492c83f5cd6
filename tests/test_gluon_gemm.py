"""The Gluon decode GEMMs (kernels/wgmma_gemm.py): bitwise equal to the Triton kernels and to the
float64 reference within calc_diff, over shapes, tile configs, routing patterns, biases, activations
and the EP overflow launch. GPU (sm_90) only: the Triton interpreter cannot run Gluon; on CPU a
gluon config runs the Triton kernel (same bits), which the config-validation tests cover."""
from dataclasses import replace

import pytest
import torch

import tmoe
from tmoe.kernels.configs import GemmConfig
from tmoe.layer import fill_buffer
from tmoe.reference import calc_diff, reference_moe

from moe_cases import make_routing, make_tokens, make_weights, run_layer

ON_HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
TRITON_CFG = GemmConfig(16, 64, True, 4, 3)
# (block_m, block_n, warps, stages); block_m >= 128 also runs the N-block-major grid (wgmma_gemm._tile_pids);
# then n_blocks > 1 (adjacent channel blocks per program; N need not divide: 2880, 160) and prefetch=2 (codes
# two steps ahead; the shapes below have odd and even whole-step counts, 0 and 1 included); then two pairs
# decode each K step while the previous wgmma runs (overlap, with and without a register cap); the next two pairs
# take the codes 3-6 steps ahead through a shared-memory ring (prefetch >= 3; K < 128 runs the plain loop; stages
# below and equal to prefetch + 1, which sets how far ahead the ring really loads, NOTES "v22"); the
# last two pairs do both (the ring's loop with overlap, capped and not)
OVERLAP = dict(overlap=True)
GLUON_G1 = [GemmConfig(bm, bn, True, w, s, kernel="gluon", **kw) for bm, bn, w, s, kw in
            ((8, 32, 4, 2, {}), (16, 32, 4, 3, {}), (16, 64, 4, 3, {}), (32, 32, 4, 4, {}), (64, 64, 4, 2, {}),
             (128, 32, 4, 3, {}), (64, 64, 8, 3, {}), (128, 64, 8, 2, {}), (256, 64, 8, 2, {}),
             (8, 32, 4, 4, dict(n_blocks=2)), (16, 32, 4, 3, dict(n_blocks=4)), (8, 32, 4, 4, dict(prefetch=2)),
             (64, 64, 8, 3, dict(prefetch=2)), (32, 32, 4, 3, OVERLAP), (64, 64, 8, 4, dict(OVERLAP, maxnreg=128)),
             (8, 32, 4, 7, dict(prefetch=6)), (16, 32, 4, 2, dict(prefetch=4, n_blocks=2)),
             (8, 32, 4, 4, dict(OVERLAP, prefetch=3, maxnreg=80)), (16, 32, 4, 3, dict(OVERLAP, prefetch=4)))]
GLUON_G2 = [GemmConfig(bm, bn, True, w, s, kernel="gluon", **kw) for bm, bn, w, s, kw in
            ((8, 64, 4, 2, {}), (16, 64, 4, 3, {}), (16, 128, 4, 3, {}), (32, 64, 4, 4, {}), (64, 128, 4, 2, {}),
             (128, 64, 4, 3, {}), (64, 128, 8, 3, {}), (128, 128, 8, 2, {}), (256, 128, 8, 2, {}),
             (8, 128, 4, 3, dict(n_blocks=2, maxnreg=128)), (16, 64, 4, 3, dict(n_blocks=4)),
             (8, 64, 4, 4, dict(prefetch=2)), (16, 64, 4, 3, dict(prefetch=2, maxnreg=80)),
             (64, 128, 4, 4, dict(OVERLAP, maxnreg=128)), (128, 128, 8, 3, OVERLAP),
             (8, 64, 4, 3, dict(prefetch=6)), (8, 128, 4, 6, dict(prefetch=5)),
             (8, 64, 4, 3, dict(OVERLAP, prefetch=4)), (8, 128, 4, 4, dict(OVERLAP, prefetch=3, maxnreg=96)))]


def _biases(e, h, i, seed, device):
    g = torch.Generator().manual_seed(seed)
    return ((torch.randn(e, 2 * i, generator=g) * 0.5).to(device), (torch.randn(e, h, generator=g) * 0.5).to(device))


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
# whole K steps of 128 (GEMM1 / GEMM2): 2 / 1, 3 / 5 (odd: overlap's unrolled pairs end exactly), 56 / 16,
# 22 + a partial one / the same, 1 + partial / partial only
@pytest.mark.parametrize("hidden,inter,num_experts,topk,gptoss", [
    (256, 128, 8, 2, False), (384, 640, 8, 2, False), (7168, 2048, 8, 8, False), (2880, 2880, 4, 4, True),
    (160, 96, 4, 3, True)])
@pytest.mark.parametrize("num_tokens,pattern", [(1, "uniform"), (5, "masked"), (64, "hot_expert"),
                                                (300, "duplicates"), (33, "all_masked")])
def test_gluon_bitwise_equals_triton(hidden, inter, num_experts, topk, gptoss, num_tokens, pattern):
    dev = torch.device("cuda")
    weights = make_weights(num_experts, hidden, inter, seed=hidden + num_tokens, device=dev)
    x = make_tokens(num_tokens, hidden, seed=num_tokens, device=dev)
    idx, w = make_routing(num_tokens, num_experts, topk, pattern, seed=7, device=dev)
    kw = dict(activation="swiglu_oai", clamp=7.0) if gptoss else {}
    if gptoss:
        kw["l1_bias"], kw["l2_bias"] = _biases(num_experts, hidden, inter, 3, dev)
    y_ref, buf = run_layer(weights, x, idx, w, gemm1_config=TRITON_CFG, gemm2_config=TRITON_CFG, **kw)
    ref = reference_moe(buf.x[:num_tokens], buf.x_sf[:num_tokens], idx, w, weights, activation_clamp=kw.get("clamp"),
                        activation=kw.get("activation", "swiglu"), b1=kw.get("l1_bias"), b2=kw.get("l2_bias"))
    assert calc_diff(y_ref, ref) <= 1e-4
    for c1, c2 in zip(GLUON_G1, GLUON_G2):
        for g1, g2 in ((c1, TRITON_CFG), (TRITON_CFG, c2), (c1, c2)):
            y, _ = run_layer(weights, x, idx, w, gemm1_config=g1, gemm2_config=g2, **kw)
            assert not torch.isnan(y).any()
            assert torch.equal(y.view(torch.int16), y_ref.view(torch.int16)), f"gemm1 {g1} gemm2 {g2}"


# half tiles (8 weight rows per warp: configs.half_tile_block_n) with every K loop: GEMM1 8 warps (register loop,
# codes two steps ahead, overlap, rings), GEMM2 4 warps (same) and 8 warps; paired with full tiles and with each other
HALF_G1 = [GemmConfig(bm, 32, True, 8, s, kernel="gluon", **kw) for bm, s, kw in (
    (8, 3, {}), (16, 4, dict(prefetch=2)), (32, 3, OVERLAP), (8, 5, dict(prefetch=4)), (8, 7, dict(prefetch=6)),
    (16, 3, dict(prefetch=3, n_blocks=2)), (64, 3, dict(sub_block_m=32, n_fastest=True)))]
HALF_G2 = [GemmConfig(bm, bn, True, w, s, kernel="gluon", **kw) for bm, bn, w, s, kw in (
    (8, 32, 4, 3, {}), (16, 32, 4, 4, dict(prefetch=2)), (32, 32, 4, 3, OVERLAP), (8, 32, 4, 5, dict(prefetch=4)),
    (8, 64, 8, 4, dict(prefetch=3)), (16, 32, 4, 4, dict(prefetch=3, overlap=True)),
    (8, 32, 4, 7, dict(n_blocks=2, prefetch=6)))]


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("hidden,inter,num_experts,topk,gptoss", [
    (256, 128, 8, 2, False), (7168, 2048, 8, 8, False), (2880, 2880, 4, 4, True), (160, 96, 4, 3, True)])
@pytest.mark.parametrize("num_tokens,pattern", [(1, "uniform"), (5, "masked"), (64, "hot_expert")])
def test_gluon_half_tiles_bitwise(hidden, inter, num_experts, topk, gptoss, num_tokens, pattern):
    """Half tiles (each warp's m16 wgmma slice: 8 weight rows, 8 rows of zeros) give the Triton kernel's bits with
    every K loop, on either GEMM and on both, next to full tiles; K = 2880 and 96 (a partial last step, none whole)."""
    dev = torch.device("cuda")
    weights = make_weights(num_experts, hidden, inter, seed=hidden + 3 * num_tokens, device=dev)
    x = make_tokens(num_tokens, hidden, seed=num_tokens + 1, device=dev)
    idx, w = make_routing(num_tokens, num_experts, topk, pattern, seed=11, device=dev)
    kw = dict(activation="swiglu_oai", clamp=7.0) if gptoss else {}
    if gptoss:
        kw["l1_bias"], kw["l2_bias"] = _biases(num_experts, hidden, inter, 5, dev)
    y_ref, _ = run_layer(weights, x, idx, w, gemm1_config=TRITON_CFG, gemm2_config=TRITON_CFG, **kw)
    full1, full2 = GLUON_G1[-2], GLUON_G2[-3]
    for h1, h2 in zip(HALF_G1, HALF_G2):
        for g1, g2 in ((h1, full2), (full1, h2), (h1, h2)):
            y, _ = run_layer(weights, x, idx, w, gemm1_config=g1, gemm2_config=g2, **kw)
            assert torch.equal(y.view(torch.int16), y_ref.view(torch.int16)), f"gemm1 {g1} gemm2 {g2}"


def _expert_counts_case(counts, h, i, seed):
    """(weights, x, idx, w, y of the Triton kernel): top-1 routing with counts[e] tokens on expert e (shuffled, GPU),
    y checked against the float64 reference."""
    dev = torch.device("cuda")
    weights = make_weights(len(counts), h, i, seed=seed, device=dev)
    g = torch.Generator().manual_seed(seed)
    idx = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    idx = idx[torch.randperm(idx.numel(), generator=g)].unsqueeze(1).to(dev)
    w = (torch.rand(idx.shape, generator=g) + 0.5).to(dev)
    x = make_tokens(idx.shape[0], h, seed=seed + 1, device=dev)
    y_ref, buf = run_layer(weights, x, idx, w, gemm1_config=TRITON_CFG, gemm2_config=TRITON_CFG)
    assert calc_diff(y_ref, reference_moe(buf.x[:idx.shape[0]], buf.x_sf[:idx.shape[0]], idx, w, weights)) <= 1e-4
    return weights, x, idx, w, y_ref


def _assert_pairs_bitwise(case, pairs):
    """Each (GEMM1, GEMM2) config pair gives the layer output y_ref of case = _expert_counts_case(...), bitwise."""
    weights, x, idx, w, y_ref = case
    for c1, c2 in pairs:
        y, _ = run_layer(weights, x, idx, w, gemm1_config=c1, gemm2_config=c2)
        assert torch.equal(y.view(torch.int16), y_ref.view(torch.int16)), f"{c1} / {c2}"


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("tail", [32, 64])
def test_gluon_full_and_tail_tiles(tail):
    """tail_block_m: each expert's rows in block_m tiles plus, when count % block_m <= tail, one tail tile
    in a second launch. Counts around every boundary (0, < tail, = tail, tail + 1, block_m, block_m + 1,
    block_m + tail, > block_m + tail) give the same bits as the untiled-split configs and the Triton kernel."""
    h, i = 256, 128
    counts = [0, 5, tail, tail + 1, 256, 257, 256 + tail, 300]
    weights, x, idx, w, y_ref = _expert_counts_case(counts, h, i, tail)
    for bm, warps in ((128, 8), (256, 8), (128, 4)):
        g1 = GemmConfig(bm, 64 if warps == 8 else 32, True, warps, 2, kernel="gluon", tail_block_m=tail)
        g2 = GemmConfig(bm, 128 if warps == 8 else 64, True, warps, 3, kernel="gluon", tail_block_m=tail)
        y, _ = run_layer(weights, x, idx, w, gemm1_config=g1, gemm2_config=g2)
        assert torch.equal(y.view(torch.int16), y_ref.view(torch.int16)), f"{g1} / {g2}"


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("g1,g2", [
    (GemmConfig(128, 64, True, 8, 3, kernel="gluon", sub_block_m=64),
     GemmConfig(128, 128, True, 8, 3, kernel="gluon", sub_block_m=64, overlap=True)),
    (GemmConfig(64, 32, True, 4, 3, kernel="gluon", sub_block_m=32, prefetch=3),
     GemmConfig(64, 64, True, 4, 3, kernel="gluon", sub_block_m=16)),
    (GemmConfig(256, 64, True, 8, 2, kernel="gluon", sub_block_m=128),
     GemmConfig(128, 128, True, 8, 2, kernel="gluon", sub_block_m=32, n_blocks=2)),
    (GemmConfig(64, 64, True, 8, 3, kernel="gluon", n_fastest=True),
     GemmConfig(128, 128, True, 4, 2, kernel="gluon", sub_block_m=64, n_fastest=False)),
    (GemmConfig(32, 32, True, 4, 3, kernel="gluon", sub_block_m=16, n_fastest=True, prefetch=4),
     GemmConfig(64, 128, True, 4, 3, kernel="gluon", sub_block_m=32, n_fastest=True)),
    (GemmConfig(64, 64, True, 8, 3, kernel="gluon", sub_block_m=32, n_blocks=4, n_fastest=True, group_m=2),
     GemmConfig(128, 128, True, 8, 3, kernel="gluon", sub_block_m=64, overlap=True, group_m=4)),
    (GemmConfig(32, 32, True, 4, 3, kernel="gluon", n_fastest=True, group_m=8, prefetch=3),
     GemmConfig(16, 64, True, 4, 3, kernel="gluon", n_fastest=True, group_m=4))])
def test_gluon_sub_tiles(g1, g2):
    """sub_block_m: a tile whose expert has at most sub_block_m rows left runs the narrower body in the same
    program; n_fastest: either grid order at any tile size; group_m: N-block-major in groups of tiles (the last
    group short: every (tile, channel block) pair once). Counts around both boundaries (0, < sub, = sub,
    sub + 1, block_m, block_m + sub, block_m + sub + 1, 2 * block_m + 1) give the Triton kernel's bits, with either
    GEMM on the Triton kernel and both on Gluon."""
    h, i = 256, 128
    sub, bm = g1.sub_block_m or g1.block_m // 2, g1.block_m
    counts = [0, 5, sub, sub + 1, bm, bm + sub, bm + sub + 1, 2 * bm + 1]
    _assert_pairs_bitwise(_expert_counts_case(counts, h, i, sub), ((g1, g2), (g1, TRITON_CFG), (TRITON_CFG, g2)))


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("g1,g2,h,i", [
    (GemmConfig(256, 64, True, 8, 2, kernel="gluon", three_quarter=True),
     GemmConfig(256, 128, True, 8, 2, kernel="gluon", three_quarter=True, sub_block_m=128), 256, 128),
    (GemmConfig(128, 64, True, 8, 3, kernel="gluon", three_quarter=True, sub_block_m=64, n_blocks=2),
     GemmConfig(128, 128, True, 8, 3, kernel="gluon", three_quarter=True, group_m=2), 288, 160),
    (GemmConfig(64, 32, True, 4, 3, kernel="gluon", three_quarter=True, sub_block_m=16),
     GemmConfig(64, 64, True, 4, 2, kernel="gluon", three_quarter=True, n_fastest=True), 384, 96),
    (GemmConfig(64, 64, True, 8, 3, kernel="gluon", three_quarter=True, sub_block_m=32, n_fastest=True),
     GemmConfig(64, 128, True, 8, 3, kernel="gluon", three_quarter=True), 256, 2880 // 18)])
def test_gluon_three_quarter_body(g1, g2, h, i):
    """three_quarter: a tile with more than sub_block_m and at most 3/4 block_m rows runs block_m / 2 + block_m / 4
    token columns (two accumulators on the same decoded weights). Counts around every boundary (sub, sub + 1,
    block_m / 2, + 1, 3/4 block_m, + 1, block_m, block_m + 3/4 block_m, 2 * block_m + 1), K with a partial last step
    (288, 160) and none, give the Triton kernel's bits, with either GEMM on the Triton kernel and both on Gluon."""
    bm = g1.block_m
    counts = [0, 5, bm // 4, bm // 4 + 1, bm // 2, bm // 2 + 1, 3 * bm // 4, 3 * bm // 4 + 1, bm, bm + 3 * bm // 4,
              2 * bm + 1]
    _assert_pairs_bitwise(_expert_counts_case(counts, h, i, bm + h), ((g1, g2), (g1, TRITON_CFG), (TRITON_CFG, g2)))


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("g1,g2,h,i", [
    (GemmConfig(256, 64, True, 8, 3, kernel="gluon", tma_b=True),
     GemmConfig(256, 128, True, 8, 3, kernel="gluon", tma_b=True), 256, 1024),
    (GemmConfig(256, 64, True, 8, 3, kernel="gluon", tma_b=True, three_quarter=True, sub_block_m=32),
     GemmConfig(256, 128, True, 8, 3, kernel="gluon", tma_b=True, three_quarter=True, sub_block_m=32), 288, 2880 // 9),
    (GemmConfig(128, 64, True, 8, 3, kernel="gluon", tma_b=True, sub_block_m=64, n_blocks=2),
     GemmConfig(128, 128, True, 8, 3, kernel="gluon", tma_b=True, sub_block_m=64, group_m=2), 320, 160),
    (GemmConfig(64, 32, True, 4, 3, kernel="gluon", tma_b=True, n_fastest=True),
     GemmConfig(64, 128, True, 8, 3, kernel="gluon", tma_b=True, sub_block_m=32, n_blocks=2), 256, 96),
    (GemmConfig(64, 64, True, 8, 3, kernel="gluon", tma_b=True, three_quarter=True),
     GemmConfig(64, 64, True, 4, 3, kernel="gluon", tma_b=True, n_fastest=True), 384, 256)])
def test_gluon_tma_ring(g1, g2, h, i):
    """tma_b: the block_m body's activation ring filled by TMA (GEMM1 from the sorted token rows, row_gather; GEMM2
    from act; the sub and three-quarter bodies keep cp.async), the two warpgroups released by named barriers, no CTA
    barrier per K step (ptx_patch drops Triton's).
    Counts around the tile and body boundaries, K with a partial last step (288 / 320 / 160 / 96) and without, K loops
    of 1 to 8 steps: the Triton kernel's bits, with either GEMM on the Triton kernel or the cp.async ring."""
    bm = g1.block_m
    counts = [0, 5, bm // 2, bm // 2 + 1, 3 * bm // 4 + 1, bm, bm + 1, 2 * bm + 7, 3 * bm]
    cp1, cp2 = (replace(g, tma_b=False) for g in (g1, g2))
    _assert_pairs_bitwise(_expert_counts_case(counts, h, i, bm + i),
                          ((g1, g2), (g1, TRITON_CFG), (TRITON_CFG, g2), (g1, cp2), (cp1, g2)))


def _routed_buffer(e, h, i, k, t, seeds):
    """(weights, x, idx, w, buffer with the tokens quantized and dequantized, routing plan) of t tokens
    routed "hot_expert" over e experts (GPU); seeds = (weights, tokens, routing)."""
    from tmoe.kernels.quant import mxfp8_to_bf16
    from tmoe.kernels.routing import build_routing
    dev = torch.device("cuda")
    weights = make_weights(e, h, i, seed=seeds[0], device=dev)
    x = make_tokens(t, h, seed=seeds[1], device=dev)
    idx, w = make_routing(t, e, k, "hot_expert", seed=seeds[2], device=dev)
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i, device=dev)
    fill_buffer(buf, x, idx, w)
    mxfp8_to_bf16(buf.x[:t], buf.x_sf[:t], buf.x_dq)
    return weights, x, idx, w, buf, build_routing(buf.topk_idx[:t], e, capacity_slots=t * k)


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
def test_gluon_gemm2_row_addresses_three_quarter():
    """GEMM2 storing each slot's row at an address (the symm_mem fused return by SM stores) with the three-quarter body:
    exactly the rows it writes to slot_out, at their addresses, and nothing else."""
    from tmoe.kernels import grouped_gemm
    from tmoe.kernels.weight_layout import is_quad, is_tiled
    e, h, i, k, t = 16, 512, 256, 4, 200
    weights, x, idx, w, buf, plan = _routed_buffer(e, h, i, k, t, seeds=(5, 6, 8))
    counts = plan.expert_offsets[1:] - plan.expert_offsets[:-1]
    # tiles of at most 96 rows run the 64 + 32-token body (no sub body here), the hot expert's 128-row tile the full one
    assert bool(((counts % 128 > 0) & (counts % 128 <= 96)).any()) and bool((counts >= 128).any()), counts
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf))
    g2 = GemmConfig(128, 128, True, 8, 2, kernel="gluon", three_quarter=True)
    grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k, clamp=None,
                              fast_math=True, cfg=GemmConfig(16, 32, True, 4, 3, kernel="gluon"), soft=False,
                              quad=is_quad(l1), tiled=is_tiled(l1))
    gemm2 = dict(cfg=g2, soft=False, quad=is_quad(l2), tiled=is_tiled(l2))
    grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, **gemm2)
    slots = torch.arange(t * k, device=x.device)
    rows = (slots * 7) % (t * k) + 1            # a permutation; rows 0 and t * k + 1 stay unwritten
    dest = torch.full((t * k + 2, h), 7, dtype=torch.int16, device=x.device)
    addr = dest.data_ptr() + rows * dest.stride(0) * dest.element_size()
    grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, out_row_addr=addr, **gemm2)
    torch.cuda.synchronize()
    routed = buf.topk_idx[:t].reshape(-1) >= 0
    assert torch.equal(dest[rows[routed]], buf.slot_out[: t * k][routed])
    untouched = torch.ones(t * k + 2, dtype=torch.bool, device=x.device)
    untouched[rows[routed]] = False
    assert bool((dest[untouched] == 7).all())


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("g1,g2", [(GemmConfig(16, 32, True, 4, 3, kernel="gluon"),
                                    GemmConfig(16, 64, True, 4, 3, kernel="gluon")),
                                   (GemmConfig(128, 64, True, 8, 2, kernel="gluon"),
                                    GemmConfig(128, 128, True, 8, 3, kernel="gluon")),
                                   (GemmConfig(256, 64, True, 8, 2, kernel="gluon", tail_block_m=32),
                                    GemmConfig(128, 128, True, 8, 3, kernel="gluon", tail_block_m=64)),
                                   (GemmConfig(16, 32, True, 4, 3, kernel="gluon", n_fastest=True, group_m=4),
                                    GemmConfig(256, 128, True, 8, 2, kernel="gluon", tail_block_m=64, n_fastest=True,
                                               group_m=2))])
def test_gluon_overflow_launch_and_graph(g1, g2):
    """The EP launch shape (a plain grid for the expected slots + a looping overflow launch) and CUDA-graph
    replay give the same bits as one plain launch."""
    from tmoe.kernels import grouped_gemm
    from tmoe.kernels.weight_layout import is_quad, is_tiled
    e, h, i, k, t = 16, 512, 256, 4, 200
    weights, x, idx, w, buf, plan = _routed_buffer(e, h, i, k, t, seeds=(5, 6, 8))
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf))
    outs = []
    for expected in (None, 8):
        buf.act.fill_(0)
        buf.slot_out.fill_(0)
        grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k, clamp=None,
                                  fast_math=True, cfg=g1, soft=False, expected_slots=expected, quad=is_quad(l1),
                                  tiled=is_tiled(l1))
        grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, cfg=g2, soft=False, expected_slots=expected,
                           quad=is_quad(l2), tiled=is_tiled(l2))
        outs.append(buf.slot_out[: t * k].clone())
    assert torch.equal(outs[0], outs[1])
    y, _ = run_layer(weights, x, idx, w, gemm1_config=g1, gemm2_config=g2)
    y_graph = torch.full_like(y, float("nan"))
    buf2 = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i, device=x.device)
    fill_buffer(buf2, x, idx, w)
    tmoe.fp8_fp4_mega_moe(y_graph, l1, l2, buf2, gemm1_config=g1, gemm2_config=g2)   # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tmoe.fp8_fp4_mega_moe(y_graph, l1, l2, buf2, gemm1_config=g1, gemm2_config=g2)
    y_graph.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y_graph.view(torch.int16), y.view(torch.int16))


def _poisoned_padding(scales):
    """The scales in rows padded to 4 bytes whose padding holds 255 (a NaN scale): SCALE_WORDS reads it."""
    e, n, groups = scales.shape
    row = -(-groups // 4) * 4
    whole = torch.full((e, n, row), 255, dtype=torch.uint8, device=scales.device)
    whole[..., :groups] = scales
    return whole[..., :groups]


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("hidden,inter", [(352, 160), (2880, 2880)])
def test_gluon_scale_words_and_bytes(hidden, inter):
    """K/32 % 4 != 0: scale rows as 32-bit words (padded rows, the padding poisoned with 255) and as bytes
    (unpadded rows) give the Triton kernel's bits, canonical, quad and tiled codes."""
    from tmoe.kernels import grouped_gemm, weight_layout, wgmma_gemm
    e, k, t = 8, 4, 96
    weights, _, _, _, buf, plan = _routed_buffer(e, hidden, inter, k, t, seeds=(11, 12, 13))

    def run(w1, w1_sf, w2, w2_sf, g1, g2, quad, tiled=False):
        buf.act.fill_(0)
        buf.slot_out.fill_(0)
        grouped_gemm.gemm1_swiglu(buf.x_dq, w1, w1_sf, plan, buf.topk_weights, buf.act, topk=k, clamp=7.0,
                                  fast_math=True, cfg=g1, soft=False, quad=quad, tiled=tiled)
        grouped_gemm.gemm2(buf.act, w2, w2_sf, plan, buf.slot_out, cfg=g2, soft=False, quad=quad, tiled=tiled)
        return buf.act[: t * k].clone(), buf.slot_out[: t * k].clone()

    w1, w2 = weights.w1.view(torch.uint8), weights.w2.view(torch.uint8)
    want = run(w1, weights.w1_sf, w2, weights.w2_sf, TRITON_CFG, TRITON_CFG, False)
    s1, s2 = _poisoned_padding(weights.w1_sf), _poisoned_padding(weights.w2_sf)
    assert wgmma_gemm.scale_words(s1) and wgmma_gemm.scale_words(s2)
    assert not wgmma_gemm.scale_words(weights.w1_sf) and not wgmma_gemm.scale_words(weights.w2_sf)
    for c1, c2 in ((GLUON_G1[0], GLUON_G2[0]), (GLUON_G1[7], GLUON_G2[7]), (GLUON_G1[-1], GLUON_G2[-1])):
        for scales in ((weights.w1_sf, weights.w2_sf), (s1, s2)):
            got = run(w1, scales[0], w2, scales[1], c1, c2, False)
            assert all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(got, want)), c1
            got = run(weight_layout.to_quad(w1), scales[0], weight_layout.to_quad(w2), scales[1], c1, c2, True)
            assert all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(got, want)), c1
            got = run(weight_layout.to_tiled(w1), scales[0], weight_layout.to_tiled(w2), scales[1], c1, c2, True,
                      True)
            assert all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(got, want)), c1


@pytest.mark.parametrize("kwargs,match", [
    (dict(swap_ab=False), "gluon kernel needs"), (dict(num_warps=2), "gluon kernel needs"),
    (dict(num_stages=1), "gluon kernel needs"), (dict(block_m=512), "gluon kernel needs"),
    (dict(block_n=96), "gluon kernel needs"), (dict(num_warps=8, block_n=256), "gluon kernel needs"),
    (dict(decode="arith"), "gluon kernel needs"), (dict(overlap=True, num_stages=2), "overlap=True"),
    (dict(kernel="triton", swap_ab=True, overlap=True), "overlap=True"),
    (dict(tail_block_m=16), "tail_block_m=16"), (dict(tail_block_m=24), "tail_block_m=24"),
    (dict(block_m=64, num_warps=8, tail_block_m=16), "tail_block_m=16"),
    (dict(kernel="triton", tail_block_m=8), "tail_block_m=8"), (dict(n_blocks=3), "n_blocks=3"),
    (dict(kernel="triton", n_blocks=2), "n_blocks=2"), (dict(prefetch=9), "prefetch=9"),
    (dict(prefetch=0), "prefetch=0"), (dict(num_warps=8, block_n=128, prefetch=4), "prefetch=4"),
    (dict(kernel="triton", prefetch=4), "prefetch=4"),
    (dict(prefetch=2, overlap=True), "prefetch=2"), (dict(kernel="triton", prefetch=2), "prefetch=2"),
    (dict(sub_block_m=16), "sub_block_m=16"), (dict(block_m=64, sub_block_m=24), "sub_block_m=24"),
    (dict(block_m=64, num_warps=8, sub_block_m=16), "sub_block_m=16"),
    (dict(block_m=64, sub_block_m=32, tail_block_m=16), "sub_block_m=32"),
    (dict(kernel="triton", block_m=64, sub_block_m=32), "sub_block_m=32"),
    (dict(kernel="triton", n_fastest=True), "n_fastest=True"), (dict(n_fastest=1), "n_fastest=1"),
    (dict(group_m=2), "group_m=2"), (dict(n_fastest=True, group_m=3), "group_m=3"),
    (dict(n_fastest=True, group_m=True), "group_m=True"), (dict(kernel="triton", group_m=2), "group_m=2"),
    (dict(kernel="triton", early=True), "early=True"), (dict(early=1), "early=1"),
    (dict(three_quarter=True), "three_quarter=True"), (dict(block_m=64, three_quarter=1), "three_quarter=1"),
    (dict(block_m=64, three_quarter=True, prefetch=3), "three_quarter=True"),
    (dict(block_m=64, three_quarter=True, overlap=True), "three_quarter=True"),
    (dict(block_m=64, three_quarter=True, prefetch=2), "three_quarter=True"),
    (dict(block_m=128, three_quarter=True, tail_block_m=32), "three_quarter=True"),
    (dict(block_m=32, num_warps=8, three_quarter=True), "three_quarter=True"),
    (dict(kernel="triton", block_m=64, three_quarter=True), "three_quarter=True"),
    (dict(tma_b=True, num_stages=2), "tma_b=True"), (dict(tma_b=True, num_stages=4), "tma_b=True"),
    (dict(tma_b=True, prefetch=3), "tma_b=True"), (dict(tma_b=True, overlap=True), "tma_b=True"),
    (dict(tma_b=True, prefetch=2), "tma_b=True"), (dict(block_m=64, tma_b=True, tail_block_m=32), "tma_b=True"),
    (dict(kernel="triton", tma_b=True), "tma_b=True"), (dict(tma_b=1), "tma_b=1")])
def test_gluon_config_validation(kwargs, match):
    base = dict(block_m=16, block_n=64, swap_ab=True, num_warps=4, num_stages=3, kernel="gluon")
    with pytest.raises(ValueError, match=match):
        GemmConfig(**{**base, **kwargs})
    # the K loop each valid combination selects (wgmma_gemm.K_LOOP_*)
    assert [GemmConfig(**base, **kw).k_loop for kw in (
        {}, dict(overlap=True), dict(prefetch=2), dict(prefetch=4), dict(prefetch=4, overlap=True))] == [0, 1, 2, 4, 36]
    with pytest.raises(ValueError, match="kernel must be one of"):
        GemmConfig(16, 64, True, kernel="cuda")
    # group_m needs an N-block-major grid: n_fastest=True, or the default order of >= 128-token tiles
    assert GemmConfig(**dict(base, n_fastest=True, group_m=4)).group_m == 4
    assert GemmConfig(**dict(base, block_m=128, num_warps=8, block_n=128, group_m=2)).grid_n_fastest
    # three_quarter: a quarter of >= 2 * num_warps rows (the activation load's layout), the plain K loop (a sub body,
    # at most block_m / 2, takes the smaller tiles first)
    assert GemmConfig(**dict(base, block_m=64, three_quarter=True, sub_block_m=32)).three_quarter
    assert GemmConfig(**dict(base, block_m=128, num_warps=8, block_n=128, three_quarter=True)).three_quarter
    # tma_b: the plain K loop with 3 stages; K-loop changes keep it only there (with_k_loop), like the three-quarter body
    tma = GemmConfig(**dict(base, block_m=64, tma_b=True, three_quarter=True))
    assert tma.with_k_loop(prefetch=3).tma_b is False and tma.with_code_ring(4).three_quarter is False
    assert tma.with_k_loop(prefetch=1).tma_b and tma.with_k_loop(num_stages=2).tma_b is False


def test_ring_lookahead():
    """GemmConfig.ring_lookahead: a code ring hides min(prefetch, num_stages - 1) steps (one fewer stage ahead with
    overlap); the other K loops report 0."""
    ring = dict(kernel="gluon", swap_ab=True, num_warps=4)
    assert [GemmConfig(8, 64, num_stages=s, prefetch=d, **ring).ring_lookahead
            for d, s in ((3, 3), (3, 4), (4, 4), (4, 5), (6, 3), (6, 7), (3, 8))] == [2, 3, 3, 4, 2, 6, 3]
    assert GemmConfig(8, 64, num_stages=4, prefetch=3, overlap=True, **ring).ring_lookahead == 2
    assert GemmConfig(8, 64, num_stages=4, prefetch=2, **ring).ring_lookahead == 0
    assert GemmConfig(8, 64, num_stages=4, **ring).ring_lookahead == 0


def test_gluon_config_runs_anywhere(device):
    """A gluon config is a valid request on CPU and Hopper: the interpreter runs the Triton kernel (same bits)."""
    if device.type == "cuda" and not ON_HOPPER:
        pytest.skip("the gluon kernels raise on GPUs other than sm_90 (tested by the launcher's check)")
    weights = make_weights(4, 128, 64, seed=16, device=device)
    x = make_tokens(9, 128, seed=17, device=device)
    idx, w = make_routing(9, 4, 2, "uniform", seed=18, device=device)
    base = GemmConfig(16, 64, True, 4, 2) if device.type == "cuda" else GemmConfig(16, 32, True, 1, 1)
    y0, _ = run_layer(weights, x, idx, w, gemm1_config=base, gemm2_config=base)
    y1, _ = run_layer(weights, x, idx, w, gemm1_config=GemmConfig(16, 32, True, 4, 2, kernel="gluon"),
                      gemm2_config=GemmConfig(16, 64, True, 4, 2, kernel="gluon"))
    assert torch.equal(y0.view(torch.int16), y1.view(torch.int16))


def test_heuristic_and_search_space_pick_gluon_on_hopper_only():
    from tmoe.autotune import cli
    from tmoe.kernels import configs
    for kernel, bn in (("gemm1", 32), ("gemm2", 64)):
        for slots, bm in ((8, 8), (1024, 8), (4096, 16), (16384, 64)):      # 256 local experts
            cfg = configs.heuristic_config(kernel, slots, 256, False, hopper=True)
            assert (cfg.kernel, cfg.block_m, cfg.block_n, cfg.swap_ab) == ("gluon", bm, bn, True)
            assert configs.heuristic_config(kernel, slots, 256, False).kernel == "triton"
        prefill = configs.heuristic_config(kernel, 65536, 256, False, hopper=True)
        # 256-token tiles ending each expert in the same launch: a 32-token body and the three-quarter body, no tail;
        # the activations by TMA (3 stages)
        assert (prefill.kernel, prefill.num_warps, prefill.block_m, prefill.tail_block_m, prefill.sub_block_m,
                prefill.three_quarter, prefill.tma_b, prefill.num_stages) == ("gluon", 8, 256, None, 32, True, True, 3)
        configs.check_gpu_config(prefill, kernel, hopper=True)
        assert configs.heuristic_config(kernel, 65536, 256, False).kernel == "triton"
        space = cli.candidate_space(kernel, 128, num_experts=256, hidden=7168, intermediate=2048, topk=8,
                                    soft=False, hopper=True)
        assert space[0].kernel == "gluon" and space[1] == configs.heuristic_config(kernel, 1024, 256, False)
        assert {c.kernel for c in space} == {"gluon", "triton"} and len(set(space)) == len(space)
        for cfg in space:
            configs.check_gpu_config(cfg)
        assert all(c.kernel == "triton" for c in cli.candidate_space(
            kernel, 128, num_experts=256, hidden=7168, intermediate=2048, topk=8, soft=False))


def test_gluon_config_checks_before_any_launch():
    from tmoe.kernels import configs
    g1 = GemmConfig(8, 32, True, 4, 3, kernel="gluon")
    configs.check_gpu_config(g1, "gemm1", hopper=True)
    with pytest.raises(ValueError, match="needs a Hopper GPU"):
        configs.check_gpu_config(g1, "gemm1", hopper=False)
    with pytest.raises(ValueError, match="gluon gemm1 with 4 warps needs block_n"):
        configs.check_gpu_config(GemmConfig(8, 128, True, 4, 3, kernel="gluon"), "gemm1")
    configs.check_gpu_config(GemmConfig(128, 64, True, 8, 2, kernel="gluon"), "gemm1", hopper=True)
    with pytest.raises(ValueError, match="gluon gemm1 with 8 warps needs block_n"):
        configs.check_gpu_config(GemmConfig(128, 128, True, 8, 2, kernel="gluon"), "gemm1")
    with pytest.raises(ValueError, match="gluon gemm2 with 8 warps needs block_n"):
        configs.check_gpu_config(GemmConfig(128, 32, True, 8, 2, kernel="gluon"), "gemm2")


def test_half_tiles():
    """Half tiles (8 weight rows per warp): GEMM2 block_n 32 with 4 warps and 64 with 8, GEMM1 block_n 32 with 8 (no
    4-warp one: its MXFP8 requant needs 32 channels); a code ring with 8 warps only on a half tile."""
    from tmoe.kernels import configs
    half = {(kernel, bn, warps) for kernel in ("gemm1", "gemm2") for warps in (4, 8)
            for bn in configs.gluon_block_n(kernel, warps, half=True)
            if configs.is_half_tile(GemmConfig(8, bn, True, warps, 3, kernel="gluon"), kernel)}
    assert half == {("gemm2", 32, 4), ("gemm2", 64, 8), ("gemm1", 32, 8)}
    # the autotuner's space (gluon_block_n without half) holds full tiles only
    assert not any(configs.is_half_tile(GemmConfig(8, bn, True, w, 3, kernel="gluon"), k) for k in ("gemm1", "gemm2")
                   for w in (4, 8) for bn in configs.gluon_block_n(k, w))
    assert not configs.is_half_tile(GemmConfig(8, 32, True, 4, 3), "gemm2")      # the Triton kernel: no such tile
    for kernel, bn in (("gemm1", 32), ("gemm2", 64)):
        configs.check_gpu_config(GemmConfig(8, bn, True, 8, 5, kernel="gluon", prefetch=4), kernel, hopper=True)
    with pytest.raises(ValueError, match="needs a half tile"):     # block_n 64: GEMM1's full 8-warp tile
        configs.check_gpu_config(GemmConfig(8, 64, True, 8, 5, kernel="gluon", prefetch=4), "gemm1")
    with pytest.raises(ValueError, match="prefetch=4"):                 # block_n 128: never a half tile
        GemmConfig(8, 128, True, 8, 5, kernel="gluon", prefetch=4)


def test_cache_entries_carry_the_kernel_field():
    from tmoe.autotune import cache
    base = dict(block_m=8, block_n=32, swap_ab=True, num_warps=4, num_stages=3, decode="asm")
    assert cache.config_from_dict({**base, "kernel": "gluon"}).kernel == "gluon"
    assert cache.config_from_dict(dict(base, block_m=16)).kernel == "triton"        # absent: the default
    with pytest.raises(ValueError, match="kernel"):
        cache.config_from_dict({**base, "kernel": "cuda"})
    with pytest.raises(ValueError, match="kernel must be a string"):
        cache.config_from_dict({**base, "kernel": 3})
    with pytest.raises(ValueError, match="gluon kernel needs"):
        cache.config_from_dict({**base, "kernel": "gluon", "swap_ab": False})


_PDL_PAIRS = [   # (GEMM1, GEMM2): code rings (GEMM1 waits inside the ring), register loops, 8-warp tiles with tails
    (GemmConfig(8, 32, True, 4, 3, kernel="gluon", prefetch=3),
     GemmConfig(8, 64, True, 4, 3, kernel="gluon", prefetch=3)),
    (GemmConfig(16, 32, True, 4, 3, kernel="gluon"), GemmConfig(16, 128, True, 4, 3, kernel="gluon")),
    (GemmConfig(16, 32, True, 4, 3, kernel="gluon", prefetch=2, n_blocks=2),
     GemmConfig(16, 64, True, 4, 3, kernel="gluon", prefetch=4, n_blocks=2)),
    (GemmConfig(128, 64, True, 8, 2, kernel="gluon", tail_block_m=32),
     GemmConfig(128, 128, True, 8, 2, kernel="gluon", tail_block_m=32)),
]


# early GEMM2 with every kind of program: code rings, register loops, n_blocks with blocks past N (2880 = 90 x 32),
# the 8-warp prefill tiles with a tail launch, a sub-tile body, an 8-warp half tile
_EARLY_PAIRS = _PDL_PAIRS + [
    (GemmConfig(8, 32, True, 4, 5, kernel="gluon", prefetch=4, n_blocks=4),
     GemmConfig(8, 64, True, 8, 4, kernel="gluon", prefetch=3)),
    (GemmConfig(64, 64, True, 8, 3, kernel="gluon", sub_block_m=32, n_fastest=True),
     GemmConfig(64, 128, True, 8, 3, kernel="gluon", sub_block_m=32, n_fastest=True)),
    # the shipped decode picks' kind (H100 dsv3 bucket 8): both grids N-block-major, GEMM2's pick sets `early`
    (GemmConfig(8, 32, True, 4, 4, kernel="gluon", prefetch=3, n_blocks=2, n_fastest=True),
     GemmConfig(8, 128, True, 4, 6, kernel="gluon", prefetch=5, n_fastest=True, early=True))]


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("g1,g2", _EARLY_PAIRS)
def test_early_gemm2_bitwise_and_counters(g1, g2, monkeypatch):
    """Early GEMM2 (TMOE_EARLY_GEMM2=1, or "auto" with a GEMM2 pick that sets `early`: each GEMM2 program waits for its
    expert's rows of GEMM1, counted per expert) gives the bits of the whole-kernel wait (=0) and of no programmatic
    launch at all, chained (<= 128 tokens) and GEMM2-only (300); after a call every local expert's counter holds its
    rows x GEMM1's channel blocks (so GEMM2 found them complete: it did not fall back to waiting for all of GEMM1)."""
    dev = torch.device("cuda")
    e, h, i, k = 16, 2880, 2880, 4
    weights = make_weights(e, h, i, seed=80, device=dev)
    for t, pattern in ((1, "uniform"), (40, "few_experts"), (300, "hot_expert")):
        x = make_tokens(t, h, seed=81 + t, device=dev)
        idx, w = make_routing(t, e, k, pattern, seed=82 + t, device=dev)
        outs = {}
        for pdl_mode, early in (("0", "1"), ("1", "0"), ("1", "1")) + ((("1", "auto"),) if g2.early else ()):
            monkeypatch.setenv("TMOE_PDL", pdl_mode)
            monkeypatch.setenv("TMOE_EARLY_GEMM2", early)
            outs[pdl_mode, early], buf = run_layer(weights, x, idx, w, gemm1_config=g1, gemm2_config=g2)
        ref = outs["0", "1"].view(torch.int16)
        assert all(torch.equal(y.view(torch.int16), ref) for y in outs.values()), (t, pattern)
        torch.cuda.synchronize()
        counts = torch.bincount(idx[idx >= 0].flatten(), minlength=e).to(torch.int32)
        done = buf.workspace["expert_rows_done"][:e].cpu()
        assert torch.equal(done, counts.cpu() * -(-i // g1.block_n)), (t, pattern, done.tolist())


@pytest.mark.skipif(not ON_HOPPER, reason="Gluon wgmma kernels need an sm_90 GPU")
@pytest.mark.parametrize("g1,g2", _PDL_PAIRS)
def test_pdl_chain_programmatic_dependent_launch(g1, g2, monkeypatch):
    """Every kernel of the call as a programmatic dependent launch of the one before (TMOE_PDL=1: quantize, routing
    in one or three kernels, MXFP8 -> bf16, GEMM1 reading the plan before it waits, GEMM2, combine), only GEMM2
    (gemm2) or none (0): the same bits, eagerly and replayed from a CUDA graph with new inputs, with experts that get
    no rows (programs without a tile) and token counts whose routing takes three kernels (40, 100: chained; 300: above
    pdl.CHAIN_MAX_TOKENS, only GEMM2)."""
    dev = torch.device("cuda")
    e, h, i, k = 16, 2880, 640, 4
    weights = make_weights(e, h, i, seed=90, device=dev)

    def layer(mode, x, idx, w):
        monkeypatch.setenv("TMOE_PDL", mode)
        return run_layer(weights, x, idx, w, gemm1_config=g1, gemm2_config=g2)

    for t, pattern in ((1, "uniform"), (40, "few_experts"), (300, "hot_expert")):
        x = make_tokens(t, h, seed=91 + t, device=dev)
        idx, w = make_routing(t, e, k, pattern, seed=92 + t, device=dev)
        y_plain, _ = layer("0", x, idx, w)
        for mode in ("gemm2", "1"):
            y_pdl, buf = layer(mode, x, idx, w)
            assert torch.equal(y_pdl.view(torch.int16), y_plain.view(torch.int16)), (t, pattern, mode)
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf))
    x_bf16 = torch.empty(100, h, dtype=torch.bfloat16, device=dev)
    y = torch.empty(100, h, dtype=torch.bfloat16, device=dev)
    monkeypatch.setenv("TMOE_PDL", "1")
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tmoe.per_token_cast_to_fp8(x_bf16, out=(buf.x, buf.x_sf))
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, gemm1_config=g1, gemm2_config=g2)
    for seed in range(3):
        x = make_tokens(100, h, seed=95 + seed, device=dev)
        idx, w = make_routing(100, e, k, ("masked", "uniform", "hot_expert")[seed], seed=96 + seed, device=dev)
        fill_buffer(buf, x, idx, w)
        x_bf16.copy_(x)
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        y_plain, _ = layer("0", x, idx, w)
        monkeypatch.setenv("TMOE_PDL", "1")
        assert torch.equal(y.view(torch.int16), y_plain.view(torch.int16)), f"replay {seed}"
