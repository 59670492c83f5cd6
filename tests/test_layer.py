"""The single-GPU layer (local transport) against the float64 reference, its invariances and its errors."""
import pytest
import torch
from hypothesis import given, strategies as st

import tmoe
from tmoe.kernels.configs import GemmConfig
from tmoe.reference import calc_diff, reference_moe

from moe_cases import ROUTING_PATTERNS, make_routing, make_tokens, make_weights, run_layer

ON_GPU = torch.cuda.is_available()


def _check_against_reference(weights, x, idx, w, clamp=None, **kw):
    y, buf = run_layer(weights, x, idx, w, clamp=clamp, **kw)
    t = x.shape[0]
    ref = reference_moe(buf.x[:t], buf.x_sf[:t], idx, w, weights, activation_clamp=clamp)
    assert not torch.isnan(y).any(), "unwritten (NaN-poisoned) or NaN outputs"
    diff = calc_diff(y, ref)
    assert diff <= 1e-4, f"calc_diff {diff:.3e} > 1e-4"
    return y, ref


@pytest.mark.parametrize("pattern", ROUTING_PATTERNS)
def test_routing_patterns(device, pattern):
    weights = make_weights(8, 64, 32, seed=1, device=device)
    x = make_tokens(13, 64, seed=2, device=device)
    idx, w = make_routing(13, 8, 3, pattern, seed=3, device=device)
    y, ref = _check_against_reference(weights, x, idx, w)
    masked_rows = (idx < 0).all(dim=1)
    assert torch.equal(y[masked_rows].float(), torch.zeros_like(y[masked_rows]).float())


@given(hidden=st.sampled_from([32, 64, 96, 160, 192]), inter=st.sampled_from([32, 64, 96]),
       num_experts=st.sampled_from([1, 2, 5, 8]), topk=st.integers(1, 6), num_tokens=st.integers(0, 12),
       pattern=st.sampled_from(ROUTING_PATTERNS), clamp=st.sampled_from([None, 0.0, 0.05, 10.0]),
       seed=st.integers(0, 2**16))
def test_layer_matches_reference(device, hidden, inter, num_experts, topk, num_tokens, pattern, clamp, seed):
    weights = make_weights(num_experts, hidden, inter, seed=seed, device=device)
    x = make_tokens(num_tokens, hidden, seed=seed + 1, device=device)
    idx, w = make_routing(num_tokens, num_experts, topk, pattern, seed=seed + 2, device=device)
    _check_against_reference(weights, x, idx, w, clamp=clamp)


def test_topk_32_and_gpt_oss_like_width(device):
    # K = 32 (the maximum) and H = I = 2880-like widths (multiples of 32, not of 128).
    weights = make_weights(32, 96, 160, seed=4, device=device)
    x = make_tokens(3, 96, seed=5, device=device)
    idx, w = make_routing(3, 32, 32, "masked", seed=6, device=device)
    _check_against_reference(weights, x, idx, w, clamp=7.0)


@pytest.mark.skipif(not ON_GPU, reason="realistic widths are too slow for the Triton interpreter")
def test_gpt_oss_shape_on_gpu(device):
    weights = make_weights(8, 2880, 2880, seed=7, device=device, scale=0.02)
    x = make_tokens(64, 2880, seed=8, device=device)
    idx, w = make_routing(64, 8, 4, "uniform", seed=9, device=device)
    _check_against_reference(weights, x, idx, w)


def test_value_ranges(device):
    """Tiny and huge activations and weights, zeros in places: still within tolerance."""
    weights = make_weights(4, 64, 32, seed=10, device=device, scale=1e-3)
    for scale in (1e-6, 1e-2, 1e3):
        x = make_tokens(6, 64, seed=11, device=device, scale=scale)
        x[0, :32] = 0
        idx, w = make_routing(6, 4, 2, "uniform", seed=12, device=device)
        _check_against_reference(weights, x, idx, w)


def test_batch_invariance(device):
    """A token's y row is bitwise identical alone and inside batches of other tokens."""
    weights = make_weights(8, 128, 64, seed=13, device=device)
    t = 48 if ON_GPU else 12
    x = make_tokens(t, 128, seed=14, device=device)
    idx, w = make_routing(t, 8, 4, "masked", seed=15, device=device)
    y_all, _ = run_layer(weights, x, idx, w)
    for i in (0, t // 2, t - 1):
        y_one, _ = run_layer(weights, x[i:i + 1], idx[i:i + 1], w[i:i + 1])
        assert torch.equal(y_one.view(torch.int16), y_all[i:i + 1].view(torch.int16)), f"token {i}"
    half = t // 2
    y_half, _ = run_layer(weights, x[half:], idx[half:], w[half:], capacity=4 * t)
    assert torch.equal(y_half.view(torch.int16), y_all[half:].view(torch.int16))


def test_tile_config_invariance(device):
    """Different tile configs (M/N blocks, swap-AB, warps, FP4 decoders) give bitwise identical results."""
    weights = make_weights(4, 128, 64, seed=16, device=device)
    x = make_tokens(20, 128, seed=17, device=device)
    idx, w = make_routing(20, 4, 2, "uniform", seed=18, device=device)
    if ON_GPU:
        cfgs = [GemmConfig(16, 64, True, 4, 2), GemmConfig(64, 128, True, 4, 3), GemmConfig(64, 64, False, 4, 3),
                GemmConfig(128, 128, False, 8, 3), GemmConfig(16, 64, True, 4, 3, "arith"),
                GemmConfig(16, 128, True, 4, 3, "dot_scaled"), GemmConfig(128, 128, False, 8, 3, "dot_scaled"),
                GemmConfig(16, 64, True, 4, 3, fuse_gate_up=True), GemmConfig(128, 64, False, 8, 3, fuse_gate_up=True)]
    else:
        cfgs = [GemmConfig(16, 32, False, 1, 1), GemmConfig(32, 64, True, 1, 1),
                GemmConfig(16, 32, True, 1, 1, fuse_gate_up=True)]
    outs = [run_layer(weights, x, idx, w, gemm1_config=c, gemm2_config=c)[0] for c in cfgs]
    for c, y in zip(cfgs[1:], outs[1:]):
        assert torch.equal(y.view(torch.int16), outs[0].view(torch.int16)), f"config {c}"


@pytest.mark.skipif(not ON_GPU, reason="MMA instruction selection only exists on a GPU")
def test_non_wgmma_config_is_rejected(device):
    weights = make_weights(4, 128, 64, seed=16, device=device)
    x = make_tokens(4, 128, seed=17, device=device)
    idx, w = make_routing(4, 4, 2, "uniform", seed=18, device=device)
    with pytest.raises(ValueError, match="wgmma"):
        run_layer(weights, x, idx, w, gemm1_config=GemmConfig(16, 64, True, 2, 3))


def test_token_permutation(device):
    weights = make_weights(4, 64, 32, seed=19, device=device)
    x = make_tokens(9, 64, seed=20, device=device)
    idx, w = make_routing(9, 4, 2, "duplicates", seed=21, device=device)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0)).to(device)
    y, _ = run_layer(weights, x, idx, w)
    yp, _ = run_layer(weights, x[perm], idx[perm], w[perm])
    assert torch.equal(yp.view(torch.int16), y[perm].view(torch.int16))


def test_recv_stats(device):
    weights = make_weights(6, 64, 32, seed=22, device=device)
    x = make_tokens(10, 64, seed=23, device=device)
    idx, w = make_routing(10, 6, 3, "masked", seed=24, device=device)
    stats = torch.full((6,), 5, dtype=torch.int32, device=device)
    run_layer(weights, x, idx, w, stats=stats)
    expected = 5 + torch.stack([(idx == e).sum() for e in range(6)]).to(torch.int32)
    assert torch.equal(stats, expected)


def test_zero_tokens_leave_everything_alone(device):
    weights = make_weights(4, 64, 32, seed=25, device=device)
    x = make_tokens(0, 64, seed=26, device=device)
    idx, w = make_routing(0, 4, 2, "uniform", seed=27, device=device)
    stats = torch.zeros(4, dtype=torch.int32, device=device)
    y, _ = run_layer(weights, x, idx, w, stats=stats)
    assert y.shape == (0, 64) and int(stats.sum()) == 0


def test_module_matches_functional(device):
    weights = make_weights(4, 64, 32, seed=28, device=device)
    layer = tmoe.MegaMoE(4, 64, 32, 2, activation_clamp=0.1, max_num_tokens=2, device=device)
    layer.load_weights(weights.w1, weights.w1_sf, weights.w2, weights.w2_sf)
    x = make_tokens(7, 64, seed=29, device=device)     # > max_num_tokens: the buffer grows
    idx, w = make_routing(7, 4, 2, "masked", seed=30, device=device)
    y_mod = layer(x, idx, w)
    y_fn, _ = run_layer(weights, x, idx, w, clamp=0.1)
    assert torch.equal(y_mod.view(torch.int16), y_fn.view(torch.int16))


def test_load_float_weights_matches_quantize(device):
    g = torch.Generator().manual_seed(31)
    w1, w2 = torch.randn(2, 64, 64, generator=g), torch.randn(2, 64, 32, generator=g)
    layer = tmoe.MegaMoE(2, 64, 32, 1, device=device).load_float_weights(w1, w2)
    ref = tmoe.MoEWeights.quantize(w1, w2)
    assert torch.equal(layer.w1.cpu(), ref.w1) and torch.equal(layer.w2_sf.cpu(), ref.w2_sf)


# ----------------------------------------------------------------------------- errors
def _setup(device, t=4, e=4, k=2, h=64, i=32, seed=40):
    """Weights, a filled buffer (uniform routing), transformed weights and an output tensor."""
    weights = make_weights(e, h, i, seed=seed, device=device)
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i, device=device)
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf))
    x = make_tokens(t, h, seed=seed + 1, device=device)
    idx, w = make_routing(t, e, k, "uniform", seed=seed + 2, device=device)
    tmoe.layer.fill_buffer(buf, x, idx, w)
    y = torch.empty(t, h, dtype=torch.bfloat16, device=device)
    return weights, buf, l1, l2, y


@pytest.mark.parametrize("case, match", [
    ("y_dtype", "bf16"), ("y_hidden", "hidden"), ("too_many_tokens", "capacity"), ("raw_weights", "transform"),
    ("recipe", "recipe"), ("activation", "activation"), ("clamp", "activation_clamp"), ("expert_high", "expert id 4"),
    ("expert_low", "expert id -2"), ("stats", "cumulative_local_expert_recv_stats"), ("y_noncontig", "contiguous"),
])
def test_bad_calls_raise_value_error(device, case, match):
    weights, buf, l1, l2, y = _setup(device)
    kwargs = {}
    if case == "y_dtype":
        y = y.float()
    elif case == "y_hidden":
        y = torch.empty(4, 32, dtype=torch.bfloat16, device=device)
    elif case == "too_many_tokens":
        y = torch.empty(5, 64, dtype=torch.bfloat16, device=device)
    elif case == "raw_weights":
        l1 = (weights.w1, weights.w1_sf)
    elif case == "recipe":
        kwargs["recipe"] = (1, 128, 128)
    elif case == "activation":
        kwargs["activation"] = "gelu"
    elif case == "clamp":
        kwargs["activation_clamp"] = -1.0
    elif case == "expert_high":
        buf.topk_idx[1, 0] = 4
    elif case == "expert_low":
        buf.topk_idx[2, 1] = -2
    elif case == "stats":
        kwargs["cumulative_local_expert_recv_stats"] = torch.zeros(3, dtype=torch.int32, device=device)
    elif case == "y_noncontig":
        y = torch.empty(64, 4, dtype=torch.bfloat16, device=device).t()
    with pytest.raises(ValueError, match=match):
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden=48), "hidden"), (dict(intermediate_hidden=40), "intermediate_hidden"), (dict(num_topk=33), "num_topk"),
    (dict(num_experts=0), "num_experts"), (dict(num_max_tokens_per_rank=-1), "num_max_tokens_per_rank"),
])
def test_bad_buffer_raises(device, kwargs, match):
    args = dict(num_experts=4, num_max_tokens_per_rank=8, num_topk=2, hidden=64, intermediate_hidden=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tmoe.get_symm_buffer_for_mega_moe(None, device=device, **args)


def test_bad_weights_raise(device):
    weights = make_weights(2, 64, 32, seed=43, device=device)
    with pytest.raises(ValueError, match="scales"):
        tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf[:, :, :1]), (weights.w2, weights.w2_sf))
    with pytest.raises(ValueError, match="w2 shape"):
        tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2[:, :32], weights.w2_sf[:, :32]))
    with pytest.raises(ValueError, match="codes"):
        tmoe.transform_weights_for_mega_moe((weights.w1.float(), weights.w1_sf), (weights.w2, weights.w2_sf))


# ----------------------------------------------------------------------------- CUDA graphs
@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_with_new_inputs(device):
    e, h, i, k, t = 16, 256, 128, 4, 32
    weights, buf, l1, l2, y = _setup(device, t=t, e=e, k=k, h=h, i=i, seed=50)
    tmoe.fp8_fp4_mega_moe(y, l1, l2, buf)                       # warm up (compile) outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf)
    for seed in range(3):
        x = make_tokens(t, h, seed=60 + seed, device=device)
        idx, w = make_routing(t, e, k, ("masked", "hot_expert", "few_experts")[seed], seed=70 + seed, device=device)
        tmoe.layer.fill_buffer(buf, x, idx, w)
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        y_eager, _ = run_layer(weights, x, idx, w)
        assert torch.equal(y.view(torch.int16), y_eager.view(torch.int16)), f"replay {seed}"


@pytest.mark.parametrize("scale_bytes, x_scale", [((1, 4), 2.0 ** 120), ((120, 124), 1.0), ((150, 154), 2.0 ** -27)])
def test_extreme_weight_scales(device, scale_bytes, x_scale):
    """Weight scale bytes near the bottom of UE8M0 (E2M1 x 2^-126: bf16 subnormals) and well above 2^0,
    with activations scaled to keep the result finite: still within tolerance of the reference."""
    g = torch.Generator().manual_seed(80)
    e, h, i = 3, 64, 32
    lo, hi = scale_bytes
    w = tmoe.MoEWeights(torch.randint(-128, 128, (e, 2 * i, h // 2), generator=g, dtype=torch.int8),
                        torch.randint(lo, hi, (e, 2 * i, h // 32), generator=g, dtype=torch.uint8),
                        torch.randint(-128, 128, (e, h, i // 2), generator=g, dtype=torch.int8),
                        torch.full((e, h, i // 32), 127, dtype=torch.uint8))
    w = tmoe.MoEWeights(*(t.to(device) for t in (w.w1, w.w1_sf, w.w2, w.w2_sf)))
    x = make_tokens(5, h, seed=81, device=device, scale=x_scale)
    idx, tw = make_routing(5, e, 2, "uniform", seed=82, device=device)
    y, ref = _check_against_reference(w, x, idx, tw)
    assert ref.float().abs().max() > 1e-3, "the case must produce non-trivial outputs"
