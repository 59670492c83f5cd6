"""The one-program routing kernel (`routing._single_chunk_kernel`, T * K <= 128 slots) by chunk width and warps.

    python benchmarks/bench_routing.py [--json out.json]

Each variant runs 20 times back to back in one CUDA graph (no flush: its inputs are a few hundred bytes), so the
per-launch time is the kernel's own latency plus a constant launch gap; every variant's plan is checked against
the 128-slot chunk's (the layer's kernel until session 12).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tmoe.autotune.timing import time_graph  # noqa: E402
from tmoe.kernels.routing import _single_chunk_kernel  # noqa: E402
from tmoe.workloads import make_routing  # noqa: E402

CASES = [(256, 8, 1), (256, 8, 4), (256, 8, 16), (128, 4, 1), (128, 8, 1), (128, 8, 16)]   # (E, K, T)
REPEAT = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_routing.py needs a CUDA GPU")
    rows = []
    print(torch.cuda.get_device_name())
    print("| E | K | T | chunk | warps | µs per launch | same plan |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for e, k, t in CASES:
        idx, _ = make_routing(t, e, k, "uniform", seed=t)
        idx = idx.cuda().reshape(-1).contiguous()
        slots = t * k
        e_pad = triton.next_power_of_2(e + 1)
        ref = None
        for chunk in dict.fromkeys((128, max(16, triton.next_power_of_2(slots)))):
            for warps in (4, 2, 1):
                offsets = torch.zeros(e + 1, dtype=torch.int32, device="cuda")
                sorted_slots = torch.full((slots,), -1, dtype=torch.int32, device="cuda")
                done = torch.ones(e, dtype=torch.int32, device="cuda")

                def launch():
                    _single_chunk_kernel[(1,)](idx, offsets, sorted_slots, offsets, done, slots, 0, e, CHUNK=chunk,
                                               E_PAD=e_pad, HAS_STATS=False, PDL=False, num_warps=warps)
                launch()
                torch.cuda.synchronize()
                plan = (offsets.clone(), sorted_slots.clone())
                ref = ref or plan
                same = torch.equal(plan[0], ref[0]) and torch.equal(plan[1], ref[1])
                us = time_graph(lambda: [launch() for _ in range(REPEAT)], flush=False) / REPEAT
                rows.append(dict(experts=e, topk=k, tokens=t, chunk=chunk, warps=warps, us=us, same_plan=same))
                print(f"| {e} | {k} | {t} | {chunk} | {warps} | {us:.2f} | {same} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
