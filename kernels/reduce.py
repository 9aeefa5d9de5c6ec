"""Second stage of the deterministic reduction: one program sums the per-block partials of the
probe pass in a fixed order (row tiles in sequence, then one in-register tree per column).

``partials.sum(0)`` would be shorter, but torch gives no order guarantee on GPU; float atomics would
make the bits depend on scheduling. This kernel's order depends only on the number of rows.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as K

_ROWS = 256   # rows per tile
_WIDTH = 8    # RED_LEN padded to a power of two


@triton.jit
def _sum_rows_kernel(part_ptr, out_ptr, rows, ROW_BLOCK: tl.constexpr, WIDTH: tl.constexpr):
    cols = tl.arange(0, WIDTH)
    cmask = cols < K.RED_LEN
    acc = tl.zeros((ROW_BLOCK, WIDTH), dtype=tl.float32)
    for start in range(0, rows, ROW_BLOCK):
        r = start + tl.arange(0, ROW_BLOCK)
        ptrs = part_ptr + r.to(tl.int64)[:, None] * K.RED_LEN + cols[None, :]
        acc += tl.load(ptrs, mask=(r[:, None] < rows) & cmask[None, :], other=0.0)
    tl.store(out_ptr + cols, tl.sum(acc, axis=0), mask=cmask)


def sum_partials(partials):
    """[rows, RED_LEN] fp32 partials -> [RED_LEN] fp32 sums, same bits for the same inputs."""
    out = torch.empty(K.RED_LEN.value, dtype=torch.float32, device=partials.device)
    _sum_rows_kernel[(1,)](partials, out, partials.shape[0], ROW_BLOCK=_ROWS, WIDTH=_WIDTH,
                           num_warps=8)
    return out
