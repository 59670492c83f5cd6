"""Programmatic dependent launch (tmoe/kernels/pdl.py): the TMOE_PDL setting, its checks, and which launches of a
call are chained (the bitwise GPU test is tests/test_gluon_gemm.py::test_pdl_chain_programmatic_dependent_launch)."""
import pytest
import torch

from tmoe import compute
from tmoe.compute import ExpertOptions, compute_slots
from tmoe.kernels import pdl

from moe_cases import make_routing, make_tokens, make_weights, run_layer


@pytest.mark.parametrize("value,want", [(None, "1"), ("1", "1"), ("gemm2", "gemm2"), ("0", "0")])
def test_pdl_mode(value, want, monkeypatch):
    monkeypatch.delenv("TMOE_GEMM2_PDL", raising=False)
    if value is None:
        monkeypatch.delenv("TMOE_PDL", raising=False)
    else:
        monkeypatch.setenv("TMOE_PDL", value)
    assert pdl.pdl_mode() == want
    assert pdl.gemm2_on() is (want != "0")
    assert pdl.chain_on(torch.device("cpu"), 1) is False      # the interpreter never launches with PDL
    monkeypatch.setattr(pdl, "supported", lambda device: True)
    assert pdl.chain_on(torch.device("cuda"), pdl.CHAIN_MAX_TOKENS) is (want == "1")
    assert pdl.chain_on(torch.device("cuda"), pdl.CHAIN_MAX_TOKENS + 1) is False


@pytest.mark.parametrize("env,message", [
    ({"TMOE_PDL": "yes"}, r"TMOE_PDL must be one of \('1', 'gemm2', '0'\), got 'yes'"),
    ({"TMOE_GEMM2_PDL": "1"}, "TMOE_GEMM2_PDL was renamed: set TMOE_PDL")])
def test_pdl_mode_rejects_bad_settings(env, message, device, monkeypatch):
    """A bad value is a ValueError naming it, raised by the layer's argument checks (before any launch)."""
    weights = make_weights(4, 64, 32, seed=98, device=device)
    x = make_tokens(3, 64, seed=99, device=device)
    idx, w = make_routing(3, 4, 2, "uniform", seed=100, device=device)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        run_layer(weights, x, idx, w)


def _zero_weights(e, h, i):
    """(w1, w1_sf), (w2, w2_sf) of zeros: compute_slots only reads their shapes when its launches are stubbed."""
    return ((torch.zeros(e, 2 * i, h // 2, dtype=torch.uint8), torch.zeros(e, 2 * i, h // 32, dtype=torch.uint8)),
            (torch.zeros(e, h, i // 2, dtype=torch.uint8), torch.zeros(e, h, i // 32, dtype=torch.uint8)))


class _Scratch:
    def __init__(self, n, k, h, i):
        self.x_dq = torch.zeros(n, h, dtype=torch.int16)
        self.act = torch.zeros(n * k, i, dtype=torch.int16)
        self.slot_out = torch.zeros(n * k, h, dtype=torch.int16)
        self.workspace = {}


@pytest.mark.parametrize("tokens,rows_in_bf16,mode", [(1, False, "1"), (128, False, "1"), (129, False, "1"),
                                                       (4, True, "1"), (4, False, "gemm2"), (4, False, "0")])
def test_which_launches_are_chained(tokens, rows_in_bf16, mode, monkeypatch):
    """compute_slots on a (pretend) Hopper: routing, MXFP8 -> bf16 and GEMM1 are dependent launches only in mode 1 and
    up to CHAIN_MAX_TOKENS rows; GEMM1 reads the plan before its wait only with MXFP8 -> bf16 between it and routing
    (rows given in bf16, as the symm_mem transport does: it waits first); GEMM2 is one in modes 1 and gemm2."""
    monkeypatch.setenv("TMOE_PDL", mode)
    monkeypatch.setattr(pdl, "supported", lambda device: True)
    seen = {}
    monkeypatch.setattr(compute, "build_routing", lambda *a, **kw: seen.update(routing=kw["pdl_launch"]) or "plan")
    monkeypatch.setattr(compute, "mxfp8_to_bf16", lambda *a, **kw: seen.update(dq=kw["pdl_launch"]))
    monkeypatch.setattr(compute.grouped_gemm, "gemm1_swiglu",
                        lambda *a, **kw: seen.update(gemm1=kw["pdl_launch"], signal=kw["signal_rows"]))
    monkeypatch.setattr(compute.grouped_gemm, "gemm2",
                        lambda *a, **kw: seen.update(gemm2=kw["pdl"], early=kw["early_rows"]))
    e, h, i, k = 4, 64, 32, 2
    w1, w2 = _zero_weights(e, h, i)
    idx = torch.zeros(tokens, k, dtype=torch.int64)
    x = None if rows_in_bf16 else torch.zeros(tokens, h, dtype=torch.uint8)
    x_sf = None if rows_in_bf16 else torch.zeros(tokens, h // 128 or 1, dtype=torch.int32)
    compute_slots(_Scratch(tokens, k, h, i), x, x_sf, idx, torch.ones(tokens, k), w1, w2, num_local_experts=e,
                  expert_start=0, opts=ExpertOptions(), soft=True)
    chain = mode == "1" and tokens <= pdl.CHAIN_MAX_TOKENS
    want_gemm1 = pdl.GEMM1_PLAIN if not chain else pdl.GEMM1_WAIT_FIRST if rows_in_bf16 else pdl.GEMM1_EARLY
    assert seen == dict(routing=chain, gemm1=want_gemm1, gemm2=mode != "0", signal=False, early=0,   # the interpreter
                        **({} if rows_in_bf16 else dict(dq=chain)))


GG = ("gluon", "gluon")


@pytest.mark.parametrize("mode,setting,kernels,pick,want", [
    ("1", None, GG, False, False), ("1", None, GG, True, True), ("1", "auto", GG, True, True),
    ("1", "auto", GG, False, False), ("1", "1", GG, False, True), ("1", "0", GG, True, False),
    ("gemm2", "1", GG, False, True), ("gemm2", None, GG, True, True), ("0", "1", GG, False, False),
    ("0", None, GG, True, False), ("1", "1", ("triton", "gluon"), False, False),
    ("1", None, ("triton", "gluon"), True, False), ("1", "1", ("gluon", "triton"), False, False)])
def test_when_gemm2_starts_early(mode, setting, kernels, pick, want, monkeypatch):
    """Early GEMM2 (TMOE_EARLY_GEMM2: default "auto" = the GEMM2 pick's `early`, "1" / "0" force it): GEMM1 signals
    its finished rows and GEMM2 waits for its expert's rows (GEMM1's channel blocks per row: ceil(I / GEMM1's
    block_n)) only when both are the Gluon kernels on a GPU and GEMM2 is a programmatic dependent launch; a bad
    setting is a ValueError before any launch."""
    from tmoe.kernels.configs import GemmConfig
    monkeypatch.setenv("TMOE_PDL", mode)
    if setting is None:
        monkeypatch.delenv("TMOE_EARLY_GEMM2", raising=False)
    else:
        monkeypatch.setenv("TMOE_EARLY_GEMM2", setting)
    monkeypatch.setattr(pdl, "supported", lambda device: True)
    monkeypatch.setattr(compute.configs, "is_hopper", lambda device: True)
    monkeypatch.setattr(compute.autotune_cache, "device_name", lambda device: "pretend H100")
    seen = {}
    monkeypatch.setattr(compute, "build_routing", lambda *a, **kw: "plan")
    monkeypatch.setattr(compute, "mxfp8_to_bf16", lambda *a, **kw: None)
    monkeypatch.setattr(compute.grouped_gemm, "gemm1_swiglu", lambda *a, **kw: seen.update(signal=kw["signal_rows"]))
    monkeypatch.setattr(compute.grouped_gemm, "gemm2", lambda *a, **kw: seen.update(early=kw["early_rows"]))
    e, h, i, k = 4, 64, 96, 2
    w1, w2 = _zero_weights(e, h, i)
    g1, g2 = (GemmConfig(8, bn, True, 4, 3, kernel="gluon", early=pick and gemm == 2) if kernel == "gluon"
              else GemmConfig(16, 64, True, 4, 3) for gemm, kernel, bn in zip((1, 2), kernels, (32, 64)))
    args = (_Scratch(3, k, h, i), torch.zeros(3, h, dtype=torch.uint8), torch.zeros(3, 1, dtype=torch.int32),
            torch.zeros(3, k, dtype=torch.int64), torch.ones(3, k), w1, w2)
    compute_slots(*args, num_local_experts=e, expert_start=0, opts=ExpertOptions(gemm1_config=g1, gemm2_config=g2),
                  soft=False)
    assert seen == dict(signal=want, early=3 if want else 0)      # ceil(96 / 32) channel blocks of GEMM1
    monkeypatch.setenv("TMOE_EARLY_GEMM2", "yes")
    seen.clear()
    with pytest.raises(ValueError, match="TMOE_EARLY_GEMM2 must be 'auto', '1' or '0', got 'yes'"):
        compute_slots(*args, num_local_experts=e, expert_start=0, opts=ExpertOptions(gemm1_config=g1, gemm2_config=g2),
                      soft=False)
    assert seen == {}
