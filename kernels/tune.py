"""One-shot launch-table sweep on a GPU, then the benchmark with the winners in place.

    python -m pretrainctl_kernels.tune [--only attention,quant,moe] [--budget-s 240] [--bench-out F]

Times a few candidate tile shapes per kernel (attention forward, dK/dV and dQ for the D128 and MLA
shapes; int4/int8 decode GEMM; the MoE grouped GEMMs), checks the winners against references, prints
the best of each as a table entry, writes it into this process's tables and then runs
``pretrainctl_kernels.bench`` so the benchmark numbers are those of the printed entries. The tables
in attention.py, quant.py and moe.py are then updated by hand from the printout: nothing is tuned
at run time. Stops sweeping (keeping the defaults) once ``--budget-s`` is spent.
"""

from __future__ import annotations

import argparse
import time

import torch

T0 = time.perf_counter()


def _ms(fn, rep: int = 25) -> float:  # noqa: ANN001
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=5, rep=rep))


def _sweep(name: str, cands: list, run) -> tuple | None:  # noqa: ANN001
    """Time run(cfg) per candidate; failures (e.g. out of shared memory) are printed and skipped."""
    best = None
    for cfg in cands:
        try:
            ms = run(cfg)
        except Exception as exc:  # noqa: BLE001 - a config that cannot compile is a result
            print(f"  {name:28s} {cfg!s:26s} error {type(exc).__name__}: {str(exc)[:90]}", flush=True)
            continue
        print(f"  {name:28s} {cfg!s:26s} {ms:8.4f} ms", flush=True)
        if best is None or ms < best[1]:
            best = (cfg, ms)
    if best:
        print(f"BEST {name:28s} {best[0]} {best[1]:.4f} ms", flush=True)
    return best[0] if best else None


ATTN = {  # width class -> (shape, fwd, dkdv, dq candidates); the first of each is the current default
    128: (
        (4, 16, 16, 4096, 128, 128),
        [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2)],
        [(64, 128, 8, 3), (32, 128, 4, 3), (64, 128, 8, 2), (32, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3)],
        [(128, 64, 8, 3), (128, 32, 4, 3), (128, 64, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 4, 4)],
    ),
    192: (
        (4, 16, 16, 4096, 192, 128),
        [(128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3)],
        [(32, 64, 4, 3), (64, 64, 8, 2), (32, 64, 4, 2), (32, 128, 8, 2), (16, 64, 4, 3)],
        [(64, 32, 4, 3), (128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 8, 3), (64, 64, 8, 3)],
    ),
}


def tune_attention(budget: float) -> None:
    from pretrainctl_kernels import attention as A

    for width in ATTN:
        _tune_attention_width(A, width, budget)
        torch.cuda.empty_cache()


def _tune_attention_width(A, width: int, budget: float) -> None:  # noqa: ANN001, N803
    shape, c_fwd, c_kv, c_q = ATTN[width]
    B, H, HKV, T, DQK, DV = shape
    mk = lambda *s: torch.randn(*s, device="cuda", dtype=torch.bfloat16)  # noqa: E731
    q, k, v, do = mk(B, T, H, DQK), mk(B, T, HKV, DQK), mk(B, T, HKV, DV), mk(B, T, H, DV)
    scale = DQK**-0.5
    print(f"attention width {width}: B{B} H{H} T{T} dqk {DQK} dv {DV}", flush=True)
    o, lse = A._attn_forward(q, k, v, True, None, None, scale, A.AttentionBlocks())
    fwd = lambda c: _ms(lambda: A._attn_forward(q, k, v, True, None, None, scale, A.AttentionBlocks(*c)))  # noqa: E731

    def bwd(which: str, kv=None, qc=None):  # noqa: ANN001, ANN202
        blocks = A.AttentionBlocks(bwd_kv=kv, bwd_q=qc)
        return _ms(lambda: A._attn_backward(do, q, k, v, o, lse, True, None, None, scale, blocks, which))

    picks = {}
    for tag, table, cands, run in (
        ("dkdv", A._BWD_KV, c_kv, lambda c: bwd("dkdv", kv=c)),
        ("dq", A._BWD_Q, c_q, lambda c: bwd("dq", qc=c)),
        ("fwd", A._FWD, c_fwd, fwd),
    ):
        if time.perf_counter() - T0 > budget:
            print(f"  budget spent: {tag} keeps {table[width]}", flush=True)
            continue
        best = _sweep(f"attn{width} {tag}", cands, run)
        if best:
            picks[tag] = (table, best)
    for table, best in picks.values():
        table[width] = best
    # The winners together, against SDPA on the same inputs (gradients compared, not only timed).
    qs, ks, vs = (x.detach().requires_grad_() for x in (q, k, v))
    out = A.attention(qs, ks, vs, causal=True)
    ours = (out, *torch.autograd.grad(out, (qs, ks, vs), do))
    xt = [x.transpose(1, 2).detach().requires_grad_() for x in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*xt, is_causal=True, enable_gqa=HKV != H)
    ref = (
        ref.transpose(1, 2),
        *(g.transpose(1, 2) for g in torch.autograd.grad(ref, xt, do.transpose(1, 2))),
    )
    errs = [((a.float() - r.float()).norm() / r.float().norm()).item() for a, r in zip(ours, ref)]
    print(f"CHECK attn{width} rel err vs sdpa out/dq/dk/dv: " + " ".join(f"{e:.2e}" for e in errs))
    print(f"TABLE attn{width}: _FWD {A._FWD[width]} _BWD_KV {A._BWD_KV[width]} _BWD_Q {A._BWD_Q[width]}")


QUANT = [
    (128, 16, 8),
    (32, 8, 4),
    (64, 16, 8),
    (128, 8, 8),
    (32, 16, 4),
    (128, 32, 8),
    (64, 8, 8),
    (32, 4, 4),
]


def tune_quant(budget: float) -> None:
    from pretrainctl_kernels import quant as Q

    K = N = 4096
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    packed, scales, zeros = Q.quantize_int4(w, 128)
    q8, s8 = Q.quantize_int8(w)
    for M, mode in ((1, "gemv"), (16, "mma")):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        print(f"quant M{M}: bf16 matmul {_ms(lambda x=x: x @ w.t()):.4f} ms", flush=True)
        ops = {
            "int4": (lambda c, x=x: Q.int4_matmul(x, packed, scales, zeros, 128,  # DECODE: the byte kernel
                                                  tile=Q.Int4Bytes(bn=c[0], split=c[1], warps=c[2])),
                     Q.int4_matmul_ref(x, packed, scales, zeros, 128)),
            "int8": (lambda c, x=x: Q.int8_matmul(x, q8, s8, bn=c[0], split_k=c[1], num_warps=c[2]),
                     Q.int8_matmul_ref(x, q8, s8)),
        }  # fmt: skip
        for kind, (fn, ref) in ops.items():
            if time.perf_counter() - T0 > budget:
                continue

            def run(c, fn=fn, ref=ref):  # noqa: ANN001, ANN202
                err = ((fn(c).float() - ref.float()).norm() / ref.float().norm()).item()
                if not err < 2e-2:
                    raise ValueError(f"rel err {err:.3g}")
                return _ms(lambda: fn(c))

            best = _sweep(f"{kind} M{M} {mode}", QUANT, run)
            if best:
                Q.DECODE[f"{kind}_{mode}"] = best
    print(f"TABLE quant DECODE = {Q.DECODE}", flush=True)


MOE = [  # the current default first
    (128, 128, 64, 8, 3),
    (128, 128, 32, 8, 4),
    (128, 64, 64, 8, 3),
    (64, 128, 64, 4, 3),
    (128, 128, 32, 8, 3),
]


def tune_moe(budget: float) -> None:
    from pretrainctl_kernels import moe as Mo

    N, D, E, K, H = 16384, 1024, 64, 6, 512
    x = torch.randn(N, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    wts, idx = (x.detach().float() @ torch.randn(D, E, device="cuda")).softmax(-1).topk(K, dim=-1)
    wts = wts.to(torch.bfloat16)
    mk = lambda *s: (torch.randn(*s, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()  # noqa: E731
    params = (x, mk(E, D, H), mk(E, D, H), mk(E, H, D))

    def run(c):  # noqa: ANN001, ANN202
        blocks = Mo.MoEBlocks(*c)
        return _ms(lambda: torch.autograd.grad(Mo.moe_ffn(x, idx, wts, *params[1:], blocks).sum(), params))

    if time.perf_counter() - T0 < budget:
        best = _sweep("moe fwd+bwd", MOE, run)
        if best:
            Mo.MoEBlocks.DEFAULT = best
    print(f"TABLE moe MoEBlocks.DEFAULT = {Mo.MoEBlocks.DEFAULT}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m pretrainctl_kernels.tune")
    p.add_argument("--only", default="attention,quant,moe")
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--bench-out", default=None, help="then run the benchmark with the winners, JSON here")
    p.add_argument("--bench-only", default="attention,moe,ce,quant,norms")
    args = p.parse_args()
    tuners = {"attention": tune_attention, "quant": tune_quant, "moe": tune_moe}
    for name in args.only.split(","):
        try:
            tuners[name](args.budget_s)
        except Exception as exc:  # noqa: BLE001 - keep going to the benchmark
            print(f"tune {name} failed: {type(exc).__name__}: {exc}", flush=True)
        torch.cuda.empty_cache()
    print(f"# sweep: {time.perf_counter() - T0:.1f} s", flush=True)
    if args.bench_out:
        from pretrainctl_kernels import bench

        return bench.main(["--only", args.bench_only, "--out", args.bench_out])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
