"""Benchmarks of the quantized GEMMs (int4 / int8 weight-only decode, fp8 row-wise scaled), run by
``python -m pretrainctl_kernels.bench --only quant,fp8``; see bench.py for the row format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from pretrainctl_kernels.bench import Ctx, emit, measure, ratio


def measure_graph(c: Ctx, op: str, case: str, impl: str, fns: list[Callable[[], object]],
                  **kw: object) -> float | None:  # fmt: skip
    """As bench.measure, timed by CUDA-graph replay (Ctx.graph_ms)."""
    try:
        ms = c.graph_ms(fns)
    except Exception as exc:  # noqa: BLE001 - a failing configuration is a result, as in measure()
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        emit(op, case, impl, error=f"{type(exc).__name__}: {first}")
        return None
    emit(op, case, impl, ms, timing="cuda_graph", **kw)
    return ms


# Decode tiles timed in the same run, graph-replayed, for int4 (K = N = 4096, group 128): the word
# kernel's (BN, K splits, warps, groups per step, loop stages, swap, asm, vec) (quant.Int4Words' fields),
# the vec ones (float32 GEMV) at M = 1 only; then the byte kernel (_int4_mm) with run 5d's tiles (BN, K
# splits, warps, join) for comparison.
T, F = True, False
WORDS_CANDIDATES = [
    (16, 1, 4, 16, 2, F, F, T), (32, 1, 8, 16, 2, F, F, T), (8, 1, 4, 16, 2, F, F, T),
    (16, 1, 4, 8, 2, F, F, T), (8, 1, 2, 16, 2, F, F, T), (16, 1, 4, 32, 1, F, F, T),
    (16, 1, 4, 16, 1, F, F, T), (8, 1, 4, 32, 1, F, F, T), (8, 1, 4, 8, 2, F, F, T),
    (16, 1, 8, 16, 2, F, F, T), (128, 16, 8, 2, 1, F, F, T),
    (64, 8, 4, 1, 2, T, T, F), (128, 8, 8, 1, 2, T, T, F), (64, 4, 4, 1, 2, T, T, F),
    (128, 8, 4, 1, 2, F, T, F),
]  # fmt: skip
BYTES_TILES = {1: [(256, 16, 8, False)], 16: [(64, 8, 4, True)]}


def truth_check(ours: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor) -> dict:
    """tests/kernels/_tol.py's rule: error to the float64 truth <= 2x the bf16 reference's + 2e-2 scale.
    The mean errors show what the max (set by the bf16 rounding of the largest outputs) can hide."""
    scale = max(1.0, truth.abs().max().item())
    d, dr = (ours.double() - truth).abs(), (ref.double() - truth).abs()
    err, ref_err = d.max().item(), dr.max().item()
    return {"max_err": float(f"{err:.3g}"), "ref_err": float(f"{ref_err:.3g}"),
            "mean_err": float(f"{d.mean().item():.3g}"), "ref_mean_err": float(f"{dr.mean().item():.3g}"),
            "ok": bool(err <= 2 * ref_err + 2e-2 * scale)}  # fmt: skip


def timed_check(c, case: str, impl: str, fns: list, ref, truth, rg) -> float | None:  # noqa: ANN001
    """fns[0]() checked against the truth (truth_check), then all of ``fns`` timed by graph replay, with
    the ratio to ``rg`` (the bf16 time); a failure is an error row. -> ms if it passed the check."""
    try:
        chk = truth_check(fns[0](), ref, truth)
    except Exception as exc:  # noqa: BLE001 - a failing configuration is a result
        emit("quant", case, impl, error=f"{type(exc).__name__}: {exc}"[:300])
        return None
    ms = measure_graph(c, "quant", case, impl, fns, **chk)
    if ms and rg:
        emit("quant", case, "ratio", speedup_vs="bf16_matmul graph", speedup=round(rg / ms, 3))
    return ms if chk["ok"] else None


def timed_int4(c, case: str, d: Decode, tile=None) -> float | None:  # noqa: ANN001
    """timed_check of int4_matmul(d.x, *d.q4[i], d.group, tile=tile) over the weight copies."""
    from pretrainctl_kernels.quant import int4_matmul

    fns = [partial(int4_matmul, d.x, *t, d.group, tile=tile) for t in d.q4]
    return timed_check(c, case, "triton_int4", fns, d.ref, d.truth, d.rg)


@dataclass
class Decode:
    """One decode case of the focused benches: x (M, K), the quantized weight copies q4, the float64
    truth and the low-precision reference for copy 0, the bf16 calls and their graph time ``rg``."""

    x: torch.Tensor
    q4: list
    group: int
    case: str
    truth: torch.Tensor
    ref: torch.Tensor
    bf16: list
    rg: float | None

    @property
    def c4(self) -> str:
        return f"{self.case} int4 g{self.group}"


def decode_case(c, M: int, ws: list, q4: list, group: int) -> Decode:  # noqa: ANN001
    """x for M rows in the weights' dtype, the truth / reference of int4 copy 0, and bf16 cuBLAS over the
    unquantized copies timed by graph replay (the ratio rows' reference)."""
    from pretrainctl_kernels.quant import dequantize_int4

    N, K = ws[0].shape
    x = torch.randn(M, K, device=ws[0].device, dtype=ws[0].dtype)
    case = f"M{M} K{K} N{N}"
    truth = x.double() @ dequantize_int4(*q4[0], group, torch.float64).t()
    ref = x @ dequantize_int4(*q4[0], group, x.dtype).t()
    bf16 = [partial(torch.matmul, x, w.t()) for w in ws]
    rg = measure_graph(c, "quant", case, "bf16_matmul", bf16)
    return Decode(x, q4, group, case, truth, ref, bf16, rg)


def _sweep(M: int) -> list[tuple[str, object]]:
    """(row name suffix, int4_matmul tile) for every candidate at this M."""
    from pretrainctl_kernels.quant import Int4Bytes, Int4Words

    out = []
    for t in WORDS_CANDIDATES:
        bn, split, warps, gb, stages, swap, asm, vec = t
        if vec and M != 1:
            continue
        flags = "".join(f" {k}" for k, on in (("swap", swap), ("asm", asm), ("vec", vec)) if on)
        out.append((f" words bn{bn} split{split} w{warps} gb{gb} st{stages}" + flags, Int4Words(*t)))
    for bn, split, warps, join in BYTES_TILES[M if M == 1 else 16]:
        tile = Int4Bytes(bn=bn, split=split, warps=warps, join=join)
        out.append((f" bytes bn{bn} split{split} w{warps}" + (" join" if join else ""), tile))
    return out


def _floors(c: Ctx, case: str, q4: list, M: int) -> None:
    """What a decode launch costs before any arithmetic, graph-replayed like the GEMMs: a Triton kernel
    that only writes the (M, N) output, reading the 16 int4 weights (as int32 words) with a torch
    row-max reduction and with a plain Triton row-sum kernel, and (M == 1) the word kernel's GEMV tile
    with its loads only or its arithmetic only."""
    from pretrainctl_kernels.bench_quant_floor import gemv_diag, read_rows, write_only

    words = [t[0].view(torch.int32) for t in q4]
    N = words[0].shape[0]
    x = torch.empty(M, N, device=c.dev, dtype=c.dt)
    measure_graph(c, "quant", case + " floor", "triton_write_only", [partial(write_only, x)] * len(q4))
    nb = words[0].numel() * 4
    measure_graph(c, "quant", case + " floor", "torch_amax_read", [partial(torch.amax, w, 1) for w in words],
                  nbytes=nb)  # fmt: skip
    for bn, kw, st in ((16, 128, 3), (8, 512, 1)):
        fns = [partial(read_rows, w, bn, kw, st) for w in words]
        measure_graph(c, "quant", case + f" floor bn{bn} kw{kw} st{st}", "triton_read", fns, nbytes=nb)
    if M == 1:  # the word kernel's float32 GEMV tile (Int4Words.M1), without arithmetic or weight loads
        from pretrainctl_kernels.quant import Int4Words

        xv = torch.randn(1, words[0].shape[1] * 8, device=c.dev, dtype=c.dt)
        for diag, what in ((1, "loads only"), (2, "arithmetic only")):
            fns = [partial(gemv_diag, xv, *t, 128, diag, Int4Words.M1) for t in q4]
            measure_graph(c, "quant", case + f" int4 word-kernel GEMV tile, {what}", "triton_int4 diag", fns)


def _frag(c: Ctx, c4: str, x: torch.Tensor, q4: list, group: int, rg: float | None, f: int, b4: int) -> None:
    """The int4 decode GEMM on weights repacked once into mma fragment order (quant_frag, Gluon: GPU only)
    under CUDA graphs. Its GB/s use int4_matmul's byte count b4 (4 bytes of scale and zero per group and
    row): the repacked weight holds the same words and 8 such bytes (bf16x2 pairs), as quant's float32
    scales and zeros do."""
    case = c4 + " frag (repacked)"
    if c.smoke:
        emit("quant", case, "gluon_int4_frag", skipped="Gluon kernels need a CUDA GPU (no CPU interpreter)")
        return
    from pretrainctl_kernels.quant_frag import int4_matmul_frag, repack_int4

    frags = [repack_int4(*t, group) for t in q4]
    ofg = measure_graph(c, "quant", case, "gluon_int4_frag", [partial(int4_matmul_frag, x, w) for w in frags],
                        flops=f, nbytes=b4)  # fmt: skip
    ratio("quant", case + " graph", ofg, rg, "bf16_matmul graph")


def _decode_case(c: Ctx, M: int, ws: list, q4: list, q8: list, group: int) -> None:
    from pretrainctl_kernels.quant import int4_matmul, int8_matmul

    N, K = ws[0].shape
    case, c4, c8 = f"M{M} K{K} N{N}", f"M{M} K{K} N{N} int4 g{group}", f"M{M} K{K} N{N} int8"
    x = torch.randn(M, K, device=c.dev, dtype=c.dt)
    io, f = 2 * (M * K + M * N), 2 * M * N * K
    b16, b4, b8 = io + 2 * N * K, io + N * K // 2 + 4 * N * K // group, io + N * K + 2 * N
    bf16 = [partial(torch.matmul, x, w.t()) for w in ws]
    int4 = [partial(int4_matmul, x, *t, group) for t in q4]
    int8 = [partial(int8_matmul, x, *t) for t in q8]
    # One Python launch per call, L2 flushed between calls (triton.testing.do_bench).
    r = measure(c, "quant", case, "bf16_matmul", bf16[0], flops=f, nbytes=b16)
    o4 = measure(c, "quant", c4, "triton_int4", int4[0], flops=f, nbytes=b4)
    o8 = measure(c, "quant", c8, "triton_int8", int8[0], flops=f, nbytes=b8)
    ratio("quant", c4, o4, r, "bf16_matmul")
    ratio("quant", c8, o8, r, "bf16_matmul")
    # CUDA-graph replay over the distinct weight copies.
    rg = measure_graph(c, "quant", case, "bf16_matmul", bf16, flops=f, nbytes=b16)
    o4g = measure_graph(c, "quant", c4, "triton_int4", int4, flops=f, nbytes=b4)
    o8g = measure_graph(c, "quant", c8, "triton_int8", int8, flops=f, nbytes=b8)
    ratio("quant", c4 + " graph", o4g, rg, "bf16_matmul graph")
    ratio("quant", c8 + " graph", o8g, rg, "bf16_matmul graph")
    _frag(c, c4, x, q4, group, rg, f, b4)
    _floors(c, case, q4, M)
    best = None
    for name, tile in _sweep(M)[:: 100 if c.smoke else 1]:
        fns = [partial(int4_matmul, x, *t, group, tile=tile) for t in q4]
        ms = measure_graph(c, "quant", c4 + name, "triton_int4", fns, flops=f, nbytes=b4)
        if ms and (best is None or ms < best[1]):
            best = (name.strip(), ms)
    if best and rg:
        emit("quant", c4 + " graph, best tile of the sweep", "ratio", speedup_vs="bf16_matmul graph",
             tile=best[0], speedup=round(rg / best[1], 3))  # fmt: skip


def bench_quant(c: Ctx) -> None:
    """Decode-sized weight-only GEMMs vs bf16 cuBLAS, timed two ways: do_bench (one Python launch per
    call, L2 flushed) and CUDA-graph replay over 16 distinct weight copies (no host launch cost; the
    copies exceed L2 as a model's layers do). Decode runs under graphs, so the second is the fair one."""
    from pretrainctl_kernels.quant import quantize_int4, quantize_int8

    K = N = 128 if c.smoke else 4096
    copies = 1 if c.smoke else 16  # 16 x 8.5 MB int4 > the 50-60 MB L2 of an H100/H200
    group = 128
    ws = [torch.randn(N, K, device=c.dev, dtype=c.dt) for _ in range(copies)]
    q4 = [quantize_int4(w, group) for w in ws]
    q8 = [quantize_int8(w) for w in ws]
    for M in (1,) if c.smoke else (1, 16):  # the smoke run checks the script; tests cover M = 16
        _decode_case(c, M, ws, q4, q8, group)


# ----------------------------------------------------------------------------------------------- fp8


def _scaled_mm(xq: torch.Tensor, wq: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor,
               fast: bool = False) -> torch.Tensor:  # fmt: skip
    return torch._scaled_mm(xq, wq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, use_fast_accum=fast)


def bench_fp8(c: Ctx) -> None:
    """Row-wise scaled e4m3 GEMM (operands quantized outside the timing) vs bf16 cuBLAS on the
    unquantized operands and vs torch._scaled_mm with the same row-wise scales, each with promoted
    (default) and fast (never promoted) fp8 accumulation."""
    from pretrainctl_kernels import fp8_available
    from pretrainctl_kernels.fp8 import FP8Tiles, fp8_matmul, quantize_fp8

    status = fp8_available()
    if not status.ok:
        emit("fp8", "-", "-", skipped=status.reason)
        return
    shapes = [(64, 96, 128)] if c.smoke else [(4096, 4096, 4096), (8192, 8192, 8192), (16384, 4096, 14336)]
    for M, N, K in shapes:
        case = f"M{M} N{N} K{K}"
        x = torch.randn(M, K, device=c.dev, dtype=c.dt)
        w = torch.randn(N, K, device=c.dev, dtype=c.dt)
        (xq, xs), (wq, ws) = quantize_fp8(x), quantize_fp8(w)
        f = 2 * M * N * K
        r = measure(c, "fp8", case, "bf16_matmul", partial(torch.matmul, x, w.t()), flops=f)
        ours = {}
        for t in FP8Tiles.CANDIDATES[:1] if c.smoke else FP8Tiles.CANDIDATES:
            name = "triton_fp8 " + "x".join(map(str, t[:3])) + f" w{t[4]} s{t[5]}"
            ours[t] = measure(c, "fp8", case, name, partial(fp8_matmul, xq, xs, wq, ws, tiles=t), flops=f)
        fast = measure(c, "fp8", case, "triton_fp8 fast_accum", partial(fp8_matmul, xq, xs, wq, ws,
                       fast_accum=True), flops=f)  # fmt: skip
        sm = smf = None
        if not c.smoke and hasattr(torch, "_scaled_mm"):
            sa, sb = xs.float()[:, None], ws.float()[None, :]
            sm = measure(c, "fp8", case, "torch_scaled_mm", partial(_scaled_mm, xq, wq, sa, sb), flops=f)
            fn = partial(_scaled_mm, xq, wq, sa, sb, True)
            smf = measure(c, "fp8", case, "torch_scaled_mm fast_accum", fn, flops=f)
        o = ours.get(FP8Tiles.DEFAULT)
        ratio("fp8", case, o, r, "bf16_matmul")
        ratio("fp8", case, o, sm, "torch_scaled_mm")
        ratio("fp8", case + " fast_accum", fast, smf, "torch_scaled_mm fast_accum")
        done = {t: ms for t, ms in ours.items() if ms}
        if len(done) > 1 and r:
            t, ms = min(done.items(), key=lambda kv: kv[1])
            emit("fp8", case + " best tile of the sweep", "ratio", tile=list(t), speedup_vs="bf16_matmul",
                 speedup=round(r / ms, 3),
                 speedup_vs_scaled_mm=round(sm / ms, 3) if sm else None)  # fmt: skip
    _fp8_accuracy(c)


def _fp8_accuracy(c: Ctx) -> None:
    """Accumulation error at large K: unit scales, float32 output, max |error| / max |truth| against a
    float64 product of the same e4m3 values, for ours and torch._scaled_mm, promoted and fast."""
    from pretrainctl_kernels.fp8 import fp8_matmul, quantize_fp8

    M, N, K = (16, 32, 256) if c.smoke else (256, 256, 16384)
    gen = torch.Generator(device=c.dev).manual_seed(0)
    xq = quantize_fp8(torch.randn(M, K, device=c.dev, generator=gen))[0]
    wq = quantize_fp8(torch.randn(N, K, device=c.dev, generator=gen))[0]
    truth = xq.double() @ wq.double().t()
    one_m, one_n = torch.ones(M, device=c.dev), torch.ones(N, device=c.dev)
    runs = {"triton_fp8": lambda: fp8_matmul(xq, one_m, wq, one_n, out_dtype=torch.float32),
            "triton_fp8 fast_accum": lambda: fp8_matmul(xq, one_m, wq, one_n, out_dtype=torch.float32,
                                                         fast_accum=True)}  # fmt: skip
    if not c.smoke and hasattr(torch, "_scaled_mm"):
        one = torch.ones((), device=c.dev)
        sm = partial(torch._scaled_mm, xq, wq.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        runs["torch_scaled_mm"] = partial(sm, use_fast_accum=False)
        runs["torch_scaled_mm fast_accum"] = partial(sm, use_fast_accum=True)
    for impl, fn in runs.items():
        try:
            err = ((fn().double() - truth).abs().max() / truth.abs().max()).item()
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run this is a result
            emit("fp8", f"accuracy M{M} N{N} K{K} fp32 out", impl, error=f"{type(exc).__name__}: {exc}"[:200])
            continue
        emit("fp8", f"accuracy M{M} N{N} K{K} fp32 out", impl, max_rel_error=float(f"{err:.3g}"))
