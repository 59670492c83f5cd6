"""The `collective` transport: expert parallelism over `torch.distributed.all_to_all_single`.

NCCL across nodes (where users outgrow one NVLink domain), gloo on CPU (the tests). It syncs the
host for the per-destination counts, so it is not CUDA-graph capturable; the NVLink `symm_mem`
transport is the graph-safe path.

One call, per rank (every rank calls it, also with T = 0):
  1. `agree`: each rank's validation verdict is all-gathered, so an error on one rank raises on
     every rank (naming the failing rank) instead of leaving the others waiting in a collective.
  2. `dispatch`: every valid slot (token t, slot k, expert e) is sent to rank e // E_local as one
     packed byte row — the token's MXFP8 values and scales, the local expert id, the routing
     weight — in ascending slot order per destination (one all_to_all for the counts, one for the rows).
  3. the receiver runs its experts on the received rows (one slot per row: `compute.compute_slots`
     with K = 1); each row's result depends only on that row (batch invariance), so it is bitwise
     what a single rank holding every expert computes.
  4. `return_results`: the bf16 rows travel back in the same order and land at their slot index;
     the caller then combines slots in ascending k (`kernels.combine`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["CollectiveTransport", "Dispatched"]


@dataclass
class Dispatched:
    """What one rank received, and how to send the results back."""
    x: torch.Tensor              # float8_e4m3fn [N, H]
    x_sf: torch.Tensor           # int32 [N, W]
    expert: torch.Tensor         # int64 [N, 1] local expert id
    weight: torch.Tensor         # fp32 [N, 1]
    send_slots: torch.Tensor     # int64 [S_sent]: slot index of each row sent, in send order
    send_counts: list[int]
    recv_counts: list[int]


class CollectiveTransport:
    name = "collective"

    def __init__(self, group, num_experts: int):
        self.group = group
        self.rank = group.rank()
        self.num_ranks = group.size()
        self.num_experts = num_experts
        self.num_local_experts = num_experts // self.num_ranks
        backend = dist.get_backend(group)
        self.comm_device = torch.device("cpu") if backend == "gloo" else torch.device("cuda", torch.cuda.current_device())

    # ------------------------------------------------------------------ agreement
    def agree(self, error: str | None, what: str = "fp8_fp4_mega_moe call",
              device_status: torch.Tensor | None = None) -> list[tuple[int, int]]:
        """All-gather each rank's validation verdict; raise ValueError on every rank if any failed.

        `device_status` (one int32 on this rank's device, e.g. the symm_mem error word) travels in the
        same all-gather (one host read in all); returns [(rank, status)] for the ranks whose status is
        non-zero, so the caller can raise on every rank."""
        mine = torch.tensor([0 if error is None else 1, 0], dtype=torch.int32, device=self.comm_device)
        if device_status is not None:
            mine[1:].copy_(device_status.reshape(1))
        every = torch.zeros(2 * self.num_ranks, dtype=torch.int32, device=self.comm_device)
        dist.all_gather_into_tensor(every, mine, group=self.group)
        rows = every.view(self.num_ranks, 2).tolist()
        bad = [r for r, (flag, _) in enumerate(rows) if flag]
        if error is not None:
            raise ValueError(error)
        if bad:
            raise ValueError(f"rank(s) {bad} rejected their inputs to this collective {what} "
                             "(see the error raised there); every rank stops here")
        return [(r, status) for r, (_, status) in enumerate(rows) if status]

    def gather_ints(self, values: list[int]) -> list[tuple[int, ...]]:
        """Every rank's `values` (int64), in rank order, on every rank."""
        mine = torch.tensor(values, dtype=torch.int64, device=self.comm_device)
        every = torch.zeros(self.num_ranks * len(values), dtype=torch.int64, device=self.comm_device)
        dist.all_gather_into_tensor(every, mine, group=self.group)
        return [tuple(r) for r in every.view(self.num_ranks, len(values)).tolist()]

    def check_same(self, what: str, values: list[int]) -> None:
        """Raise ValueError on every rank unless `values` is the same on all ranks."""
        rows = self.gather_ints(values)
        if any(r != rows[0] for r in rows):
            raise ValueError(f"{what} differ across ranks: " + ", ".join(f"rank {i}: {r}" for i, r in enumerate(rows)))

    # ------------------------------------------------------------------ dispatch / return
    def _exchange(self, send: torch.Tensor, send_counts: list[int], recv_counts: list[int]) -> torch.Tensor:
        """all_to_all_single on any dtype (sent as bytes), rows split by the counts."""
        row_shape = tuple(send.shape[1:])
        dtype, dev = send.dtype, send.device
        width = send.element_size()
        for d in row_shape:
            width *= d
        send_b = send.contiguous().view(torch.uint8).reshape(send.shape[0], width).to(self.comm_device)
        recv_b = torch.empty(sum(recv_counts), width, dtype=torch.uint8, device=self.comm_device)
        dist.all_to_all_single(recv_b, send_b, output_split_sizes=recv_counts, input_split_sizes=send_counts,
                               group=self.group)
        return recv_b.to(dev).view(dtype).reshape(sum(recv_counts), *row_shape)

    def dispatch(self, x_fp8: torch.Tensor, x_sf: torch.Tensor, topk_idx: torch.Tensor,
                 topk_weights: torch.Tensor) -> Dispatched:
        t, k = topk_idx.shape
        flat = topk_idx.reshape(-1)
        valid = flat >= 0
        dest = torch.where(valid, flat // self.num_local_experts, self.num_ranks)
        # Stable sort by destination: ascending slot order within each destination.
        order = torch.sort(dest, stable=True).indices
        # Counts without a host sync (bincount would sync for its max); exchanged on the device; then
        # ONE host read of send + receive counts, which all_to_all_single needs as split sizes.
        send_counts = torch.zeros(self.num_ranks + 1, dtype=torch.int64, device=dest.device)
        send_counts.scatter_add_(0, dest, torch.ones_like(dest))
        counts_dev = send_counts[: self.num_ranks].to(self.comm_device)
        recv_counts_t = torch.empty_like(counts_dev)
        dist.all_to_all_single(recv_counts_t, counts_dev, group=self.group)
        both = torch.cat([counts_dev, recv_counts_t]).tolist()
        send_counts_l, recv_counts_l = both[: self.num_ranks], both[self.num_ranks:]
        send_slots = order[: sum(send_counts_l)]
        tok = send_slots // k
        # One packed byte row per slot: FP8 values | scale words | local expert (int32) | weight (fp32).
        h, w = x_fp8.shape[1], x_sf.shape[1]
        meta = torch.stack([(flat[send_slots] - dest[send_slots] * self.num_local_experts).to(torch.int32),
                            topk_weights.reshape(-1)[send_slots].float().view(torch.int32)], dim=1)
        packed = torch.cat([x_fp8[tok].view(torch.uint8), x_sf[tok].view(torch.uint8).reshape(-1, 4 * w),
                            meta.view(torch.uint8).reshape(-1, 8)], dim=1)
        recv = self._exchange(packed, send_counts_l, recv_counts_l)
        recv_x = recv[:, :h].contiguous().view(torch.float8_e4m3fn)
        recv_sf = recv[:, h:h + 4 * w].contiguous().view(torch.int32)
        recv_meta = recv[:, h + 4 * w:].contiguous().view(torch.int32)
        expert = recv_meta[:, :1].to(torch.int64).contiguous()
        weight = recv_meta[:, 1:].view(torch.float32).contiguous()
        return Dispatched(recv_x, recv_sf, expert, weight, send_slots, send_counts_l, recv_counts_l)

    def return_results(self, d: Dispatched, results: torch.Tensor, home: torch.Tensor) -> None:
        """Send result rows [N, H] back to their source ranks; write them at home[slot]."""
        back = self._exchange(results, d.recv_counts, d.send_counts)
        if back.shape[0]:
            home[d.send_slots] = back
