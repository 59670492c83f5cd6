"""Replace one bucket's pick in an autotune cache file with a variant measured elsewhere (a hand edit
that stays reproducible): the variant becomes `best`, the old pick `runner_up`, both with the times of
the same measurement (e.g. `sweep_gemm.py --n-blocks`).

    python benchmarks/set_cache_pick.py --device "NVIDIA H100 80GB HBM3" --workload dsv3 --gemm gemm2 \\
        --tokens 128 --set n_blocks=2 --us 766.0 --old-us 805.8
    python benchmarks/set_cache_pick.py --device "NVIDIA H100 80GB HBM3" --from-sweep sweep.json --min-gain 0.02

--from-sweep: a `sweep_gemm.py --n-blocks` / `--prefetch` / `--overlap` JSON, whose first row per (tokens, GEMM) is the
cache's pick; where the fastest bitwise-equal row beats it by at least --min-gain, it becomes the pick. A token count
the cache has no bucket for gets one (its measured pick was a neighbouring bucket's): the fastest row as best, the
next distinct config as runner-up, whatever the gain.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields, replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tmoe.autotune import cache  # noqa: E402
from tmoe.kernels.configs import GemmConfig  # noqa: E402
from tmoe.workloads import WORKLOADS  # noqa: E402


def parse_value(text: str):
    if text in ("None", "null"):
        return None
    if text in ("true", "false", "True", "False"):      # JSON's or Python's spelling (GemmConfig's repr)
        return text.lower() == "true"
    return int(text) if text.lstrip("-").isdigit() else text


def set_pick(root, device: str, workload: str, gemm: str, tokens: int, us: float, old_us: float, new=None,
             changes: dict | None = None, measured_pick=None) -> str:
    """Make `new` (or the current pick with `changes`), measured `us`, the bucket's best and the current pick
    (measured `old_us`) the runner-up. A missing bucket is added when `measured_pick` (the config that ran at
    these tokens, e.g. a neighbouring bucket's pick) is given; it becomes the runner-up."""
    path = _cache_file(root, device, workload, gemm)
    doc = cache.load(path)
    bucket = doc["buckets"].get(str(tokens))
    if bucket is None and measured_pick is None:
        raise SystemExit(f"{path}: no bucket {tokens} (buckets: {sorted(doc['buckets'], key=int)})")
    if bucket is None:
        bucket = {"best": {"config": cache.config_to_dict(measured_pick), "us": old_us}, "runner_up": None}
    old = cache.config_from_dict(bucket["best"]["config"])
    new = new if new is not None else replace(old, **changes)
    if us > old_us:
        raise SystemExit(f"the variant ({us} µs) is slower than the current pick ({old_us} µs)")
    doc["buckets"] = dict(sorted(dict(doc["buckets"], **{str(tokens): bucket}).items(), key=lambda kv: int(kv[0])))
    doc["buckets"][str(tokens)] = dict(bucket, best={"config": cache.config_to_dict(new), "us": round(us, 3)},
                                       runner_up={"config": cache.config_to_dict(old), "us": round(old_us, 3)})
    cache.validate(doc)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return f"{workload} {gemm} T={tokens}: {old} ({old_us:.1f} µs) -> {new} ({us:.1f} µs)"


def from_sweep(paths: list[str], root, device: str, min_gain: float) -> None:
    rows = [row for path in paths for row in json.load(open(path))["rows"]]
    names = {f.name for f in fields(GemmConfig)}
    config = lambda row: GemmConfig(**{k: v for k, v in row.items() if k in names})  # noqa: E731
    groups = {}
    for row in rows:
        groups.setdefault((row["workload"], row["tokens"], row["gemm"]), []).append(row)
    for (workload, tokens, gemm), group in sorted(groups.items()):
        ranked = sorted((r for r in group if r["same_as_first"]), key=lambda r: r["us"])
        pick, best = group[0], ranked[0]
        if not has_bucket(root, device, workload, gemm, tokens):
            # NOTES: no bucket here yet, so the measured pick is only a neighbour's: record the fastest
            # config whatever the gain, the next distinct config as runner-up.
            runner = next((r for r in ranked[1:] if config(r) != config(best)), best)
            print(set_pick(root, device, workload, gemm, tokens, best["us"], runner["us"], new=config(best),
                           measured_pick=config(runner)))
            continue
        if best["us"] > pick["us"] * (1 - min_gain):
            print(f"{workload} {gemm} T={tokens}: pick kept ({pick['us']:.1f} µs, best variant {best['us']:.1f})")
            continue
        print(set_pick(root, device, workload, gemm, tokens, best["us"], pick["us"], new=config(best)))


def has_bucket(root, device: str, workload: str, gemm: str, tokens: int) -> bool:
    return str(tokens) in cache.load(_cache_file(root, device, workload, gemm))["buckets"]


def _cache_file(root, device: str, workload: str, gemm: str):
    wl = WORKLOADS[workload]
    return cache.cache_path(gemm, device, wl.num_experts, wl.hidden, wl.intermediate, wl.topk, root=root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", required=True, help="torch.cuda.get_device_name() of the tuned GPU")
    ap.add_argument("--root", default=None, help="cache directory (default: TMOE_AUTOTUNE_CACHE or autotune_cache/)")
    ap.add_argument("--from-sweep", nargs="+", default=None, help="sweep_gemm.py JSONs (see above; rows merged)")
    ap.add_argument("--min-gain", type=float, default=0.02)
    ap.add_argument("--workload", choices=sorted(WORKLOADS))
    ap.add_argument("--gemm", choices=("gemm1", "gemm2"))
    ap.add_argument("--tokens", type=int, help="the bucket (its exact key)")
    ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE of GemmConfig (repeatable)")
    ap.add_argument("--us", type=float, help="the variant's time")
    ap.add_argument("--old-us", type=float, help="the current pick's time, same measurement")
    args = ap.parse_args()
    if args.from_sweep:
        from_sweep(args.from_sweep, args.root, args.device, args.min_gain)
        return
    missing = [n for n in ("workload", "gemm", "tokens", "us", "old_us") if getattr(args, n) is None] + \
        ([] if args.set else ["set"])
    if missing:
        ap.error(f"without --from-sweep these are required: {', '.join('--' + m.replace('_', '-') for m in missing)}")
    changes = dict((kv.split("=", 1)[0], parse_value(kv.split("=", 1)[1])) for kv in args.set)
    print(set_pick(args.root, args.device, args.workload, args.gemm, args.tokens, args.us, args.old_us,
                   changes=changes))


if __name__ == "__main__":
    main()
