"""Replace one bucket's pick in an autotune cache file with a variant measured elsewhere (a hand edit
that stays reproducible): the variant becomes `best`, the old pick `runner_up`, both with the times of
the same measurement (e.g. `sweep_gemm.py --n-blocks`).

    python benchmarks/set_cache_pick.py --device "NVIDIA H100 80GB HBM3" --workload dsv3 --gemm gemm2 \\
        --tokens 128 --set n_blocks=2 --us 766.0 --old-us 805.8
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tmoe.autotune import cache  # noqa: E402
from tmoe.workloads import WORKLOADS  # noqa: E402


def parse_value(text: str):
    if text in ("None", "null"):
        return None
    if text in ("true", "false"):
        return text == "true"
    return int(text) if text.lstrip("-").isdigit() else text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", required=True, help="torch.cuda.get_device_name() of the tuned GPU")
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--gemm", required=True, choices=("gemm1", "gemm2"))
    ap.add_argument("--tokens", required=True, type=int, help="the bucket (its exact key)")
    ap.add_argument("--set", required=True, action="append", help="FIELD=VALUE of GemmConfig (repeatable)")
    ap.add_argument("--us", required=True, type=float, help="the variant's time")
    ap.add_argument("--old-us", required=True, type=float, help="the current pick's time, same measurement")
    ap.add_argument("--root", default=None, help="cache directory (default: TMOE_AUTOTUNE_CACHE or autotune_cache/)")
    args = ap.parse_args()
    wl = WORKLOADS[args.workload]
    path = cache.cache_path(args.gemm, args.device, wl.num_experts, wl.hidden, wl.intermediate, wl.topk,
                            root=args.root)
    doc = cache.load(path)
    bucket = doc["buckets"].get(str(args.tokens))
    if bucket is None:
        raise SystemExit(f"{path}: no bucket {args.tokens} (buckets: {sorted(doc['buckets'], key=int)})")
    old = cache.config_from_dict(bucket["best"]["config"])
    new = replace(old, **dict((kv.split("=", 1)[0], parse_value(kv.split("=", 1)[1])) for kv in args.set))
    if args.us > args.old_us:
        raise SystemExit(f"the variant ({args.us} µs) is slower than the current pick ({args.old_us} µs)")
    bucket = dict(bucket, best={"config": cache.config_to_dict(new), "us": args.us},
                  runner_up={"config": cache.config_to_dict(old), "us": args.old_us})
    doc["buckets"][str(args.tokens)] = bucket
    cache.validate(doc)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{path.name} bucket {args.tokens}: {old} -> {new}")


if __name__ == "__main__":
    main()
