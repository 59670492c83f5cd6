"""Session 19: a copy of autotune_cache/ with every 4-warp code-ring pick (prefetch >= 3, no overlap) moved to the
rings by step parity (GemmConfig.with_parity_ring): MODE down = the deepest even depth whose lookahead (depth - 1) is
at most the pick's, up = the shallowest whose lookahead is at least the pick's (capped at 8).
    python convert_cache.py SRC DST down|up"""
import json
import shutil
import sys
from pathlib import Path

src, dst, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst)
changed = 0
for path in dst.glob("*/*.json"):
    doc = json.loads(path.read_text())
    for bucket in doc.get("buckets", {}).values():
        cfg = bucket["best"]["config"]
        if cfg.get("kernel") != "gluon" or cfg.get("num_warps") != 4 or cfg.get("overlap") or cfg.get("prefetch", 1) < 3:
            continue
        look = min(cfg["prefetch"], cfg["num_stages"] - 1)
        depth = (look + 1) // 2 * 2 if mode == "down" else min(8, (look + 2) // 2 * 2)
        depth = max(depth, 4)
        cfg["prefetch"] = cfg["num_stages"] = depth
        changed += 1
    path.write_text(json.dumps(doc, indent=1))
print(f"{changed} picks moved to parity rings ({mode})")
