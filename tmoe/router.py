"""MoE routers: logits [T, E] -> (topk_idx int64 [T, K], topk_weights fp32 [T, K]).

``route`` runs one Triton kernel (``tmoe/kernels/router.py``, one program per block of tokens);
``route_reference`` is the plain-torch oracle with the same semantics. The output feeds
``tmoe.fp8_fp4_mega_moe`` directly (global expert ids, ``-1`` = masked slot).

Scorings (all selection in float32, as the models do it)
--------------------------------------------------------
``"softmax_topk"`` (Mixtral, Qwen2/3-MoE)
    ``p = softmax(logits)`` over all experts, the k largest are chosen (selection on the logits,
    which orders experts exactly as the probabilities do), weights ``p[chosen]``; with
    ``renormalize`` (Qwen's ``norm_topk_prob``, Mixtral always) ``w / sum(w)``.
``"topk_softmax"`` (gpt-oss)
    the k largest logits are chosen, weights ``softmax(logits[chosen])`` over those k
    (``renormalize`` has no effect: they already sum to 1). gpt-oss: ``torch.topk(g, k)`` then
    ``softmax(values)`` (openai/gpt-oss ``gpt_oss/torch/model.py`` ``MLPBlock.forward``).
``"sigmoid_noaux"`` (DeepSeek-V3 / R1 ``topk_method="noaux_tc"``)
    ``s = sigmoid(logits)``; selection on ``s + bias`` (``e_score_correction_bias``); with
    ``num_groups`` the experts are split into ``num_groups`` contiguous groups, each group is scored
    by the sum of its two largest biased scores, the ``topk_groups`` best groups are kept and the
    top-k is taken among their experts; weights are the *unbiased* ``s[chosen]``, divided by their
    sum if ``renormalize`` (``norm_topk_prob``), times ``scaling`` (``routed_scaling_factor``).
``"sqrtsoftplus"`` (DeepSeek-V4)
    ``s = sqrt(softplus(logits))``; selection on ``s + bias``; weights the unbiased ``s[chosen]``,
    renormalized, times ``scaling`` (``route_scale``, 1.5 in V4-Flash). V4's reference gate has no
    group limit; ``num_groups``/``topk_groups`` are accepted and behave as for ``sigmoid_noaux``.

Verified against public code (read via the code search, 2025):

* DeepSeek-V3 ``inference/model.py`` (deepseek-ai/DeepSeek-V3) ``Gate.forward``: ``scores =
  sigmoid``; ``original_scores = scores``; ``scores = scores + bias``; groups scored by
  ``scores.topk(2, -1)[0].sum(-1)`` when a bias is present (``amax`` without one);
  ``scores.masked_fill_(mask, -inf)`` outside the kept groups; ``indices = topk(scores, topk)``;
  ``weights = original_scores.gather(1, indices)``; ``weights /= weights.sum()`` for sigmoid;
  ``weights *= route_scale``.
* HF transformers ``models/deepseek_v3/modeling_deepseek_v3.py`` ``DeepseekV3TopkRouter``: same,
  but experts of dropped groups are filled with ``0.0`` instead of ``-inf`` and the renormalizer is
  ``sum + 1e-20``. vLLM ``fused_moe`` ``grouped_topk`` / SGLang ``biased_grouped_topk`` use
  ``-inf`` like DeepSeek. tmoe uses ``-inf`` (a dropped expert is never chosen, even if every kept
  biased score is negative) and ``sum + 1e-20`` (an all-zero row gives weights 0, not NaN).
* DeepSeek-V4-Flash ``inference/model.py`` ``Gate.forward`` (as vendored by several public ports,
  and vLLM ``models/deepseek_v4.py`` + ``fused_topk_bias``): ``scores = F.softplus(scores).sqrt()``,
  ``original_scores = scores``, ``scores = scores + self.bias`` (selection only), flat
  ``scores.topk(topk)`` (no groups), ``weights = original_scores.gather(1, indices)``,
  ``weights /= weights.sum()`` (every non-softmax scoring), ``weights *= route_scale``. The first
  ``n_hash_layers`` of V4 route by a token-id table (``tid2eid``) instead: not a scoring here.

Special values (documented behaviour, tested)
---------------------------------------------
* An expert whose logit is ``-inf`` or **NaN** is *unavailable*: it is never selected, whatever
  its bias (a NaN cannot raise an error without a host sync, so it is treated exactly like
  ``-inf``). If fewer than k experts are available (in the kept groups), the remaining slots get
  index ``-1`` and weight ``0`` (the layer skips ``-1`` slots). Unavailable experts do not
  contribute to the softmax denominator. A group's score counts unavailable experts as ``-inf``,
  so a group with fewer than two available experts ranks last.
* ``+inf`` logits are clamped to the largest finite float32 (so ``softmax_topk`` shares the mass
  among the ``+inf`` experts, sigmoid gives 1).
* ``bias`` must be finite (not checked: that would need a host sync).

Ties: equal selection keys are broken toward the **lower expert id** (and lower group id for
groups). Slots are written in ascending order = descending selection key (biased key for the
bias scorings, logit for the softmax scorings), ties by ascending expert id.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ["SCORINGS", "MAX_EXPERTS", "MAX_TOPK", "route", "route_reference", "validate_route_args"]

SCORINGS = ("softmax_topk", "topk_softmax", "sigmoid_noaux", "sqrtsoftplus")
MAX_EXPERTS = 512
MAX_TOPK = 32
_BIAS_SCORINGS = ("sigmoid_noaux", "sqrtsoftplus")
_FLT_MAX = torch.finfo(torch.float32).max
_LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def validate_route_args(logits, top_k, scoring, bias, num_groups, topk_groups, renormalize, scaling):
    """Check every argument of `route` (no device sync); raise ValueError naming the bad value."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [tokens, experts], got shape {tuple(logits.shape)}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise ValueError(f"logits dtype must be float32, bfloat16 or float16, got {logits.dtype}")
    num_experts = logits.shape[1]
    if not 1 <= num_experts <= MAX_EXPERTS:
        raise ValueError(f"number of experts must be in [1, {MAX_EXPERTS}], got {num_experts}")
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise ValueError(f"top_k must be an int, got {top_k!r}")
    if not 1 <= top_k <= MAX_TOPK:
        raise ValueError(f"top_k must be in [1, {MAX_TOPK}], got {top_k}")
    if top_k > num_experts:
        raise ValueError(f"top_k={top_k} exceeds the number of experts {num_experts}")
    if not isinstance(renormalize, bool):
        raise ValueError(f"renormalize must be a bool, got {renormalize!r}")
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)) or not math.isfinite(scaling):
        raise ValueError(f"scaling must be a finite float, got {scaling!r}")
    if bias is not None:
        if scoring not in _BIAS_SCORINGS:
            raise ValueError(f"bias is only used by {_BIAS_SCORINGS}, got bias with scoring={scoring!r}")
        if not isinstance(bias, torch.Tensor):
            raise ValueError(f"bias must be a torch.Tensor, got {type(bias).__name__}")
        if tuple(bias.shape) != (num_experts,):
            raise ValueError(f"bias must have shape ({num_experts},), got {tuple(bias.shape)}")
        if not bias.is_floating_point():
            raise ValueError(f"bias must be a floating tensor, got {bias.dtype}")
        if bias.device != logits.device:
            raise ValueError(f"bias is on {bias.device} but logits are on {logits.device}")
    if (num_groups is None) != (topk_groups is None):
        raise ValueError(f"num_groups and topk_groups must be given together, got num_groups={num_groups!r}, "
                         f"topk_groups={topk_groups!r}")
    if num_groups is not None:
        if scoring not in _BIAS_SCORINGS:
            raise ValueError(f"group-limited routing (num_groups={num_groups}) is only defined for "
                             f"{_BIAS_SCORINGS}, got scoring={scoring!r}")
        for name, v in (("num_groups", num_groups), ("topk_groups", topk_groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if num_experts % num_groups:
            raise ValueError(f"num_groups={num_groups} does not divide the number of experts {num_experts}")
        if topk_groups > num_groups:
            raise ValueError(f"topk_groups={topk_groups} exceeds num_groups={num_groups}")
        if top_k > topk_groups * (num_experts // num_groups):
            raise ValueError(f"top_k={top_k} exceeds the experts in the kept groups "
                             f"({topk_groups} x {num_experts // num_groups})")
    return num_experts


def route(logits: torch.Tensor, top_k: int, scoring: str = "softmax_topk", bias: Optional[torch.Tensor] = None,
          num_groups: Optional[int] = None, topk_groups: Optional[int] = None, renormalize: bool = True,
          scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Route tokens to experts with one Triton kernel launch (no host synchronisation).

    logits: [T, E] float32/bfloat16/float16 (E <= 512), any strides. Returns ``topk_idx`` int64
    [T, top_k] (global expert ids, -1 = masked slot) and ``topk_weights`` float32 [T, top_k], slots
    in descending selection key. See the module docstring for the scorings and special values.
    """
    num_experts = validate_route_args(logits, top_k, scoring, bias, num_groups, topk_groups, renormalize,
                                      scaling)
    from .kernels.router import SCORING_CODES, router_kernel, router_launch_config

    t = logits.shape[0]
    topk_idx = torch.empty((t, top_k), dtype=torch.int64, device=logits.device)
    topk_weights = torch.empty((t, top_k), dtype=torch.float32, device=logits.device)
    if t == 0:
        return topk_idx, topk_weights
    ng = 1 if num_groups is None else num_groups
    tg = 1 if topk_groups is None else topk_groups
    bias_arg = bias.to(torch.float32).contiguous() if bias is not None else topk_weights  # dummy ptr
    cfg = router_launch_config(num_experts, top_k, ng)
    grid = (triton_cdiv(t, cfg["BLOCK_T"]),)
    router_kernel[grid](
        logits, bias_arg, topk_idx, topk_weights,
        t, logits.stride(0), logits.stride(1), float(scaling),
        num_experts, top_k, ng, tg, num_experts // ng,
        SCORING=SCORING_CODES[scoring], HAS_BIAS=bias is not None, RENORM=renormalize, GROUPED=ng > 1,
        **cfg,
    )
    return topk_idx, topk_weights


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# ----------------------------------------------------------------------------- reference
def _scores_fp32(x: torch.Tensor, scoring: str) -> torch.Tensor:
    """Unbiased scores in float32 (x: float32 logits with unavailable entries already zeroed)."""
    if scoring == "sigmoid_noaux":
        return torch.sigmoid(x)
    if scoring == "sqrtsoftplus":
        return torch.nn.functional.softplus(x).sqrt()
    return x


def _stable_topk_desc(key: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries per row, ties -> lower index first (stable sort)."""
    return torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :k]


def route_reference(logits: torch.Tensor, top_k: int, scoring: str = "softmax_topk",
                    bias: Optional[torch.Tensor] = None, num_groups: Optional[int] = None,
                    topk_groups: Optional[int] = None, renormalize: bool = True,
                    scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch oracle of `route`: scores and selection keys in float32 (as the models compute
    them), weights normalised in float64; deterministic ties (lower expert / group id first)."""
    num_experts = validate_route_args(logits, top_k, scoring, bias, num_groups, topk_groups, renormalize,
                                      scaling)
    t = logits.shape[0]
    x = logits.to(torch.float32)
    avail = ~torch.isnan(x) & (x != float("-inf"))
    x = torch.where(avail, x, torch.zeros_like(x)).clamp(max=_FLT_MAX)
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float32, device=x.device)

    score = _scores_fp32(x, scoring)
    key = score + bias.to(torch.float32) if bias is not None else score
    key = torch.where(avail, key, neg_inf)

    if num_groups is not None and num_groups > 1:
        gsize = num_experts // num_groups
        kg = key.view(t, num_groups, gsize)
        top2 = torch.sort(kg, dim=-1, descending=True, stable=True).values[..., : min(2, gsize)]
        gscore = top2.sum(dim=-1)                                         # -inf if any is -inf
        keep = _stable_topk_desc(gscore, topk_groups)
        gmask = torch.zeros(t, num_groups, dtype=torch.bool, device=x.device).scatter_(1, keep, True)
        key = torch.where(gmask.repeat_interleave(gsize, dim=1), key, neg_inf)

    idx = _stable_topk_desc(key, top_k)
    valid = torch.gather(key, 1, idx) > float("-inf")
    idx = torch.where(valid, idx, torch.full_like(idx, -1))
    safe = idx.clamp(min=0)

    if scoring == "softmax_topk":
        x64 = torch.where(avail, x.double(), torch.tensor(float("-inf"), dtype=torch.float64, device=x.device))
        mx = x64.amax(dim=1, keepdim=True)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        p = torch.where(avail, torch.exp(x64 - mx), torch.zeros_like(x64))
        z = p.sum(dim=1, keepdim=True)
        z = torch.where(z > 0, z, torch.ones_like(z))
        w = torch.where(valid, torch.gather(p, 1, safe) / z, torch.zeros_like(z))
        if renormalize:
            w = w / (w.sum(dim=1, keepdim=True) + 1e-20)
    elif scoring == "topk_softmax":
        v = torch.gather(x.double(), 1, safe)
        v = torch.where(valid, v, torch.zeros_like(v))
        m0 = torch.where(valid, v, torch.full_like(v, float("-inf"))).amax(dim=1, keepdim=True)
        m0 = torch.where(torch.isfinite(m0), m0, torch.zeros_like(m0))
        ex = torch.where(valid, torch.exp(v - m0), torch.zeros_like(v))
        s = ex.sum(dim=1, keepdim=True)
        w = ex / torch.where(s > 0, s, torch.ones_like(s))
    else:
        w = torch.gather(score, 1, safe).double()
        w = torch.where(valid, w, torch.zeros_like(w))
        if renormalize:
            w = w / (w.sum(dim=1, keepdim=True) + 1e-20)
    w = w * float(scaling)
    return idx.to(torch.int64), w.to(torch.float32)
