"""Focused int4 decode benchmark (runs 10-14): the Gluon kernel on weights repacked into mma fragment order
(quant_frag) against int4_matmul's default (quant_deq for 1 < M <= 16, quant_half2 at M = 1) and bf16 cuBLAS,
timed the way bench_quant times decode (CUDA-graph replay over 16 distinct weight copies, K = N = 4096,
group 128), each candidate's output checked against a float64 truth by the tests' tolerance rule in the
same run (a failing or crashing candidate is an ``error`` row and is not timed as a result).

    python -m pretrainctl_kernels.bench_quant_frag [--smoke] [--out FILE]

``--smoke`` checks the script on CPU; Gluon kernels cannot run there, so its frag rows say so.
"""

from __future__ import annotations

import sys
from dataclasses import astuple, fields
from functools import partial

import torch
from pretrainctl_kernels.bench import focused_main

# Int4Frag's fields: rt row tiles per warp, nw warps along K, u chunks per super-step, pf L2 prefetch, nwn
# warps along N, cg weights not cached in L1, d register sets in rotation. Runs 10-13 (BENCHMARKS.md) swept
# them and a cp.async variant; run 14 times the default path (frag_tile) at M = 16, 8, 4, 1 and the
# default's neighbours at M = 16 and 1 (the default itself is the default path's row).
CANDIDATES = [dict(d=5), dict(rt=2, d=3), dict(rt=2), dict(nw=8, d=3), dict(cg=True)]  # vs the default
SWEEP_M = (16, 1)  # every candidate; the other decode sizes time only the default path


def label(tile: object) -> str:
    """The tile's fields as the bench rows name them, e.g. ``frag rt1 nw4 u1 pf0 nwn1 cg0 d4``."""
    return "frag " + " ".join(f"{f.name}{int(getattr(tile, f.name))}" for f in fields(tile))


def run(smoke: bool) -> None:
    from pretrainctl_kernels.bench import Ctx, emit
    from pretrainctl_kernels.bench_quant import decode_case, measure_graph, timed_check, timed_int4
    from pretrainctl_kernels.quant import quantize_int4
    from pretrainctl_kernels.quant_frag import Int4Frag, frag_tile, int4_matmul_frag, repack_int4

    c = Ctx(smoke)
    K, N = (512, 64) if smoke else (4096, 4096)
    copies, group = (1 if smoke else 16), 128
    dt = torch.float16 if smoke else torch.bfloat16  # the interpreter computes bf16 wrongly
    ws = [torch.randn(N, K, device=c.dev, dtype=dt) for _ in range(copies)]
    q4 = [tuple(t if i == 0 else t.bfloat16() for i, t in enumerate(quantize_int4(w, group))) for w in ws]
    frags = [repack_int4(*q, group) for q in q4]  # offline, outside the timing
    skip = "Gluon kernels need a CUDA GPU (no CPU interpreter)"
    for M in (16, 8, 4, 1):
        d = decode_case(c, M, ws, q4, group)
        timed_int4(c, d.c4 + " default (no tile)", d)
        best = None
        tiles = [Int4Frag(**kw) for kw in (CANDIDATES[::4] if smoke else CANDIDATES)] if M in SWEEP_M else []
        for t in [None, *tiles]:
            case = d.c4 + (" frag default path (frag_tile)" if t is None else " " + label(t))
            if smoke:
                emit("quant", case, "gluon_int4_frag", skipped=skip)
                continue
            fns = [partial(int4_matmul_frag, d.x, w, t) for w in frags]
            ms = timed_check(c, case, "gluon_int4_frag", fns, d.ref, d.truth, d.rg)
            if ms and (best is None or ms < best[1]):
                best = (t or frag_tile(N, K, group), ms)
        if M not in SWEEP_M:
            continue
        rg2 = measure_graph(c, "quant", d.case + " (again, after the sweep)", "bf16_matmul", d.bf16)
        if best and d.rg:
            emit("quant", d.c4 + " graph, best frag tile", "ratio", speedup_vs="bf16_matmul graph",
                 tile=list(astuple(best[0])), speedup=round(d.rg / best[1], 3),
                 speedup_vs_second_bf16=round(rg2 / best[1], 3) if rg2 else None)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return focused_main("pretrainctl_kernels.bench_quant_frag", run, argv)


if __name__ == "__main__":
    sys.exit(main())
