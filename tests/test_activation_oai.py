"""gpt-oss's activation (swiglu_oai) and per-expert biases, in the kernels vs the float64 reference."""
import pytest
import torch
from hypothesis import given, strategies as st

import tmoe
from tmoe.reference import calc_diff, reference_moe, swiglu_fp32

from moe_cases import make_routing, make_tokens, make_weights, run_layer


def _biases(e, h, i, seed, device, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return ((torch.randn(e, 2 * i, generator=g) * scale).to(device),
            (torch.randn(e, h, generator=g) * scale).to(device))


def test_swiglu_oai_formula_by_hand():
    h = torch.tensor([[2.0, -9.0, 0.5, 9.0]], dtype=torch.bfloat16)     # gate [2, -9], up [0.5, 9]
    w = torch.tensor([0.5])
    s = swiglu_fp32(h, w, 7.0, "swiglu_oai", 1.702)
    g = torch.tensor([2.0, -9.0]).clamp(max=7.0)
    u = torch.tensor([0.5, 9.0]).clamp(-7.0, 7.0)
    expected = g * torch.sigmoid(1.702 * g) * (u + 1) * 0.5
    torch.testing.assert_close(s[0], expected, rtol=1e-6, atol=1e-7)


@given(hidden=st.sampled_from([32, 96, 128]), inter=st.sampled_from([32, 64]), num_experts=st.sampled_from([2, 5]),
       topk=st.integers(1, 4), num_tokens=st.integers(0, 9), clamp=st.sampled_from([None, 7.0, 0.3]),
       with_bias=st.sampled_from(["none", "b1", "b2", "both"]), activation=st.sampled_from(["swiglu", "swiglu_oai"]),
       seed=st.integers(0, 2**16))
def test_activation_and_biases_match_reference(device, hidden, inter, num_experts, topk, num_tokens, clamp,
                                               with_bias, activation, seed):
    weights = make_weights(num_experts, hidden, inter, seed=seed, device=device)
    x = make_tokens(num_tokens, hidden, seed=seed + 1, device=device)
    idx, w = make_routing(num_tokens, num_experts, topk, "masked", seed=seed + 2, device=device)
    b1, b2 = _biases(num_experts, hidden, inter, seed + 3, device)
    b1 = b1 if with_bias in ("b1", "both") else None
    b2 = b2 if with_bias in ("b2", "both") else None
    y, buf = run_layer(weights, x, idx, w, clamp=clamp, activation=activation, l1_bias=b1, l2_bias=b2)
    ref = reference_moe(buf.x[:num_tokens], buf.x_sf[:num_tokens], idx, w, weights, activation_clamp=clamp,
                        activation=activation, b1=b1, b2=b2)
    assert not torch.isnan(y).any()
    assert calc_diff(y, ref) <= 1e-4


def test_biases_change_the_result(device):
    weights = make_weights(3, 64, 32, seed=1, device=device)
    x = make_tokens(4, 64, seed=2, device=device)
    idx, w = make_routing(4, 3, 2, "uniform", seed=3, device=device)
    b1, b2 = _biases(3, 64, 32, 4, device)
    y0, _ = run_layer(weights, x, idx, w, activation="swiglu_oai")
    y1, _ = run_layer(weights, x, idx, w, activation="swiglu_oai", l1_bias=b1)
    y2, _ = run_layer(weights, x, idx, w, activation="swiglu_oai", l2_bias=b2)
    assert calc_diff(y0, y1) > 1e-3 and calc_diff(y0, y2) > 1e-3


@pytest.mark.parametrize("which, bad, match", [
    ("l1_bias", lambda d: torch.zeros(3, 32, device=d), "l1_bias"),
    ("l2_bias", lambda d: torch.zeros(3, 64, dtype=torch.float64, device=d), "l2_bias"),
    ("l1_bias", lambda d: torch.zeros(3, 64 * 2, device=d)[:, ::2], "l1_bias"),
])
def test_bad_bias_raises(device, which, bad, match):
    weights = make_weights(3, 64, 32, seed=5, device=device)
    x = make_tokens(2, 64, seed=6, device=device)
    idx, w = make_routing(2, 3, 2, "uniform", seed=7, device=device)
    with pytest.raises(ValueError, match=match):
        run_layer(weights, x, idx, w, **{which: bad(device)})


def test_unknown_activation_raises(device):
    weights = make_weights(2, 64, 32, seed=8, device=device)
    x = make_tokens(2, 64, seed=9, device=device)
    idx, w = make_routing(2, 2, 1, "uniform", seed=10, device=device)
    with pytest.raises(ValueError, match="activation"):
        run_layer(weights, x, idx, w, activation="gelu")
