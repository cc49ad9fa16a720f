"""Focused int4 decode benchmark (run 8): the M == 1 GEMV in packed fp16x2 PTX arithmetic
(quant_half2._int4_h2) against the current default and bf16 cuBLAS, timed the way bench_quant times
decode (CUDA-graph replay over 16 distinct weight copies, K = N = 4096, group 128), each candidate's
output checked against a float64 truth by the tests' tolerance rule in the same run. Each candidate
fails on its own (compile or launch errors become an ``error`` row).

    python -m pretrainctl_kernels.bench_quant_h2 [--smoke] [--out FILE]
"""

from __future__ import annotations

import sys

import torch
from pretrainctl_kernels.bench import focused_main

# (BN rows per program, K splits, warps, groups per step, loop stages, hacc): quant.Int4Half2's fields.
H2_CANDIDATES = [
    (16, 1, 4, 16, 2, 0), (16, 1, 4, 16, 2, 1), (16, 1, 4, 8, 2, 0), (16, 1, 4, 8, 2, 1),
    (32, 1, 8, 16, 2, 0), (32, 1, 8, 16, 2, 1), (32, 1, 4, 8, 2, 0), (16, 1, 4, 16, 1, 0),
    (8, 1, 4, 16, 2, 0), (16, 2, 4, 8, 2, 0), (16, 1, 8, 16, 2, 0), (8, 1, 4, 8, 2, 0),
    (16, 1, 4, 8, 1, 1), (8, 1, 2, 8, 2, 1), (16, 1, 2, 8, 2, 1), (8, 1, 4, 8, 2, 1), (16, 1, 4, 4, 2, 1),
]  # fmt: skip


def run(smoke: bool) -> None:
    from pretrainctl_kernels.bench import Ctx, emit
    from pretrainctl_kernels.bench_quant import decode_case, measure_graph, timed_int4
    from pretrainctl_kernels.quant import Int4Half2, Int4Words, quantize_int4

    c = Ctx(smoke)
    K, N = (256, 32) if smoke else (4096, 4096)
    copies, group = (1 if smoke else 16), 128
    dt = torch.float16 if smoke else c.dt  # the interpreter computes bf16 wrongly; fp16 checks the script
    ws = [torch.randn(N, K, device=c.dev, dtype=dt) for _ in range(copies)]
    q4 = [quantize_int4(w, group) for w in ws]
    for M in (1,) if smoke else (1, 16):  # the smoke run checks the script (the M = 16 kernel is slow there)
        d = decode_case(c, M, ws, q4, group)
        timed_int4(c, d.c4 + " run-6 word kernel (Int4Words)", d, tile=Int4Words())
        if M != 1:
            continue
        timed_int4(c, d.c4 + " default (no tile)", d)
        best = None
        for tile in H2_CANDIDATES[:2] if smoke else H2_CANDIDATES:
            name = " half2 bn{} split{} w{} gb{} st{} hacc{}".format(*tile)
            ms = timed_int4(c, d.c4 + name, d, tile=Int4Half2(*tile))
            if ms and (best is None or ms < best[1]):
                best = (name.strip(), ms)
        rg2 = measure_graph(c, "quant", d.case + " (again, after the sweep)", "bf16_matmul", d.bf16)
        if best and d.rg:
            again = round(rg2 / best[1], 3) if rg2 else None
            emit("quant", d.c4 + " graph, best half2 tile", "ratio", speedup_vs="bf16_matmul graph",
                 tile=best[0], speedup=round(d.rg / best[1], 3), speedup_vs_second_bf16=again)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return focused_main("pretrainctl_kernels.bench_quant_h2", run, argv)


if __name__ == "__main__":
    sys.exit(main())
