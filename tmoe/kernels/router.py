"""Triton MoE router: scores + (group-limited) top-k + weights in ONE kernel launch.

One program handles a block of ``BLOCK_T`` tokens and holds the whole ``[BLOCK_T, E]`` row tile
of logits in registers (E <= 512, so the tile is at most 512 wide). The semantics are those of
:func:`tmoe.router.route_reference` (documented in ``tmoe/router.py``); in short:

* an expert whose logit is ``-inf`` or NaN is *unavailable*: it is never selected; slots that
  cannot be filled with an available expert get index ``-1`` and weight 0;
* ``+inf`` logits are clamped to the largest finite float32;
* selection key per scoring: logit (``softmax_topk``, ``topk_softmax``), ``sigmoid(l) + bias``
  (``sigmoid_noaux``), ``sqrt(softplus(l)) + bias`` (``sqrtsoftplus``), all in fp32;
* optional group-limited selection: group score = sum of the two largest keys of the group,
  the ``TOPK_GROUPS`` best groups are kept (ties: lower group id), the rest are masked to -inf;
* top-k by repeated arg-max with ties broken toward the lower expert id, so slot order is
  descending key, then ascending expert id;
* weights from the unbiased scores (softmax probabilities, softmax over the k chosen logits, or
  the sigmoid / sqrt-softplus scores), optionally renormalized (``/ (sum + 1e-20)``), times
  ``scaling``.

Only fp32 arithmetic, integer ops and max/min/sum reductions are used, so the kernel runs the
same way under ``TRITON_INTERPRET=1`` (CPU tensors) and on a GPU.
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["SCORING_CODES", "router_kernel", "router_launch_config"]

# scoring name -> constexpr code used by the kernel
SCORING_CODES = {"softmax_topk": 0, "topk_softmax": 1, "sigmoid_noaux": 2, "sqrtsoftplus": 3}

_FLT_MAX = tl.constexpr(3.4028234663852886e38)


@triton.jit
def _log1p(y):
    # Accurate log(1 + y) for y in [0, 1] without libdevice (Goldberg's trick):
    # u = 1 + y rounded; log1p(y) = log(u) * y / (u - 1), and = y where u == 1.
    u = 1.0 + y
    d = u - 1.0
    safe_d = tl.where(d == 0.0, 1.0, d)
    return tl.where(d == 0.0, y, tl.log(u) * (y / safe_d))


@triton.jit
def router_kernel(
    logits_ptr, bias_ptr, idx_ptr, w_ptr,
    T, stride_lt, stride_le, scaling,
    E, K, NUM_GROUPS, TOPK_GROUPS, GROUP_SIZE,
    SCORING: tl.constexpr, HAS_BIAS: tl.constexpr, RENORM: tl.constexpr, GROUPED: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr,
):
    NEG_INF: tl.constexpr = float("-inf")
    pid = tl.program_id(0)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    tile_ok = row_ok[:, None] & col_ok[None, :]

    offs = rows[:, None].to(tl.int64) * stride_lt + cols[None, :].to(tl.int64) * stride_le
    x = tl.load(logits_ptr + offs, mask=tile_ok, other=NEG_INF).to(tl.float32)
    # NaN and -inf logits (and padding) are unavailable; +inf is clamped to FLT_MAX.
    avail = tile_ok & (x == x) & (x > NEG_INF)
    x = tl.where(avail, x, 0.0)
    x = tl.minimum(x, _FLT_MAX)

    # ---------------------------------------------------------------- scores and selection keys
    if SCORING == 2:
        score = 1.0 / (1.0 + tl.exp(-x))
    elif SCORING == 3:
        sp = tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))
        score = tl.sqrt(sp)
    else:
        score = x
    key = score
    if HAS_BIAS:
        b = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        key = key + b[None, :]
    key = tl.where(avail, key, NEG_INF)

    # ---------------------------------------------------------------- group-limited selection
    if GROUPED:
        gcols = tl.arange(0, BLOCK_G)
        grp_of_col = cols // GROUP_SIZE
        gscore = tl.full([BLOCK_T, BLOCK_G], NEG_INF, tl.float32)
        for g in range(NUM_GROUPS):
            in_g = (grp_of_col == g) & col_ok
            kg = tl.where(in_g[None, :], key, NEG_INF)
            m1 = tl.max(kg, axis=1)
            first = tl.min(tl.where(in_g[None, :] & (kg == m1[:, None]), cols[None, :], BLOCK_E), axis=1)
            kg2 = tl.where(cols[None, :] == first[:, None], NEG_INF, kg)
            m2 = tl.max(kg2, axis=1)
            if GROUP_SIZE == 1:     # a one-expert group is scored by that expert alone
                m2 = tl.zeros_like(m1)
            s = m1 + m2
            gscore = tl.where(gcols[None, :] == g, s[:, None], gscore)
        # keep the TOPK_GROUPS best groups (ties: lower group id)
        gtaken = tl.zeros([BLOCK_T, BLOCK_G], tl.int32)
        g_ok = gcols < NUM_GROUPS
        for _j in range(TOPK_GROUPS):
            free = (gtaken == 0) & g_ok[None, :]
            cur = tl.where(free, gscore, NEG_INF)
            gm = tl.max(cur, axis=1)
            gi = tl.min(tl.where(free & (cur == gm[:, None]), gcols[None, :], BLOCK_G), axis=1)
            gtaken = tl.where(gcols[None, :] == gi[:, None], 1, gtaken)
        allowed = tl.zeros([BLOCK_T, BLOCK_E], tl.int32)
        for g in range(NUM_GROUPS):
            keep_g = tl.max(tl.where(gcols[None, :] == g, gtaken, 0), axis=1)
            allowed = tl.where((grp_of_col[None, :] == g) & (keep_g[:, None] != 0), 1, allowed)
        key = tl.where(allowed != 0, key, NEG_INF)

    # ---------------------------------------------------------------- top-k (ties: lower id)
    kcols = tl.arange(0, BLOCK_K)
    out_idx = tl.full([BLOCK_T, BLOCK_K], -1, tl.int32)
    out_s = tl.zeros([BLOCK_T, BLOCK_K], tl.float32)
    taken = tl.zeros([BLOCK_T, BLOCK_E], tl.int32)
    for k in range(K):
        free = (taken == 0) & col_ok[None, :]
        cur = tl.where(free, key, NEG_INF)
        m = tl.max(cur, axis=1)
        i = tl.min(tl.where(free & (cur == m[:, None]), cols[None, :], BLOCK_E), axis=1)
        i = tl.where(m > NEG_INF, i, -1)            # nothing available left -> masked slot
        hit = cols[None, :] == i[:, None]
        taken = tl.where(hit, 1, taken)
        sv = tl.sum(tl.where(hit, score, 0.0), axis=1)
        out_idx = tl.where(kcols[None, :] == k, i[:, None], out_idx)
        out_s = tl.where(kcols[None, :] == k, sv[:, None], out_s)
    valid = out_idx >= 0

    # ---------------------------------------------------------------- weights
    if SCORING == 0:
        # softmax over all available experts, gathered at the chosen ones
        mx = tl.max(tl.where(avail, x, NEG_INF), axis=1)
        mx = tl.where(mx > NEG_INF, mx, 0.0)
        z = tl.sum(tl.where(avail, tl.exp(x - mx[:, None]), 0.0), axis=1)
        z = tl.where(z > 0.0, z, 1.0)
        w = tl.where(valid, tl.exp(out_s - mx[:, None]) / z[:, None], 0.0)
        if RENORM:
            w = w / (tl.sum(w, axis=1)[:, None] + 1e-20)
    elif SCORING == 1:
        # softmax over the chosen logits (slot 0 holds the largest)
        m0 = tl.max(tl.where(valid, out_s, NEG_INF), axis=1)
        m0 = tl.where(m0 > NEG_INF, m0, 0.0)
        ex = tl.where(valid, tl.exp(out_s - m0[:, None]), 0.0)
        s = tl.sum(ex, axis=1)
        s = tl.where(s > 0.0, s, 1.0)
        w = ex / s[:, None]
    else:
        w = tl.where(valid, out_s, 0.0)
        if RENORM:
            w = w / (tl.sum(w, axis=1)[:, None] + 1e-20)
    w = w * scaling

    out_offs = rows[:, None].to(tl.int64) * K + kcols[None, :]
    out_mask = row_ok[:, None] & (kcols[None, :] < K)
    tl.store(idx_ptr + out_offs, out_idx.to(tl.int64), mask=out_mask)
    tl.store(w_ptr + out_offs, w, mask=out_mask)


def router_launch_config(num_experts: int, top_k: int, num_groups: int) -> dict:
    """Block sizes and warps for one launch: the [BLOCK_T, BLOCK_E] tile is kept <= 2048 values."""
    block_e = triton.next_power_of_2(num_experts)
    block_t = max(1, min(16, 2048 // block_e))
    return dict(
        BLOCK_T=block_t,
        BLOCK_E=block_e,
        BLOCK_K=triton.next_power_of_2(top_k),
        BLOCK_G=triton.next_power_of_2(max(num_groups, 1)),
        num_warps=4 if block_e <= 128 else 8,
    )
