"""Floor kernels for the decode benchmarks (bench_quant._floors): what one graph-replayed launch costs
with no arithmetic -- writing the output only, and streaming a packed weight's int32 words."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_only(O, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(O + offs, tl.zeros([BLOCK], dtype=O.dtype.element_ty), mask=offs < numel)


@triton.jit
def _read_rows(P, O, N, KW, s_pn, BN: tl.constexpr, BKW: tl.constexpr, STAGES: tl.constexpr):
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BKW)
    acc = tl.zeros([BN, BKW], dtype=tl.int32)
    for k0 in tl.range(0, KW, BKW, num_stages=STAGES):
        rkk = k0 + rk
        mask = (rn[:, None] < N) & (rkk < KW)[None, :]
        acc += tl.load(P + rn[:, None] * s_pn + rkk[None, :], mask=mask, other=0)
    tl.store(O + rn, tl.sum(acc, 1), mask=rn < N)


def write_only(out: torch.Tensor) -> torch.Tensor:
    """Zeros into ``out`` with 128 programs: a launch that moves no weight bytes."""
    block = triton.next_power_of_2(max(1, triton.cdiv(out.numel(), 128)))
    _write_only[(triton.cdiv(out.numel(), block),)](out, out.numel(), BLOCK=block, num_warps=4)
    return out


def read_rows(words: torch.Tensor, bn: int, bkw: int, stages: int) -> torch.Tensor:
    """Row sums of (N, KW) int32 words: every byte read once, BN rows per program, BKW words per step."""
    N, KW = words.shape
    out = torch.empty(N, device=words.device, dtype=torch.int32)
    _read_rows[(triton.cdiv(N, bn),)](words, out, N, KW, words.stride(0), BN=bn, BKW=bkw, STAGES=stages,
                                      num_warps=4)  # fmt: skip
    return out


def gemv_diag(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int,
              diag: int, tile: tuple) -> torch.Tensor:  # fmt: skip
    """quant's int4 float32 GEMV (M == 1) with a timing diagnostic: diag 1 keeps every load and drops
    the arithmetic, 2 keeps the arithmetic on made-up words and drops the weight loads. tile: in
    quant.Int4Words' field order (BN, K splits, warps, groups per step, stages, ...)."""
    from pretrainctl_kernels.quant_launch import clamp_splits, launch_words
    from pretrainctl_kernels.quant_words import _int4_words

    bn, split, warps, gb, stages = tile[:5]
    tiles = (1, bn, clamp_splits(split, x.shape[1] // group // gb), warps, True)
    return launch_words(_int4_words, x, packed, scales, zeros, tiles, GROUP=group, GB=gb, STAGES=stages,
                        SWAP=False, CODES=0, DIAG=diag)  # fmt: skip
