"""The autotune cache: tuned GEMM tile configurations on disk, and the run-time lookup.

Layout (one JSON document per device, kernel and problem shape):

    <cache dir>/<device dir>/<kernel>_E<E>_H<H>_I<I>_K<K>_<dtype>.json
    e.g. autotune_cache/NVIDIA_H100_80GB_HBM3/gemm1_E256_H7168_I2048_K8_w4a8.json

`<device dir>` is `torch.cuda.get_device_name()` with every run of characters other than letters,
digits and '-' replaced by '_' (`device_dir_name`). E is the global expert count, K the top-k.

Where the cache dir is (`cache_dir()`), first match wins:

1. `$TMOE_AUTOTUNE_CACHE`, when set and non-empty (any directory; it need not exist yet);
2. `<repo>/autotune_cache`, i.e. `Path(tmoe.__file__).parent.parent / "autotune_cache"` — the
   directory shipped at the root of the repository (an editable / source install), when it exists;
3. `tmoe/autotune_cache` inside the package, when it exists (for wheels that ship the files as
   package data later: copy the directory there and list it in `[tool.setuptools.package-data]`);
4. otherwise `<repo>/autotune_cache` (where the CLI then creates it).

A document (`validate` checks it; `SCHEMA_VERSION` is its version):

    {"schema": 1, "device": "NVIDIA H100 80GB HBM3", "kernel": "gemm1",
     "num_experts": 256, "hidden": 7168, "intermediate": 2048, "topk": 8, "dtype": "w4a8",
     "triton": "3.6.0", "torch": "2.13.0", "date": "2026-11-27",
     "buckets": {"128": {"best":      {"config": {GemmConfig fields}, "us": 1234.5},
                         "runner_up": {"config": {...}, "us": 1250.0} | null,
                         "tried": 32, "discarded": 0},                        # optional counts
                 ...},
     # optional: "workload", "activation", "activation_clamp", "num_local_experts", "timing"}

Bucket keys are token counts per rank (T, not T*K), written as decimal strings.

Lookup (`lookup`): the file for (kernel, device, E, H, I, K, dtype) is read once per process and
kept in memory; the bucket nearest to the number of tokens in log2 space is used, i.e. the one
minimising max(T, b) / min(T, b). Ties (T exactly at the geometric mean of two buckets, e.g. T = 4
between buckets 2 and 8) go to the SMALLER bucket: its tiles are sized for fewer tokens, which
never pads an MMA with rows the problem does not have. T = 0 is treated as T = 1.
A missing file, a file tuned with another Triton version than the running one, or an invalid file
makes `lookup` return None (the caller then uses the built-in heuristic) and warns ONCE per file
(`AutotuneCacheWarning`). A torch version difference is recorded but does not invalidate a file.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

from ..kernels.configs import DECODE_MODES, GemmConfig, check_gpu_config

__all__ = ["SCHEMA_VERSION", "DTYPE", "KERNELS", "ENV_VAR", "AutotuneCacheWarning", "cache_dir",
           "device_dir_name", "file_name", "cache_path", "validate", "load", "save", "lookup",
           "nearest_bucket", "list_files", "clear_memory_cache", "device_name", "make_document",
           "config_to_dict", "config_from_dict", "running_versions"]

SCHEMA_VERSION = 1
DTYPE = "w4a8"                      # MXFP4 weights x MXFP8 activations
KERNELS = ("gemm1", "gemm2")        # the kernels with tunables (tile configs)
ENV_VAR = "TMOE_AUTOTUNE_CACHE"
CPU_DEVICE = "cpu"                  # device name recorded by tuning runs under the interpreter

_PKG_DIR = Path(__file__).resolve().parent.parent          # .../tmoe
REPO_CACHE_DIR = _PKG_DIR.parent / "autotune_cache"        # Path(tmoe.__file__).parent.parent / ...
PACKAGE_CACHE_DIR = _PKG_DIR / "autotune_cache"            # optional package-data copy

_CONFIG_FIELDS = {"block_m": int, "block_n": int, "swap_ab": bool, "num_warps": int, "num_stages": int,
                  "decode": str}
_OPTIONAL_CONFIG_FIELDS = {"fuse_gate_up": bool, "maxnreg": (int, type(None)), "kernel": str,
                           "tail_block_m": (int, type(None)), "overlap": bool, "n_blocks": int,
                           "prefetch": int, "sub_block_m": (int, type(None)),
                           "n_fastest": (bool, type(None)), "group_m": (int, type(None)),
                           "early": bool, "three_quarter": bool, "tma_b": bool}   # absent = default
_REQUIRED = {"schema": int, "device": str, "kernel": str, "num_experts": int, "hidden": int,
             "intermediate": int, "topk": int, "dtype": str, "triton": str, "torch": str, "date": str,
             "buckets": dict}
_OPTIONAL = {"workload": (str, type(None)), "activation": str, "activation_clamp": (int, float, type(None)),
             "num_local_experts": int, "timing": str}
_BUCKET_REQUIRED = ("best", "runner_up")
_BUCKET_OPTIONAL = ("tried", "discarded")


class AutotuneCacheWarning(UserWarning):
    """The autotune cache could not serve a lookup; the built-in heuristic is used instead."""


# ----------------------------------------------------------------------------- locations
def cache_dir() -> Path:
    """The directory holding the cache files (see the module docstring for the resolution order)."""
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    if REPO_CACHE_DIR.is_dir():
        return REPO_CACHE_DIR
    if PACKAGE_CACHE_DIR.is_dir():
        return PACKAGE_CACHE_DIR
    return REPO_CACHE_DIR


def device_dir_name(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3' (letters, digits, '-' kept; runs of others -> '_')."""
    name = re.sub(r"[^A-Za-z0-9-]+", "_", device).strip("_")
    if not name:
        raise ValueError(f"device name {device!r} has no usable characters")
    return name


def file_name(kernel: str, num_experts: int, hidden: int, intermediate: int, topk: int,
              dtype: str = DTYPE) -> str:
    return f"{kernel}_E{num_experts}_H{hidden}_I{intermediate}_K{topk}_{dtype}.json"


def cache_path(kernel: str, device: str, num_experts: int, hidden: int, intermediate: int, topk: int,
               dtype: str = DTYPE, root: Path | str | None = None) -> Path:
    root = Path(root) if root is not None else cache_dir()
    return root / device_dir_name(device) / file_name(kernel, num_experts, hidden, intermediate, topk, dtype)


def doc_path(doc: dict, root: Path | str | None = None) -> Path:
    """Where a (valid) document belongs under `root`."""
    return cache_path(doc["kernel"], doc["device"], doc["num_experts"], doc["hidden"], doc["intermediate"],
                      doc["topk"], doc["dtype"], root)


def list_files(root: Path | str | None = None, device: str | None = None) -> list[Path]:
    """The *.json files under `root` (default `cache_dir()`): of one device's directory, or of all."""
    root = Path(root) if root is not None else cache_dir()
    base = root / device_dir_name(device) if device is not None else root
    if not base.is_dir():
        return []
    pattern = "*.json" if device is not None else "*/*.json"
    return sorted(base.glob(pattern))


_DEVICE_NAMES: dict[int, str] = {}


def device_name(device=None) -> Optional[str]:
    """The CUDA device's name (cached per index), or None for a CPU device / without a GPU."""
    import torch
    if device is not None:
        device = torch.device(device)
        if device.type != "cuda":
            return None
    if not torch.cuda.is_available():
        return None
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    name = _DEVICE_NAMES.get(index)
    if name is None:
        name = _DEVICE_NAMES[index] = torch.cuda.get_device_name(index)
    return name


def running_versions() -> dict[str, str]:
    import torch
    import triton
    return {"triton": triton.__version__, "torch": torch.__version__}


# ----------------------------------------------------------------------------- schema
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _type_ok(value, expected) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    for t in types:
        if t is int and _is_int(value):
            return True
        if t is float and isinstance(value, float):
            return True
        if t not in (int, float) and isinstance(value, t):
            return True
    return False


def config_to_dict(cfg: GemmConfig) -> dict:
    return cfg.as_dict()


def config_from_dict(d: Any, where: str = "config") -> GemmConfig:
    """A GemmConfig from its JSON form; ValueError naming the bad field (`where.<field>`)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object with fields {sorted(_CONFIG_FIELDS)}, got {type(d).__name__}")
    for name, typ in _CONFIG_FIELDS.items():
        if name not in d:
            raise ValueError(f"{where}.{name} is missing")
        v = d[name]
        if typ is int and not (_is_int(v) and v >= 1):
            raise ValueError(f"{where}.{name} must be an int >= 1, got {v!r}")
        if typ is bool and not isinstance(v, bool):
            raise ValueError(f"{where}.{name} must be true or false, got {v!r}")
        if typ is str and v not in DECODE_MODES:
            raise ValueError(f"{where}.{name} must be one of {DECODE_MODES}, got {v!r}")
    for name, typ in _OPTIONAL_CONFIG_FIELDS.items():
        bools = typ is bool or (isinstance(typ, tuple) and bool in typ)
        if name in d and (not isinstance(d[name], typ) or (not bools and isinstance(d[name], bool))):
            kind = {bool: "true or false", str: "a string", (bool, type(None)): "true, false or null"}.get(
                typ, "an int or null")
            raise ValueError(f"{where}.{name} must be {kind}, got {d[name]!r}")
    extra = sorted(set(d) - set(_CONFIG_FIELDS) - set(_OPTIONAL_CONFIG_FIELDS))
    if extra:
        raise ValueError(f"{where}.{extra[0]} is not a GemmConfig field (fields: {sorted(_CONFIG_FIELDS)}); "
                         "BLOCK_K and the reduction order are never tuned")
    try:
        return GemmConfig(**d)
    except ValueError as exc:
        field = next((f for f in _CONFIG_FIELDS if f in str(exc)), None)
        raise ValueError(f"{where}{'.' + field if field else ''}: {exc}") from None


def _validate_entry(entry: Any, where: str, gpu: bool, kernel: str | None = None) -> float:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object {{'config': ..., 'us': ...}}, got {type(entry).__name__}")
    for name in ("config", "us"):
        if name not in entry:
            raise ValueError(f"{where}.{name} is missing")
    extra = sorted(set(entry) - {"config", "us"})
    if extra:
        raise ValueError(f"{where}.{extra[0]} is not an allowed field (allowed: config, us)")
    cfg = config_from_dict(entry["config"], f"{where}.config")
    if gpu:
        try:
            check_gpu_config(cfg, kernel)
        except ValueError as exc:
            raise ValueError(f"{where}.config: {exc}") from None
    us = entry["us"]
    if not (_is_number(us) and us > 0):
        raise ValueError(f"{where}.us must be a finite number > 0 (microseconds), got {us!r}")
    return float(us)


def validate(doc: Any) -> dict:
    """Check a cache document against the schema; returns it, or raises ValueError naming the bad field.

    Configs of GPU documents (device != "cpu") must also pass `configs.check_gpu_config`, so a
    shipped file can never select a configuration that changes results bitwise.
    """
    if not isinstance(doc, dict):
        raise ValueError(f"an autotune cache document must be a JSON object, got {type(doc).__name__}")
    for name, typ in _REQUIRED.items():
        if name not in doc:
            raise ValueError(f"field {name!r} is missing")
        if not _type_ok(doc[name], typ):
            raise ValueError(f"field {name!r} must be {typ.__name__}, got {doc[name]!r}")
    for name, typ in _OPTIONAL.items():
        if name in doc and not _type_ok(doc[name], typ):
            raise ValueError(f"field {name!r} has the wrong type: {doc[name]!r}")
    extra = sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL))
    if extra:
        raise ValueError(f"field {extra[0]!r} is not part of schema {SCHEMA_VERSION}")
    if doc["schema"] != SCHEMA_VERSION:
        raise ValueError(f"field 'schema' is {doc['schema']!r}; this tmoe reads schema {SCHEMA_VERSION}")
    if not doc["device"].strip():
        raise ValueError("field 'device' is empty")
    device_dir_name(doc["device"])
    if doc["kernel"] not in KERNELS:
        raise ValueError(f"field 'kernel' must be one of {KERNELS}, got {doc['kernel']!r}")
    for name in ("num_experts", "hidden", "intermediate", "topk"):
        if doc[name] < 1:
            raise ValueError(f"field {name!r} must be >= 1, got {doc[name]!r}")
    for name in ("hidden", "intermediate"):
        if doc[name] % 32:
            raise ValueError(f"field {name!r} must be a multiple of 32, got {doc[name]!r}")
    if doc["topk"] > 32:
        raise ValueError(f"field 'topk' must be <= 32, got {doc['topk']!r}")
    if "num_local_experts" in doc and (doc["num_local_experts"] < 1 or doc["num_experts"] % doc["num_local_experts"]):
        raise ValueError(f"field 'num_local_experts' must divide num_experts={doc['num_experts']}, "
                         f"got {doc['num_local_experts']!r}")
    if doc["dtype"] != DTYPE:
        raise ValueError(f"field 'dtype' must be {DTYPE!r}, got {doc['dtype']!r}")
    for name in ("triton", "torch"):
        if not doc[name].strip():
            raise ValueError(f"field {name!r} (version) is empty")
    try:
        datetime.date.fromisoformat(doc["date"])
    except ValueError:
        raise ValueError(f"field 'date' must be an ISO date YYYY-MM-DD, got {doc['date']!r}") from None
    buckets = doc["buckets"]
    if not buckets:
        raise ValueError("field 'buckets' is empty")
    gpu = doc["device"] != CPU_DEVICE
    for key, bucket in buckets.items():
        where = f"buckets.{key}"
        if not (isinstance(key, str) and key.isdigit() and str(int(key)) == key and int(key) >= 1):
            raise ValueError(f"field 'buckets' has key {key!r}; keys must be token counts >= 1 as decimal strings")
        if not isinstance(bucket, dict):
            raise ValueError(f"{where} must be an object, got {type(bucket).__name__}")
        for name in _BUCKET_REQUIRED:
            if name not in bucket:
                raise ValueError(f"{where}.{name} is missing")
        extra = sorted(set(bucket) - set(_BUCKET_REQUIRED) - set(_BUCKET_OPTIONAL))
        if extra:
            raise ValueError(f"{where}.{extra[0]} is not an allowed field")
        for name in _BUCKET_OPTIONAL:
            if name in bucket and not (_is_int(bucket[name]) and bucket[name] >= 0):
                raise ValueError(f"{where}.{name} must be an int >= 0, got {bucket[name]!r}")
        best_us = _validate_entry(bucket["best"], f"{where}.best", gpu, doc["kernel"])
        if bucket["runner_up"] is not None:
            ru_us = _validate_entry(bucket["runner_up"], f"{where}.runner_up", gpu, doc["kernel"])
            if ru_us < best_us:
                raise ValueError(f"{where}.runner_up.us ({ru_us}) is below {where}.best.us ({best_us})")
    return doc


def make_document(*, device: str, kernel: str, num_experts: int, hidden: int, intermediate: int, topk: int,
                  buckets: dict, dtype: str = DTYPE, date: str | None = None, **extra) -> dict:
    """A validated document stamped with the running Triton / torch versions and today's date."""
    doc = {"schema": SCHEMA_VERSION, "device": device, "kernel": kernel, "num_experts": num_experts,
           "hidden": hidden, "intermediate": intermediate, "topk": topk, "dtype": dtype,
           **running_versions(), "date": date or datetime.date.today().isoformat(), **extra,
           "buckets": {str(k): v for k, v in sorted(buckets.items(), key=lambda kv: int(kv[0]))}}
    return validate(doc)


# ----------------------------------------------------------------------------- files
def load(path: Path | str) -> dict:
    """Read and validate one cache file. FileNotFoundError if absent; ValueError (naming the file and
    the bad field) if it is not valid JSON or not a valid document."""
    path = Path(path)
    text = path.read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    try:
        return validate(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def save(doc: dict, root: Path | str | None = None, *, merge: bool = True) -> Path:
    """Validate `doc` and write it to its place under `root` (default `cache_dir()`); returns the path.

    merge=True: buckets of an existing valid file for the same key that `doc` does not re-tune are
    kept, provided that file was tuned with the same Triton and torch versions (else it is replaced).
    The write is atomic (temporary file + rename); the in-memory lookup cache forgets the file.
    """
    validate(doc)
    path = doc_path(doc, root)
    out = dict(doc)
    if merge and path.exists():
        try:
            old = load(path)
        except ValueError:
            old = None
        if old is not None and old["triton"] == doc["triton"] and old["torch"] == doc["torch"]:
            buckets = dict(old["buckets"])
            buckets.update(doc["buckets"])
            out["buckets"] = {k: buckets[k] for k in sorted(buckets, key=int)}
    validate(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, path)
    _forget(path)
    return path


# ----------------------------------------------------------------------------- lookup
def nearest_bucket(buckets, num_tokens: int) -> int:
    """The bucket nearest to num_tokens in log2 space; ties go to the smaller bucket (exact arithmetic)."""
    t = max(int(num_tokens), 1)
    return min((int(b) for b in buckets), key=lambda b: (Fraction(max(t, b), min(t, b)), b))


@dataclass(frozen=True)
class _Entry:
    path: Path
    configs: dict     # bucket (int) -> GemmConfig
    picked: dict      # num_tokens -> GemmConfig (memo of nearest_bucket)

    def pick(self, num_tokens: int) -> GemmConfig:
        cfg = self.picked.get(num_tokens)
        if cfg is None:
            cfg = self.picked[num_tokens] = self.configs[nearest_bucket(self.configs, num_tokens)]
        return cfg


_MISSING = object()
_MEMO: dict[tuple, tuple[Path, Optional[_Entry]]] = {}    # key -> (file, parsed entry or None)
_WARNED: set[str] = set()
_LOCK = threading.Lock()


def clear_memory_cache() -> None:
    """Forget parsed files and which files were warned about (tests; after editing files by hand)."""
    with _LOCK:
        _MEMO.clear()
        _WARNED.clear()


def _forget(path: Path) -> None:
    with _LOCK:
        for key in [k for k, (p, _) in _MEMO.items() if p == path]:
            del _MEMO[key]
        _WARNED.discard(str(path))


def _warn_once(path: Path, message: str) -> None:
    with _LOCK:
        if str(path) in _WARNED:
            return
        _WARNED.add(str(path))
    warnings.warn(f"tmoe autotune cache: {message}; using the built-in heuristic", AutotuneCacheWarning,
                  stacklevel=4)


def _read_entry(path: Path, kernel: str, device: str, shape: tuple) -> Optional[_Entry]:
    num_experts, hidden, intermediate, topk, dtype = shape
    hint = (f"tune it with: tmoe-autotune --num-experts {num_experts} --hidden {hidden} "
            f"--intermediate {intermediate} --topk {topk} --kernels {kernel}")
    if not path.is_file():
        _warn_once(path, f"no file {path} for {kernel} (E={num_experts}, H={hidden}, I={intermediate}, "
                         f"K={topk}) on {device!r} ({hint})")
        return None
    try:
        doc = load(path)
    except (OSError, ValueError) as exc:
        _warn_once(path, f"ignoring invalid file ({exc})")
        return None
    got = (doc["kernel"], doc["device"], doc["num_experts"], doc["hidden"], doc["intermediate"], doc["topk"],
           doc["dtype"])
    want = (kernel, device, *shape)
    if got != want:
        _warn_once(path, f"ignoring {path}: it describes {got}, expected {want}")
        return None
    running = running_versions()["triton"]
    if doc["triton"] != running:
        _warn_once(path, f"ignoring {path}: tuned with Triton {doc['triton']}, running Triton {running} "
                         f"(re-tune: {hint})")
        return None
    return _Entry(path, {int(b): config_from_dict(v["best"]["config"]) for b, v in doc["buckets"].items()}, {})


def lookup(kernel: str, device_name: Optional[str], num_experts: int, hidden: int, intermediate: int, topk: int,
           num_tokens: int, *, dtype: str = DTYPE) -> Optional[GemmConfig]:
    """The tuned config for `kernel` at `num_tokens` tokens per rank, or None (use the heuristic).

    None without a device name (no GPU), or when the file is missing, invalid, describes another
    shape, or was tuned with another Triton version (each of these warns once per file). Files are
    parsed once per process (per cache directory); the bucket nearest in log2 is returned.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if device_name is None:
        return None
    # The hot path (every layer call) is one dict lookup: no filesystem access, no Path building.
    shape = (num_experts, hidden, intermediate, topk, dtype)
    key = (os.environ.get(ENV_VAR, ""), kernel, device_name, *shape)
    memo = _MEMO.get(key, _MISSING)
    if memo is _MISSING:
        path = cache_path(kernel, device_name, num_experts, hidden, intermediate, topk, dtype, cache_dir())
        memo = (path, _read_entry(path, kernel, device_name, shape))
        with _LOCK:
            _MEMO[key] = memo
    entry = memo[1]
    if entry is None:
        return None
    return entry.pick(num_tokens)
