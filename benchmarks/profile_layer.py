"""The layer's kernels for a profiler: each case runs once between cudaProfilerStart / Stop.

    ncu --profile-from-start off --clock-control none --section WarpStateStats -o rep \\
        python benchmarks/profile_layer.py --cases dsv3:128,gptoss:8

benchmarks/run_ncu.sh wraps it (sections, text reports, the per-instruction stall table). Each case is
compiled and run twice before its profiled call, so a report holds exactly that call's kernels in launch
order (quantize, routing, GEMM1, GEMM2, combine); the cases and their GEMM configs are printed in order.
Same weights, routing and inputs as benchmarks/bench_layer.py (uniform routing unless WL:T:zipf).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layer import _config_str, layer_call, layer_weights  # noqa: E402
from tmoe.workloads import WORKLOADS  # noqa: E402

import tmoe  # noqa: E402
from tmoe.compute import ExpertOptions, gemm_configs  # noqa: E402


def parse_cases(text: str) -> list[tuple[str, int, str]]:
    """'dsv3:128,gptoss:8:zipf' -> [(workload, tokens, routing)]; ValueError naming a bad case."""
    cases = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or parts[0] not in WORKLOADS or not parts[1].isdigit() or int(parts[1]) < 1:
            raise ValueError(f"case {item!r}: expected WORKLOAD:TOKENS[:ROUTING] with WORKLOAD in "
                             f"{sorted(WORKLOADS)} and TOKENS >= 1")
        routing = parts[2] if len(parts) == 3 else "uniform"
        if routing not in ("uniform", "zipf"):
            raise ValueError(f"case {item!r}: routing must be 'uniform' or 'zipf', got {routing!r}")
        cases.append((parts[0], int(parts[1]), routing))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True, help="WORKLOAD:TOKENS[:ROUTING],...  e.g. dsv3:128,gptoss:8")
    args = ap.parse_args()
    cases = parse_cases(args.cases)
    if not torch.cuda.is_available():
        sys.exit("profile_layer.py needs a CUDA GPU")
    cudart = torch.cuda.cudart()
    for wl, tokens, routing, call in case_calls(cases):
        call()
        call()
        torch.cuda.synchronize()
        g1, g2 = gemm_configs(ExpertOptions(), tokens * wl.topk, wl.num_experts, torch.device("cuda"), False,
                              num_experts=wl.num_experts, hidden=wl.hidden, intermediate=wl.intermediate,
                              topk=wl.topk)
        print(f"case {wl.name} T={tokens} {routing}: gemm1 {_config_str(g1)} | gemm2 {_config_str(g2)}", flush=True)
        cudart.cudaProfilerStart()
        call()
        torch.cuda.synchronize()
        cudart.cudaProfilerStop()


def case_calls(cases: list[tuple[str, int, str]]):
    """Yield (workload, tokens, routing, call) per case: the call `bench_layer.py` times, one weight set and buffer
    per workload (freed after its last case)."""
    for name in dict.fromkeys(c[0] for c in cases):
        wl = WORKLOADS[name]
        _, (l1, l2) = layer_weights(wl)
        mine = [c for c in cases if c[0] == name]
        buf = tmoe.get_symm_buffer_for_mega_moe(None, wl.num_experts, max(t for _, t, _ in mine), wl.topk,
                                                wl.hidden, wl.intermediate)
        for _, tokens, routing in mine:
            yield wl, tokens, routing, layer_call(wl, l1, l2, buf, tokens, routing)[0]
        buf.destroy()
        del l1, l2
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
