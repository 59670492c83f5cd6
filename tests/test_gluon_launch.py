"""Host side of the Gluon GEMM launches (kernels/wgmma_gemm.py `_launch`), on any machine: which launches,
with which tile size, split mode, grid shape and grid order, and that their programs cover every tile
of any routing. The kernels themselves are GPU-tested in test_gluon_gemm.py; here a recording stand-in
takes their place, and the tile lists are recomputed from the SPLIT rules as documented."""
import math

import pytest
from hypothesis import given, strategies as st

from tmoe.kernels import wgmma_gemm
from tmoe.kernels.configs import GemmConfig


class RecordingKernel:
    """Stands in for a Gluon kernel: `kernel[grid](*args, tile_offset, **kwargs)` records the launch."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(dict(grid=grid, tile_offset=args[-1], **kwargs))
            return len(self.launches)
        return launch


def tiles_needed(counts, block_m, split, full_m, tail_m):
    """Tiles per launch as the SPLIT rules state them (an independent restatement of _tiles_per_expert)."""
    total = 0
    for c in counts:
        rem = c % full_m
        tail = rem if rem <= tail_m else 0
        rows = c if split == 0 else (c - tail if split == 1 else tail)
        total += math.ceil(rows / block_m)
    return total


def launched_programs(launch):
    """(tile programs, N blocks) of one recorded launch, whatever its grid order."""
    grid = launch["grid"]
    return (grid[1], grid[0]) if launch["N_FASTEST"] else (grid[0], grid[1])


def covered(launches, needed):
    """A plain launch runs tiles [0, programs); an overflow (PERSISTENT) launch strides over all tiles
    from its tile_offset on, so it covers everything past it."""
    plain = [launched_programs(x)[0] for x in launches if not x["PERSISTENT"]]
    if any(x["PERSISTENT"] for x in launches):
        return True
    return plain[0] >= needed


CONFIGS = [GemmConfig(8, 32, True, 4, 3, kernel="gluon"), GemmConfig(128, 64, True, 8, 2, kernel="gluon"),
           GemmConfig(256, 64, True, 8, 2, kernel="gluon", tail_block_m=32),
           GemmConfig(256, 128, True, 8, 3, kernel="gluon", tail_block_m=64),
           GemmConfig(128, 32, True, 4, 3, kernel="gluon", tail_block_m=16)]
# routings at the edges: every expert with a small remainder, none, all rows on one expert, empty
EDGE_COUNTS = [[261] * 12, [256] * 12, [5] * 12, [3000] + [0] * 11, [0] * 12, [255, 257, 288, 289, 300, 33, 32, 1]]


def check_launches(counts, cfg, expected):
    kernel = RecordingKernel()
    num_slots = sum(counts)
    handle = wgmma_gemm._launch(kernel, 7, num_slots, len(counts), cfg, expected, ("args",), {"X": 1})
    assert handle == 1                                  # the first launch's handle (sweeps inspect it)
    splits = [0] if cfg.tail_block_m is None else [1, 2]
    for split in splits:
        block_m = cfg.tail_block_m if split == 2 else cfg.block_m
        mine = [x for x in kernel.launches if x["SPLIT"] == split]
        assert mine and all(x["BLOCK_M"] == block_m and x["FULL_M"] == cfg.block_m and x["X"] == 1 for x in mine)
        assert all(x["N_FASTEST"] == (block_m >= 128) and launched_programs(x)[1] == 7 for x in mine)
        assert all(x["MMA"] == wgmma_gemm._layouts(block_m, cfg.num_warps)["MMA"] for x in mine)
        needed = tiles_needed(counts, block_m, split, cfg.block_m, cfg.tail_block_m or cfg.block_m)
        assert covered(mine, needed), (split, [launched_programs(x) for x in mine], needed)
        if split == 2:      # at most one tail tile per expert, so its grid never exceeds the experts
            assert launched_programs(mine[0])[0] <= len(counts)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("counts", EDGE_COUNTS)
@pytest.mark.parametrize("expected", [None, 1])
def test_launches_cover_every_tile_at_the_edges(counts, cfg, expected):
    check_launches(counts, cfg, expected)


@given(counts=st.lists(st.integers(0, 600), min_size=1, max_size=16),
       cfg=st.sampled_from(CONFIGS), expected=st.sampled_from([None, 1, 64]))
def test_launches_cover_every_tile(counts, cfg, expected):
    check_launches(counts, cfg, expected)


def test_split_rules_partition_each_expert():
    """FULL and TAIL together cover each expert's rows exactly once, the tail being one small tile."""
    for full_m, tail_m in ((256, 32), (256, 64), (128, 16)):
        for c in range(0, 3 * full_m + 3):
            rem = c % full_m
            tail = rem if rem <= tail_m else 0
            assert (c - tail) + tail == c and tail <= tail_m
            assert tiles_needed([c], tail_m, 2, full_m, tail_m) == (1 if tail else 0)
            assert tiles_needed([c], full_m, 1, full_m, tail_m) == math.ceil((c - tail) / full_m)


def test_grid_order_falls_back_past_65535_tiles():
    """Grid axis 1 holds at most 65535 programs: a huge N-block-major launch keeps tile-major order."""
    kernel = RecordingKernel()
    cfg = GemmConfig(128, 64, True, 8, 2, kernel="gluon")
    wgmma_gemm._launch(kernel, 3, 128 * 70000, 4, cfg, None, ("args",), {})
    (launch,) = kernel.launches
    assert launch["N_FASTEST"] is False and launch["grid"][1] == 3 and launch["grid"][0] >= 70000


def test_int32_row_offsets_are_checked_before_any_launch():
    """The Gluon kernels address rows within one expert with int32 (_weight_rows); an expert whose codes
    or scales span >= 2^31 words / bytes is refused with a ValueError naming the sizes."""
    import torch
    cfg = GemmConfig(8, 32, True, 4, 3, kernel="gluon")
    small = torch.zeros(1, 8, 4, dtype=torch.int32)
    huge = torch.zeros(32, dtype=torch.int32).as_strided((1, 8, 4), (2 ** 31, 4, 1))   # one expert: no byte read
    with pytest.raises(ValueError, match="int32"):
        wgmma_gemm._check("gemm1", small, cfg, huge, torch.zeros(1, 8, 1, dtype=torch.uint8), False)
    with pytest.raises(ValueError, match="needs a Hopper GPU"):     # small sizes pass on to the config check
        wgmma_gemm._check("gemm1", small, cfg, small, torch.zeros(1, 8, 1, dtype=torch.uint8), False)
    # quad-ordered codes: K >= 128 (step 0 is decoded as a whole quad step)
    with pytest.raises(ValueError, match="K >= 128.*K = 32"):
        wgmma_gemm._check("gemm1", small, cfg, small, torch.zeros(1, 8, 1, dtype=torch.uint8), True)


def test_tile_count_limit_of_the_packed_tile_search():
    """tile_of_program packs (expert, first tile) into one int32 sum: a launch that could need
    packing_unit(E_PAD) tiles or more is refused before any launch; one below the limit launches."""
    cfg = GemmConfig(8, 32, True, 4, 3, kernel="gluon")
    unit = wgmma_gemm.packing_unit(512)                 # 256 local experts -> E_PAD 256; 512 -> 512
    assert unit == 2 ** 21 and wgmma_gemm.packing_unit(128) == 2 ** 23
    kernel = RecordingKernel()
    with pytest.raises(ValueError, match="tile_of_program needs fewer than"):
        wgmma_gemm._launch(kernel, 4, 8 * unit, 512, cfg, None, (), {})
    assert not kernel.launches
    wgmma_gemm._launch(kernel, 4, 8 * (unit - 512) - 8, 512, cfg, None, (), {})
    assert len(kernel.launches) == 1
