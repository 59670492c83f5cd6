"""Worker of the expert-parallel tests: one process per rank (spawned by test_ep_collective.py).

Each scenario builds the same global weights on every rank, gives each rank its own tokens, runs the
layer through the group, and saves y (or the error message) to `out_dir/rank{r}.pt`. The parent
compares with the single-rank layer on the same tokens (EP invariance: bitwise equal).
"""
from __future__ import annotations

import datetime
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist

SCENARIOS = ("uneven", "empty_rank", "one_rank_experts", "masked_duplicates", "bad_expert_on_rank1",
             "mismatched_buffer", "bad_buffer_on_rank1")
E, H, I, K = 8, 64, 32, 3


def scenario_inputs(name: str, rank: int, world: int):
    """(x bf16 [T, H], topk_idx [T, K], topk_weights [T, K]) of `rank` in scenario `name`."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from moe_cases import make_routing, make_tokens
    t = {"uneven": [5, 3, 7, 1, 8, 0, 2, 6], "empty_rank": [0, 4, 2, 0, 0, 1, 0, 3],
         "one_rank_experts": [4, 6, 3, 2, 5, 1, 7, 2], "masked_duplicates": [6] * 8,
         "bad_expert_on_rank1": [3] * 8, "mismatched_buffer": [2] * 8, "bad_buffer_on_rank1": [2] * 8}[name][rank % 8]
    seed = 100 * SCENARIOS.index(name) + rank
    x = make_tokens(t, H, seed=seed, device="cpu")
    pattern = "duplicates" if name == "masked_duplicates" else "masked"
    idx, w = make_routing(t, E, K, pattern, seed=seed + 1, device="cpu")
    if name == "masked_duplicates":
        idx[::2, 1] = -1
    if name == "one_rank_experts":      # every slot goes to the last rank's experts
        e_local = E // world
        idx = torch.where(idx >= 0, (world - 1) * e_local + idx % e_local, idx)
    if name == "bad_expert_on_rank1" and rank == 1 and t:
        idx[0, 0] = E + 3
    return x, idx, w


def run(rank: int, world: int, init_file: str, out_dir: str, device_kind: str) -> None:
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tmoe
    from tmoe.kernels import configs
    from tmoe.kernels.configs import GemmConfig
    from tmoe.layer import fill_buffer
    from moe_cases import make_weights
    dev = torch.device("cuda", rank) if device_kind == "cuda" else torch.device("cpu")
    results = {}
    weights = make_weights(E, H, I, seed=7, device="cpu")
    local = weights.local(rank, world)
    l1, l2 = tmoe.transform_weights_for_mega_moe((local.w1.to(dev), local.w1_sf.to(dev)),
                                                 (local.w2.to(dev), local.w2_sf.to(dev)), backend="triton")
    # One rank holding every expert, same tokens, same device kind (the parent compares bitwise: a CPU
    # interpreter run must be compared with a CPU run, GPU fast-math division differs in the last bit).
    g1, g2 = tmoe.transform_weights_for_mega_moe((weights.w1.to(dev), weights.w1_sf.to(dev)),
                                                 (weights.w2.to(dev), weights.w2_sf.to(dev)), backend="triton")
    one = tmoe.get_symm_buffer_for_mega_moe(None, E, 8, K, H, I, device=dev, backend="triton")
    results["single"] = {}
    for name in SCENARIOS[:4]:
        try:
            x, idx, w = scenario_inputs(name, rank, world)
            fill_buffer(one, x.to(dev), idx.to(dev), w.to(dev))
            y = torch.full((x.shape[0], H), float("nan"), dtype=torch.bfloat16, device=dev)
            tmoe.fp8_fp4_mega_moe(y, g1, g2, one)
            results["single"][name] = y.cpu()
        except Exception:  # noqa: BLE001 - reported by the parent
            results["single"][name] = traceback.format_exc()
    # symm_mem_fused: the symm_mem transport with GEMM2 writing results straight into the sources' home;
    # symm_mem_tma: its return pass by TMA row copies (dispatch/tma_copy.py); symm_mem_tma_fused: GEMM2 storing
    # the results into the sources' home by TMA; symm_mem_tma_fused_triton: the same asked of a Triton GEMM2,
    # which writes slot_out instead (compute_slots), sent by the TMA return pass.
    # *_early: early GEMM2 (GEMM2 programs start per expert as GEMM1 finishes its rows, GemmConfig.early) on a pair of
    # the shipped decode picks' kind, both grids N-block-major; Gluon kernels, so GPUs only.
    hopper = device_kind == "cuda" and configs.is_hopper(dev)
    transports = (("collective", "symm_mem", "symm_mem_fused", "symm_mem_tma", "symm_mem_tma_fused",
                   "symm_mem_tma_fused_triton") + (("collective_early", "symm_mem_early", "symm_mem_tma_fused_early")
                                                   if hopper else ())
                  if device_kind == "cuda" else ("collective",))
    for variant in transports:
        transport = "symm_mem" if variant.startswith("symm_mem") else "collective"
        results[variant] = out = {}
        for name in SCENARIOS:
            try:
                x, idx, w = scenario_inputs(name, rank, world)
                cap = 8 if not (name == "mismatched_buffer" and rank == 1) else 9
                hidden = 48 if (name == "bad_buffer_on_rank1" and rank == 1) else H    # not a multiple of 32
                buf = tmoe.get_symm_buffer_for_mega_moe(dist.group.WORLD, E, cap, K, hidden, I, device=dev,
                                                        backend="triton", transport=transport)
                if buf.symm is not None:
                    buf.symm.fused_return = "_fused" in variant
                    buf.symm.tma_return = "_tma" in variant
                variant_configs = ({"gemm2_config": GemmConfig(16, 64, True, 4, 3)} if variant.endswith("_triton")
                                   else early_pair() if variant.endswith("_early") else {})
                fill_buffer(buf, x.to(dev), idx.to(dev), w.to(dev))
                y = torch.full((x.shape[0], H), float("nan"), dtype=torch.bfloat16, device=dev)
                stats = torch.zeros(E // world, dtype=torch.int32, device=dev)
                tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, cumulative_local_expert_recv_stats=stats, **variant_configs)
                out[name] = {"y": y.cpu(), "stats": stats.cpu(), "transport": buf.transport}
                if "expert_rows_done" in buf.workspace:   # early GEMM2: the rows GEMM1 counted per local expert
                    out[name]["rows_done"] = int(buf.workspace["expert_rows_done"][: E // world].sum())
                if buf.symm is not None:
                    out[name]["clean"] = buf.symm.signals_clean() and buf.symm.error_code() == 0
            except ValueError as exc:
                out[name] = {"error": str(exc)}
            except Exception:  # noqa: BLE001 - anything else is a test failure, reported by the parent
                out[name] = {"crash": traceback.format_exc()}
    results["multi_host"] = pretend_multi_host(rank, world, dev)
    # A device status word travels with the validation agreement: rank 1 reports 66, everyone sees it.
    from tmoe.dispatch.collective import CollectiveTransport
    status = torch.tensor([66 if rank == 1 else 0], dtype=torch.int32, device=dev)
    results["agree_status"] = CollectiveTransport(dist.group.WORLD, E).agree(None, device_status=status)
    if device_kind == "cuda":
        for key, fused, tma in (("stress", False, False), ("stress_fused", True, False), ("stress_tma", False, True),
                                ("stress_tma_fused", True, True)) + ((("stress_tma_fused_early", True, True),)
                                                                     if hopper else ()):
            try:
                pair = early_pair() if key.endswith("_early") else {}
                results[key] = stress_symm_mem(rank, world, dev, weights, l1, l2, fused_return=fused,
                                               tma_return=tma, gemm_configs=pair)
            except Exception:  # noqa: BLE001
                results[key] = {"crash": traceback.format_exc()}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def early_pair() -> dict:
    """The (GEMM1, GEMM2) configs of an early-GEMM2 pick (H100 dsv3 bucket 8's kind: 8-token tiles, code rings,
    both grids N-block-major, GEMM2 `early`) as fp8_fp4_mega_moe keyword arguments."""
    from tmoe.kernels.configs import GemmConfig
    return {"gemm1_config": GemmConfig(8, 32, True, 4, 4, kernel="gluon", prefetch=3, n_fastest=True),
            "gemm2_config": GemmConfig(8, 64, True, 4, 4, kernel="gluon", prefetch=3, n_fastest=True, early=True)}


def pretend_multi_host(rank, world, dev) -> dict:
    """Ranks report different hosts (and symmetric memory 'available' even on CPU): `auto` must fall
    back to the collective transport on every rank, an explicit `symm_mem` must raise on every rank."""
    import tmoe
    from tmoe import layer
    from tmoe.dispatch import symm_mem
    saved = layer._host_id, symm_mem.symm_mem_available
    layer._host_id = lambda: 1000 + rank
    symm_mem.symm_mem_available = lambda device, num_ranks: (True, "ok")
    out = {}
    try:
        for transport in ("auto", "symm_mem"):
            try:
                buf = tmoe.get_symm_buffer_for_mega_moe(dist.group.WORLD, E, 4, K, H, I, device=dev, backend="triton",
                                                        transport=transport)
                out[transport] = buf.transport
            except ValueError as exc:
                out[transport] = f"error: {exc}"
    finally:
        layer._host_id, symm_mem.symm_mem_available = saved
    return out


STRESS_CALLS = int(os.environ.get("TMOE_EP_STRESS_CALLS", "1000"))


def stress_symm_mem(rank, world, dev, weights, l1, l2, fused_return: bool = False,
                    tma_return: bool = False, gemm_configs: dict | None = None) -> dict:
    """GPUs only: CUDA-graph capture + replay with new routing, then STRESS_CALLS back-to-back eager
    calls with changing T and routing; every output checked bitwise against one rank holding every
    expert (graph replays: all; eager: every 50th call and the last). `fused_return`: GEMM2 writes
    the results straight into the sources' home; `tma_return`: the results go back by TMA stores
    (GEMM2's epilogue when fused, else the TMA return pass). `gemm_configs`: gemm1_config / gemm2_config for the
    expert-parallel calls (the one-rank reference keeps its own picks: the bits do not depend on them)."""
    import tmoe
    from tmoe.layer import fill_buffer
    from moe_cases import make_routing, make_tokens
    cap = 8
    buf = tmoe.get_symm_buffer_for_mega_moe(dist.group.WORLD, E, cap, K, H, I, device=dev, backend="triton",
                                            transport="symm_mem")
    buf.symm.fused_return = fused_return
    buf.symm.tma_return = tma_return
    one = tmoe.get_symm_buffer_for_mega_moe(None, E, cap, K, H, I, device=dev, backend="triton")
    g1, g2 = tmoe.transform_weights_for_mega_moe((weights.w1.to(dev), weights.w1_sf.to(dev)),
                                                 (weights.w2.to(dev), weights.w2_sf.to(dev)), backend="triton")

    def reference(x, idx, w):
        fill_buffer(one, x, idx, w)
        y = torch.empty((x.shape[0], H), dtype=torch.bfloat16, device=dev)
        tmoe.fp8_fp4_mega_moe(y, g1, g2, one)
        return y

    def inputs(t, seed, pattern="uniform"):
        x = make_tokens(t, H, seed=seed, device=dev)
        idx, w = make_routing(t, E, K, pattern, seed=seed + 1, device=dev)
        return x, idx, w

    report = {"graph_mismatch": [], "eager_mismatch": [], "checked": 0}
    # CUDA graph: warm up eagerly (allocations, autotune lookups), capture, replay with new contents.
    t = 6
    x_s, idx_s, w_s = inputs(t, 1000 * rank)
    y_s = torch.empty((t, H), dtype=torch.bfloat16, device=dev)
    fill_buffer(buf, x_s, idx_s, w_s)
    tmoe.fp8_fp4_mega_moe(y_s, l1, l2, buf, **(gemm_configs or {}))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fill_buffer(buf, x_s, idx_s, w_s)
        tmoe.fp8_fp4_mega_moe(y_s, l1, l2, buf, **(gemm_configs or {}))
    for rep in range(5):
        x, idx, w = inputs(t, 1000 * rank + 7 * rep + 3, "masked" if rep % 2 else "uniform")
        x_s.copy_(x), idx_s.copy_(idx), w_s.copy_(w)
        graph.replay()
        if not torch.equal(y_s.view(torch.int16), reference(x, idx, w).view(torch.int16)):
            report["graph_mismatch"].append(rep)
    torch.cuda.synchronize()
    report["graph_clean"] = buf.symm.signals_clean() and buf.symm.error_code() == 0
    # Back-to-back eager calls, T and routing changing every call (some ranks at T = 0).
    gen = torch.Generator().manual_seed(rank)
    start = time.perf_counter()
    for call in range(STRESS_CALLS):
        t = int(torch.randint(0, cap + 1, (1,), generator=gen)) if call % 7 else 0
        x, idx, w = inputs(t, 10_000 * rank + call, ("uniform", "masked", "hot_expert")[call % 3])
        y = torch.empty((t, H), dtype=torch.bfloat16, device=dev)
        fill_buffer(buf, x, idx, w)
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, **(gemm_configs or {}))
        if call % 50 == 0 or call == STRESS_CALLS - 1:
            report["checked"] += 1
            if not torch.equal(y.view(torch.int16), reference(x, idx, w).view(torch.int16)):
                report["eager_mismatch"].append(call)
    torch.cuda.synchronize()
    report["calls"] = STRESS_CALLS
    # A barrier timeout recorded on rank 1 (as a spin that gave up would) is raised on every rank at the
    # next eager call, naming rank 1 and the peer it waited for; the word is cleared afterwards.
    if rank == 1:
        buf.symm.error[0] = 1 + 64 * 1 + 0
    try:
        tmoe.fp8_fp4_mega_moe(torch.empty((0, H), dtype=torch.bfloat16, device=dev), l1, l2, buf)
        report["timeout_raised"] = ""
    except RuntimeError as exc:
        report["timeout_raised"] = str(exc)
    report["seconds"] = time.perf_counter() - start
    report["clean"] = buf.symm.signals_clean() and buf.symm.error_code() == 0
    buf.destroy()
    return report
