"""The public API routes to DeepGEMM where the dispatcher says so, and cross-checks it on demand.

DeepGEMM itself needs an SM100 GPU; here the probes report a B200 and the stand-in module
(tests/fake_deep_gemm.py, which undoes DeepGEMM's layout with its own code and computes through
the reference) plays `deep_gemm`, so the route, the weight layout and the cross-check run for real.
"""
from pathlib import Path

import pytest
import torch

import tmoe
from tmoe import backend, crosscheck
from tmoe.layer import fill_buffer
from tmoe.reference import reference_moe

from moe_cases import make_routing, make_tokens, make_weights

fake = crosscheck.load_module(str(Path(__file__).resolve().parent / "fake_deep_gemm.py"))
E, K, H, I, T = 4, 2, 256, 256, 6


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("TMOE_BACKEND", raising=False)
    monkeypatch.delenv("TMOE_CROSS_CHECK", raising=False)
    fake.calls.clear()


@pytest.fixture
def sm100(monkeypatch, device):
    monkeypatch.setattr(backend, "_device_capability", lambda dev: (10, 0))
    monkeypatch.setattr(backend, "_sm_count", lambda dev: 148)
    monkeypatch.setattr(backend, "_import_deep_gemm", lambda: fake)
    monkeypatch.setattr(backend, "_torch_version", lambda: (2, 13))
    monkeypatch.setattr(backend, "_single_process_group", lambda: None)
    monkeypatch.setattr(fake, "DEVICE", device)
    return fake


def _problem(device, seed=0):
    weights = make_weights(E, H, I, seed=seed, device=device)
    x = make_tokens(T, H, seed=seed + 1, device=device)
    idx, w = make_routing(T, E, K, "masked", seed=seed + 2, device=device)
    return weights, x, idx, w


def _run(weights, x, idx, w, device, **kw):
    buf = tmoe.get_symm_buffer_for_mega_moe(None, E, T, K, H, I, device=device, backend=kw.pop("backend", None))
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf),
                                                 backend=kw.pop("weights_backend", None))
    fill_buffer(buf, x, idx, w)
    y = torch.full((T, H), float("nan"), dtype=torch.bfloat16, device=device)
    tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, **kw)
    return y, buf, l1


def test_plain_machine_uses_triton(device):
    if backend.select_backend(device=device) != "triton":
        pytest.skip("this machine can run DeepGEMM")
    weights, x, idx, w = _problem(device)
    y, buf, l1 = _run(weights, x, idx, w, device)
    assert buf.backend == "triton" and l1.backend == "triton"


def test_sm100_routes_to_deepgemm(sm100, device):
    weights, x, idx, w = _problem(device)
    y, buf, l1 = _run(weights, x, idx, w, device)
    assert buf.backend == "deepgemm" and l1.backend == "deepgemm" and len(fake.calls) == 1
    # DeepGEMM's layout is not the canonical one (rows interleaved by 8, packed MN-major scales) ...
    assert not torch.equal(l1[0], weights.w1) and l1[1].dtype == torch.int32
    # ... and the stand-in, undoing it independently, reproduces the reference exactly.
    ref = reference_moe(buf.x[:T], buf.x_sf[:T], idx, w, weights)
    assert torch.equal(y.view(torch.int16), ref.view(torch.int16))


def test_env_forces_triton_on_sm100(sm100, device, monkeypatch):
    monkeypatch.setenv("TMOE_BACKEND", "triton")
    weights, x, idx, w = _problem(device)
    _, buf, _ = _run(weights, x, idx, w, device)
    assert buf.backend == "triton" and not fake.calls


@pytest.mark.parametrize("how", ["argument", "env"])
def test_cross_check_passes_when_backends_agree(sm100, device, monkeypatch, how):
    weights, x, idx, w = _problem(device, seed=5)
    if how == "env":
        monkeypatch.setenv("TMOE_CROSS_CHECK", "1")
        y, _, _ = _run(weights, x, idx, w, device)
    else:
        y, _, _ = _run(weights, x, idx, w, device, cross_check=True)
    assert not torch.isnan(y).any() and len(fake.calls) == 1


def test_cross_check_catches_a_wrong_deepgemm(sm100, device, monkeypatch):
    real = fake.fp8_fp4_mega_moe

    def broken(y, *args, **kwargs):
        real(y, *args, **kwargs)
        y.mul_(1.5)

    monkeypatch.setattr(fake, "fp8_fp4_mega_moe", broken)
    weights, x, idx, w = _problem(device, seed=7)
    with pytest.raises(backend.CrossCheckError, match="calc_diff"):
        _run(weights, x, idx, w, device, cross_check=True)


def test_layout_and_buffer_backends_must_match(sm100, device):
    weights, x, idx, w = _problem(device)
    with pytest.raises(ValueError, match="transformed for the triton backend"):
        _run(weights, x, idx, w, device, weights_backend="triton")


def test_cross_check_without_deepgemm_warns(device):
    if backend.select_backend(device=device) != "triton":
        pytest.skip("this machine can run DeepGEMM")
    weights, x, idx, w = _problem(device)
    with pytest.warns(RuntimeWarning, match="cross-check requested"):
        _run(weights, x, idx, w, device, cross_check=True)


def test_deepgemm_refuses_gpt_oss_activation_and_biases(sm100, device):
    weights, x, idx, w = _problem(device)
    with pytest.raises(ValueError, match="backend='triton'"):
        _run(weights, x, idx, w, device, activation="swiglu_oai")
    with pytest.raises(ValueError, match="with biases"):
        _run(weights, x, idx, w, device, l2_bias=torch.zeros(E, H, device=device))
