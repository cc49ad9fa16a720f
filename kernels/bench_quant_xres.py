"""Focused int4 decode benchmark (run 7): the M == 1 GEMV with x resident in registers
(quant_gemv._int4_xres) against the current default and bf16 cuBLAS, timed the way bench_quant times
decode (CUDA-graph replay over 16 distinct weight copies, K = N = 4096, group 128), with each
candidate's output checked against a float64 truth by the tests' tolerance rule in the same run.

    python -m pretrainctl_kernels.bench_quant_xres [--smoke] [--out FILE]
"""

from __future__ import annotations

import sys

import torch
from pretrainctl_kernels.bench import focused_main

# (BN rows per program, K splits, warps, rows per step, stages, zin): quant.Int4Xres's fields.
T, F = True, False
XRES_CANDIDATES = [
    (16, 1, 4, 4, 2, T), (16, 1, 4, 4, 2, F), (16, 1, 4, 4, 3, F), (16, 1, 4, 4, 1, F),
    (8, 1, 4, 4, 2, T), (8, 1, 4, 2, 2, T), (16, 1, 4, 2, 2, T), (16, 1, 8, 4, 2, T),
    (32, 1, 8, 4, 2, T), (32, 1, 4, 4, 2, T), (32, 2, 4, 4, 2, T), (64, 4, 4, 8, 2, T),
]  # fmt: skip


def run(smoke: bool) -> None:
    from pretrainctl_kernels.bench import Ctx, emit
    from pretrainctl_kernels.bench_quant import decode_case, measure_graph, timed_int4
    from pretrainctl_kernels.quant import Int4Xres, quantize_int4

    c = Ctx(smoke)
    K = N = 256 if smoke else 4096
    copies, group = (2 if smoke else 16), 128
    ws = [torch.randn(N, K, device=c.dev, dtype=c.dt) for _ in range(copies)]
    q4 = [quantize_int4(w, group) for w in ws]
    for M in (1, 16):
        d = decode_case(c, M, ws, q4, group)
        timed_int4(c, d.c4 + " default", d)
        if M != 1:
            continue
        best = None
        for tile in XRES_CANDIDATES[:2] if smoke else XRES_CANDIDATES:
            bn, split, warps, rows, stages, zin = tile
            name = f" xres bn{bn} split{split} w{warps} r{rows} st{stages}" + (" zin" if zin else "")
            ms = timed_int4(c, d.c4 + name, d, tile=Int4Xres(*tile))
            if ms and (best is None or ms < best[1]):
                best = (name.strip(), ms)
        rg2 = measure_graph(c, "quant", d.case + " (again, after the sweep)", "bf16_matmul", d.bf16)
        if best and d.rg:
            again = round(rg2 / best[1], 3) if rg2 else None
            emit("quant", d.c4 + " graph, best xres tile", "ratio", speedup_vs="bf16_matmul graph",
                 tile=best[0], speedup=round(d.rg / best[1], 3), speedup_vs_second_bf16=again)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return focused_main("pretrainctl_kernels.bench_quant_xres", run, argv)


if __name__ == "__main__":
    sys.exit(main())
