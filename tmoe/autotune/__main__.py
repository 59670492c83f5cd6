"""`python -m tmoe.autotune`: the tmoe-autotune CLI (see tmoe/autotune/cli.py, docs/autotune.md)."""
import os
import sys

import torch

if not torch.cuda.is_available():
    # Only effective when tmoe's kernels are not imported yet; otherwise cli.main re-runs the
    # command in a child with it set (TRITON_INTERPRET is read when the kernels are defined).
    os.environ.setdefault("TRITON_INTERPRET", "1")

from .cli import main  # noqa: E402

sys.exit(main())
