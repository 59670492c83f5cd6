"""Autotuning of the grouped GEMM tile configurations (the `tmoe-autotune` CLI) and its on-disk cache.

    tmoe-autotune --workload dsv3                  # or: python -m tmoe.autotune --workload dsv3
    tmoe-autotune --show                           # what is cached for this GPU

`tmoe.kernels.configs.select_config` consults the cache at run time (`cache.lookup`); see
docs/autotune.md. Only tiling, warps, stages and the FP4 decoder are tuned — never the reduction
order — so a tuned configuration cannot change any result bitwise.
"""
from .cache import (DTYPE, ENV_VAR, KERNELS, SCHEMA_VERSION, AutotuneCacheWarning, cache_dir, cache_path,
                    clear_memory_cache, device_name, load, lookup, nearest_bucket, save, validate)

__all__ = ["DTYPE", "ENV_VAR", "KERNELS", "SCHEMA_VERSION", "AutotuneCacheWarning", "cache_dir", "cache_path",
           "clear_memory_cache", "device_name", "load", "lookup", "nearest_bucket", "save", "validate"]
