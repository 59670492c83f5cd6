"""Cross-check tmoe's Triton layer against DeepGEMM's fp8_fp4_mega_moe on the benchmark workloads.

    python -m tmoe.crosscheck --workload v4flash --tokens 512
    python -m tmoe.crosscheck --workload all --tokens 128 --device cuda:0

One line per workload:

    PASS  calc_diff and max |diff| of the two outputs (calc_diff <= threshold, default 1e-3)
    FAIL  they disagree, or an output has NaN/Inf (exit status 1)
    ERROR one side could not run (exit status 1)
    SKIP  DeepGEMM cannot run this workload here, with the reason (exit status 0: nothing to compare)

Inputs are random with a fixed seed: x ~ N(0, 1) cast to MXFP8, random FP4 codes with scales
2^-9..2^-5, distinct uniform-random top-k per token with weights in [0.1, 1.1).

`--allow-fake` (tests): where the real DeepGEMM is unavailable, use a stand-in module
(`--fake-module`, default tests/fake_deep_gemm.py; a .py path or a dotted module name) on a
scaled-down problem (H = I = 256, E <= 16, T <= 16), so the whole comparison runs on CPU.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .workloads import WORKLOADS as _WORKLOADS

from . import backend as _backend
from . import formats

__all__ = ["Workload", "WORKLOADS", "make_problem", "run_workload", "load_module", "main"]


@dataclass(frozen=True)
class Workload:
    num_experts: int
    num_topk: int
    hidden: int
    intermediate: int
    activation_clamp: float | None = None

    def describe(self) -> str:
        clamp = f" clamp={self.activation_clamp:g}" if self.activation_clamp is not None else ""
        return f"E={self.num_experts} K={self.num_topk} H={self.hidden} I={self.intermediate}{clamp}"

    def scaled_down(self) -> "Workload":
        e = min(self.num_experts, 16)
        return Workload(e, min(self.num_topk, e), 256, 256, self.activation_clamp)


WORKLOADS = {name: Workload(w.num_experts, w.topk, w.hidden, w.intermediate, w.clamp)   # DESIGN.md §6
             for name, w in _WORKLOADS.items()}

DEFAULT_FAKE = Path(__file__).resolve().parent.parent / "tests" / "fake_deep_gemm.py"


def make_problem(wl: Workload, tokens: int, *, device, seed: int = 0) -> dict:
    """Random inputs and canonical MXFP4 weights for one rank holding every expert."""
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    e, k, h, i = wl.num_experts, wl.num_topk, wl.hidden, wl.intermediate

    def codes(*shape):
        return torch.randint(-128, 128, shape, generator=g, device=dev, dtype=torch.int8)

    def scales(*shape):                       # UE8M0 bytes 118..122 = 2^-9 .. 2^-5
        return torch.randint(118, 123, shape, generator=g, device=dev, dtype=torch.uint8)

    x = torch.randn(tokens, h, generator=g, device=dev).to(torch.bfloat16)
    x_fp8, x_sf = formats.quantize_mxfp8(x)
    topk_idx = torch.rand(tokens, e, generator=g, device=dev).topk(k, dim=-1).indices.to(torch.int64)
    topk_weights = torch.rand(tokens, k, generator=g, device=dev) + 0.1
    return {
        "x_fp8": x_fp8, "x_sf": x_sf, "topk_idx": topk_idx, "topk_weights": topk_weights,
        "l1": (codes(e, 2 * i, h // 2), scales(e, 2 * i, h // 32)),
        "l2": (codes(e, h, i // 2), scales(e, h, i // 32)),
    }


def load_module(spec: str):
    """A module from a .py path (registered under its file stem) or a dotted name."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).resolve()
        name = path.stem
        mod = sys.modules.get(name)
        if mod is not None and Path(getattr(mod, "__file__", "") or "").resolve() == path:
            return mod
        s = importlib.util.spec_from_file_location(name, path)
        if s is None or s.loader is None:
            raise ImportError(f"cannot load a module from {path}")
        mod = importlib.util.module_from_spec(s)
        sys.modules[name] = mod
        s.loader.exec_module(mod)
        return mod
    return importlib.import_module(spec)


def run_workload(name: str, tokens: int, *, device=None, deep_gemm=None, run_triton=None,
                 threshold: float = _backend.DEFAULT_THRESHOLD, seed: int = 0) -> tuple[bool, str]:
    """Compare the two backends on one workload; returns (passed or skipped, verdict line).

    deep_gemm=None uses the real module where `explain_backend` picks DeepGEMM for this workload on
    `device`; a module (the stand-in) is used on the scaled-down problem instead, whatever the device.
    run_triton replaces `tmoe.backend.run_triton` (tests); by default it calls tmoe.layer lazily.
    """
    wl = WORKLOADS[name]
    dev = _backend._resolve_device(device)
    head = f"{name:8s} {wl.describe()} T={tokens}:"
    if deep_gemm is None:
        try:
            choice, reason = _backend.explain_backend(
                hidden=wl.hidden, intermediate=wl.intermediate, num_experts=wl.num_experts,
                num_topk=wl.num_topk, device=dev, backend="auto")
        except ValueError as exc:
            return False, f"{head} ERROR {exc}"
        if choice != "deepgemm":
            detail = reason.split("DeepGEMM unavailable: ", 1)[-1]
            return True, f"{head} SKIP deepgemm unavailable: {detail}"
        problem_wl, note, problem_tokens = wl, "", tokens
    else:
        problems = _backend.deepgemm_shape_problems(hidden=wl.hidden, intermediate=wl.intermediate,
                                                    num_experts=wl.num_experts, num_topk=wl.num_topk)
        if problems:
            return True, f"{head} SKIP deepgemm cannot run this shape: {'; '.join(problems)}"
        problem_wl = wl.scaled_down()
        problem_tokens = min(tokens, 16)
        note = (f" [stand-in {getattr(deep_gemm, '__name__', 'deep_gemm')}, scaled to "
                f"{problem_wl.describe()} T={problem_tokens}]")
    p = make_problem(problem_wl, problem_tokens, device=dev, seed=seed)
    args = (p["x_fp8"], p["x_sf"], p["topk_idx"], p["topk_weights"], p["l1"], p["l2"])
    kwargs = dict(num_experts=problem_wl.num_experts, activation_clamp=problem_wl.activation_clamp)
    triton_fn = _backend.run_triton if run_triton is None else run_triton
    try:
        res = _backend.cross_check(lambda: triton_fn(*args, **kwargs),
                                   lambda: _backend.run_deepgemm(*args, **kwargs, deep_gemm=deep_gemm),
                                   threshold=threshold)
    except _backend.CrossCheckError as exc:
        return False, f"{head} FAIL {exc}{note}"
    except Exception as exc:  # noqa: BLE001 - report any failure of either side as one line
        return False, f"{head} ERROR {type(exc).__name__}: {exc}{note}"
    return True, (f"{head} PASS calc_diff={res['calc_diff']:.3e} max_abs_diff={res['max_abs_diff']:.4g} "
                  f"(triton vs deepgemm){note}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tmoe.crosscheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    ap.add_argument("--tokens", type=int, default=512, help="tokens per rank (>= 0)")
    ap.add_argument("--device", default=None, help="torch device (default: the current CUDA device, else cpu)")
    ap.add_argument("--threshold", type=float, default=_backend.DEFAULT_THRESHOLD, help="max calc_diff")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-fake", action="store_true",
                    help="where real DeepGEMM is unavailable, compare against a stand-in module (tests)")
    ap.add_argument("--fake-module", default=str(DEFAULT_FAKE),
                    help="stand-in deep_gemm: a .py path or a dotted module name (with --allow-fake)")
    args = ap.parse_args(argv)
    if args.tokens < 0:
        ap.error(f"--tokens must be >= 0, got {args.tokens}")
    if args.allow_fake and not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        # The Triton side can only run interpreted on CPU, and TRITON_INTERPRET is read when the
        # kernels are defined (importing tmoe): rerun this command in a child with it set.
        argv = sys.argv[1:] if argv is None else list(argv)
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, TRITON_INTERPRET="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")])))
        return subprocess.call([sys.executable, "-m", "tmoe.crosscheck", *argv], env=env)
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    fake = None
    ok_all = True
    for name in names:
        ok, line = run_workload(name, args.tokens, device=args.device, threshold=args.threshold, seed=args.seed)
        if args.allow_fake and " SKIP deepgemm unavailable" in line:
            if fake is None:
                fake = load_module(args.fake_module)
            ok, line = run_workload(name, args.tokens, device=args.device, deep_gemm=fake,
                                    threshold=args.threshold, seed=args.seed)
        print(line, flush=True)
        ok_all &= ok
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
