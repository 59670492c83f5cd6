"""Worker of the expert-parallel tests: one process per rank (spawned by test_ep_collective.py).

Each scenario builds the same global weights on every rank, gives each rank its own tokens, runs the
layer through the group, and saves y (or the error message) to `out_dir/rank{r}.pt`. The parent
compares with the single-rank layer on the same tokens (EP invariance: bitwise equal).
"""
from __future__ import annotations

import datetime
import os
import sys
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
    t = {"uneven": [5, 3, 7, 1], "empty_rank": [0, 4, 2, 0], "one_rank_experts": [4, 6, 3, 2],
         "masked_duplicates": [6, 6, 6, 6], "bad_expert_on_rank1": [3, 3, 3, 3],
         "mismatched_buffer": [2, 2, 2, 2], "bad_buffer_on_rank1": [2, 2, 2, 2]}[name][rank]
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
    from tmoe.layer import fill_buffer
    from moe_cases import make_weights
    dev = torch.device("cuda", rank) if device_kind == "cuda" else torch.device("cpu")
    results = {}
    weights = make_weights(E, H, I, seed=7, device="cpu")
    local = weights.local(rank, world)
    l1, l2 = tmoe.transform_weights_for_mega_moe((local.w1.to(dev), local.w1_sf.to(dev)),
                                                 (local.w2.to(dev), local.w2_sf.to(dev)), backend="triton")
    for name in SCENARIOS:
        try:
            x, idx, w = scenario_inputs(name, rank, world)
            cap = 8 if not (name == "mismatched_buffer" and rank == 1) else 9
            hidden = 48 if (name == "bad_buffer_on_rank1" and rank == 1) else H    # not a multiple of 32
            buf = tmoe.get_symm_buffer_for_mega_moe(dist.group.WORLD, E, cap, K, hidden, I, device=dev,
                                                    backend="triton")
            fill_buffer(buf, x.to(dev), idx.to(dev), w.to(dev))
            y = torch.full((x.shape[0], H), float("nan"), dtype=torch.bfloat16, device=dev)
            stats = torch.zeros(E // world, dtype=torch.int32, device=dev)
            tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, cumulative_local_expert_recv_stats=stats)
            results[name] = {"y": y.cpu(), "stats": stats.cpu(), "transport": buf.transport}
        except ValueError as exc:
            results[name] = {"error": str(exc)}
        except Exception:  # noqa: BLE001 - anything else is a test failure, reported by the parent
            results[name] = {"crash": traceback.format_exc()}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()
