"""Render a bench_layer.py / bench_quant.py results JSON as the markdown tables of BENCHMARKS.md.

    python benchmarks/report.py benchmarks/results/H100-2026-11-26.json
    python benchmarks/report.py --ab DIR      # the interleaved runs of run_ab.sh (layer-<n>-<tree>.json)
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re


def layer_table(d: dict) -> str:
    lines = [f"**{d['device']}** (torch {d['torch']}, Triton {d['triton']}, {d.get('date', '')}): read "
             f"{d['read_gbps']:.0f} GB/s, copy {d['copy_gbps']:.0f} GB/s, dense fp8 {d['fp8_tflops']:.0f} TFLOP/s, "
             f"dense bf16 {d['bf16_tflops']:.0f} TFLOP/s.", "",
             "| workload | T | routing | experts | tmoe µs | TFLOP/s | weight GB/s | floor µs | efficiency | "
             "bf16 grouped µs | fp8 grouped µs | tmoe vs fp8 grouped | calc_diff |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def num(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "—"

    for r in d["rows"]:
        fp8 = r.get("fp8_grouped_us")
        lines.append(
            f"| {r['workload']} | {r['tokens']} | {r['routing']} | {r['experts_touched']} | {r['us']:.1f} | "
            f"{r['tflops']:.1f} | {r['weight_gbps']:.0f} | {r['floor_us']:.1f} | {r['efficiency']:.2f} | "
            f"{num(r.get('bf16_grouped_us'), '.1f')} | {num(fp8, '.1f')} | "
            f"{num(fp8 / r['us'] if fp8 else None, '.2f')}x | {num(r.get('calc_diff'), '.1e')} |")
    return "\n".join(lines)


def quant_table(d: dict) -> str:
    lines = [f"**{d['device']}**: 2 GiB device copy {d['copy_gbps']:.0f} GB/s (read + write), measured in the same run.", "",
             "| T × H | µs | GB/s (read + write) | fraction of copy | torch formats.quantize_mxfp8 µs | bitwise = formats |",
             "|---|---:|---:|---:|---:|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['tokens']} × {r['hidden']} | {r['us']:.1f} | {r['gbps']:.0f} | {r['copy_fraction']:.2f} | "
                     f"{r['torch_us']:.1f} | {r['bitwise_equal']} |")
    return "\n".join(lines)


def ab_table(directory: str) -> str:
    """One row per (workload, T): µs of every run in order, then new / base of the per-tree medians."""
    runs = []
    for path in glob.glob(os.path.join(directory, "layer-*-*.json")):
        m = re.match(r"layer-(\d+)-(\w+)\.json", os.path.basename(path))
        if m:
            runs.append((int(m.group(1)), m.group(2), json.load(open(path))))
    runs.sort(key=lambda r: r[0])
    if not runs:
        raise SystemExit(f"no layer-<n>-<tree>.json under {directory}")
    head = " | ".join(f"{n}: {tree} µs" for n, tree, _ in runs)
    lines = [f"**{runs[0][2]['device']}**", "", f"| workload | T | {head} | new / base | efficiency (new) |",
             "|---|---:|" + "---:|" * (len(runs) + 2)]
    keys = [(r["workload"], r["tokens"]) for r in runs[0][2]["rows"]]
    for key in keys:
        times = {}
        cells, eff = [], None
        for _, tree, d in runs:
            row = next((r for r in d["rows"] if (r["workload"], r["tokens"]) == key), None)
            cells.append(f"{row['us']:.1f}" if row else "—")
            if row:
                times.setdefault(tree, []).append(row["us"])
                if tree == "new":
                    eff = row["efficiency"]
        med = {t: sorted(v)[len(v) // 2] for t, v in times.items()}
        ratio = f"{med['new'] / med['base']:.3f}" if {"new", "base"} <= med.keys() else "—"
        eff_cell = f"{eff:.2f}" if eff is not None else "—"
        lines.append(f"| {key[0]} | {key[1]} | {' | '.join(cells)} | {ratio} | {eff_cell} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="*", help="bench_layer.py / bench_quant.py JSONs")
    ap.add_argument("--ab", metavar="DIR", help="a run_ab.sh output directory (layer-<n>-<new|base>.json)")
    args = ap.parse_args()
    if args.ab:
        print(ab_table(args.ab))
    for path in args.results:
        d = json.load(open(path))
        print(quant_table(d) if "gbps" in d["rows"][0] else layer_table(d))
        print()


if __name__ == "__main__":
    main()
