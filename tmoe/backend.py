"""Backend choice (DeepGEMM's SM100 kernel or tmoe's Triton kernels), DeepGEMM's weight layout,
and the cross-check mode that runs both and compares. See docs/backends.md.

Selection (`select_backend` / `explain_backend`): "deepgemm" only when every condition holds:

* the device is a CUDA GPU of the SM100 family (capability 10.x: B200/GB200 sm_100, B300 sm_103);
* torch >= 2.9 (DeepGEMM's symmetric-memory buffer needs it);
* `deep_gemm` imports and exposes `fp8_fp4_mega_moe`, `get_symm_buffer_for_mega_moe` and
  `transform_weights_for_mega_moe`;
* the SM count is even (the kernel launches 2-CTA clusters over every SM);
* the shapes that were given fit the kernel: H and I multiples of 128, and of 256 (the kernel pairs
  its 128-row N blocks and uses BLOCK_K = 256 at decode batch sizes), H a multiple of 512 when
  H > 4096 (two combine chunks), 1 <= top-k <= 32, E divisible by R, R <= 72.

Otherwise "triton". `TMOE_BACKEND=auto|triton|deepgemm` overrides the automatic choice and the
`backend=` argument overrides the environment; forcing "deepgemm" where it cannot run raises
`BackendUnavailableError` with every reason.

Weight layout (`to_deepgemm_weights` / `from_deepgemm_weights`): canonical MXFP4 (int8 codes
[E, N, K/2], uint8 UE8M0 scales [E, N, K/32]) <-> exactly what `deep_gemm.fp8_fp4_mega_moe` takes:
int8 codes, scales packed four per int32 [E, N, K/128] in MN-major TMA-aligned storage (strides
(N_al*K/128, 1, N_al), N_al = align(N, 4)), then DeepGEMM's `transform_weights_for_mega_moe`:
L1 rows (codes and scales) interleaved by 8 as [g0..7, u0..7, g8..15, u8..15, ...], and the scale
rows of L1 and L2 transposed inside every 128-row block for UTCCP (new row 4b+a = old row 32a+b).

Cross-check (`cross_check`, `cross_check_enabled`, `run_mega_moe(cross_check=True)`): both
backends on the same inputs; DeepGEMM's `calc_diff` and the max abs difference; RuntimeError when
calc_diff > threshold (1e-3) or a non-finite value appears.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import re
from typing import Callable

import torch

from . import formats
from .reference import calc_diff

__all__ = [
    "BACKENDS", "DEEP_GEMM_SYMBOLS", "BackendUnavailableError", "CrossCheckError",
    "select_backend", "explain_backend", "deepgemm_shape_problems",
    "to_deepgemm_weights", "from_deepgemm_weights",
    "cross_check", "cross_check_enabled",
    "run_deepgemm", "run_triton", "run_mega_moe",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "triton", "deepgemm")
DEEP_GEMM_SYMBOLS = ("fp8_fp4_mega_moe", "get_symm_buffer_for_mega_moe", "transform_weights_for_mega_moe")
ENV_BACKEND = "TMOE_BACKEND"
ENV_CROSS_CHECK = "TMOE_CROSS_CHECK"
MIN_TORCH = (2, 9)
MAX_TOPK = 32
MAX_RANKS = 72               # DeepGEMM's kNumMaxRanks
SF_WORD_K = 128              # K elements covered by one packed int32 scale word
INTERLEAVE = 8               # gate/up interleave granularity of L1 rows
UTCCP_ROWS = 128             # scale rows are transposed 4x32 inside blocks of this many rows
DEFAULT_THRESHOLD = 1e-3


class BackendUnavailableError(RuntimeError):
    """A backend was required (forced, or needed for a cross-check) but cannot run here."""


class CrossCheckError(RuntimeError):
    """The two backends disagree; `.result` holds {'calc_diff', 'max_abs_diff', 'ok'}."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


# ----------------------------------------------------------------------------- probes
# Module-level so tests can monkeypatch them; each takes the resolved torch.device.
def _device_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device, or None when `device` is not a usable CUDA GPU."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))


def _sm_count(device: torch.device) -> int:
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def _import_deep_gemm():
    """The `deep_gemm` module; raises whatever importing it raises."""
    return importlib.import_module("deep_gemm")


def _torch_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _resolve_device(device) -> torch.device:
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if isinstance(device, int) and not isinstance(device, bool):
        return torch.device("cuda", device)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _num_sms(device: torch.device, dg) -> int:
    """SMs the DeepGEMM kernel will use: deep_gemm.get_num_sms() when it has one, else the device's."""
    get = getattr(dg, "get_num_sms", None) if dg is not None else None
    if callable(get):
        try:
            return int(get())
        except Exception:  # noqa: BLE001 - fall back to the device property
            pass
    return _sm_count(device)


# ----------------------------------------------------------------------------- selection
def _requested_backend(backend) -> tuple[str, str]:
    """(requested backend, where the request came from)."""
    if backend is not None:
        value, source = backend, f"backend={backend!r}"
    else:
        raw = os.environ.get(ENV_BACKEND, "")
        if not raw.strip():
            return "auto", "default"
        value, source = raw, f"{ENV_BACKEND}={raw}"
    norm = value.strip().lower() if isinstance(value, str) else None
    if norm not in BACKENDS:
        where = "backend" if backend is not None else ENV_BACKEND
        raise ValueError(f"{where} must be one of {', '.join(BACKENDS)}; got {value!r}")
    return norm, source


def _check_positive(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def deepgemm_shape_problems(*, hidden: int | None = None, intermediate: int | None = None,
                            num_experts: int | None = None, num_topk: int | None = None,
                            num_ranks: int = 1) -> list[str]:
    """The reasons (empty list = none) why DeepGEMM's fp8_fp4_mega_moe cannot take these shapes.

    Values left as None are not checked. Raises ValueError for a value that is not a positive int.
    """
    for name, v in (("hidden", hidden), ("intermediate", intermediate), ("num_experts", num_experts),
                    ("num_topk", num_topk), ("num_ranks", num_ranks)):
        _check_positive(name, v)
    out = []
    if hidden is not None:
        if hidden % 128:
            out.append(f"hidden={hidden} is not a multiple of 128")
        elif hidden % 256:
            out.append(f"hidden={hidden} is not a multiple of 256 (DeepGEMM pairs its 128-row L2 "
                       "N blocks and combine chunks)")
        elif hidden > 4096 and hidden % 512:
            out.append(f"hidden={hidden} > 4096 is not a multiple of 512 (DeepGEMM combines in two chunks)")
    if intermediate is not None:
        if intermediate % 128:
            out.append(f"intermediate={intermediate} is not a multiple of 128")
        elif intermediate % 256:
            out.append(f"intermediate={intermediate} is not a multiple of 256 (DeepGEMM uses "
                       "BLOCK_K=256 at decode batch sizes)")
    if num_topk is not None and num_topk > MAX_TOPK:
        out.append(f"num_topk={num_topk} > {MAX_TOPK}")
    if num_ranks is not None and num_ranks > MAX_RANKS:
        out.append(f"num_ranks={num_ranks} > {MAX_RANKS}")
    if num_experts is not None and num_ranks is not None and num_experts % num_ranks:
        out.append(f"num_experts={num_experts} is not divisible by num_ranks={num_ranks}")
    return out


def _deepgemm_status(device, shape_problems: list[str], shape_desc: str) -> tuple[bool, str]:
    """(can DeepGEMM run, human detail): every failing condition, or what was found."""
    failures = []
    dev = _resolve_device(device)
    cap = _device_capability(dev)
    if cap is None:
        failures.append(f"device {dev} is not a CUDA GPU" if dev.type != "cuda"
                        else f"CUDA is not available for device {dev}")
    elif cap[0] != 10:
        failures.append(f"GPU {dev} is sm_{cap[0]}{cap[1]}, not SM100-family "
                        "(fp8_fp4_mega_moe runs only on sm_100/sm_103)")
    tv = _torch_version()
    if tv < MIN_TORCH:
        failures.append(f"torch {torch.__version__} < {MIN_TORCH[0]}.{MIN_TORCH[1]}")
    dg, dg_desc = None, "deep_gemm"
    try:
        dg = _import_deep_gemm()
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (libs), RuntimeError (CUDA init)...
        failures.append(f"deep_gemm does not import ({type(exc).__name__}: {exc})")
    else:
        dg_desc = f"deep_gemm {getattr(dg, '__version__', '(unknown version)')}"
        missing = [s for s in DEEP_GEMM_SYMBOLS if not callable(getattr(dg, s, None))]
        if missing:
            failures.append(f"{dg_desc} lacks {', '.join(missing)}")
    sms = None
    if cap is not None and cap[0] == 10:
        sms = _num_sms(dev, dg)
        if sms % 2:
            failures.append(f"odd SM count {sms} (DeepGEMM launches 2-CTA clusters on every SM)")
    failures += shape_problems
    if failures:
        return False, "; ".join(failures)
    return True, (f"SM100-family GPU {dev} (sm_{cap[0]}{cap[1]}, {sms} SMs), {dg_desc}, "
                  f"torch {torch.__version__}, {shape_desc}")


def explain_backend(*, hidden: int | None = None, intermediate: int | None = None,
                    num_experts: int | None = None, num_topk: int | None = None,
                    num_ranks: int = 1, device=None, backend: str | None = None) -> tuple[str, str]:
    """(backend, reason): "deepgemm" or "triton" and a one-line human explanation.

    `backend` ('auto' | 'triton' | 'deepgemm') overrides TMOE_BACKEND; an invalid value raises
    ValueError naming it; "deepgemm" where it cannot run raises BackendUnavailableError.
    """
    requested, source = _requested_backend(backend)
    problems = deepgemm_shape_problems(hidden=hidden, intermediate=intermediate,
                                       num_experts=num_experts, num_topk=num_topk, num_ranks=num_ranks)
    if requested == "triton":
        return "triton", f"triton: forced by {source}"
    given = [f"{n}={v}" for n, v in (("H", hidden), ("I", intermediate), ("E", num_experts),
                                      ("K", num_topk)) if v is not None]
    shape_desc = (f"shape {' '.join(given)} R={num_ranks} within DeepGEMM's limits" if given
                  else "shapes not checked")
    ok, detail = _deepgemm_status(device, problems, shape_desc)
    if requested == "deepgemm":
        if not ok:
            raise BackendUnavailableError(f"DeepGEMM was forced by {source} but cannot run: {detail}")
        return "deepgemm", f"deepgemm: forced by {source}; {detail}"
    if ok:
        return "deepgemm", f"deepgemm: {detail}"
    return "triton", f"triton: DeepGEMM unavailable: {detail}"


_logged: set[str] = set()


def select_backend(*, hidden: int | None = None, intermediate: int | None = None,
                   num_experts: int | None = None, num_topk: int | None = None,
                   num_ranks: int = 1, device=None, backend: str | None = None) -> str:
    """"deepgemm" or "triton" (see `explain_backend`); logs the reason on logger 'tmoe.backend'
    (INFO the first time a reason is seen, DEBUG after). Host-side probing: call it once per layer,
    not per step."""
    choice, reason = explain_backend(hidden=hidden, intermediate=intermediate, num_experts=num_experts,
                                     num_topk=num_topk, num_ranks=num_ranks, device=device, backend=backend)
    _log_reason(reason)
    return choice


def _log_reason(reason: str) -> None:
    level = logging.DEBUG if reason in _logged else logging.INFO
    _logged.add(reason)
    logger.log(level, "tmoe backend: %s", reason)


# ----------------------------------------------------------------------------- weight layout
def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _pair(obj, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if (not isinstance(obj, (tuple, list)) or len(obj) != 2
            or not all(isinstance(t, torch.Tensor) for t in obj)):
        raise ValueError(f"{name} must be a (codes, scales) pair of tensors, got {type(obj).__name__}")
    return obj[0], obj[1]


def _check_codes(name: str, codes: torch.Tensor) -> tuple[int, int, int]:
    if codes.dtype != torch.int8 or codes.dim() != 3:
        raise ValueError(f"{name} codes must be int8 [E, N, K/2], got {codes.dtype} {tuple(codes.shape)}")
    e, n, kh = codes.shape
    k = 2 * kh
    if k == 0 or k % 128:
        raise ValueError(f"{name}: K={k} must be a positive multiple of 128 for DeepGEMM")
    if n == 0 or n % 128:
        raise ValueError(f"{name}: N={n} must be a positive multiple of 128 for DeepGEMM")
    return e, n, k


def _check_scales(name: str, scales: torch.Tensor, codes: torch.Tensor, shape: tuple, dtype) -> None:
    if scales.dtype != dtype or tuple(scales.shape) != shape:
        raise ValueError(f"{name} scales must be {dtype} {list(shape)}, got {scales.dtype} {tuple(scales.shape)}")
    if scales.device != codes.device:
        raise ValueError(f"{name} scales are on {scales.device} but codes on {codes.device}")


def _check_pair_shapes(l1_shape, l2_shape) -> None:
    (e1, n1, k1), (e2, n2, k2) = l1_shape, l2_shape
    if e1 != e2:
        raise ValueError(f"w1 has E={e1} experts but w2 has E={e2}")
    if n2 != k1:
        raise ValueError(f"w2 N={n2} must equal hidden H={k1} (the K of w1)")
    if n1 != 2 * k2:
        raise ValueError(f"w1 N={n1} must be 2*I = {2 * k2} (I = the K of w2)")


def _interleave_gate_up(t: torch.Tensor) -> torch.Tensor:
    """Rows [gate | up] (dim 1, 2I rows) -> [g0..7, u0..7, g8..15, u8..15, ...]."""
    e, n = t.shape[:2]
    rest = tuple(t.shape[2:])
    return t.reshape(e, 2, n // (2 * INTERLEAVE), INTERLEAVE, *rest).transpose(1, 2).reshape(e, n, *rest)


def _deinterleave_gate_up(t: torch.Tensor) -> torch.Tensor:
    e, n = t.shape[:2]
    rest = tuple(t.shape[2:])
    return t.reshape(e, n // (2 * INTERLEAVE), 2, INTERLEAVE, *rest).transpose(1, 2).reshape(e, n, *rest)


def _utccp_transpose(t: torch.Tensor) -> torch.Tensor:
    """Inside each block of 128 rows (dim 1): new row 4b + a = old row 32a + b."""
    e, n = t.shape[:2]
    rest = tuple(t.shape[2:])
    return t.reshape(e, n // UTCCP_ROWS, 4, 32, *rest).transpose(2, 3).reshape(e, n, *rest)


def _utccp_untranspose(t: torch.Tensor) -> torch.Tensor:
    e, n = t.shape[:2]
    rest = tuple(t.shape[2:])
    return t.reshape(e, n // UTCCP_ROWS, 32, 4, *rest).transpose(2, 3).reshape(e, n, *rest)


def _mn_major(words: torch.Tensor) -> torch.Tensor:
    """Copy of int32 [E, N, W] in DeepGEMM's MN-major TMA-aligned storage: strides (N_al*W, 1, N_al)."""
    e, n, w = words.shape
    n_al = _align(n, 4)
    out = torch.empty_strided((e, n, w), (n_al * w, 1, n_al), dtype=words.dtype, device=words.device)
    out.copy_(words)
    return out


def to_deepgemm_weights(l1, l2):
    """Canonical MXFP4 -> the weights `deep_gemm.fp8_fp4_mega_moe` takes (after its transform).

    l1 = (w1 int8 [E, 2I, H/2], w1_sf uint8 [E, 2I, H/32]), l2 = (w2 int8 [E, H, I/2],
    w2_sf uint8 [E, H, I/32]). Returns ((w1 int8 [E, 2I, H/2] interleaved, w1_sf int32
    [E, 2I, H/128]), (w2 int8 [E, H, I/2], w2_sf int32 [E, H, I/128])), scales MN-major.
    w2's codes are passed through (no copy when already contiguous). Pure torch, any device.
    """
    w1, s1 = _pair(l1, "l1")
    w2, s2 = _pair(l2, "l2")
    sh1 = _check_codes("w1", w1)
    sh2 = _check_codes("w2", w2)
    _check_scales("w1", s1, w1, (sh1[0], sh1[1], sh1[2] // formats.BLOCK), torch.uint8)
    _check_scales("w2", s2, w2, (sh2[0], sh2[1], sh2[2] // formats.BLOCK), torch.uint8)
    _check_pair_shapes(sh1, sh2)
    w1_dg = _interleave_gate_up(w1).contiguous()
    s1_dg = _mn_major(_utccp_transpose(_interleave_gate_up(formats.pack_ue8m0(s1))))
    s2_dg = _mn_major(_utccp_transpose(formats.pack_ue8m0(s2)))
    return (w1_dg, s1_dg), (w2.contiguous(), s2_dg)


def from_deepgemm_weights(l1_dg, l2_dg):
    """Inverse of `to_deepgemm_weights` (bit-exact): DeepGEMM-layout weights -> canonical MXFP4.

    Accepts the scales in any strides (the logical [E, N, K/128] int32 values are what count).
    """
    w1, s1 = _pair(l1_dg, "l1")
    w2, s2 = _pair(l2_dg, "l2")
    sh1 = _check_codes("w1", w1)
    sh2 = _check_codes("w2", w2)
    _check_scales("w1", s1, w1, (sh1[0], sh1[1], sh1[2] // SF_WORD_K), torch.int32)
    _check_scales("w2", s2, w2, (sh2[0], sh2[1], sh2[2] // SF_WORD_K), torch.int32)
    _check_pair_shapes(sh1, sh2)
    w1_c = _deinterleave_gate_up(w1).contiguous()
    s1_c = formats.unpack_ue8m0(_deinterleave_gate_up(_utccp_untranspose(s1)), sh1[2] // formats.BLOCK)
    s2_c = formats.unpack_ue8m0(_utccp_untranspose(s2), sh2[2] // formats.BLOCK)
    return (w1_c, s1_c), (w2.contiguous(), s2_c)


# ----------------------------------------------------------------------------- cross-check
def cross_check_enabled(arg: bool | None = None) -> bool:
    """`arg` when given, else TMOE_CROSS_CHECK (1/true/yes/on or 0/false/no/off/unset)."""
    if arg is not None:
        return bool(arg)
    raw = os.environ.get(ENV_CROSS_CHECK, "")
    v = raw.strip().lower()
    if v in ("", "0", "false", "no", "off"):
        return False
    if v in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{ENV_CROSS_CHECK} must be 0 or 1 (or true/false, yes/no, on/off); got {raw!r}")


def _compare(y_triton: torch.Tensor, y_deepgemm: torch.Tensor, threshold: float) -> dict:
    for name, y in (("triton", y_triton), ("deepgemm", y_deepgemm)):
        if not isinstance(y, torch.Tensor):
            raise CrossCheckError(f"cross-check: the {name} run returned {type(y).__name__}, not a tensor",
                                  {"calc_diff": float("nan"), "max_abs_diff": float("nan"), "ok": False})
    if y_triton.shape != y_deepgemm.shape:
        raise CrossCheckError(f"cross-check: output shapes differ: triton {tuple(y_triton.shape)} vs "
                              f"deepgemm {tuple(y_deepgemm.shape)}",
                              {"calc_diff": float("nan"), "max_abs_diff": float("nan"), "ok": False})
    a = y_triton.detach().double()
    b = y_deepgemm.detach().to(a.device).double()
    bad_a = int((~torch.isfinite(a)).sum())
    bad_b = int((~torch.isfinite(b)).sum())
    diff = calc_diff(a, b)
    max_abs = float((a - b).abs().max()) if a.numel() else 0.0
    ok = bad_a == 0 and bad_b == 0 and diff <= threshold
    result = {"calc_diff": diff, "max_abs_diff": max_abs, "ok": ok}
    numbers = f"calc_diff={diff:.3e} max_abs_diff={max_abs:.4g} over {tuple(a.shape)}"
    if bad_a or bad_b:
        raise CrossCheckError(f"cross-check failed: non-finite outputs (triton: {bad_a}, deepgemm: {bad_b} "
                              f"elements); {numbers}", result)
    if not ok:
        raise CrossCheckError(f"cross-check failed: triton and deepgemm disagree: {numbers} "
                              f"(threshold {threshold:.1e})", result)
    return result


def cross_check(run_triton: Callable[[], torch.Tensor], run_deepgemm: Callable[[], torch.Tensor], *,
                threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Run both zero-argument callables (each returns y) and compare with DeepGEMM's calc_diff.

    Returns {'calc_diff', 'max_abs_diff', 'ok'}; raises CrossCheckError (a RuntimeError) with the
    numbers when calc_diff > threshold, when either output has NaN/Inf, or when shapes differ.
    """
    y_t = run_triton()
    y_d = run_deepgemm()
    result = _compare(y_t, y_d, threshold)
    logger.info("tmoe cross-check: calc_diff=%.3e max_abs_diff=%.4g ok", result["calc_diff"],
                result["max_abs_diff"])
    return result


_cross_check = cross_check      # run_mega_moe's `cross_check` argument shadows the name


# ----------------------------------------------------------------------------- running each backend
@contextlib.contextmanager
def _pinned_env(**values: str):
    """Set environment variables for the duration (not thread-safe; check/test paths only)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _single_process_group():
    """A ProcessGroup of this process alone (DeepGEMM's buffer needs a group; world size 1)."""
    import torch.distributed as dist
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise ValueError(f"group=None but torch.distributed has world size {dist.get_world_size()}: "
                             "pass the expert-parallel group")
        return dist.group.WORLD
    dist.init_process_group(backend="nccl", store=dist.HashStore(), rank=0, world_size=1)
    atexit.register(_destroy_if_initialized)
    return dist.group.WORLD


def _destroy_if_initialized():
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def _fill_and_run(api_buffer, api_run, l1, l2, x_fp8, x_sf, topk_idx, topk_weights, *, num_experts,
                  intermediate, group, activation_clamp, fast_math, num_max_tokens_per_rank,
                  cumulative_local_expert_recv_stats, sym_buffer, y):
    if x_fp8.dim() != 2 or topk_idx.dim() != 2:
        raise ValueError(f"x_fp8 must be [T, H] and topk_idx [T, K], got {tuple(x_fp8.shape)} and "
                         f"{tuple(topk_idx.shape)}")
    n, hidden = x_fp8.shape
    if sym_buffer is None:
        t_max = num_max_tokens_per_rank if num_max_tokens_per_rank is not None else max(n, 1)
        sym_buffer = api_buffer(group, num_experts, t_max, topk_idx.shape[1], hidden, intermediate)
    sym_buffer.x[:n].copy_(x_fp8)
    sym_buffer.x_sf[:n].copy_(x_sf)
    sym_buffer.topk_idx[:n].copy_(topk_idx)
    sym_buffer.topk_weights[:n].copy_(topk_weights)
    if y is None:
        y = torch.empty((n, hidden), dtype=torch.bfloat16, device=x_fp8.device)
    api_run(y, l1, l2, sym_buffer, cumulative_local_expert_recv_stats=cumulative_local_expert_recv_stats,
            recipe=(1, 1, 32), activation="swiglu", activation_clamp=activation_clamp, fast_math=fast_math)
    return y


def run_deepgemm(x_fp8, x_sf, topk_idx, topk_weights, l1, l2, *, num_experts: int, group=None,
                 activation_clamp: float | None = None, fast_math: bool = True,
                 weights_layout: str = "canonical", num_max_tokens_per_rank: int | None = None,
                 cumulative_local_expert_recv_stats=None, sym_buffer=None, y=None, deep_gemm=None):
    """One call of `deep_gemm.fp8_fp4_mega_moe` from tmoe inputs; returns y bf16 [T, H].

    l1/l2 are canonical MXFP4 (converted with `to_deepgemm_weights`) unless
    weights_layout='deepgemm'. Without `sym_buffer` a buffer is allocated for this call (with
    num_max_tokens_per_rank, default T: pass the same value on every rank), so this is a
    check/test path, not the hot path. group=None means this process alone (a one-process group is
    created for CUDA inputs if torch.distributed is not initialized). `deep_gemm` replaces the module
    (tests pass a stand-in); by default `_import_deep_gemm()`.
    """
    dg = _import_deep_gemm() if deep_gemm is None else deep_gemm
    if weights_layout == "canonical":
        l1, l2 = to_deepgemm_weights(l1, l2)
    elif weights_layout != "deepgemm":
        raise ValueError(f"weights_layout must be 'canonical' or 'deepgemm', got {weights_layout!r}")
    intermediate = l2[0].shape[-1] * 2
    if group is None and sym_buffer is None and x_fp8.is_cuda:
        group = _single_process_group()
    with _pinned_env(**{ENV_CROSS_CHECK: "0"}):
        return _fill_and_run(dg.get_symm_buffer_for_mega_moe, dg.fp8_fp4_mega_moe, l1, l2, x_fp8, x_sf,
                             topk_idx, topk_weights, num_experts=num_experts, intermediate=intermediate,
                             group=group, activation_clamp=activation_clamp, fast_math=fast_math,
                             num_max_tokens_per_rank=num_max_tokens_per_rank,
                             cumulative_local_expert_recv_stats=cumulative_local_expert_recv_stats,
                             sym_buffer=sym_buffer, y=y)


def _triton_api():
    """(get_symm_buffer_for_mega_moe, transform_weights_for_mega_moe, fp8_fp4_mega_moe) of tmoe's
    Triton path, imported lazily from tmoe.layer (falling back to the tmoe package for the first two)."""
    try:
        layer = importlib.import_module("tmoe.layer")
    except Exception as exc:  # noqa: BLE001
        raise BackendUnavailableError(f"the Triton backend does not import: tmoe.layer failed "
                                      f"({type(exc).__name__}: {exc})") from exc
    fn = getattr(layer, "fp8_fp4_mega_moe", None)
    if not callable(fn):
        raise BackendUnavailableError("the Triton backend is missing: tmoe.layer has no fp8_fp4_mega_moe")
    pkg = importlib.import_module("tmoe")
    api = []
    for name in ("get_symm_buffer_for_mega_moe", "transform_weights_for_mega_moe"):
        f = getattr(layer, name, None) or getattr(pkg, name, None)
        if not callable(f):
            raise BackendUnavailableError(f"the Triton backend is missing: neither tmoe.layer nor tmoe has {name}")
        api.append(f)
    return api[0], api[1], fn


def run_triton(x_fp8, x_sf, topk_idx, topk_weights, l1, l2, *, num_experts: int, group=None,
               activation_clamp: float | None = None, fast_math: bool = True,
               num_max_tokens_per_rank: int | None = None, cumulative_local_expert_recv_stats=None,
               sym_buffer=None, y=None):
    """One call of tmoe's Triton layer (`tmoe.layer.fp8_fp4_mega_moe`) from canonical weights.

    Runs with TMOE_BACKEND=triton and TMOE_CROSS_CHECK=0 pinned, so a layer that consults the
    dispatcher neither routes this call to DeepGEMM nor cross-checks it recursively.
    Raises BackendUnavailableError while tmoe.layer lacks the entry points.
    """
    get_buffer, transform, fn = _triton_api()
    with _pinned_env(**{ENV_BACKEND: "triton", ENV_CROSS_CHECK: "0"}):
        tl1, tl2 = transform(tuple(l1), tuple(l2))
        return _fill_and_run(get_buffer, fn, tl1, tl2, x_fp8, x_sf, topk_idx, topk_weights,
                             num_experts=num_experts, intermediate=l1[0].shape[1] // 2, group=group,
                             activation_clamp=activation_clamp, fast_math=fast_math,
                             num_max_tokens_per_rank=num_max_tokens_per_rank,
                             cumulative_local_expert_recv_stats=cumulative_local_expert_recv_stats,
                             sym_buffer=sym_buffer, y=y)


def run_mega_moe(x_fp8, x_sf, topk_idx, topk_weights, l1, l2, *, num_experts: int, group=None,
                 activation_clamp: float | None = None, fast_math: bool = True, backend: str | None = None,
                 cross_check: bool | None = None, threshold: float = DEFAULT_THRESHOLD,
                 num_max_tokens_per_rank: int | None = None, return_report: bool = False):
    """The dispatcher: picks the backend (`explain_backend` on these shapes and x's device), runs it
    from canonical weights l1/l2, and with cross-check on (argument, else TMOE_CROSS_CHECK) also runs
    the other backend and compares (`cross_check`); the selected backend's y is returned.

    Cross-check needs DeepGEMM: where it cannot run this raises BackendUnavailableError.
    With return_report=True returns (y, {'backend', 'reason', 'cross_check': dict | None}).
    """
    w1 = _pair(l1, "l1")[0]
    num_ranks = group.size() if group is not None else 1
    shapes = dict(hidden=x_fp8.shape[-1], intermediate=w1.shape[1] // 2, num_experts=num_experts,
                  num_topk=topk_idx.shape[-1], num_ranks=num_ranks, device=x_fp8.device)
    choice, reason = explain_backend(**shapes, backend=backend)
    _log_reason(reason)
    kwargs = dict(num_experts=num_experts, group=group, activation_clamp=activation_clamp,
                  fast_math=fast_math, num_max_tokens_per_rank=num_max_tokens_per_rank)
    args = (x_fp8, x_sf, topk_idx, topk_weights, l1, l2)
    report = {"backend": choice, "reason": reason, "cross_check": None}
    if not cross_check_enabled(cross_check):
        y = run_deepgemm(*args, **kwargs) if choice == "deepgemm" else run_triton(*args, **kwargs)
    else:
        if choice != "deepgemm":
            auto, auto_reason = explain_backend(**shapes, backend="auto")
            if auto != "deepgemm":
                raise BackendUnavailableError(f"cross-check needs DeepGEMM, which cannot run here: {auto_reason}")
        outs = {}

        def _triton():
            outs["triton"] = run_triton(*args, **kwargs)
            return outs["triton"]

        def _deepgemm():
            outs["deepgemm"] = run_deepgemm(*args, **kwargs)
            return outs["deepgemm"]

        report["cross_check"] = _cross_check(_triton, _deepgemm, threshold=threshold)
        y = outs[choice]
    return (y, report) if return_report else y
