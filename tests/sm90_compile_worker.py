"""Compile the symm_mem kernels for sm_90 (run in a subprocess with TRITON_INTERPRET=0, see
test_compile_sm90.py); prints one JSON line {world: {kernel: ptx instruction counts}}."""
import json
import os
import re
import sys

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tmoe.dispatch import symm_mem as sm  # noqa: E402


def compile_ptx(kernel, types: dict, const: dict, num_warps: int) -> str:
    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in const:
            sig[name] = "constexpr"
            continue
        sig[name] = types.get(name, "i32")
        if sig[name].startswith("*"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(kernel, sig, const, attrs), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps}).asm["ptx"]


def counts(ptx: str) -> dict:
    return {"st_v4": len(re.findall(r"st\.global\.v4", ptx)),
            "release_sys": len(re.findall(r"atom\.global\.release\.sys|atom\.release\.sys|atom\.sys\.release", ptx)),
            "acquire": len(re.findall(r"acquire", ptx))}


def main(worlds) -> None:
    out = {}
    for world in worlds:
        lay = sm.make_layout(world, 128, 8, 7168)
        common = dict(X_WORDS=lay.x_words, SF_WORDS=lay.sf_words, ROW_WORDS=lay.row_words, R=world)
        r1 = triton.next_power_of_2(world + 1)
        push = compile_ptx(sm._push_kernel, {"x_ptr": "*i32", "sf_ptr": "*i32", "idx_ptr": "*i64", "w_ptr": "*fp32",
                                             "peer_ptrs": "*i64", "err_ptr": "*i32"},
                           dict(K=8, K_PAD=8, MAX_BLOCKS=160, ROWS=8, PREFIX=128, BLOCK_W=2048, SF_PAD=64, SIGNAL=True,
                                WAIT=True, **common), 4)
        ret = compile_ptx(sm._return_kernel, {"rows_ptr": "*i32", "count_ptr": "*i32", "out_ptr": "*i32",
                                              "peer_ptrs": "*i64", "err_ptr": "*i32"},
                          dict(K=8, OUT_WORDS=3584, R1_PAD=r1, MAX_BLOCKS=160, ROWS=8, BLOCK_W=2048, SIGNAL=True,
                               WAIT=True, **common), 4)
        unpack = compile_ptx(sm._unpack_kernel, {"rows_ptr": "*i32", "count_ptr": "*i32", "xdq_ptr": "*i16",
                                                 "idx_ptr": "*i64", "w_ptr": "*fp32", "addr_ptr": "*i64",
                                                 "code_ptr": "*i64", "peer_ptrs": "*i64"},
                             dict(K=8, K_PAD=8, OUT_WORDS=3584, R1_PAD=r1, BLOCK_N=256, ROWS=8, BLOCK_H=1024,
                                  SOFT=False, WRITE_ADDR=True, WRITE_CODE=True, **common), 4)
        out[world] = {"push": counts(push), "return": counts(ret), "unpack": counts(unpack)}
    # GEMM2 writing through the fused-return address table (ROW_ADDR), decode config.
    from tmoe.kernels import grouped_gemm as gg
    types = {"act_ptr": "*i16", "w2_ptr": "*u8", "w2_sf_ptr": "*u8", "offsets_ptr": "*i32", "sorted_ptr": "*i32",
             "weights_ptr": "*fp32", "out_ptr": "*i16", "row_addr_ptr": "*i64", "bias_ptr": "*fp32"}
    gemm2 = compile_ptx(gg._gemm2_kernel, types,
                        dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=gg.BLOCK_K, E_PAD=128, SWAP_AB=True, HAS_BIAS=False,
                             SOFT=False, DECODE=1, ROW_ADDR=True, QUAD=False, PERSISTENT=False), 4)
    out["gemm2_row_addr"] = {"wgmma": len(re.findall(r"wgmma\.mma_async", gemm2))}
    print(json.dumps(out))


if __name__ == "__main__":
    main([int(w) for w in sys.argv[1:]] or [2, 4])
