"""Launch plumbing shared by the weight-only quantized GEMMs (quant.py and the int4 decode kernels):
the split-K workspace, one launch with split-K included, and the int32-word view of a packed int4 weight.

Decode sizes may split K across programs so that enough programs stream the weight; the float32
partials meet in a zeroed workspace through atomics and the last split of each tile writes the output,
all in one launch (quant_words._store_out; decode is launch- and latency-bound: a second launch costs as
much as the GEMM).
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

# Split-K workspace per device: float32 partial sums and per-tile arrival counters, allocated zeroed once
# and left zeroed by every launch (see quant_words._store_out). Grown when a larger M * N arrives (so the
# first call of a shape must come before any CUDA-graph capture). One stream at a time per device.
_WS: dict[torch.device, tuple[Tensor, Tensor]] = {}
_RETIRED: list[tuple[Tensor, Tensor]] = []  # outgrown buffers stay alive: a captured graph may point at them


def workspace(device: torch.device, elems: int, tiles: int) -> tuple[Tensor, Tensor]:
    ws = _WS.get(device)
    if ws is None or ws[0].numel() < elems or ws[1].numel() < tiles:
        old = (0, 0) if ws is None else (ws[0].numel(), ws[1].numel())
        if ws is not None:
            _RETIRED.append(ws)
        ws = (torch.zeros(max(elems, old[0]), device=device, dtype=torch.float32),
              torch.zeros(max(tiles, old[1]), device=device, dtype=torch.int32))  # fmt: skip
        _WS[device] = ws
    return ws


def launch(kernel, x: Tensor, pre: tuple, post: tuple, N: int, bk: int | None, tiles: tuple,  # noqa: ANN001
           **consts: object) -> Tensor:  # fmt: skip
    """kernel(x, *pre, out, workspace, counters, *post, *out.stride()) on a (N / BN, K splits, M / BM)
    grid, tiles = (BM, BN, K splits, num_warps, gemv): one launch, split-K included."""
    bm, bn, split, warps, gemv = tiles
    M = x.shape[0]
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if M == 0 or N == 0:
        return out  # nothing to launch (an empty grid)
    grid = (triton.cdiv(N, bn), split, triton.cdiv(M, bm))
    ws, cnt = workspace(x.device, M * N, grid[0] * grid[2]) if split > 1 else (out, out)
    if bk:
        consts["BK"] = bk
    kernel[grid](x, *pre, out, ws, cnt, *post, *out.stride(), BM=bm, BN=bn, GEMV=gemv, SPLIT=split > 1,
                 num_warps=warps, **consts)  # fmt: skip
    return out


def as_words(packed: Tensor) -> Tensor:
    """(N, K/2) uint8 -> (N, K/8) int32 view (copied first if it cannot be viewed in place): word j
    holds k = 8j..8j+7, nibble i = k 8j + i."""
    if packed.stride(1) != 1 or packed.stride(0) % 4 or packed.storage_offset() % 4:
        packed = packed.contiguous()
    return packed.view(torch.int32)


def word_args(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor) -> tuple[tuple, tuple]:
    """(pre, post) launch arguments of the kernels that read the packed weight as int32 words."""
    M, K = x.shape
    words = as_words(packed)
    return (words, scales, zeros), (M, packed.shape[0], K, *x.stride(), words.stride(0), *scales.stride())


def launch_words(kernel, x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, tiles: tuple,  # noqa: ANN001
                 **consts: object) -> Tensor:  # fmt: skip
    """launch() for the decode kernels that read the packed weight as int32 words (as_words)."""
    pre, post = word_args(x, packed, scales, zeros)
    return launch(kernel, x, pre, post, packed.shape[0], None, tiles, **consts)


def words_fit(group: int) -> bool:
    """The word kernels step through whole groups of group / 8 words, a power of two (tl.arange)."""
    return group % 8 == 0 and (group // 8) & (group // 8 - 1) == 0


def pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def reasons(checks: tuple) -> list[str]:
    """The reasons of the (failed, reason) pairs whose check failed: what a tile's why_not returns."""
    return [why for bad, why in checks if bad]


def clamp_splits(want: int, steps: int) -> int:
    """K splits: at least one, at most one per K step."""
    return max(1, min(want, steps))
