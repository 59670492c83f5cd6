"""bench_layer.py with the PDL chain's token limit (kernels/pdl.CHAIN_MAX_TOKENS) set from argv[1]; the rest of
argv goes to bench_layer (session 18, run10: does chaining the calls above 128 tokens pay?)."""
import runpy
import sys

import tmoe.kernels.pdl as pdl

pdl.CHAIN_MAX_TOKENS = int(sys.argv[1])
sys.argv = ["benchmarks/bench_layer.py"] + sys.argv[2:]
runpy.run_path("benchmarks/bench_layer.py", run_name="__main__")
