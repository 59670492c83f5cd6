"""TMA row copies (tmoe/dispatch/tma_copy.py): the box geometry on CPU; on a Hopper GPU (sm_90) the copy
kernels move exactly the rows they should, bitwise, and nothing past a row's end."""
import pytest
import torch

from tmoe.dispatch import tma_copy


@pytest.mark.parametrize("hidden,want", [(7168, (28, 256, 32)), (2880, (45, 64, 64)), (2048, (8, 256, 8)),
                                         (64, (1, 64, 1)), (4104, (513, 8, 1024))])
def test_row_box(hidden, want):
    if want[2] > 256:
        with pytest.raises(ValueError, match="hidden=4104"):
            tma_copy.row_box(hidden)
    else:
        assert tma_copy.row_box(hidden) == want


def test_row_box_rejects_odd_hidden():
    with pytest.raises(ValueError, match="hidden=36"):
        tma_copy.row_box(36)


def test_row_descriptor_rejects_strided_rows():
    with pytest.raises(ValueError, match="contiguous 16-bit rows"):
        tma_copy.row_descriptor(torch.zeros(8, 128, dtype=torch.int16)[:, :64])


needs_tma = pytest.mark.skipif(not (torch.cuda.is_available() and tma_copy.tma_copy_available(torch.device("cuda"))),
                               reason="TMA copies need a Hopper (sm_90) GPU")


@needs_tma
@pytest.mark.parametrize("hidden", [7168, 2880, 64])
@pytest.mark.parametrize("pull", [False, True])
def test_block_rows_bitwise(hidden, pull):
    """Two 'ranks' on one GPU: rank 0 pushes (pulls) rows_per_peer rows to (from) rank 1's buffer."""
    dev = torch.device("cuda")
    rows_per_peer = 37
    gen = torch.Generator(device=dev).manual_seed(hidden)
    src = torch.randint(-2**15, 2**15, (rows_per_peer, hidden), dtype=torch.int16, device=dev, generator=gen)
    peers = [torch.full((2 * rows_per_peer, hidden), 7, dtype=torch.int16, device=dev) for _ in range(2)]
    if pull:
        peers[1][:rows_per_peer] = src          # rank 0 reads rows 0.. of rank 1
        src.fill_(7)
    tma_copy.block_rows(src, peers, rows_per_peer, rank=0, grid=5, stages=2, pull=pull)
    torch.cuda.synchronize()
    if pull:
        assert torch.equal(src, peers[1][:rows_per_peer])
    else:
        assert torch.equal(peers[1][:rows_per_peer], src)
        assert bool((peers[1][rows_per_peer:] == 7).all()) and bool((peers[0] == 7).all())


@needs_tma
@pytest.mark.parametrize("hidden,inter", [(512, 256), (352, 160)])
@pytest.mark.parametrize("cfg", [dict(bm=8, bn=64, w=4, s=3), dict(bm=16, bn=128, w=4, s=3, n_blocks=2),
                                 dict(bm=128, bn=128, w=8, s=2), dict(bm=128, bn=128, w=8, s=3, tail_block_m=64),
                                 dict(bm=8, bn=128, w=4, s=4, prefetch=3),
                                 dict(bm=128, bn=128, w=8, s=3, sub_block_m=64),
                                 dict(bm=128, bn=128, w=8, s=2, three_quarter=True)])
@pytest.mark.parametrize("expected", [None, 8])
def test_gemm2_tma_rows_bitwise(hidden, inter, cfg, expected):
    """GEMM2 storing each slot's row by TMA into rank code >> 32's `home` (tma_copy.PeerRows; here R
    tensors on one GPU) writes exactly the rows the plain GEMM2 writes to slot_out, clipped at H, and
    nothing else; with the EP launch shape (expected slots: plain grid + looping overflow launch) too. A three-quarter
    pick runs its full body here (the TMA epilogue's buffers are the full tile's)."""
    import tmoe
    from tmoe.kernels import grouped_gemm
    from tmoe.kernels.configs import GemmConfig
    from tmoe.kernels.weight_layout import is_quad, is_tiled
    from test_gluon_gemm import _routed_buffer
    e, k, t, ranks = 16, 4, 200, 3
    weights, x, idx, w, buf, plan = _routed_buffer(e, hidden, inter, k, t, seeds=(5, 6, 8))
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf))
    g1 = GemmConfig(16, 32, True, 4, 3, kernel="gluon")
    extra = {key: cfg[key] for key in ("n_blocks", "tail_block_m", "prefetch", "sub_block_m", "three_quarter")
             if key in cfg}
    g2 = GemmConfig(cfg["bm"], cfg["bn"], True, cfg["w"], cfg["s"], kernel="gluon", **extra)
    grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k, clamp=None,
                              fast_math=True, cfg=g1, soft=False, quad=is_quad(l1), tiled=is_tiled(l1))
    buf.slot_out.fill_(-1)
    grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, cfg=g2, soft=False, quad=is_quad(l2),
                       tiled=is_tiled(l2))
    dev = x.device
    slots = torch.arange(t * k, device=dev)
    homes = [torch.full((t * k + 3, hidden), 7, dtype=torch.int16, device=dev) for _ in range(ranks)]
    # slot s -> rank s % R, row (s * 7) % (t * k) + 1 there (a permutation, row 0 and the last rows unused)
    rows = (slots * 7) % (t * k) + 1
    codes = ((slots % ranks) << 32) + rows
    peer = tma_copy.PeerRows(codes, torch.zeros_like(codes), homes)
    grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, cfg=g2, soft=False, quad=is_quad(l2),
                       tiled=is_tiled(l2), out_row_addr=peer, expected_slots=expected)
    torch.cuda.synchronize()
    routed = (buf.topk_idx[:t].reshape(-1) >= 0)
    for r in range(ranks):
        mine = routed & (slots % ranks == r)
        assert torch.equal(homes[r][rows[mine]], buf.slot_out[: t * k][mine]), f"rank {r}"
        untouched = torch.ones(t * k + 3, dtype=torch.bool, device=dev)
        untouched[rows[mine]] = False
        assert bool((homes[r][untouched] == 7).all()), f"rank {r}: rows written that no slot maps to"
