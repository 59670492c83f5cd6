"""Where a layer call's time goes: each kernel's start and duration inside CUDA-graph replays (torch.profiler).

    python benchmarks/layer_timeline.py --cases qwen3:1,dsv3:1,gptoss:8 [--modes 0,gemm2,1] [--json out.json]

Each case is the call that benchmarks/bench_layer.py times (quantize + layer, same weights / routing / inputs),
captured once per TMOE_PDL mode and replayed with L2 flushed before each replay. Prints per kernel the median start
(µs after the first kernel started) and duration over the replays, the span (first start -> last end) and the
graph time `bench_layer.py` would report. With programmatic dependent launches a kernel starts before the previous
one ends: its "start" is then when its programs began (and waited), so look at where each kernel *ends*.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_layer import case_calls, parse_cases  # noqa: E402
from tmoe.autotune.timing import capture_graph, flush_l2, time_graph  # noqa: E402

FLUSH_MARK = "FillFunctor"      # flush_l2's memset: separates the replays in the trace


def _kernel_events(trace_path: str) -> list[dict]:
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    return sorted(kernels, key=lambda e: e["ts"])


def timeline(call, replays: int) -> dict:
    """Per-kernel median start / end / duration (µs, relative to the replay's first kernel) over `replays`."""
    graph = capture_graph(call)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            flush_l2()
            graph.replay()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        kernels = _kernel_events(path)
    del graph
    return summarize(kernels)


def summarize(kernels: list[dict]) -> dict:
    """Trace kernel events (sorted by start; flush memsets between replays) -> per-kernel median start / end /
    duration relative to each replay's first kernel, the median span, and how many complete replays there were."""
    groups, current = [], None
    for ev in kernels:
        if FLUSH_MARK in ev["name"]:
            current = []
            groups.append(current)
        elif current is not None:
            current.append(ev)
    groups = [g for g in groups if g]
    if not groups:
        raise RuntimeError("no replay found in the profile")
    names = [e["name"] for e in groups[0]]
    groups = [g for g in groups if [e["name"] for e in g] == names]   # complete replays only
    rows = []
    for j, name in enumerate(names):
        rows.append(dict(kernel=name, start_us=statistics.median(g[j]["ts"] - g[0]["ts"] for g in groups),
                         end_us=statistics.median(g[j]["ts"] + g[j]["dur"] - g[0]["ts"] for g in groups),
                         dur_us=statistics.median(g[j]["dur"] for g in groups)))
    span = statistics.median(max(e["ts"] + e["dur"] for e in g) - g[0]["ts"] for g in groups)
    return dict(kernels=rows, span_us=span, replays=len(groups))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True, help="WORKLOAD:TOKENS[:ROUTING],...  e.g. qwen3:1,dsv3:8")
    ap.add_argument("--modes", default="0,gemm2,1", help="TMOE_PDL values to compare")
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("layer_timeline.py needs a CUDA GPU")
    cases = parse_cases(args.cases)
    out = {"device": torch.cuda.get_device_name(), "cases": []}
    print(out["device"])
    for wl, tokens, routing, call in case_calls(cases):
        for mode in args.modes.split(","):
            os.environ["TMOE_PDL"] = mode      # read by each launch while the graph is captured
            call()
            torch.cuda.synchronize()
            tl = timeline(call, args.replays)
            tl.update(workload=wl.name, tokens=tokens, routing=routing, pdl=mode, graph_us=time_graph(call))
            out["cases"].append(tl)
            print(f"\n{wl.name} T={tokens} {routing} TMOE_PDL={mode}: graph {tl['graph_us']:.1f} µs, "
                  f"kernel span {tl['span_us']:.1f} µs ({tl['replays']} replays)")
            print(f"  {'kernel':40} {'start':>7} {'end':>7} {'dur':>7}")
            for r in tl["kernels"]:
                print(f"  {r['kernel'][:40]:40} {r['start_us']:7.1f} {r['end_us']:7.1f} {r['dur_us']:7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
