"""tmoe: a Triton-first fused W4A8 MoE layer (MXFP4 weights, MXFP8 activations).

See DESIGN.md for the contract; the public API mirrors DeepGEMM's `fp8_fp4_mega_moe`.
"""
from .formats import quantize_mxfp4, dequantize_mxfp4, quantize_mxfp8, dequantize_mxfp8
from .reference import MoEWeights, calc_diff, reference_moe

__version__ = "0.1.0"
