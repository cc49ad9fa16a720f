"""Focused int4 decode benchmark (run 10): the Gluon kernel on weights repacked into mma fragment order
(quant_frag) against the current default (quant_deq at M = 16, quant_half2 at M = 1) and bf16 cuBLAS,
timed the way bench_quant times decode (CUDA-graph replay over 16 distinct weight copies, K = N = 4096,
group 128), each candidate's output checked against a float64 truth by the tests' tolerance rule in the
same run (a failing or crashing candidate is an ``error`` row and is not timed as a result).

    python -m pretrainctl_kernels.bench_quant_frag [--smoke] [--out FILE]

``--smoke`` checks the script on CPU; Gluon kernels cannot run there, so its frag rows say so.
"""

from __future__ import annotations

import sys
from functools import partial

import torch
from pretrainctl_kernels.bench import focused_main

# (kind, fields): "frag" quant_frag.Int4Frag (rt row tiles per warp, nw warps along K, u chunks per
# super-step, pf L2 prefetch, nwn warps along N, cg weights not cached in L1, d register sets in rotation);
# "cp" quant_frag_async.Int4FragCp (rt, nw, s ring slots). Run 10: pf=True slower everywhere, rt2 nw8 u1 pf0
# best (9.1 us at M = 16). Run 11: rt1 nw8 u1 pf0 best (8.9 us), the cp.async ring slower (11.4 us at best).
# Run 12: neither nwn = 2 nor cg helped. Run 13: d = 4 register sets with 4 warps, 7.8 us (now the default).
# Run 14: the default path (frag_tile) at M = 16, 8, 4, 1 and the neighbours of the default at M = 16, 1.
T, F = True, False
CANDIDATES = [
    ("frag", (1, 4, 1, F, 1, F, 4)), ("frag", (1, 4, 1, F, 1, F, 5)), ("frag", (2, 4, 1, F, 1, F, 3)),
    ("frag", (2, 4, 1, F, 1, F, 4)), ("frag", (1, 8, 1, F, 1, F, 3)), ("frag", (1, 4, 1, F, 1, T, 4)),
]  # fmt: skip
SWEEP_M = (16, 1)  # every candidate; the other decode sizes time only the default path
_NAMES = {"frag": "rt{} nw{} u{} pf{:d} nwn{} cg{:d} d{}", "cp": "rt{} nw{} s{}"}


def label(kind: str, fields: tuple) -> str:
    return f"{kind} " + _NAMES[kind].format(*fields)


def run(smoke: bool) -> None:
    from pretrainctl_kernels.bench import Ctx, emit
    from pretrainctl_kernels.bench_quant import decode_case, measure_graph, timed_check, timed_int4
    from pretrainctl_kernels.quant import quantize_int4
    from pretrainctl_kernels.quant_frag import Int4Frag, int4_matmul_frag, repack_int4
    from pretrainctl_kernels.quant_frag_async import Int4FragCp, int4_matmul_frag_cp

    kernels = {"frag": (Int4Frag, int4_matmul_frag), "cp": (Int4FragCp, int4_matmul_frag_cp)}
    c = Ctx(smoke)
    K, N = (512, 64) if smoke else (4096, 4096)
    copies, group = (1 if smoke else 16), 128
    dt = torch.float16 if smoke else torch.bfloat16  # the interpreter computes bf16 wrongly
    ws = [torch.randn(N, K, device=c.dev, dtype=dt) for _ in range(copies)]
    q4 = [tuple(t if i == 0 else t.bfloat16() for i, t in enumerate(quantize_int4(w, group))) for w in ws]
    frags = [repack_int4(*q, group) for q in q4]  # offline, outside the timing
    for M in (16, 8, 4, 1):
        d = decode_case(c, M, ws, q4, group)
        timed_int4(c, d.c4 + " default (no tile)", d)
        case = d.c4 + " frag default path (frag_tile)"
        if smoke:
            emit(
                "quant", case, "gluon_int4_frag", skipped="Gluon kernels need a CUDA GPU (no CPU interpreter)"
            )
        else:
            fns = [partial(int4_matmul_frag, d.x, w) for w in frags]
            timed_check(c, case, "gluon_int4_frag", fns, d.ref, d.truth, d.rg)
        if M not in SWEEP_M:
            continue
        best: dict = {}
        for kind, t in CANDIDATES[::4] if smoke else CANDIDATES:
            case = d.c4 + " " + label(kind, t)
            if smoke:
                emit(
                    "quant",
                    case,
                    f"gluon_int4_{kind}",
                    skipped="Gluon kernels need a CUDA GPU (no CPU interpreter)",
                )
                continue
            tile_type, fn = kernels[kind]
            fns = [partial(fn, d.x, w, tile_type(*t)) for w in frags]
            ms = timed_check(c, case, f"gluon_int4_{kind}", fns, d.ref, d.truth, d.rg)
            if ms and (kind not in best or ms < best[kind][1]):
                best[kind] = (t, ms)
        rg2 = measure_graph(c, "quant", d.case + " (again, after the sweep)", "bf16_matmul", d.bf16)
        for kind, (t, ms) in best.items():
            if d.rg:
                emit("quant", d.c4 + f" graph, best {kind} tile", "ratio", speedup_vs="bf16_matmul graph",
                     tile=list(t), speedup=round(d.rg / ms, 3),
                     speedup_vs_second_bf16=round(rg2 / ms, 3) if rg2 else None)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return focused_main("pretrainctl_kernels.bench_quant_frag", run, argv)


if __name__ == "__main__":
    sys.exit(main())
