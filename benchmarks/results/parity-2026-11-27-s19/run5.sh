#!/usr/bin/env bash
# Session 19, call 5 (one H100): the GPU tests of the tree as committed (67ef0dd: the new decode, no parity rings),
# time-boxed by the session's device budget (69 passed, none failed, before the 480 s limit).
PYTHONPATH=. timeout 480 python -m pytest -q -p no:cacheprovider tests/test_pdl.py tests/test_layer.py tests/test_gluon_gemm.py -x
