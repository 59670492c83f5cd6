"""benchmarks/bench_triton_kernels.py: the comparison with OpenAI's triton_kernels (an optional peer, not a dependency).

The peer's own tests need the package: set TMOE_TRITON_KERNELS to the folder holding `triton_kernels/` (or make it
importable); without it they skip. The rest runs everywhere.
"""
import importlib.util
import os
import sys

import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)
import bench_triton_kernels as btk  # noqa: E402

TK_DIR = os.environ.get("TMOE_TRITON_KERNELS")


def _triton_kernels():
    if TK_DIR is None and importlib.util.find_spec("triton_kernels") is None:
        pytest.skip("triton_kernels not available (set TMOE_TRITON_KERNELS to the folder holding it)")
    return btk.import_triton_kernels(TK_DIR)


def test_gate_up_interleave():
    """tmoe's w1 rows are [gate | up]; triton_kernels' SwiGLU reads output columns as (gate i, up i) pairs."""
    inter = 6
    rows = torch.arange(2 * inter)
    order = btk.gate_up_interleave(inter)
    assert sorted(order.tolist()) == rows.tolist()          # a permutation
    assert torch.equal(rows[order][0::2], rows[:inter])     # even rows: gate 0..I-1
    assert torch.equal(rows[order][1::2], rows[inter:])     # odd rows: up 0..I-1


def test_import_triton_kernels_bad_path(tmp_path):
    with pytest.raises(ValueError, match="no triton_kernels/ folder"):
        btk.import_triton_kernels(str(tmp_path))


def test_import_triton_kernels_missing_names_the_ways():
    if importlib.util.find_spec("triton_kernels") is not None or importlib.util.find_spec("vllm") is not None:
        pytest.skip("a triton_kernels is installed here")
    with pytest.raises(ImportError, match="--triton-kernels"):
        btk.import_triton_kernels(None)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        btk.main(["--workloads", "dsv3,nope"])
    with pytest.raises(ValueError, match="--tokens"):
        btk.main(["--tokens", "0,8"])


def test_tk_weights_hold_the_canonical_codes():
    """The converted weights are the canonical codes and scales, rows in the given order, as [E, K, N] (K the
    packed / scaled axis), in the layout this device gets (Hopper: the swizzled ones; elsewhere strided)."""
    _triton_kernels()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    from tmoe.workloads import random_mxfp4_weights
    e, n, k = 2, 64, 96                         # K / 32 = 3 scale groups: padded to 4 for Hopper's scale layout
    codes, scales = random_mxfp4_weights(e, n, k, device=dev, seed=3)
    order = btk.gate_up_interleave(n // 2)
    w, pc = btk.tk_weights(codes, scales, order)
    assert list(w.shape) == [e, k, n]
    values = w.storage.layout.unswizzle_data(w.storage.data)
    assert torch.equal(values, codes[:, order].view(torch.uint8).transpose(-2, -1))
    sf = pc.weight_scale.storage.layout.unswizzle_data(pc.weight_scale.storage.data)
    assert torch.equal(sf[:, :k // 32, :n], scales[:, order].transpose(-2, -1))
    assert not sf[:, k // 32:, :n].any()        # the padded groups


@pytest.mark.skipif(not torch.cuda.is_available(), reason="triton_kernels runs on a GPU only")
def test_bench_triton_kernels_gpu_both_compute_the_layer():
    """Both layers on gpt-oss at 1 and 8 tokens: tmoe within its usual calc_diff of the float64 reference, and
    triton_kernels (W4A16) within the activation quantization's difference — i.e. the comparison is a fair one."""
    _triton_kernels()
    from tmoe.workloads import WORKLOADS
    ceil = {"read_gbps": 3000.0, "fp8_tflops": 1000.0}     # only the floor column uses them
    rows = btk.bench_workload(WORKLOADS["gptoss"], [1, 8], ceil, check_max_tokens=8, timeline_tokens={8})
    for r in rows:
        assert "tk_note" not in r, r
        assert r["tmoe_calc_diff"] < 1e-4, r
        assert r["tk_calc_diff"] < btk.TK_DIFF_LIMIT and r["tk_vs_tmoe_calc_diff"] < btk.TK_DIFF_LIMIT, r
        assert r["tmoe_us"] > 0 and r["tk_us"] > 0 and r["tk_gemms_us"] > 0
        assert r["floor_us"] > 0 and 0 < r["tmoe_efficiency"] and 0 < r["tk_efficiency"]
    timed = rows[1]
    assert any("gemm2" in k["kernel"] for k in timed["tmoe_timeline"]), timed["tmoe_timeline"]
    assert timed["tk_timeline"], "no triton_kernels kernel in the profile"
