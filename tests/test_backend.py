"""tmoe.backend and tmoe.crosscheck: backend selection, DeepGEMM's weight layout, the cross-check.

Everything runs on CPU. The DeepGEMM route is exercised for real through tests/fake_deep_gemm.py, a
stand-in that takes DeepGEMM-layout weights, undoes the layout with its own code and computes with
the reference; only the test marked for real DeepGEMM needs an SM100 GPU (skipped elsewhere).
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

from tmoe import backend, crosscheck, formats
from tmoe.backend import (BackendUnavailableError, CrossCheckError, cross_check, cross_check_enabled,
                          explain_backend, from_deepgemm_weights, run_mega_moe, select_backend,
                          to_deepgemm_weights)
from tmoe.reference import MoEWeights, calc_diff, reference_moe

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
fake = crosscheck.load_module(str(HERE / "fake_deep_gemm.py"))

_REAL_IMPORT = backend._import_deep_gemm
DSV3 = dict(hidden=7168, intermediate=2048, num_experts=256, num_topk=8)


# ============================================================================ fixtures / helpers
@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("TMOE_BACKEND", raising=False)
    monkeypatch.delenv("TMOE_CROSS_CHECK", raising=False)
    monkeypatch.setattr(backend, "_logged", set())
    fake.calls.clear()


@pytest.fixture
def sm100(monkeypatch):
    """Probes of a B200 with DeepGEMM installed (the stand-in module)."""
    monkeypatch.setattr(backend, "_device_capability", lambda device: (10, 0))
    monkeypatch.setattr(backend, "_sm_count", lambda device: 148)
    monkeypatch.setattr(backend, "_import_deep_gemm", lambda: fake)
    monkeypatch.setattr(backend, "_torch_version", lambda: (2, 13))
    # The stand-in needs no process group: never initialize torch.distributed inside the test process.
    monkeypatch.setattr(backend, "_single_process_group", lambda: None)
    return fake


def _deepgemm_really_available() -> bool:
    try:
        return explain_backend(**DSV3, backend="auto")[0] == "deepgemm"
    except Exception:  # noqa: BLE001
        return False


def _problem(e=4, k=2, h=256, i=256, t=8, seed=0):
    """Canonical weights + MXFP8 inputs, with a masked slot, a duplicate pair and an all-masked token."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(e, 2 * i, h, generator=g) * 0.06
    w2 = torch.randn(e, h, i, generator=g) * 0.06
    weights = MoEWeights.quantize(w1, w2)
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    x_fp8, x_sf = formats.quantize_mxfp8(x)
    idx = torch.randint(0, e, (t, k), generator=g)
    idx[0, -1] = -1
    idx[1, :] = idx[1, 0]
    idx[2, :] = -1
    w = torch.rand(t, k, generator=g) + 0.1
    return dict(x_fp8=x_fp8, x_sf=x_sf, topk_idx=idx, topk_weights=w,
                l1=(weights.w1, weights.w1_sf), l2=(weights.w2, weights.w2_sf), weights=weights, num_experts=e)


def _args(p):
    return (p["x_fp8"], p["x_sf"], p["topk_idx"], p["topk_weights"], p["l1"], p["l2"])


def _reference_triton(x_fp8, x_sf, topk_idx, topk_weights, l1, l2, *, num_experts, activation_clamp=None, **kw):
    """Stand-in for the Triton side: the reference on the canonical weights."""
    return reference_moe(x_fp8, x_sf, topk_idx, topk_weights, MoEWeights(*l1, *l2),
                         activation_clamp=activation_clamp)


def _triton_layer_or_skip():
    try:
        layer = importlib.import_module("tmoe.layer")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"tmoe.layer does not import yet ({type(exc).__name__}: {exc})")
    if not callable(getattr(layer, "fp8_fp4_mega_moe", None)):
        pytest.skip("tmoe.layer has no fp8_fp4_mega_moe yet (the Triton path lands separately)")
    return layer


def _real_deep_gemm_or_skip():
    reason = "real DeepGEMM (fp8_fp4_mega_moe) runs only on an SM100 GPU"
    if not torch.cuda.is_available():
        pytest.skip(f"{reason}; no CUDA GPU here")
    cap = torch.cuda.get_device_capability()
    if cap[0] != 10:
        pytest.skip(f"{reason}; this GPU is sm_{cap[0]}{cap[1]}")
    try:
        dg = importlib.import_module("deep_gemm")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"{reason}; deep_gemm does not import ({exc})")
    missing = [s for s in backend.DEEP_GEMM_SYMBOLS + ("transform_sf_into_required_layout",)
               if not callable(getattr(dg, s, None))]
    if missing:
        pytest.skip(f"deep_gemm lacks {missing}")
    return dg


# ============================================================================ selection
def test_no_arguments_uses_the_current_device():
    choice = select_backend()
    choice2, reason = explain_backend()
    assert choice == choice2 and choice in ("triton", "deepgemm")
    assert reason.startswith(choice + ":")
    if not torch.cuda.is_available():
        assert choice == "triton" and "not a CUDA GPU" in reason


@pytest.mark.parametrize("cap", [(10, 0), (10, 3)])
def test_sm100_family_with_deep_gemm_selects_deepgemm(sm100, monkeypatch, cap):
    monkeypatch.setattr(backend, "_device_capability", lambda device: cap)
    choice, reason = explain_backend(**DSV3)
    assert choice == "deepgemm"
    assert f"sm_{cap[0]}{cap[1]}" in reason and "148 SMs" in reason and "H=7168" in reason
    assert select_backend(**DSV3) == "deepgemm"
    assert select_backend() == "deepgemm"                     # no shapes: hardware/software only
    assert "shapes not checked" in explain_backend()[1]


@pytest.mark.parametrize("cap, text", [(None, "not a CUDA GPU|CUDA is not available"), ((9, 0), "sm_90"),
                                       ((8, 0), "sm_80"), ((12, 0), "sm_120"), ((11, 0), "sm_110")])
def test_capability_other_than_sm100_selects_triton(sm100, monkeypatch, cap, text):
    monkeypatch.setattr(backend, "_device_capability", lambda device: cap)
    choice, reason = explain_backend(**DSV3)
    assert choice == "triton" and re.search(text, reason)
    assert select_backend(**DSV3) == "triton"


def test_cpu_device_and_missing_cuda_are_reported():
    choice, reason = explain_backend(device="cpu")
    assert choice == "triton" and "device cpu is not a CUDA GPU" in reason
    if not torch.cuda.is_available():
        assert "CUDA is not available" in explain_backend(device="cuda:0")[1]


@pytest.mark.parametrize("exc", [ImportError("no module named deep_gemm"), OSError("libnvrtc.so: cannot open"),
                                 RuntimeError("CUDA init failed")])
def test_deep_gemm_import_failure_selects_triton(sm100, monkeypatch, exc):
    def boom():
        raise exc
    monkeypatch.setattr(backend, "_import_deep_gemm", boom)
    choice, reason = explain_backend(**DSV3)
    assert choice == "triton"
    assert f"deep_gemm does not import ({type(exc).__name__}: {exc})" in reason


def test_real_import_probe_failure(sm100, monkeypatch):
    monkeypatch.setattr(backend, "_import_deep_gemm", _REAL_IMPORT)   # the unpatched probe
    monkeypatch.setitem(sys.modules, "deep_gemm", None)        # makes `import deep_gemm` raise ImportError
    choice, reason = explain_backend(**DSV3)
    assert choice == "triton" and "deep_gemm does not import" in reason


@pytest.mark.parametrize("missing", backend.DEEP_GEMM_SYMBOLS)
def test_missing_deep_gemm_symbol_selects_triton(sm100, monkeypatch, missing):
    mod = types.SimpleNamespace(__version__="2.6.1", **{s: (lambda *a, **k: None)
                                                       for s in backend.DEEP_GEMM_SYMBOLS if s != missing})
    monkeypatch.setattr(backend, "_import_deep_gemm", lambda: mod)
    choice, reason = explain_backend(**DSV3)
    assert choice == "triton" and f"deep_gemm 2.6.1 lacks {missing}" in reason
    setattr(mod, missing, "not callable")
    assert explain_backend(**DSV3)[0] == "triton"


@pytest.mark.parametrize("kwargs, text", [
    (dict(hidden=7168 + 64), "hidden=7232 is not a multiple of 128"),
    (dict(hidden=7168 + 128), "hidden=7296 is not a multiple of 256"),
    (dict(hidden=4352), "hidden=4352 > 4096 is not a multiple of 512"),
    (dict(hidden=2880, intermediate=2880), "hidden=2880 is not a multiple of 128"),
    (dict(intermediate=2048 + 32), "intermediate=2080 is not a multiple of 128"),
    (dict(intermediate=384), "intermediate=384 is not a multiple of 256"),
    (dict(num_topk=33), "num_topk=33 > 32"),
    (dict(num_experts=256, num_ranks=3), "num_experts=256 is not divisible by num_ranks=3"),
    (dict(num_experts=160, num_ranks=80), "num_ranks=80 > 72"),
])
def test_each_shape_limit_selects_triton(sm100, kwargs, text):
    choice, reason = explain_backend(**{**DSV3, **kwargs})
    assert choice == "triton" and text in reason


@pytest.mark.parametrize("kwargs", [dict(hidden=4096), dict(hidden=3840), dict(hidden=4608), dict(hidden=256),
                                    dict(intermediate=768), dict(num_topk=32), dict(num_topk=1),
                                    dict(num_experts=256, num_ranks=8), dict(num_experts=144, num_ranks=72)])
def test_shapes_at_the_limits_select_deepgemm(sm100, kwargs):
    assert explain_backend(**{**DSV3, **kwargs})[0] == "deepgemm"


def test_odd_sm_count_selects_triton(sm100, monkeypatch):
    monkeypatch.setattr(backend, "_sm_count", lambda device: 147)
    choice, reason = explain_backend(**DSV3)
    assert choice == "triton" and "odd SM count 147" in reason


def test_deep_gemm_num_sms_setting_is_used(sm100, monkeypatch):
    mod = types.SimpleNamespace(get_num_sms=lambda: 131, **{s: fake.__dict__[s] for s in backend.DEEP_GEMM_SYMBOLS})
    monkeypatch.setattr(backend, "_import_deep_gemm", lambda: mod)
    assert "odd SM count 131" in explain_backend(**DSV3)[1]


def test_old_torch_selects_triton(sm100, monkeypatch):
    monkeypatch.setattr(backend, "_torch_version", lambda: (2, 8))
    choice, reason = explain_backend(**DSV3)
    assert choice == "triton" and "< 2.9" in reason


def test_all_failures_are_listed(monkeypatch):
    monkeypatch.setattr(backend, "_device_capability", lambda device: (9, 0))
    monkeypatch.setattr(backend, "_torch_version", lambda: (2, 7))
    monkeypatch.setattr(backend, "_import_deep_gemm", lambda: types.SimpleNamespace())
    reason = explain_backend(hidden=2880, intermediate=2880, num_experts=128, num_topk=4)[1]
    for text in ("sm_90", "< 2.9", "lacks fp8_fp4_mega_moe", "hidden=2880", "intermediate=2880"):
        assert text in reason


@pytest.mark.parametrize("name, expected", [("dsv3", "deepgemm"), ("v4flash", "deepgemm"),
                                            ("gptoss", "triton"), ("qwen3", "deepgemm")])
def test_benchmark_workloads_on_sm100(sm100, name, expected):
    wl = crosscheck.WORKLOADS[name]
    assert select_backend(hidden=wl.hidden, intermediate=wl.intermediate, num_experts=wl.num_experts,
                          num_topk=wl.num_topk, num_ranks=8) == expected


@pytest.mark.parametrize("kwargs", [dict(hidden=0), dict(hidden=-128), dict(intermediate=256.0),
                                    dict(num_topk=True), dict(num_ranks=0), dict(num_experts="8")])
def test_invalid_shape_values_raise(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        explain_backend(**kwargs)


# ---------------------------------------------------------------------------- overrides
def test_env_forces_triton(sm100, monkeypatch):
    monkeypatch.setenv("TMOE_BACKEND", "triton")
    assert explain_backend(**DSV3) == ("triton", "triton: forced by TMOE_BACKEND=triton")


@pytest.mark.parametrize("value", ["deepgemm", " DeepGEMM ", "DEEPGEMM"])
def test_env_forces_deepgemm_where_it_runs(sm100, monkeypatch, value):
    monkeypatch.setenv("TMOE_BACKEND", value)
    choice, reason = explain_backend(**DSV3)
    assert choice == "deepgemm" and "forced by TMOE_BACKEND" in reason


@pytest.mark.parametrize("patch, kwargs, text", [
    ("_device_capability", {}, "sm_90"),
    (None, dict(hidden=2880), "hidden=2880"),
])
def test_forcing_deepgemm_where_it_cannot_run_is_an_error(sm100, monkeypatch, patch, kwargs, text):
    if patch:
        monkeypatch.setattr(backend, patch, lambda device: (9, 0))
    monkeypatch.setenv("TMOE_BACKEND", "deepgemm")
    with pytest.raises(BackendUnavailableError, match=f"TMOE_BACKEND=deepgemm.*{text}"):
        select_backend(**{**DSV3, **kwargs})
    monkeypatch.delenv("TMOE_BACKEND")
    with pytest.raises(BackendUnavailableError, match=f"backend='deepgemm'.*{text}"):
        explain_backend(**{**DSV3, **kwargs}, backend="deepgemm")
    assert issubclass(BackendUnavailableError, RuntimeError)


@pytest.mark.parametrize("value", ["auto", "AUTO", "", "  "])
def test_env_auto_and_empty_mean_automatic(sm100, monkeypatch, value):
    monkeypatch.setenv("TMOE_BACKEND", value)
    assert explain_backend(**DSV3)[0] == "deepgemm"
    assert explain_backend(**{**DSV3, "hidden": 2880})[0] == "triton"


def test_invalid_env_value_raises_naming_it(monkeypatch):
    monkeypatch.setenv("TMOE_BACKEND", "cutlass")
    with pytest.raises(ValueError, match="TMOE_BACKEND.*'cutlass'"):
        select_backend()


@pytest.mark.parametrize("value", ["cuda", "Triton2", "", 1])
def test_invalid_argument_raises_naming_it(value):
    with pytest.raises(ValueError, match="backend must be one of auto, triton, deepgemm; got " + re.escape(repr(value))):
        select_backend(backend=value)


def test_argument_overrides_env(sm100, monkeypatch):
    monkeypatch.setenv("TMOE_BACKEND", "deepgemm")
    assert explain_backend(**{**DSV3, "hidden": 2880}, backend="triton")[1] == "triton: forced by backend='triton'"
    monkeypatch.setenv("TMOE_BACKEND", "triton")
    assert select_backend(**DSV3, backend="deepgemm") == "deepgemm"
    assert select_backend(**DSV3, backend="auto") == "deepgemm"
    monkeypatch.setenv("TMOE_BACKEND", "not-a-backend")            # not read when the argument is given
    assert select_backend(**DSV3, backend="Triton") == "triton"


def test_choice_is_logged(sm100, caplog):
    with caplog.at_level(logging.DEBUG, logger="tmoe.backend"):
        select_backend(**DSV3)
        select_backend(**DSV3)
    lines = [r for r in caplog.records if r.name == "tmoe.backend"]
    assert len(lines) == 2 and lines[0].levelno == logging.INFO and lines[1].levelno == logging.DEBUG
    assert lines[0].getMessage().startswith("tmoe backend: deepgemm: SM100-family GPU")


# ============================================================================ weight layout
# An independent implementation, written from the layout description:
#   scales: UE8M0 bytes packed little-endian four per int32 [E, N, K/128], stored MN-major with
#   strides (N_al*K/128, 1, N_al), N_al = align(N, 4);
#   L1 (codes and scales): rows [g0..7, u0..7, g8..15, u8..15, ...] instead of [gate | up];
#   scales of L1 (after the interleave) and L2: inside each 128-row block new row 4b+a = old row 32a+b.
def _ind_pack(sf_bytes: torch.Tensor) -> torch.Tensor:
    b = sf_bytes.to(torch.int64)
    b = b.reshape(*b.shape[:-1], b.shape[-1] // 4, 4)
    w = b[..., 0] + b[..., 1] * 256 + b[..., 2] * 65536 + b[..., 3] * 16777216
    return torch.where(w >= 2 ** 31, w - 2 ** 32, w).to(torch.int32)


def _ind_interleave_order(n: int) -> list[int]:
    half, order = n // 2, []
    for start in range(0, half, 8):
        order.extend(range(start, start + 8))               # g[start .. start+7]
        order.extend(range(half + start, half + start + 8))  # u[start .. start+7]
    return order


def _ind_utccp_order(n: int) -> list[int]:
    order = [-1] * n
    for blk in range(0, n, 128):
        for a in range(4):
            for b in range(32):
                order[blk + 4 * b + a] = blk + 32 * a + b
    return order


def _ind_mn_major(words: torch.Tensor) -> torch.Tensor:
    e, n, w = words.shape
    n_al = -(-n // 4) * 4
    store = torch.zeros(e, w, n_al, dtype=torch.int32)
    store[:, :, :n] = words.transpose(1, 2)
    return store.as_strided((e, n, w), (n_al * w, 1, n_al))


def _independent_to_deepgemm(w1, s1, w2, s2):
    o1 = _ind_interleave_order(w1.shape[1])
    w1_dg = w1[:, o1].contiguous()
    s1_w = _ind_pack(s1)[:, o1]
    s1_dg = _ind_mn_major(s1_w[:, _ind_utccp_order(s1_w.shape[1])])
    s2_dg = _ind_mn_major(_ind_pack(s2)[:, _ind_utccp_order(s2.shape[1])])
    return (w1_dg, s1_dg), (w2.contiguous(), s2_dg)


def _random_canonical(e, i, h, seed, full_range=True):
    g = torch.Generator().manual_seed(seed)
    lo, hi = (0, 256) if full_range else (100, 140)
    return ((torch.randint(-128, 128, (e, 2 * i, h // 2), generator=g, dtype=torch.int8),
             torch.randint(lo, hi, (e, 2 * i, h // 32), generator=g, dtype=torch.uint8)),
            (torch.randint(-128, 128, (e, h, i // 2), generator=g, dtype=torch.int8),
             torch.randint(lo, hi, (e, h, i // 32), generator=g, dtype=torch.uint8)))


def _assert_same(a: torch.Tensor, b: torch.Tensor, what: str):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert torch.equal(a, b), what


def _assert_deepgemm_layout(l1_dg, l2_dg, e, i, h):
    (w1, s1), (w2, s2) = l1_dg, l2_dg
    assert w1.dtype == w2.dtype == torch.int8 and w1.is_contiguous() and w2.is_contiguous()
    assert tuple(w1.shape) == (e, 2 * i, h // 2) and tuple(w2.shape) == (e, h, i // 2)
    assert s1.dtype == s2.dtype == torch.int32
    assert tuple(s1.shape) == (e, 2 * i, h // 128) and s1.stride() == (2 * i * (h // 128), 1, 2 * i)
    assert tuple(s2.shape) == (e, h, i // 128) and s2.stride() == (h * (i // 128), 1, h)


def test_layout_known_answer():
    """Row labels through the transform, checked by hand against the description."""
    e, i, h = 1, 128, 128
    w1 = torch.arange(2 * i, dtype=torch.int64).remainder(128).to(torch.int8).view(1, 2 * i, 1).expand(1, 2 * i, h // 2)
    w1 = (w1 + 0).contiguous()
    w1[:, i:] = -w1[:, i:] - 1                                   # up rows negative: -1 .. -128
    s1 = (torch.arange(2 * i) % 256).to(torch.uint8).view(1, 2 * i, 1).expand(1, 2 * i, h // 32).contiguous()
    w2 = torch.zeros(e, h, i // 2, dtype=torch.int8)
    s2 = torch.arange(h, dtype=torch.uint8).view(1, h, 1).expand(1, h, i // 32).contiguous()
    (w1d, s1d), (w2d, s2d) = to_deepgemm_weights((w1, s1), (w2, s2))
    rows = w1d[0, :, 0].tolist()
    assert rows[:8] == list(range(8))                            # gate 0..7
    assert rows[8:16] == [-1 - r for r in range(8)]              # up 0..7
    assert rows[16:24] == list(range(8, 16))                     # gate 8..15
    word = lambda b: int(torch.tensor([b * 0x01010101], dtype=torch.int64).to(torch.int32))  # noqa: E731
    # L2 scales: new row 4b+a = old row 32a+b.
    assert int(s2d[0, 0, 0]) == word(0) and int(s2d[0, 1, 0]) == word(32)
    assert int(s2d[0, 4, 0]) == word(1) and int(s2d[0, 127, 0]) == word(127)
    # L1 scales: interleaved row 32 (= gate row 16) lands on row 1; interleaved row 8 (= up row 0, canonical 128) on row 32.
    assert int(s1d[0, 1, 0]) == word(16) and int(s1d[0, 32, 0]) == word(128)


@pytest.mark.parametrize("e, i, h", [(2, 128, 256), (1, 256, 128), (3, 384, 512)])
def test_to_deepgemm_matches_independent_implementation(e, i, h):
    l1, l2 = _random_canonical(e, i, h, seed=e + i + h)
    got = to_deepgemm_weights(l1, l2)
    want = _independent_to_deepgemm(*l1, *l2)
    _assert_deepgemm_layout(*got, e, i, h)
    for a, b, what in zip([*got[0], *got[1]], [*want[0], *want[1]], ["w1", "w1_sf", "w2", "w2_sf"]):
        _assert_same(a, b, what)
        assert a.stride() == b.stride(), what


@given(e=st.integers(1, 2), i=st.sampled_from([128, 256, 384]), h=st.sampled_from([128, 256, 384]),
       seed=st.integers(0, 2 ** 31 - 1))
def test_layout_roundtrip_and_independent_property(e, i, h, seed):
    l1, l2 = _random_canonical(e, i, h, seed)
    dg = to_deepgemm_weights(l1, l2)
    want = _independent_to_deepgemm(*l1, *l2)
    for a, b in zip([*dg[0], *dg[1]], [*want[0], *want[1]]):
        assert torch.equal(a, b)
    back = from_deepgemm_weights(*dg)
    for a, b in zip([*back[0], *back[1]], [*l1, *l2]):
        _assert_same(a, b, "canonical -> deepgemm -> canonical")
        assert a.is_contiguous()


@given(e=st.integers(1, 2), i=st.sampled_from([128, 256]), h=st.sampled_from([128, 512]),
       seed=st.integers(0, 2 ** 31 - 1))
def test_inverse_direction_roundtrip(e, i, h, seed):
    """Any DeepGEMM-layout words (all 2^32 values) -> canonical -> back, bit-exact, same strides."""
    g = torch.Generator().manual_seed(seed)
    words = lambda n, k: _ind_mn_major(torch.randint(-2 ** 31, 2 ** 31, (e, n, k // 128), generator=g,  # noqa: E731
                                                     dtype=torch.int64).to(torch.int32))
    l1_dg = (torch.randint(-128, 128, (e, 2 * i, h // 2), generator=g, dtype=torch.int8), words(2 * i, h))
    l2_dg = (torch.randint(-128, 128, (e, h, i // 2), generator=g, dtype=torch.int8), words(h, i))
    again = to_deepgemm_weights(*from_deepgemm_weights(l1_dg, l2_dg))
    for a, b in zip([*again[0], *again[1]], [*l1_dg, *l2_dg]):
        _assert_same(a, b, "deepgemm -> canonical -> deepgemm")
        assert a.stride() == b.stride()


def test_from_deepgemm_accepts_any_scale_strides():
    l1, l2 = _random_canonical(2, 128, 256, seed=3)
    (w1, s1), (w2, s2) = to_deepgemm_weights(l1, l2)
    back = from_deepgemm_weights((w1, s1.contiguous()), (w2, s2.contiguous()))
    for a, b in zip([*back[0], *back[1]], [*l1, *l2]):
        assert torch.equal(a, b)


def _module_params():
    return [pytest.param("fake", id="stand-in"), pytest.param("real", id="real-deep_gemm", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("which", _module_params())
def test_matches_deep_gemm_own_transform(which):
    """to_deepgemm_weights == DeepGEMM's transform_sf_into_required_layout + transform_weights_for_mega_moe."""
    dg = fake if which == "fake" else _real_deep_gemm_or_skip()
    dev = torch.device("cpu" if which == "fake" else "cuda")
    e, i, h = 2, 256, 512
    (w1, s1), (w2, s2) = [tuple(t.to(dev) for t in p) for p in _random_canonical(e, i, h, seed=7, full_range=False)]
    sf1 = dg.transform_sf_into_required_layout(formats.e8m0_to_float(s1), 2 * i, h, (1, 32), e)
    sf2 = dg.transform_sf_into_required_layout(formats.e8m0_to_float(s2), h, i, (1, 32), e)
    want = dg.transform_weights_for_mega_moe((w1, sf1), (w2, sf2))
    got = to_deepgemm_weights((w1, s1), (w2, s2))
    for a, b, what in zip([*got[0], *got[1]], [*want[0], *want[1]], ["w1", "w1_sf", "w2", "w2_sf"]):
        _assert_same(a, b, what)
        assert a.stride() == b.stride(), what


def _bad(e=1, i=128, h=128, **over):
    (w1, s1), (w2, s2) = _random_canonical(e, i, h, seed=0)
    d = dict(w1=w1, s1=s1, w2=w2, s2=s2)
    d.update(over)
    return (d["w1"], d["s1"]), (d["w2"], d["s2"])


@pytest.mark.parametrize("l1l2, text", [
    (lambda: _bad(w1=torch.zeros(1, 256, 64, dtype=torch.uint8)), "w1 codes must be int8"),
    (lambda: _bad(w1=torch.zeros(256, 64, dtype=torch.int8)), r"w1 codes must be int8 \[E, N, K/2\]"),
    (lambda: _bad(w1=torch.zeros(1, 256, 48, dtype=torch.int8)), "w1: K=96 must be a positive multiple of 128"),
    (lambda: _bad(w1=torch.zeros(1, 192, 64, dtype=torch.int8)), "w1: N=192 must be a positive multiple of 128"),
    (lambda: _bad(w2=torch.zeros(1, 128, 32, dtype=torch.int8)), "w2: K=64 must be a positive multiple of 128"),
    (lambda: _bad(s1=torch.zeros(1, 256, 4, dtype=torch.float32)), "w1 scales must be torch.uint8"),
    (lambda: _bad(s2=torch.zeros(1, 128, 8, dtype=torch.uint8)), r"w2 scales must be torch.uint8 \[1, 128, 4\]"),
    (lambda: _bad(w2=torch.zeros(2, 128, 64, dtype=torch.int8), s2=torch.zeros(2, 128, 4, dtype=torch.uint8)),
     "w1 has E=1 experts but w2 has E=2"),
    (lambda: _bad(w2=torch.zeros(1, 256, 64, dtype=torch.int8), s2=torch.zeros(1, 256, 4, dtype=torch.uint8)),
     "w2 N=256 must equal hidden H=128"),
    (lambda: _bad(w2=torch.zeros(1, 128, 128, dtype=torch.int8), s2=torch.zeros(1, 128, 8, dtype=torch.uint8)),
     r"w1 N=256 must be 2\*I = 512"),
    (lambda: ((torch.zeros(1, 256, 64, dtype=torch.int8),), _bad()[1]), "l1 must be a \\(codes, scales\\) pair"),
])
def test_to_deepgemm_validates(l1l2, text):
    l1, l2 = l1l2()
    with pytest.raises(ValueError, match=text):
        to_deepgemm_weights(l1, l2)


def test_from_deepgemm_validates():
    l1, l2 = to_deepgemm_weights(*_random_canonical(1, 128, 128, seed=0))
    with pytest.raises(ValueError, match="w1 scales must be torch.int32"):
        from_deepgemm_weights((l1[0], l1[1].to(torch.uint8)), l2)
    with pytest.raises(ValueError, match="w2 scales must be torch.int32 \\[1, 128, 1\\]"):
        from_deepgemm_weights(l1, (l2[0], torch.zeros(1, 128, 4, dtype=torch.int32)))
    with pytest.raises(ValueError, match="N=64"):
        from_deepgemm_weights((l1[0][:, :64], l1[1][:, :64]), l2)


# ============================================================================ cross-check
def _y(seed=0, t=16, h=256):
    return (torch.randn(t, h, generator=torch.Generator().manual_seed(seed))).to(torch.bfloat16)


def test_cross_check_identical_outputs():
    y = _y()
    calls = []
    res = cross_check(lambda: calls.append("t") or y, lambda: calls.append("d") or y.clone())
    assert res == {"calc_diff": 0.0, "max_abs_diff": 0.0, "ok": True}
    assert calls == ["t", "d"]


def test_cross_check_small_difference_passes_and_reports_numbers():
    a = _y()
    b = a.clone()
    b[0, :4] = (b[0, :4].float() * 1.01).to(torch.bfloat16)
    res = cross_check(lambda: a, lambda: b)
    assert res["ok"] and 0 < res["calc_diff"] < 1e-3
    assert res["max_abs_diff"] == pytest.approx(float((a.float() - b.float()).abs().max()))
    with pytest.raises(CrossCheckError, match="threshold 1.0e-08"):
        cross_check(lambda: a, lambda: b, threshold=1e-8)


def test_cross_check_disagreement_raises_with_numbers():
    a = _y()
    b = (a.float() * 1.1).to(torch.bfloat16)                    # calc_diff ~ 4.5e-3
    with pytest.raises(RuntimeError, match=r"calc_diff=4\.\d+e-03 max_abs_diff=\S+ .*threshold 1\.0e-03") as ei:
        cross_check(lambda: a, lambda: b)
    assert ei.value.result["ok"] is False and ei.value.result["calc_diff"] == pytest.approx(calc_diff(a, b))


@pytest.mark.parametrize("side", ["triton", "deepgemm"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_cross_check_non_finite_raises(side, bad):
    a, b = _y(), _y()
    (a if side == "triton" else b)[3, 5] = bad
    counts = "triton: 1, deepgemm: 0" if side == "triton" else "triton: 0, deepgemm: 1"
    with pytest.raises(RuntimeError, match=f"non-finite outputs \\({counts} elements\\)"):
        cross_check(lambda: a, lambda: b)


def test_cross_check_shape_mismatch_raises():
    with pytest.raises(RuntimeError, match="shapes differ"):
        cross_check(lambda: _y(t=4), lambda: _y(t=5))


def test_cross_check_empty_outputs():
    e = torch.empty(0, 256, dtype=torch.bfloat16)
    assert cross_check(lambda: e, lambda: e)["ok"]


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("ON", True), ("yes", True),
                                             ("0", False), ("", False), ("off", False), ("False", False)])
def test_cross_check_enabled_env(monkeypatch, value, expected):
    monkeypatch.setenv("TMOE_CROSS_CHECK", value)
    assert cross_check_enabled() is expected
    assert cross_check_enabled(True) is True and cross_check_enabled(False) is False


def test_cross_check_enabled_default_and_invalid(monkeypatch):
    assert cross_check_enabled() is False
    monkeypatch.setenv("TMOE_CROSS_CHECK", "maybe")
    with pytest.raises(ValueError, match="TMOE_CROSS_CHECK.*'maybe'"):
        cross_check_enabled()


# ============================================================================ dispatcher end to end
@pytest.mark.parametrize("clamp", [None, 0.5])
def test_dispatcher_routes_to_deepgemm_end_to_end(sm100, clamp):
    p = _problem()
    y, rep = run_mega_moe(*_args(p), num_experts=p["num_experts"], activation_clamp=clamp, return_report=True)
    assert rep["backend"] == "deepgemm" and rep["cross_check"] is None
    assert len(fake.calls) == 1 and fake.calls[0]["activation_clamp"] == clamp
    want = reference_moe(p["x_fp8"], p["x_sf"], p["topk_idx"], p["topk_weights"], p["weights"],
                         activation_clamp=clamp)
    assert y.dtype == torch.bfloat16 and torch.equal(y, want)     # layout round trip is exact
    assert float(want.abs().max()) > 0 and torch.equal(y[2], torch.zeros_like(y[2]))


def test_run_deepgemm_counts_received_tokens():
    p = _problem()
    stats = torch.full((p["num_experts"],), 5, dtype=torch.int32)
    backend.run_deepgemm(*_args(p), num_experts=p["num_experts"], deep_gemm=fake,
                         cumulative_local_expert_recv_stats=stats)
    idx = p["topk_idx"]
    assert torch.equal(stats, 5 + torch.bincount(idx[idx >= 0], minlength=p["num_experts"]).to(torch.int32))


def test_run_deepgemm_with_deepgemm_layout_and_buffer():
    p = _problem(t=5)
    l1, l2 = to_deepgemm_weights(p["l1"], p["l2"])
    buf = fake.get_symm_buffer_for_mega_moe(None, p["num_experts"], 100, 2, 256, 256)
    assert buf.x.shape == (384, 256) and buf.x_sf.dtype == torch.int32       # aligned to 384 tokens
    y = backend.run_deepgemm(*_args(p)[:4], l1, l2, num_experts=p["num_experts"], deep_gemm=fake,
                             weights_layout="deepgemm", sym_buffer=buf)
    assert torch.equal(y, reference_moe(p["x_fp8"], p["x_sf"], p["topk_idx"], p["topk_weights"], p["weights"]))
    with pytest.raises(ValueError, match="weights_layout"):
        backend.run_deepgemm(*_args(p), num_experts=4, deep_gemm=fake, weights_layout="swizzled")


def test_stand_in_rejects_canonical_scales():
    """The stand-in checks DeepGEMM's scale layout, so skipping the conversion cannot pass unnoticed."""
    p = _problem()
    (w1, s1), (w2, s2) = to_deepgemm_weights(p["l1"], p["l2"])
    with pytest.raises(RuntimeError, match="MN-major"):
        backend.run_deepgemm(*_args(p)[:4], (w1, s1.contiguous()), (w2, s2), num_experts=4, deep_gemm=fake,
                             weights_layout="deepgemm")
    with pytest.raises(RuntimeError, match="packed UE8M0 int32"):
        backend.run_deepgemm(*_args(p), num_experts=4, deep_gemm=fake, weights_layout="deepgemm")


def test_dispatcher_routes_to_triton_off_sm100(sm100, monkeypatch):
    monkeypatch.setattr(backend, "_device_capability", lambda device: (9, 0))
    seen = []
    monkeypatch.setattr(backend, "run_triton", lambda *a, **k: seen.append(k) or _reference_triton(*a, **k))
    p = _problem()
    y, rep = run_mega_moe(*_args(p), num_experts=4, return_report=True)
    assert rep["backend"] == "triton" and "sm_90" in rep["reason"]
    assert len(seen) == 1 and fake.calls == []
    assert torch.equal(y, reference_moe(p["x_fp8"], p["x_sf"], p["topk_idx"], p["topk_weights"], p["weights"]))


def test_dispatcher_cross_check_from_env(sm100, monkeypatch):
    monkeypatch.setattr(backend, "run_triton", _reference_triton)
    monkeypatch.setenv("TMOE_CROSS_CHECK", "1")
    p = _problem()
    y, rep = run_mega_moe(*_args(p), num_experts=4, activation_clamp=1.0, return_report=True)
    assert rep["backend"] == "deepgemm" and len(fake.calls) == 1
    assert rep["cross_check"] == {"calc_diff": 0.0, "max_abs_diff": 0.0, "ok": True}


def test_dispatcher_cross_check_with_triton_forced_returns_triton_output(sm100, monkeypatch):
    marker = {}

    def triton(*a, **k):
        marker["y"] = _reference_triton(*a, **k)
        return marker["y"]
    monkeypatch.setattr(backend, "run_triton", triton)
    p = _problem()
    y, rep = run_mega_moe(*_args(p), num_experts=4, backend="triton", cross_check=True, return_report=True)
    assert rep["backend"] == "triton" and y is marker["y"] and rep["cross_check"]["ok"] and len(fake.calls) == 1


@pytest.mark.parametrize("broken", ["interleave_src_rows", "utccp_src_rows"])
def test_cross_check_catches_a_layout_mismatch(sm100, monkeypatch, broken):
    """If either side of the layout conversion were wrong the dispatcher's cross-check must fire."""
    monkeypatch.setattr(backend, "run_triton", _reference_triton)
    monkeypatch.setattr(fake, broken, lambda n: list(range(n)))     # stand-in no longer undoes this step
    p = _problem()
    with pytest.raises(CrossCheckError, match="calc_diff=") as ei:
        run_mega_moe(*_args(p), num_experts=4, cross_check=True)
    assert ei.value.result["calc_diff"] > 1e-3


def test_cross_check_needs_deepgemm(sm100, monkeypatch):
    monkeypatch.setattr(backend, "_device_capability", lambda device: (9, 0))
    monkeypatch.setattr(backend, "run_triton", _reference_triton)
    p = _problem()
    with pytest.raises(BackendUnavailableError, match="cross-check needs DeepGEMM.*sm_90"):
        run_mega_moe(*_args(p), num_experts=4, cross_check=True)


def test_run_triton_plumbing_and_pinned_env(monkeypatch):
    """run_triton: transform, buffer fill, call; TMOE_BACKEND=triton / TMOE_CROSS_CHECK=0 while it runs."""
    monkeypatch.setenv("TMOE_BACKEND", "deepgemm")
    monkeypatch.setenv("TMOE_CROSS_CHECK", "1")
    env_seen = []

    def transform(l1, l2):
        env_seen.append((os.environ["TMOE_BACKEND"], os.environ["TMOE_CROSS_CHECK"]))
        return ("T", l1), ("T", l2)

    def run(y, l1, l2, buf, **kw):
        env_seen.append((os.environ["TMOE_BACKEND"], os.environ["TMOE_CROSS_CHECK"]))
        assert l1[0] == "T" and kw["recipe"] == (1, 1, 32) and kw["activation"] == "swiglu"
        n = y.shape[0]
        y.copy_(reference_moe(buf.x[:n], buf.x_sf[:n], buf.topk_idx[:n], buf.topk_weights[:n],
                              MoEWeights(*l1[1], *l2[1]), activation_clamp=kw["activation_clamp"]))

    monkeypatch.setattr(backend, "_triton_api", lambda: (fake.get_symm_buffer_for_mega_moe, transform, run))
    p = _problem()
    y = backend.run_triton(*_args(p), num_experts=4, activation_clamp=2.0)
    assert env_seen == [("triton", "0"), ("triton", "0")]
    assert os.environ["TMOE_BACKEND"] == "deepgemm" and os.environ["TMOE_CROSS_CHECK"] == "1"
    assert torch.equal(y, reference_moe(p["x_fp8"], p["x_sf"], p["topk_idx"], p["topk_weights"], p["weights"],
                                        activation_clamp=2.0))


def test_run_triton_without_layer_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tmoe.layer", None)
    p = _problem()
    with pytest.raises(BackendUnavailableError, match="tmoe.layer"):
        backend.run_triton(*_args(p), num_experts=4)


def test_real_triton_layer_against_stand_in_deepgemm(sm100, device):
    """The whole route with tmoe's real Triton layer (interpreted on CPU) and the stand-in DeepGEMM."""
    _triton_layer_or_skip()
    p = _problem(e=8, k=4, t=3, seed=5)
    args = [t.to(device) for t in _args(p)[:4]] + [tuple(t.to(device) for t in p[k]) for k in ("l1", "l2")]
    y, rep = run_mega_moe(*args, num_experts=8, activation_clamp=10.0, cross_check=True, return_report=True)
    assert rep["backend"] == "deepgemm" and rep["cross_check"]["ok"]
    assert rep["cross_check"]["calc_diff"] <= 1e-4


# ============================================================================ CLI
def _fake_run_or_skip_if_real():
    if _deepgemm_really_available():
        pytest.skip("DeepGEMM really runs here: the 'unavailable' verdicts do not apply")


def test_cli_module_prints_one_verdict_and_exits_zero():
    _fake_run_or_skip_if_real()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMOE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, "-m", "tmoe.crosscheck", "--workload", "v4flash", "--tokens", "512"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("v4flash ")
    assert "SKIP deepgemm unavailable:" in lines[0] and "deep_gemm" in lines[0]


def test_cli_all_workloads_unavailable(capsys):
    _fake_run_or_skip_if_real()
    assert crosscheck.main(["--workload", "all", "--tokens", "512", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["dsv3", "v4flash", "gptoss", "qwen3"]
    reason = explain_backend(hidden=2880, intermediate=2880, num_experts=128, num_topk=4, device="cpu")[1]
    assert all("SKIP deepgemm unavailable: device cpu is not a CUDA GPU" in ln for ln in lines)
    assert reason.split("DeepGEMM unavailable: ")[1] in lines[2]
    assert "E=256 K=6 H=4096 I=2048 clamp=10 T=512" in lines[1]


def test_cli_bad_arguments():
    with pytest.raises(SystemExit) as ei:
        crosscheck.main(["--workload", "mixtral"])
    assert ei.value.code == 2
    with pytest.raises(SystemExit):
        crosscheck.main(["--tokens", "-1"])


def test_workload_comparison_with_stand_ins():
    lines = {n: crosscheck.run_workload(n, 512, device="cpu", deep_gemm=fake, run_triton=_reference_triton)
             for n in crosscheck.WORKLOADS}
    for n in ("dsv3", "v4flash", "qwen3"):
        ok, line = lines[n]
        assert ok and " PASS calc_diff=0.000e+00 max_abs_diff=0 " in line and "scaled to" in line
    ok, line = lines["gptoss"]
    assert ok and "SKIP deepgemm cannot run this shape: hidden=2880 is not a multiple of 128" in line
    assert len(fake.calls) == 3 and fake.calls[1]["activation_clamp"] == 10.0


def test_workload_comparison_reports_disagreement_and_errors():
    def off(*a, **k):
        return (_reference_triton(*a, **k).float() * 1.1).to(torch.bfloat16)

    def missing(*a, **k):
        raise BackendUnavailableError("tmoe.layer has no fp8_fp4_mega_moe")
    ok, line = crosscheck.run_workload("qwen3", 8, device="cpu", deep_gemm=fake, run_triton=off)
    assert not ok and " FAIL cross-check failed" in line and "calc_diff=4." in line
    ok, line = crosscheck.run_workload("qwen3", 8, device="cpu", deep_gemm=fake, run_triton=missing)
    assert not ok and " ERROR BackendUnavailableError: tmoe.layer has no fp8_fp4_mega_moe" in line


def test_cli_allow_fake_with_real_triton_layer(capsys, device, monkeypatch):
    _triton_layer_or_skip()
    _fake_run_or_skip_if_real()
    monkeypatch.setattr(backend, "_single_process_group", lambda: None)
    rc = crosscheck.main(["--workload", "v4flash", "--tokens", "2", "--device", str(device), "--allow-fake",
                          "--fake-module", str(HERE / "fake_deep_gemm.py")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("v4flash ") and " PASS " in out and "[stand-in fake_deep_gemm" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the re-exec only happens on CPU-only machines")
def test_cli_allow_fake_reexecs_with_triton_interpret(monkeypatch, capfd):
    _fake_run_or_skip_if_real()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rc = crosscheck.main(["--workload", "gptoss", "--tokens", "4", "--allow-fake"])
    out = capfd.readouterr().out
    assert rc == 0 and out.startswith("gptoss ") and "SKIP deepgemm cannot run this shape" in out


# ============================================================================ real DeepGEMM (SM100 only)
@pytest.mark.gpu
def test_real_deepgemm_against_reference_and_triton():
    _real_deep_gemm_or_skip()
    p = _problem(e=8, k=4, h=512, i=256, t=64, seed=11)
    dev = torch.device("cuda")
    args = [t.to(dev) for t in _args(p)[:4]] + [tuple(t.to(dev) for t in p["l1"]), tuple(t.to(dev) for t in p["l2"])]
    stats = torch.zeros(8, dtype=torch.int32, device=dev)
    y = backend.run_deepgemm(*args, num_experts=8, activation_clamp=10.0, cumulative_local_expert_recv_stats=stats)
    want = reference_moe(p["x_fp8"], p["x_sf"], p["topk_idx"], p["topk_weights"], p["weights"], activation_clamp=10.0)
    assert torch.isfinite(y).all()
    assert calc_diff(y.cpu(), want) < 1e-4
    idx = p["topk_idx"]
    assert torch.equal(stats.cpu(), torch.bincount(idx[idx >= 0], minlength=8).to(torch.int32))
    assert select_backend(hidden=512, intermediate=256, num_experts=8, num_topk=4) == "deepgemm"
    layer = importlib.import_module("tmoe.layer")
    if callable(getattr(layer, "fp8_fp4_mega_moe", None)):
        res = run_mega_moe(*args, num_experts=8, activation_clamp=10.0, cross_check=True, return_report=True)[1]
        assert res["cross_check"]["ok"]
