"""Short tables from Nsight Compute exports (benchmarks/run_ncu.sh writes them):

    python benchmarks/ncu_summary.py RAW.csv [--sass SASS.csv] [--top 25]

RAW.csv (`ncu -i REP --page raw --csv`): per kernel its time, DRAM / L2 / issue utilization, occupancy and
the stall reasons in cycles per issued instruction (largest first). SASS.csv (`--page source --csv
--print-source sass`): the instructions holding most warp-stall samples, and the samples per opcode.
"""
from __future__ import annotations

import argparse
import csv
import re
from collections import Counter

# NOTES: the stall metrics' names differ between ncu versions; both families are read: cycles per issued
# instruction (WarpStateStats) and, failing that, the sampled warp states (SourceCounters), as shares.
STALL = re.compile(r"smsp__average_warps?_(?:latency_)?issue_stalled_(\w+?)_per_issue_active\.ratio$")
STALL_SAMPLES = re.compile(r"smsp__pcsamp_warps_issue_stalled_(\w+?)(?:\.sum)?$")
COLUMNS = (  # (label, metric, scale)
    ("µs", "gpu__time_duration.sum", None),
    ("DRAM%", "dram__throughput.avg.pct_of_peak_sustained_elapsed", None),
    ("DRAM GB/s", "dram__bytes_read.sum.per_second", None),
    ("L2%", "lts__t_sectors.avg.pct_of_peak_sustained_elapsed", None),
    ("issue%", "smsp__issue_active.avg.pct_of_peak_sustained_active", None),
    ("eligible/sched", "smsp__warps_eligible.avg.per_cycle_active", None),
    ("active warps/sched", "smsp__warps_active.avg.per_cycle_active", None),
    ("regs", "launch__registers_per_thread", None),
    ("grid", "launch__grid_size", None),
    ("block", "launch__block_size", None),
)


def _num(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def read_raw(path: str) -> tuple[list[str], list[str], list[list[str]]]:
    """(metric names, units, one row per kernel)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header, a units row and kernel rows, got {len(rows)} rows")
    return rows[0], rows[1], rows[2:]


def summarize_raw(path: str, top: int = 6) -> str:
    names, units, kernels = read_raw(path)
    col = {n: i for i, n in enumerate(names)}
    out = []
    for k, row in enumerate(kernels):
        name = row[col["Kernel Name"]] if "Kernel Name" in col else f"kernel {k}"
        out.append(f"[{k}] {name[:90]}")
        cells = []
        for label, metric, _ in COLUMNS:
            if metric in col:
                cells.append(f"{label} {row[col[metric]]}{'' if units[col[metric]] in ('', '%') else ' ' + units[col[metric]]}")
        out.append("    " + " | ".join(cells))
        stalls = []
        for metric, i in col.items():
            m = STALL.match(metric)
            v = _num(row[i]) if m else None
            if v:
                stalls.append((v, m.group(1)))
        unit = "cycles per issue"
        if not stalls:
            unit = "% of samples"
            for metric, i in col.items():
                m = STALL_SAMPLES.match(metric)
                v = _num(row[i]) if m and not m.group(1).endswith("not_issued") else None
                if v:
                    stalls.append((v, m.group(1)))
            n = sum(v for v, _ in stalls) or 1.0
            stalls = [(100 * v / n, r) for v, r in stalls]
        stalls.sort(reverse=True)
        total = sum(v for v, _ in stalls)
        if stalls:
            out.append(f"    stalls ({unit}, total {total:.1f}): "
                       + ", ".join(f"{r} {v:.2f}" for v, r in stalls[:top]))
        pipes = sorted(((_num(row[i]) or 0.0, m) for m, i in col.items()
                        if m.startswith("sm__inst_executed_pipe_") and m.endswith("pct_of_peak_sustained_active")),
                       reverse=True)
        if pipes and pipes[0][0]:
            out.append("    pipes (% of peak): " + ", ".join(
                f"{m[len('sm__inst_executed_pipe_'):].split('.')[0]} {v:.0f}" for v, m in pipes[:5]))
    return "\n".join(out)


def summarize_sass(path: str, top: int = 25) -> str:
    """The instructions with most stall samples, and the samples per opcode. NOTES: ncu's source export
    repeats a header per kernel; every block is summarized separately."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    out, block, header = [], [], None
    for r in rows + [None]:
        if r is None or (r and r[0] in ("#", "Address") and header is not None and block):
            if header is not None and block:
                out.append(_sass_block(header, block, top))
            block = []
        if r is None:
            break
        if r and r[0] == "Address":
            header = r
        elif header is not None and len(r) == len(header):
            block.append(r)
    return "\n\n".join(out) if out else f"{path}: no SASS rows (header 'Address' not found)"


def _sass_block(header: list[str], rows: list[list[str]], top: int) -> str:
    col = {n: i for i, n in enumerate(header)}
    samp = next((i for n, i in col.items() if "Sampling (All" in n), None)
    src = col.get("Source")
    if samp is None or src is None:
        return f"columns without stall samples: {header[:12]}"
    total = sum(_num(r[samp]) or 0 for r in rows)
    per_op = Counter()
    for r in rows:
        per_op[r[src].split()[0].split(".")[0] if r[src].split() else "?"] += _num(r[samp]) or 0
    lines = [f"{len(rows)} instructions, {total:.0f} stall samples; by opcode: "
             + ", ".join(f"{op} {100 * v / max(total, 1):.1f}%" for op, v in per_op.most_common(12))]
    loop = _loop_share(col, rows, samp)
    if loop:
        lines.append(loop)
    ranked = sorted(rows, key=lambda r: -(_num(r[samp]) or 0))[:top]
    for r in ranked:
        lines.append(f"  {r[col['Address']] if 'Address' in col else '':>8} {100 * (_num(r[samp]) or 0) / max(total, 1):5.1f}%"
                     f"  {r[src][:80]}")
    return "\n".join(lines)


def _loop_share(col: dict, rows: list[list[str]], samp: int) -> str | None:
    """The hottest loop's share: the address range of the backward branch whose body executed the most instructions
    (the K loop), its stall samples and executed instructions against the kernel's (the rest: tile search, ring
    prologue, epilogue — what a short program pays once)."""
    exe = next((i for n, i in col.items() if n == "Instructions Executed"), None)
    if exe is None or "Address" not in col:
        return None
    addr = [int(r[col["Address"]], 16) for r in rows]
    best = None
    for a, r in zip(addr, rows):
        op = r[col["Source"]].split()
        target = next((t for t in op if t.startswith("0x")), None) if any(o == "BRA" for o in op) else None
        if target is None or int(target, 16) > a:
            continue
        lo = int(target, 16)
        inside = [i for i, x in enumerate(addr) if lo <= x <= a]
        executed = sum(_num(rows[i][exe]) or 0 for i in inside)
        if best is None or executed > best[0]:
            best = (executed, inside, lo, a)
    if best is None:
        return None
    executed, inside, lo, hi = best
    total_exe = sum(_num(r[exe]) or 0 for r in rows) or 1
    total_samp = sum(_num(r[samp]) or 0 for r in rows) or 1
    loop_samp = sum(_num(rows[i][samp]) or 0 for i in inside)
    return (f"hottest loop {lo:#x}..{hi:#x} ({len(inside)} instructions): {100 * loop_samp / total_samp:.1f}% of the "
            f"stall samples, {100 * executed / total_exe:.1f}% of the executed instructions")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--sass", default=None)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    print(summarize_raw(args.raw))
    if args.sass:
        print()
        print(summarize_sass(args.sass, args.top))


if __name__ == "__main__":
    main()
