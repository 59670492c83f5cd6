"""Timing and the card's ceilings, measured in the same process as the numbers they judge.

`time_graph` times a callable as CUDA-graph replays (median), flushing L2 before each replay so
weight streams are not served from cache. `measure_ceilings` gives read / copy bandwidth and dense
fp8 / bf16 matmul rates (DESIGN.md §6).
"""
from __future__ import annotations

import statistics

import torch

_FLUSH = None


def flush_l2() -> None:
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    _FLUSH.zero_()


def time_graph(fn, reps: int = 30, warmup: int = 3, flush: bool = True) -> float:
    """Median µs of `fn()` replayed from a CUDA graph (fn must be capturable)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    for _ in range(warmup):
        graph.replay()
    times = []
    for _ in range(reps):
        if flush:
            flush_l2()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    del graph
    return statistics.median(times)


def time_eager(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median µs of eager calls (for things that cannot be captured)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


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
