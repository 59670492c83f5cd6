"""The card's ceilings, measured in the same process as the numbers they judge (DESIGN.md §6):
read / copy bandwidth and dense fp8 / bf16 matmul rates. Timing itself (`time_graph`: CUDA-graph
replays, median, L2 flushed before each replay) lives in `tmoe.autotune.timing`.
"""
from __future__ import annotations

import torch

from tmoe.autotune.timing import flush_l2, time_eager, time_graph  # noqa: F401 - re-exported for the scripts

def measure_ceilings() -> dict:
    n = 2 * 1024 ** 3 // 4
    a = torch.randn(n, device="cuda")
    b = torch.empty_like(a)
    read_us = time_eager(lambda: a.sum(), reps=10)
    copy_us = time_eager(lambda: b.copy_(a), reps=10)
    del a, b
    m = 8192
    x = torch.randn(m, m, device="cuda").to(torch.float8_e4m3fn)
    w = torch.randn(m, m, device="cuda").to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")
    fp8_us = time_eager(lambda: torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16), reps=10)
    xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
    bf16_us = time_eager(lambda: xb @ wb.t(), reps=10)
    del x, w, xb, wb
    torch.cuda.empty_cache()
    flops = 2 * m ** 3
    return {"read_gbps": 2 * 1024 ** 3 / read_us / 1e3, "copy_gbps": 2 * 2 * 1024 ** 3 / copy_us / 1e3,
            "fp8_tflops": flops / fp8_us / 1e6, "bf16_tflops": flops / bf16_us / 1e6}
