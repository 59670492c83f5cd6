"""The `symm_mem` transport's kernels (push, unpack, return, barriers) on R ranks simulated in one
process: plain tensors stand in for the symmetric buffers and every rank's barriers are split into
a signal launch and a wait launch, so the ranks can be stepped in turn (`layer.mega_moe_steps`).
Runs under the Triton interpreter on CPU and unchanged on one GPU (the simulated ranks then share
that GPU). Real processes over NVLink: tests/test_ep_collective.py spawns them on >= 2 GPUs.

Checked: bitwise equality with one rank holding every expert, stats, signal pads back at zero and
no timeout after every call, repeated calls with changing routing, a missing peer times out with
an error naming it.
"""
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tmoe
from tmoe.dispatch import symm_mem
from tmoe.dispatch.symm_mem import (FUSED_RETURN_MAX_SLOTS, SymmMemTimeout, fused_return_setting, simulated_transports,
                                    tma_return_setting)
from tmoe.kernels.configs import GemmConfig
from tmoe.layer import MegaMoEBuffer, fill_buffer, mega_moe_steps

import ep_worker
from moe_cases import make_routing, make_tokens, make_weights

E, H, I, K = ep_worker.E, ep_worker.H, ep_worker.I, ep_worker.K
CAP = 8


def _weights(device):
    return make_weights(E, H, I, seed=7, device=device)


def _simulated_buffers(world: int, device, fused_return: bool = False, shape=(E, H, I, K)):
    e, h, i, k = shape
    transports = simulated_transports(world, e, CAP, k, h, device=device)
    for tr in transports:
        tr.fused_return = fused_return      # GEMM2 writes the results straight into the sources' `home`
    return [MegaMoEBuffer(None, e, CAP, k, h, i, device=device, _simulated=(r, transports[r]))
            for r in range(world)]


def _run_simulated(bufs, inputs, weights, device, stats=None, **layer_kwargs):
    """One layer call on every simulated rank (`layer_kwargs`: mega_moe_steps' options); returns y per rank."""
    world = len(bufs)
    gens, ys = [], []
    for r in range(world):
        x, idx, w = inputs[r]
        fill_buffer(bufs[r], x.to(device), idx.to(device), w.to(device))
        local = weights.local(r, world)
        l1, l2 = tmoe.transform_weights_for_mega_moe((local.w1, local.w1_sf), (local.w2, local.w2_sf),
                                                     backend="triton")
        y = torch.full((x.shape[0], bufs[r].hidden), float("nan"), dtype=torch.bfloat16, device=device)
        ys.append(y)
        gens.append(mega_moe_steps(y, l1, l2, bufs[r], None if stats is None else stats[r], **layer_kwargs))
    alive = list(range(world))
    while alive:            # lockstep: every rank's signal half before any rank's wait half
        for r in list(alive):
            try:
                next(gens[r])
            except StopIteration:
                alive.remove(r)
    return ys


def _single_rank(inputs, weights, device, shape=(E, H, I, K)):
    e, h, i, k = shape
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf),
                                                 backend="triton")
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, CAP, k, h, i, device=device, backend="triton")
    out = []
    for x, idx, w in inputs:
        fill_buffer(buf, x.to(device), idx.to(device), w.to(device))
        y = torch.full((x.shape[0], h), float("nan"), dtype=torch.bfloat16, device=device)
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf)
        out.append(y)
    return out


def _assert_clean(bufs):
    for b in bufs:
        assert b.symm.error_code() == 0, b.symm.describe_error(b.symm.error_code())
        assert b.symm.signals_clean(), f"rank {b.rank}: signal pads not back at zero"


WORLDS = [int(w) for w in os.environ.get("TMOE_EP_WORLDS", "2,4").split(",")]   # "2,4,8" adds R = 8


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("name", ["uneven", "empty_rank", "one_rank_experts", "masked_duplicates"])
@pytest.mark.parametrize("fused_return", [False, True])
def test_symm_mem_equals_single_rank_bitwise(world, name, fused_return, device):
    weights = _weights(device)
    inputs = [ep_worker.scenario_inputs(name, r, world) for r in range(world)]
    bufs = _simulated_buffers(world, device, fused_return)
    stats = [torch.zeros(E // world, dtype=torch.int32, device=device) for _ in range(world)]
    got = _run_simulated(bufs, inputs, weights, device, stats)
    want = _single_rank(inputs, weights, device)
    for r in range(world):
        assert torch.equal(got[r].view(torch.int16), want[r].view(torch.int16)), f"rank {r}"
    n_valid = sum(int((idx >= 0).sum()) for _, idx, _ in inputs)
    assert int(sum(s.sum() for s in stats)) == n_valid
    _assert_clean(bufs)


@pytest.mark.parametrize("world", WORLDS)
def test_symm_mem_tma_return_codes(world, device):
    """TMOE_EP_TMA: the fused return's store targets also as codes (source rank << 32 | home row, for GEMM2's
    TMA epilogue; the soft kernels store by the addresses): same bits as one rank, and every code names the
    row its address points at."""
    weights = _weights(device)
    inputs = [ep_worker.scenario_inputs("uneven", r, world) for r in range(world)]
    bufs = _simulated_buffers(world, device)
    for b in bufs:
        b.symm.tma_return, b.symm.fused_return = True, None     # fused (auto: few slots), by TMA
    got = _run_simulated(bufs, inputs, weights, device)
    want = _single_rank(inputs, weights, device)
    for r in range(world):
        assert torch.equal(got[r].view(torch.int16), want[r].view(torch.int16)), f"rank {r}"
    _assert_clean(bufs)
    for b in bufs:
        tr = b.symm
        addr, code = tr.home_addr, tr.home_code
        used = addr != 0
        e_local = E // world
        assert int(used.sum()) == sum(int(((idx >= 0) & (idx // e_local == tr.rank)).sum()) for _, idx, _ in inputs)
        rank, row = code[used] >> 32, code[used] & 0xFFFFFFFF
        want_addr = tr.peer_ptrs[rank] + tr.layout.offset("home") * 4 + row * tr.layout.hidden * 2
        assert torch.equal(addr[used], want_addr), f"rank {tr.rank}"
        assert bool((code[~used] == 0).all())


# GEMM2 tiles under the fused TMA return: the H100 cache's qwen3 pick at one token (an 8-warp half tile, code ring 3:
# configs.half_tile_block_n), a 4-warp code ring and a plain 8x128 tile; K = 256 gives the rings whole steps
TMA_RETURN_G2 = [GemmConfig(8, 64, True, 8, 4, kernel="gluon", prefetch=3),
                 GemmConfig(8, 64, True, 4, 5, kernel="gluon", prefetch=4),
                 GemmConfig(8, 128, True, 4, 3, kernel="gluon")]


@pytest.mark.parametrize("gemm2_config", TMA_RETURN_G2, ids=["half8w-ring3", "ring4", "plain128"])
def test_symm_mem_fused_tma_return_gemm2_tiles(gemm2_config, device):
    """The fused return by TMA stores (GEMM2's ROW_TMA epilogue) with the small-T GEMM2 tiles the caches pick, the
    8-warp half tile included: the same bits as one rank with default tiles (on CPU the interpreter runs the Triton
    kernel for a gluon config: same bits)."""
    shape = (8, 128, 256, 2)
    e, h, i, k = shape
    weights = make_weights(e, h, i, seed=21, device=device)
    inputs = []
    for r, t in enumerate((3, 1)):
        idx, w = make_routing(t, e, k, "masked", seed=40 + r, device="cpu")
        inputs.append((make_tokens(t, h, seed=30 + r, device="cpu"), idx, w))
    bufs = _simulated_buffers(2, device, shape=shape)
    for b in bufs:
        b.symm.tma_return, b.symm.fused_return = True, True
    got = _run_simulated(bufs, inputs, weights, device, gemm2_config=gemm2_config)
    want = _single_rank(inputs, weights, device, shape=shape)
    for r in range(2):
        assert torch.equal(got[r].view(torch.int16), want[r].view(torch.int16)), f"rank {r}"
    _assert_clean(bufs)


@pytest.mark.parametrize("value,want", [("1", True), ("0", False), ("auto", None)])
def test_tma_return_setting(value, want):
    assert tma_return_setting(value) is want
    with pytest.raises(ValueError, match="TMOE_EP_TMA='yes'"):
        tma_return_setting("yes")


def test_return_mode_policy():
    """auto: SM stores from GEMM2's epilogue up to FUSED_RETURN_MAX_SLOTS; above it fused by TMA where TMA copies
    work, else the separate (SM) return pass; a forced mode wins."""
    tr = simulated_transports(2, E, CAP, K, H)[0]
    big = FUSED_RETURN_MAX_SLOTS + 1
    assert tr.tma_return is None and tr.fused_return is None   # defaults (env unset)
    assert not tr.tma_available                                 # simulated ranks
    assert tr.fused_for(FUSED_RETURN_MAX_SLOTS) and not tr.tma_for(FUSED_RETURN_MAX_SLOTS)
    assert not tr.fused_for(big) and not tr.tma_for(big)
    tr.tma_available = True
    assert tr.fused_for(big) and tr.tma_for(big) and not tr.tma_for(FUSED_RETURN_MAX_SLOTS)
    tr.tma_return, tr.fused_return = False, None
    assert not tr.fused_for(big)
    tr.tma_return, tr.fused_return = True, False
    assert tr.tma_for(1) and not tr.fused_for(1)


@given(seed=st.integers(0, 2**31 - 1), tokens=st.lists(st.integers(0, CAP), min_size=2, max_size=2),
       pattern=st.sampled_from(["uniform", "masked", "duplicates", "hot_expert", "all_masked"]))
def test_symm_mem_repeated_calls_property(seed, tokens, pattern):
    """Two back-to-back calls on the same buffers with different routing: bitwise = one rank, pads clean."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weights = _weights(device)
    bufs = _simulated_buffers(2, device)
    for call in range(2):
        inputs = []
        for r, t in enumerate(tokens):
            x = make_tokens(t, H, seed=seed + 10 * r + call, device="cpu")
            idx, w = make_routing(t, E, K, pattern, seed=seed + 10 * r + call + 1, device="cpu")
            inputs.append((x, idx, w))
        got = _run_simulated(bufs, inputs, weights, device)
        want = _single_rank(inputs, weights, device)
        for r in range(2):
            assert torch.equal(got[r].view(torch.int16), want[r].view(torch.int16)), f"call {call} rank {r}"
        _assert_clean(bufs)


@pytest.mark.parametrize("modes", [(None, None), (True, False), (False, True)])
def test_symm_mem_return_modes_per_rank(modes, device, monkeypatch):
    """The return mode is each rank's own choice per call (both end in the same barrier): forced modes
    that differ between ranks, and "auto" (None) with a threshold between the two ranks' slot counts
    (rank 0 sends 2 tokens: fused; rank 1 sends CAP: a separate return pass) give one rank's bits."""
    monkeypatch.setattr(symm_mem, "FUSED_RETURN_MAX_SLOTS", 2 * K)
    weights = _weights(device)
    bufs = _simulated_buffers(2, device)
    for b, mode in zip(bufs, modes):
        b.symm.fused_return = mode
    inputs = []
    for r, t in enumerate((2, CAP)):
        idx, w = make_routing(t, E, K, "uniform", seed=40 + r, device="cpu")
        inputs.append((make_tokens(t, H, seed=30 + r, device="cpu"), idx, w))
    want_modes = [True, False] if modes == (None, None) else list(modes)
    assert [b.symm.fused_for(x.shape[0] * K) for b, (x, _, _) in zip(bufs, inputs)] == want_modes
    got = _run_simulated(bufs, inputs, weights, device)
    want = _single_rank(inputs, weights, device)
    for r in range(2):
        assert torch.equal(got[r].view(torch.int16), want[r].view(torch.int16)), f"rank {r} ({modes})"
    _assert_clean(bufs)


@pytest.mark.parametrize("value,want", [("1", True), ("0", False), ("auto", None)])
def test_fused_return_setting(value, want):
    assert fused_return_setting(value) is want


def test_fused_return_setting_rejects_unknown(monkeypatch):
    with pytest.raises(ValueError, match="TMOE_EP_FUSED_RETURN='yes'"):
        fused_return_setting("yes")
    # checked with the buffer's arguments, so the verdict is agreed by every rank before any collective
    monkeypatch.setenv("TMOE_EP_FUSED_RETURN", "on")
    with pytest.raises(ValueError, match="TMOE_EP_FUSED_RETURN='on'"):
        tmoe.layer._check_buffer_args(8, 4, 2, 64, 32, 2, "auto", torch.device("cpu"))


def test_missing_peer_times_out_naming_it(device):
    """Rank 1 never calls: rank 0's dispatch barrier gives up after its spin limit and records rank 1."""
    weights = _weights(device)
    bufs = _simulated_buffers(2, device)
    bufs[0].symm.spin_limit = 3
    x, idx, w = ep_worker.scenario_inputs("uneven", 0, 2)
    fill_buffer(bufs[0], x.to(device), idx.to(device), w.to(device))
    local = weights.local(0, 2)
    l1, l2 = tmoe.transform_weights_for_mega_moe((local.w1, local.w1_sf), (local.w2, local.w2_sf), backend="triton")
    y = torch.empty((x.shape[0], H), dtype=torch.bfloat16, device=device)
    steps = mega_moe_steps(y, l1, l2, bufs[0])
    next(steps)             # dispatch pushed + signalled; rank 1 never signals back
    next(steps)             # the wait half gives up
    with pytest.raises(SymmMemTimeout, match="dispatch barrier timed out waiting for rank 1"):
        bufs[0].symm.check_errors()
    assert bufs[0].symm.error_code() == 0     # cleared by check_errors


def test_symm_mem_transport_needs_cuda():
    with pytest.raises(ValueError, match="symm_mem' is not available: device cpu is not a CUDA device"):
        tmoe.layer._check_buffer_args(8, 4, 2, 64, 32, 2, "symm_mem", torch.device("cpu"))
    assert tmoe.layer._check_buffer_args(8, 4, 2, 64, 32, 2, "auto", torch.device("cpu")) == "collective"
    with pytest.raises(ValueError, match="power of two"):
        tmoe.layer._check_buffer_args(6, 4, 2, 64, 32, 3, "symm_mem", torch.device("cuda", 0))


@pytest.mark.parametrize("n_blocks", [1, 2])
def test_persistent_gemm_grid_is_bitwise_identical(device, n_blocks):
    """compute_slots with a small expected count (persistent GEMM grid, programs loop over tiles)
    gives the same bits as the worst-case grid (one tile per program); on Hopper also with two channel
    blocks per program (GemmConfig.n_blocks)."""
    from tmoe.compute import ExpertOptions, compute_slots
    from tmoe.kernels.configs import GemmConfig, is_hopper
    opts = ExpertOptions()
    if n_blocks > 1:
        if not is_hopper(torch.device(device)):
            pytest.skip("n_blocks is a Gluon (Hopper) option")
        opts = ExpertOptions(gemm1_config=GemmConfig(8, 32, True, 4, 3, kernel="gluon", n_blocks=n_blocks),
                             gemm2_config=GemmConfig(8, 64, True, 4, 3, kernel="gluon", n_blocks=n_blocks))
    weights = _weights(device)
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf),
                                                 backend="triton")
    x, idx, w = ep_worker.scenario_inputs("masked_duplicates", 0, 1)
    outs = []
    for config_slots in (None, 1):
        buf = tmoe.get_symm_buffer_for_mega_moe(None, E, CAP, K, H, I, device=device, backend="triton")
        fill_buffer(buf, x.to(device), idx.to(device), w.to(device))
        buf.slot_out.zero_()
        t = x.shape[0]
        compute_slots(buf, buf.x[:t], buf.x_sf[:t], buf.topk_idx[:t], buf.topk_weights[:t], l1, l2,
                      num_local_experts=E, expert_start=0, opts=opts, soft=not x.to(device).is_cuda,
                      config_slots=config_slots)
        outs.append(buf.slot_out[: t * K].clone())
    assert torch.equal(outs[0], outs[1])
