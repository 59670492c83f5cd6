"""Roofline plot of a bench_layer.py results file: achieved time vs the floor per workload and T.

    python benchmarks/plot_roofline.py benchmarks/results/H100-2026-11-26.json [-o benchmarks/roofline.png]

Left: µs per call vs tokens (log-log) for tmoe, the floor (max of MXFP4 weight bytes / read bandwidth
and flops / dense fp8 rate, measured in the same run) and the torch grouped-GEMM peers. Right:
roofline efficiency (floor / time) with the targets of the performance issue drawn in.
Needs matplotlib (`pip install matplotlib`; benchmarks only, not a tmoe dependency).
"""
from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("-o", "--output", default="benchmarks/roofline.png")
    args = ap.parse_args()
    d = json.load(open(args.results))
    rows = [r for r in d["rows"] if r.get("ep", 1) == 1 and r.get("routing", "uniform") == "uniform"]
    names = sorted({r["workload"] for r in rows})
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(13, 5))
    for n, color in zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rs = sorted((r for r in rows if r["workload"] == n), key=lambda r: r["tokens"])
        t = [r["tokens"] for r in rs]
        ax_t.plot(t, [r["us"] for r in rs], "o-", color=color, label=f"{n} tmoe")
        ax_t.plot(t, [r["floor_us"] for r in rs], ":", color=color, label=f"{n} floor")
        fp8 = [(r["tokens"], r["fp8_grouped_us"]) for r in rs if r.get("fp8_grouped_us")]
        if fp8:
            ax_t.plot(*zip(*fp8), "x--", color=color, alpha=0.5, label=f"{n} torch fp8 grouped (GEMMs only)")
        ax_e.plot(t, [r["efficiency"] for r in rs], "o-", color=color, label=n)
    ax_t.set(xscale="log", yscale="log", xlabel="tokens per rank (T)", ylabel="µs per call",
             title=f"{d['device']}: time vs floor")
    ax_t.legend(fontsize=7, ncol=2)
    for y, label in ((0.90, "decode target 0.90"), (0.75, "mid target 0.75"), (0.66, "prefill target 0.66")):
        ax_e.axhline(y, color="grey", lw=0.8, ls="--")
        ax_e.text(1, y + 0.01, label, fontsize=7, color="grey")
    ax_e.set(xscale="log", ylim=(0, 1), xlabel="tokens per rank (T)", ylabel="floor / time",
             title=f"roofline efficiency (read {d['read_gbps']:.0f} GB/s, fp8 {d['fp8_tflops']:.0f} TFLOP/s)")
    ax_e.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
