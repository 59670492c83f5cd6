"""MegaMoE.from_checkpoint on synthetic checkpoints in each on-disk format, and the two examples."""
import importlib.util
from pathlib import Path

import pytest
import torch

import tmoe
from tmoe import checkpoints
from tmoe.reference import calc_diff, reference_moe

from moe_cases import make_routing, make_tokens

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("fmt, activation, clamp, bias", [
    ("gpt-oss", "swiglu_oai", 7.0, True), ("gpt-oss-original", "swiglu_oai", 7.0, True),
    ("deepseek-v4", "swiglu", 10.0, False), ("hf-bf16", "swiglu", None, False),
])
def test_from_checkpoint_each_format(tmp_path, device, fmt, activation, clamp, bias):
    e, h, i = 4, 64, 32
    checkpoints.write_synthetic_checkpoint(tmp_path, fmt, num_layers=2, num_experts=e, hidden=h, intermediate=i, seed=3)
    kwargs = {"top_k": 2} if fmt == "hf-bf16" else {}
    layer = tmoe.MegaMoE.from_checkpoint(tmp_path, layer=1, device=device, **kwargs)
    assert layer.activation == activation and layer.activation_clamp == clamp and (layer.b1 is not None) == bias
    ew = checkpoints.load_experts(tmp_path, 1, fmt)
    assert torch.equal(layer.w1.cpu(), ew.w1) and torch.equal(layer.w2_sf.cpu(), ew.w2_sf)
    x = make_tokens(5, h, seed=1, device=device)
    idx, w = make_routing(5, e, layer.top_k, "masked", seed=2, device=device)
    y = layer(x, idx, w)
    buf = layer.buffer
    ref = reference_moe(buf.x[:5], buf.x_sf[:5], idx, w, layer.weights, activation=activation,
                        activation_clamp=clamp, b1=layer.b1, b2=layer.b2)
    assert calc_diff(y, ref) <= 1e-4 and not torch.isnan(y).any()


def test_from_checkpoint_needs_top_k_for_hf(tmp_path, device):
    checkpoints.write_synthetic_checkpoint(tmp_path, "hf-bf16", num_experts=2, hidden=64, intermediate=32)
    with pytest.raises(ValueError, match="top_k"):
        tmoe.MegaMoE.from_checkpoint(tmp_path, layer=0, device=device)


def test_biases_need_a_bias_layer(device):
    layer = tmoe.MegaMoE(2, 64, 32, 1, device=device)
    w = tmoe.MoEWeights.quantize(torch.randn(2, 64, 64), torch.randn(2, 64, 32))
    with pytest.raises(ValueError, match="bias=False"):
        layer.load_weights(w.w1, w.w1_sf, w.w2, w.w2_sf, b1=torch.zeros(2, 64))


@pytest.mark.parametrize("name", ["gpt_oss_moe", "deepseek_v4_moe"])
def test_examples_run(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--tokens", "6"]) == 0
