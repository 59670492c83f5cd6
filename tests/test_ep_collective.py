"""Expert parallelism through the `collective` transport (all_to_all_single): R ranks give the same
bits as one rank holding every expert, for uneven / empty ranks, masked and duplicate slots, all
traffic to one rank; bad input on one rank raises on every rank (no hang).

CPU: R processes with gloo under the Triton interpreter (R = 2 and 4). With >= R GPUs: NCCL, one GPU per rank.
"""
import os

import pytest
import torch
import torch.multiprocessing as mp

import ep_worker

# One GPU per rank when there are enough GPUs, else CPU processes with gloo. TMOE_EP_WORLDS="2,4,8" adds R = 8.
WORLDS = [int(w) for w in os.environ.get("TMOE_EP_WORLDS", "2,4").split(",")]


def _launch(world: int, tmp_path, device_kind: str) -> dict:
    init_file = tmp_path / "init"
    old = os.environ.get("TRITON_INTERPRET")
    if device_kind == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"      # inherited by the spawned ranks
    try:
        mp.spawn(ep_worker.run, args=(world, str(init_file), str(tmp_path), device_kind), nprocs=world, join=True)
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old
    return {r: torch.load(tmp_path / f"rank{r}.pt") for r in range(world)}


@pytest.fixture(scope="module", params=WORLDS)
def ep_results(request, tmp_path_factory):
    world = request.param
    if torch.cuda.is_available() and torch.cuda.device_count() < world:
        # NOTES: CPU-only machines (CI) run the ranks under the interpreter; a GPU machine with too
        # few GPUs skips instead (its image's interpreter is not what CI pins, e.g. numpy >= 2.4).
        pytest.skip(f"{world} ranks need {world} GPUs here (found {torch.cuda.device_count()}); "
                    "CPU-only machines run them under the Triton interpreter")
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    return world, _launch(world, tmp_path_factory.mktemp(f"ep{world}"), kind)


# symm_mem_fused: GEMM2 writes into the sources' home; symm_mem_tma: the return pass by TMA row copies;
# symm_mem_tma_fused: GEMM2 stores into the sources' home by TMA; symm_mem_tma_fused_triton: that asked of a Triton
# GEMM2 (it writes slot_out, the TMA return pass sends it); *_early: with an early-GEMM2 config pair (Gluon: GPUs only)
VARIANTS = ("collective", "symm_mem", "symm_mem_fused", "symm_mem_tma", "symm_mem_tma_fused",
            "symm_mem_tma_fused_triton", "collective_early", "symm_mem_early", "symm_mem_tma_fused_early")


def _transports(results) -> list[str]:
    return [t for t in VARIANTS if t in results[0]]


@pytest.mark.parametrize("name", ["uneven", "empty_rank", "one_rank_experts", "masked_duplicates"])
@pytest.mark.parametrize("transport", VARIANTS)
def test_ep_equals_single_rank_bitwise(ep_results, name, transport):
    world, results = ep_results
    if transport not in _transports(results):
        pytest.skip("symm_mem runs on >= 2 GPUs (NVLink; covered on CPU by test_ep_symm_mem.py, simulated ranks), "
                    "the *_early pairs are Gluon kernels (an sm_90 GPU per rank)")
    total_stats = 0
    for rank in range(world):
        got = results[rank][transport][name]
        assert "crash" not in got, got.get("crash")
        assert "error" not in got, got["error"]
        assert got["transport"] == ("symm_mem" if transport.startswith("symm_mem") else "collective")
        assert got.get("clean", True), f"rank {rank}: signal pads not zero or a barrier timed out"
        y_one = results[rank]["single"][name]     # one rank holding every expert, same device kind
        assert isinstance(y_one, torch.Tensor), y_one
        assert torch.equal(got["y"].view(torch.int16), y_one.view(torch.int16)), f"rank {rank}"
        if transport.endswith("_early"):    # GEMM1 counted every row it computed: GEMM2 started per expert on them
            # (ep_worker's early pair: I = 32 is one GEMM1 channel block, so one count per row)
            done = got.get("rows_done", 0)        # absent: no rows came to this rank, nothing ran
            assert done == int(got["stats"].sum()), (rank, done, got["stats"].tolist())
        total_stats = total_stats + got["stats"].sum()
    # every valid slot of every rank was computed exactly once somewhere
    n_valid = sum(int((ep_worker.scenario_inputs(name, r, world)[1] >= 0).sum()) for r in range(world))
    assert int(total_stats) == n_valid


def test_bad_input_on_one_rank_raises_everywhere(ep_results):
    world, results = ep_results
    for transport in _transports(results):
        assert "expert id 11" in results[1][transport]["bad_expert_on_rank1"]["error"]
        for rank in range(world):
            if rank != 1:
                assert "rank(s) [1]" in results[rank][transport]["bad_expert_on_rank1"]["error"]


def test_mismatched_buffer_arguments_raise_everywhere(ep_results):
    world, results = ep_results
    for transport in _transports(results):
        for rank in range(world):
            assert "differ across ranks" in results[rank][transport]["mismatched_buffer"]["error"]


def test_bad_buffer_arguments_on_one_rank_raise_everywhere(ep_results):
    world, results = ep_results
    for transport in _transports(results):
        assert "hidden must be a positive multiple of 32, got 48" in \
            results[1][transport]["bad_buffer_on_rank1"]["error"]
        for rank in range(world):
            if rank != 1:
                assert "rank(s) [1] rejected their inputs to this collective get_symm_buffer_for_mega_moe call" in \
                    results[rank][transport]["bad_buffer_on_rank1"]["error"]


def test_symm_mem_graph_replay_and_back_to_back_calls(ep_results):
    """GPUs: CUDA-graph capture + 5 replays with new routing, then 1000 eager calls with changing T
    and routing (no deadlock, every checked output bitwise = one rank, pads clean afterwards), with
    the separate return pass and with the fused return, each by SM stores and by TMA."""
    world, results = ep_results
    if "stress" not in results[0]:
        pytest.skip("needs >= 2 GPUs (NVLink symmetric memory)")
    keys = ("stress", "stress_fused", "stress_tma", "stress_tma_fused") + (
        ("stress_tma_fused_early",) if "stress_tma_fused_early" in results[0] else ())   # Hopper: the Gluon kernels
    for rank, key in ((r, k) for r in range(world) for k in keys):
        rep = results[rank][key]
        assert "crash" not in rep, rep.get("crash")
        assert rep["graph_mismatch"] == [] and rep["graph_clean"], rep
        assert rep["eager_mismatch"] == [] and rep["clean"] and rep["checked"] >= rep["calls"] // 50, rep
        assert "rank 1: the symm_mem combine barrier timed out waiting for rank 0" in rep["timeout_raised"], rep
        print(f"rank {rank} ({key}): {rep['calls']} calls in {rep['seconds']:.1f} s, {rep['checked']} checked bitwise")


def test_symm_mem_needs_one_host(ep_results):
    """Ranks on different hosts: `auto` falls back to the collective transport everywhere; an explicit
    `symm_mem` raises on every rank (no rank left in a rendezvous)."""
    world, results = ep_results
    for rank in range(world):
        got = results[rank]["multi_host"]
        assert got["auto"] == "collective", got
        assert "needs every rank on one host" in got["symm_mem"] and f"spans {world} hosts" in got["symm_mem"], got


def test_device_status_travels_with_the_agreement(ep_results):
    world, results = ep_results
    for rank in range(world):
        assert results[rank]["agree_status"] == [(1, 66)]
