"""tmoe: a Triton-first fused W4A8 MoE layer (MXFP4 weights, MXFP8 activations).

The public API mirrors DeepGEMM's `fp8_fp4_mega_moe` (see DESIGN.md §3):

    buf = tmoe.get_symm_buffer_for_mega_moe(None, E, T_max, K, H, I)
    l1, l2 = tmoe.transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf))
    tmoe.fp8_fp4_mega_moe(y, l1, l2, buf)
"""
import os as _os

if "TRITON_INTERPRET" not in _os.environ:
    import torch as _torch

    # NOTES: without a CUDA GPU Triton has no driver; its interpreter runs the same kernels on CPU
    # tensors (slowly). Triton reads the variable when the kernels are defined, i.e. on import below.
    if not _torch.cuda.is_available():
        _os.environ["TRITON_INTERPRET"] = "1"

from .formats import dequantize_mxfp4, dequantize_mxfp8, quantize_mxfp4, quantize_mxfp8
from .kernels.quant import per_token_cast_to_fp8
from .layer import (MegaMoEBuffer, TransformedWeights, fp8_fp4_mega_moe, get_symm_buffer_for_mega_moe,
                    transform_weights_for_mega_moe)
from .module import MegaMoE
from .reference import MoEWeights, calc_diff, reference_moe

__version__ = "0.1.0"
