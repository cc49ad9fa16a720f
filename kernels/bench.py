"""Kernel benchmarks against references measured in the same run.

    python -m pretrainctl_kernels.bench [--smoke] [--only attention,moe,ce,quant,fp8,norms] [--out FILE]

On a GPU, every op is timed next to its torch reference (SDPA flash / cuDNN, sort + torch._grouped_mm
and a per-expert loop, unfused linear + cross-entropy, bf16 cuBLAS and torch._scaled_mm, eager torch
norms), bf16, and reported as ms and TFLOP/s or GB/s plus our ratio to each reference. ``--smoke``
runs every path at tiny shapes on CPU through Triton's interpreter, to check the script without a GPU.
An op that fails prints its error and the rest still run. Needs only torch and triton. The quantized
GEMMs' benchmarks live in bench_quant.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable

import torch

ROWS: list[dict] = []


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pretrainctl_kernels.bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    p.add_argument("--only", default="attention,moe,ce,quant,fp8,norms", help="comma-separated subset")
    p.add_argument("--out", default=None, help="write all results as JSON here")
    return p.parse_args(argv)


class Ctx:
    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.dev = "cpu" if smoke else "cuda"
        self.dt = torch.float32 if smoke else torch.bfloat16

    def time_ms(self, fn: Callable[[], object]) -> float:
        if self.smoke:
            fn()
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=50))

    def graph_ms(self, fns: list[Callable[[], object]], reps: int = 10) -> float:
        """Per-call time of ``fns`` captured back to back in one CUDA graph and replayed: what decode
        costs once host launch overhead is gone. Each fn should use its own weight copy, so that
        together they exceed L2 the way the layers of a model do. Median of 7 timings."""
        if self.smoke:
            return self.time_ms(lambda: [f() for f in fns]) / len(fns)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile, allocate workspaces, warm up: all before capture
            for f in fns:
                f()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for f in fns:
                f()
        graph.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(7):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(reps):
                graph.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / (reps * len(fns)))
        del graph
        return sorted(times)[len(times) // 2]

    def peak_extra_gb(self, fn: Callable[[], object]) -> float | None:
        if self.smoke:
            return None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 1e9


def emit(op: str, case: str, impl: str, ms: float | None = None, flops: float | None = None,
         nbytes: float | None = None, **extra: object) -> dict:  # fmt: skip
    row: dict = {"op": op, "case": case, "impl": impl}
    if ms is not None:
        row["ms"] = round(ms, 4)
        if flops:
            row["tflops"] = round(flops / ms / 1e9, 2)
        if nbytes:
            row["gbps"] = round(nbytes / ms / 1e6, 1)
    row.update(extra)
    ROWS.append(row)
    figs = "  ".join(f"{k}={v}" for k, v in row.items() if k not in ("op", "case", "impl"))
    print(f"{op:10s} {case:34s} {impl:16s} {figs}", flush=True)
    return row


def measure(c: Ctx, op: str, case: str, impl: str, fn: Callable[[], object], **kw: object) -> float | None:
    """Time one implementation; a failure is printed as a row and does not stop the run."""
    try:
        ms = c.time_ms(fn)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot run this shape is a result
        emit(
            op,
            case,
            impl,
            error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}",
        )
        return None
    emit(op, case, impl, ms, **kw)
    return ms


def ratio(op: str, case: str, ours: float | None, ref: float | None, ref_name: str) -> None:
    if ours and ref:
        emit(op, case, "ratio", speedup_vs=ref_name, speedup=round(ref / ours, 3))


# ----------------------------------------------------------------------------------------- attention


def _attention_case(c: Ctx, name: str, B: int, HQ: int, HKV: int, T: int, DQK: int, DV: int) -> float | None:
    import torch.nn.functional as F
    from pretrainctl_kernels.attention import attention
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}
    case = f"{name} B{B} Hq{HQ} Hkv{HKV} T{T} causal"
    mk = lambda *s: torch.randn(*s, device=c.dev, dtype=c.dt, requires_grad=True)
    q, k, v = mk(B, T, HQ, DQK), mk(B, T, HKV, DQK), mk(B, T, HKV, DV)  # (B, T, H, D)
    g = torch.randn(B, T, HQ, DV, device=c.dev, dtype=c.dt)
    flops = 2 * B * HQ * T * T * (DQK + DV) * 0.5  # causal: half the score matrix
    fwd = lambda: attention(q, k, v, causal=True)
    fb = lambda: torch.autograd.grad(attention(q, k, v, causal=True), (q, k, v), g)
    o_f = measure(c, "attention", case + " fwd", "triton", fwd, flops=flops)
    o_fb = measure(c, "attention", case + " fwd+bwd", "triton", fb, flops=3.5 * flops)
    # SDPA in its native (B, H, T, D) layout, separate contiguous tensors.
    qs, ks, vs = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
    gs = g.transpose(1, 2).contiguous()
    kw = dict(is_causal=True, enable_gqa=HKV != HQ)
    for bname, be in backends.items():

        def sdpa_f(be=be):
            with sdpa_kernel(be):
                return F.scaled_dot_product_attention(qs, ks, vs, **kw)

        def sdpa_fb(be=be):
            with sdpa_kernel(be):
                return torch.autograd.grad(F.scaled_dot_product_attention(qs, ks, vs, **kw), (qs, ks, vs), gs)

        r_f = measure(c, "attention", case + " fwd", bname, sdpa_f, flops=flops)
        r_fb = measure(c, "attention", case + " fwd+bwd", bname, sdpa_fb, flops=3.5 * flops)
        ratio("attention", case + " fwd", o_f, r_f, bname)
        ratio("attention", case + " fwd+bwd", o_fb, r_fb, bname)
    return None if o_fb is None else 3.5 * flops / o_fb / 1e9  # TFLOP/s


def bench_attention(c: Ctx) -> None:
    # (name, B, Hq, Hkv, T, Dqk, Dv)
    cases = [("d128", 1, 2, 2, 128, 64, 64), ("mla", 1, 2, 1, 128, 48, 32)] if c.smoke else [
        ("d128", 4, 16, 16, 4096, 128, 128), ("mla_192_128", 4, 16, 16, 4096, 192, 128),
        ("gqa_16q_4kv", 4, 16, 4, 4096, 128, 128)]  # fmt: skip
    tflops = {}
    for case in cases:
        try:
            tflops[case[0]] = _attention_case(c, *case)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on one shape
            emit("attention", case[0], "-", error=f"{type(exc).__name__}: {exc}"[:300])
        if not c.smoke:
            torch.cuda.empty_cache()
    d128, mla = tflops.get(cases[0][0]), tflops.get(cases[1][0])
    if d128 and mla:
        emit("attention", "mla fwd+bwd TFLOP/s / our d128", "ratio", throughput_ratio=round(mla / d128, 3))


# ----------------------------------------------------------------------------------------------- moe


def bench_moe(c: Ctx) -> None:
    import torch.nn.functional as F
    from pretrainctl_kernels.moe import moe_ffn, moe_ffn_ref

    N, D, E, K, H = (256, 64, 8, 2, 32) if c.smoke else (16384, 1024, 64, 6, 512)
    case = f"N{N} d{D} E{E} top{K} h{H} fwd+bwd"
    torch.manual_seed(0)
    x = torch.randn(N, D, device=c.dev, dtype=c.dt, requires_grad=True)
    probs = (x.detach().float() @ torch.randn(D, E, device=c.dev)).softmax(-1)
    wts, idx = probs.topk(K, dim=-1)  # routing shared by every implementation, outside the timing
    wts = wts.to(c.dt)
    mk = lambda *s: (torch.randn(*s, device=c.dev, dtype=c.dt) * 0.02).requires_grad_()
    wg, wu, wd = mk(E, D, H), mk(E, D, H), mk(E, H, D)
    params = (x, wg, wu, wd)
    flops = 3 * 2 * N * K * (D * 2 * H + H * D)

    def ours():
        out = moe_ffn(x, idx, wts, wg, wu, wd)
        return torch.autograd.grad(out.sum(), params)

    def loop():
        return torch.autograd.grad(moe_ffn_ref(x, idx, wts, wg, wu, wd).sum(), params)

    w1 = torch.cat((wg, wu), dim=2).detach().requires_grad_()  # (E, D, 2H), the reference's layout

    def grouped_mm():
        flat = idx.view(-1)
        order = flat.argsort()
        offs = torch.bincount(flat, minlength=E).cumsum(0).to(torch.int32)
        xs = x[order // K]
        a, b = torch._grouped_mm(xs, w1, offs=offs).chunk(2, -1)
        y = torch._grouped_mm((F.silu(a) * b).contiguous(), wd, offs=offs) * wts.view(-1)[order, None]
        out = torch.zeros_like(x).index_add(0, order // K, y)
        return torch.autograd.grad(out.sum(), (x, w1, wd))

    o = measure(c, "moe", case, "triton", ours, flops=flops)
    r_g = measure(c, "moe", case, "sort+_grouped_mm", grouped_mm, flops=flops)
    r_l = measure(c, "moe", case, "per_expert_loop", loop, flops=flops)
    ratio("moe", case, o, r_g, "sort+_grouped_mm")
    ratio("moe", case, o, r_l, "per_expert_loop")
    _moe_parts(c, x.detach(), idx, wg.detach(), wu.detach(), wd.detach())


def _moe_parts(c: Ctx, x: torch.Tensor, idx: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor,
               wd: torch.Tensor) -> None:  # fmt: skip
    """Where moe_ffn's fwd+bwd time goes: each of its launches timed alone (torch glue not listed)."""
    from pretrainctl_kernels import moe as Mo

    (N, K), (E, D, H) = idx.shape, wg.shape
    M = N * K
    order, offsets = Mo.moe_permute(idx, E)
    gather, scatter = (order // K).to(torch.int32), order.to(torch.int32)
    plan = Mo._Plan(offsets, M, Mo.MoEBlocks())
    h, g, u = Mo._rows(plan, Mo.SWIGLU, x, wg, gather=gather, b2=wu, save_pre=True)
    dy = torch.randn(M, D, device=c.dev, dtype=c.dt)
    wgt, wut, wdt = (w.transpose(1, 2) for w in (wg, wu, wd))
    d_g, d_u = Mo._rows(plan, Mo.SWIGLU_BWD, dy, wdt, gather=scatter, pre=(g, u))
    R, P = Mo._rows, plan
    parts = {
        "routing (sort, offsets, tile list)": (lambda: Mo._Plan(Mo.moe_permute(idx, E)[1], M, P.blocks), 0),
        "fwd gate+up GEMM, SwiGLU": (lambda: R(P, Mo.SWIGLU, x, wg, gather=gather, b2=wu, save_pre=True),
                                     4 * M * D * H),
        "fwd down GEMM, scatter": (lambda: R(P, Mo.PLAIN, h, wd, scatter=scatter), 2 * M * H * D),
        "bwd d_act GEMM, SwiGLU bwd": (lambda: R(P, Mo.SWIGLU_BWD, dy, wdt, gather=scatter, pre=(g, u)),
                                       2 * M * D * H),
        "bwd dx dual GEMM": (lambda: R(P, Mo.DUAL, d_g, wgt, a2=d_u, b2=wut, scatter=scatter), 4 * M * H * D),
        "bwd dW gate+up": (lambda: Mo._wgrad(P, x, d_g, gather_a=gather, g2=d_u), 4 * M * D * H),
        "bwd dW down": (lambda: Mo._wgrad(P, h, dy, gather_g=scatter), 2 * M * H * D),
    }  # fmt: skip
    for name, (fn, flops) in parts.items():
        measure(c, "moe", f"part: {name}", "triton", fn, flops=flops or None)


# -------------------------------------------------------------------------------------------- losses


def bench_ce(c: Ctx) -> None:
    import torch.nn.functional as F
    from pretrainctl_kernels.losses import linear_cross_entropy

    N, D, V = (256, 64, 1000) if c.smoke else (16384, 2048, 128256)
    case = f"N{N} d{D} V{V} fwd+bwd"
    h = torch.randn(N, D, device=c.dev, dtype=c.dt, requires_grad=True)
    w = (torch.randn(V, D, device=c.dev, dtype=c.dt) * 0.02).requires_grad_()
    y = torch.randint(0, V, (N,), device=c.dev)
    flops = 3 * 2 * N * D * V
    fused = lambda: torch.autograd.grad(linear_cross_entropy(h, w, y, reduction="mean"), (h, w))
    unfused = lambda: torch.autograd.grad(F.cross_entropy((h @ w.t()).float(), y), (h, w))
    mem_f, mem_u = c.peak_extra_gb(fused), c.peak_extra_gb(unfused)
    o = measure(c, "linear_ce", case, "triton_fused", fused, flops=flops, peak_extra_gb=mem_f)
    r = measure(c, "linear_ce", case, "unfused", unfused, flops=flops, peak_extra_gb=mem_u)
    ratio("linear_ce", case, o, r, "unfused")
    if mem_f is not None and mem_u:
        emit("linear_ce", case, "ratio", memory_fraction_of_unfused=round(mem_f / mem_u, 4))


# --------------------------------------------------------------------------------------------- quant


def bench_quant(c: Ctx) -> None:
    from pretrainctl_kernels.bench_quant import bench_quant as run

    run(c)


def bench_fp8(c: Ctx) -> None:
    from pretrainctl_kernels.bench_quant import bench_fp8 as run

    run(c)


# --------------------------------------------------------------------------------------------- norms


def bench_norms(c: Ctx) -> None:
    from pretrainctl_kernels import norms

    N, D = (64, 96) if c.smoke else (16384, 2048)
    x = torch.randn(N, D, device=c.dev, dtype=c.dt, requires_grad=True)
    wt = torch.ones(D, device=c.dev, dtype=c.dt, requires_grad=True)
    g = torch.randn_like(x)
    nbytes = 2 * 2 * N * D * x.element_size()  # fwd read + write, bwd read x, g + write dx (approx.)
    case = f"rmsnorm N{N} D{D} fwd+bwd"
    fb = lambda fn: torch.autograd.grad(fn(x, wt), (x, wt), g)
    o = measure(c, "norms", case, "triton", lambda: fb(norms.rms_norm), nbytes=nbytes)
    r = measure(c, "norms", case, "torch_eager", lambda: fb(norms.rms_norm_ref), nbytes=nbytes)
    ratio("norms", case, o, r, "torch_eager")


BENCHES: dict[str, Callable[[Ctx], None]] = {
    "attention": bench_attention, "moe": bench_moe, "ce": bench_ce, "quant": bench_quant, "fp8": bench_fp8,
    "norms": bench_norms,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    warnings.filterwarnings("ignore", category=UserWarning)  # SDPA explains each backend refusal twice
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module defines its @triton.jit functions
    elif not torch.cuda.is_available():
        print("no CUDA GPU here; use --smoke to check the script on CPU", file=sys.stderr)
        return 2
    import triton

    c = Ctx(args.smoke)
    env = {"device": "cpu (interpreter)" if args.smoke else torch.cuda.get_device_name(),
           "torch": torch.__version__, "triton": triton.__version__, "dtype": str(c.dt)}  # fmt: skip
    print(json.dumps(env), flush=True)
    failed = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHES:
            print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        try:
            BENCHES[name](c)
        except Exception as exc:  # noqa: BLE001 - one failing op must not stop the others
            failed.append(name)
            traceback.print_exc()
            emit(name, "-", "-", error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            if not args.smoke:
                torch.cuda.empty_cache()
        print(f"# {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "results": ROWS}, f, indent=1)
    return 1 if failed else 0


def focused_main(prog: str, run: Callable[[bool], None], argv: list[str] | None = None) -> int:
    """The command line of a focused benchmark (bench_quant_h2, _deq, _xres): ``run(smoke)`` emits rows;
    prints the device line first and writes the rows to ``--out`` as JSON."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module defines its @triton.jit functions
    elif not torch.cuda.is_available():
        print("no CUDA GPU here; use --smoke to check the script on CPU", file=sys.stderr)
        return 2
    import triton

    dev = "cpu (interpreter)" if args.smoke else torch.cuda.get_device_name()
    print(json.dumps({"device": dev, "torch": torch.__version__, "triton": triton.__version__}), flush=True)
    run(args.smoke)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(ROWS, f, indent=1)
    return 0


if __name__ == "__main__":
    # bench_quant and friends import this module by name: let them share this run's ROWS (else their
    # rows would go to a second copy of the module and be missing from --out).
    sys.modules.setdefault("pretrainctl_kernels.bench", sys.modules[__name__])
    sys.exit(main())
