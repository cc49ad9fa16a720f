"""Focused int4 decode benchmark (run 9): the M <= 16 GEMM on weights dequantized in registers with
several groups per dot (quant_deq._int4_deq) against the current default and bf16 cuBLAS, timed the way
bench_quant times decode (CUDA-graph replay over 16 distinct weight copies, K = N = 4096, group 128),
each candidate's output checked against a float64 truth by the tests' tolerance rule in the same run.
Each candidate fails on its own (compile or launch errors become an ``error`` row). After the sweep the
best passing tile is timed once more through ``int4_matmul``'s default path (put first in quant.INT4_M16
in this process only), and M = 1's default is re-timed against bf16.

    python -m pretrainctl_kernels.bench_quant_deq [--smoke] [--out FILE]
"""

from __future__ import annotations

import sys
from functools import partial

import torch
from pretrainctl_kernels.bench import focused_main

# (BN rows per program, K splits, warps, groups per dot, loop stages, swap, order, pipe, two_pass):
# quant.Int4Deq's fields.
T, F = True, False
DEQ_CANDIDATES = [
    (64, 8, 4, 1, 2, T, 1, 1, F), (64, 8, 8, 1, 2, T, 1, 1, F), (64, 16, 8, 1, 2, T, 1, 1, F),
    (64, 4, 8, 1, 2, T, 1, 1, F), (64, 8, 8, 2, 2, T, 1, 1, F), (64, 4, 8, 2, 2, T, 1, 1, F),
    (64, 8, 4, 1, 2, T, 1, 1, T),
]  # fmt: skip


def _diag_launch(x, packed, scales, zeros, group: int, diag: int, tile):  # noqa: ANN001, ANN202
    from pretrainctl_kernels.quant_deq import _int4_deq
    from pretrainctl_kernels.quant_launch import launch_words

    tiles, consts = tile.consts(x, scales, group)
    return launch_words(_int4_deq, x, packed, scales, zeros, tiles, DIAG=diag, **consts)


def _diagnostics(c, c4: str, x, q4: list, group: int) -> None:  # noqa: ANN001
    """Where the time goes (timing only, wrong results): the default deq tile without its split-K fix-up
    (every split stores its partial), without its unpacking arithmetic, without its weight loads; and a
    launch that only writes the output."""
    from pretrainctl_kernels.bench_quant import measure_graph
    from pretrainctl_kernels.bench_quant_floor import write_only
    from pretrainctl_kernels.quant import Int4Deq

    tile = Int4Deq()
    for diag, what in ((1, "no split-K fix-up"), (2, "no unpacking arithmetic"), (3, "no weight loads")):
        fns = [partial(_diag_launch, x, *t, group, diag, tile) for t in q4]
        measure_graph(c, "quant", c4 + f" deq default tile, {what}", "triton_int4 diag", fns)
    out = torch.empty_like(x[:, : q4[0][0].shape[0]])
    measure_graph(c, "quant", c4 + " floor", "triton_write_only", [partial(write_only, out)] * len(q4))


def run(smoke: bool) -> None:
    from pretrainctl_kernels import quant
    from pretrainctl_kernels.bench import Ctx, emit
    from pretrainctl_kernels.bench_quant import decode_case, measure_graph, timed_int4
    from pretrainctl_kernels.quant import Int4Deq, Int4Words, quantize_int4

    c = Ctx(smoke)
    K, N = (256, 128) if smoke else (4096, 4096)
    copies, group = (1 if smoke else 16), 128
    dt = torch.float16 if smoke else c.dt  # the interpreter computes bf16 wrongly; fp16 checks the script
    ws = [torch.randn(N, K, device=c.dev, dtype=dt) for _ in range(copies)]
    q4 = [quantize_int4(w, group) for w in ws]
    for M in (16, 1):
        d = decode_case(c, M, ws, q4, group)
        x, case, c4, bf16, rg = d.x, d.case, d.c4, d.bf16, d.rg
        timed_int4(c, c4 + " default (no tile)", d)
        if M == 1:
            continue
        timed_int4(c, c4 + " word kernel (run-6 M = 16 default)", d, tile=Int4Words())
        best = None
        for tile in DEQ_CANDIDATES[:2] if smoke else DEQ_CANDIDATES:
            name = " deq bn{} split{} w{} gb{} st{} swap{:d} ord{} pipe{} two{:d}".format(*tile)
            ms = timed_int4(c, c4 + name, d, tile=Int4Deq(*tile))
            if ms and (best is None or ms < best[1]):
                best = (tile, ms)
        _diagnostics(c, c4, x, q4, group)
        rg2 = measure_graph(c, "quant", case + " (again, after the sweep)", "bf16_matmul", bf16)
        if best is None:
            continue
        emit("quant", c4 + " graph, best deq tile", "ratio", speedup_vs="bf16_matmul graph",
             tile=list(best[0]), speedup=round(rg / best[1], 3) if rg else None,
             speedup_vs_second_bf16=round(rg2 / best[1], 3) if rg2 else None)  # fmt: skip
        saved = quant.INT4_M16
        quant.INT4_M16 = (Int4Deq(*best[0]), *saved)
        try:
            timed_int4(c, c4 + " default with the best deq tile (quant.INT4_M16)", d)
        finally:
            quant.INT4_M16 = saved


def main(argv: list[str] | None = None) -> int:
    return focused_main("pretrainctl_kernels.bench_quant_deq", run, argv)


if __name__ == "__main__":
    sys.exit(main())
