"""GPU timing used by the autotuner and the benchmarks: CUDA-graph replays, L2 flushed before each."""
from __future__ import annotations

import statistics

import torch

__all__ = ["flush_l2", "capture_graph", "time_graph", "time_eager"]

_FLUSH = None


def flush_l2() -> None:
    """Overwrite 256 MiB so the next replay does not read its inputs from L2 (50 MB on Hopper)."""
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    _FLUSH.zero_()


def capture_graph(fn) -> torch.cuda.CUDAGraph:
    """`fn()` captured into a CUDA graph on a side stream (fn must be capturable; run it eagerly first)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    return graph


def time_graph(fn, reps: int = 30, warmup: int = 3, flush: bool = True) -> float:
    """Median µs of `fn()` replayed from a CUDA graph (fn must be capturable)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    graph = capture_graph(fn)
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


def time_eager(fn, reps: int = 20, warmup: int = 3, before=None) -> float:
    """Median µs of eager calls (for work that cannot be captured); `before()` runs ahead of each
    timed call, outside the timed region (e.g. a barrier so that all ranks start together)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if before is not None:
            before()
            torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)
