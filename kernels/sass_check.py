"""Compile a Gluon kernel for an NVIDIA target without a GPU and read its machine code: registers,
spills, shared memory and the SASS instruction mix of its main loop. This is how the structure of a GPU
kernel (no spills, no shared-memory traffic where there should be none) is checked on a CPU-only
machine; the tools (ptxas, cuobjdump) ship inside the triton wheel.

    python -m pretrainctl_kernels.sass_check [--rt R --nw W --u U --pf 0/1 --nwn N --cg 0/1 --d D]
                                             [--k 4096 --group 128]     (Int4Frag's defaults)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from collections import Counter
from typing import TYPE_CHECKING

import triton

if TYPE_CHECKING:
    from pretrainctl_kernels.quant_frag import Int4Frag

_ADDR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+)")


def _tool(name: str) -> str:
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else name


def compile_gluon(fn, signature: dict, constexprs: dict, num_warps: int, aligned: tuple = (),  # noqa: ANN001
                  arch: int = 90) -> dict:  # fmt: skip
    """Compile ``fn`` for sm_<arch>. ``aligned``: argument positions specialized as 16-byte aligned (as
    Triton's launcher does for aligned torch tensors and strides). -> {"regs", "spill_bytes",
    "shared_bytes", "sass"}."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    src = GluonASTSource(fn, {**signature, **dict.fromkeys(constexprs, "constexpr")}, constexprs, attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        sass = subprocess.run(
            [_tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True, check=True
        )
        res = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", cubin], capture_output=True, text=True, check=True
        )
    use = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res.stdout)
    if use is None:
        raise RuntimeError(f"cuobjdump -res-usage: no resource line in {res.stdout!r}")
    regs, spill = int(use.group(1)), int(use.group(4))
    return {"regs": regs, "spill_bytes": spill, "shared_bytes": kernel.metadata.shared, "sass": sass.stdout}


def loop_mix(sass: str, marker: str = "HMMA") -> Counter:
    """Instruction counts (opcodes without modifiers) of the largest loop whose body holds ``marker``: the
    span from a backward branch's target to the branch (cuobjdump prints targets as addresses)."""
    insts = [
        (int(m.group(1), 16), m.group(2), line) for line in sass.splitlines() if (m := _ADDR.match(line))
    ]
    best: Counter = Counter()
    for addr, op, line in insts:
        target = re.search(r"BRA\s+0x([0-9a-f]+)", line) if op == "BRA" else None
        if target is None or int(target.group(1), 16) >= addr:
            continue
        body = Counter(o for a, o, _ in insts if int(target.group(1), 16) <= a <= addr)
        if body[marker] and sum(body.values()) > sum(best.values()):
            best = body
    return best


def frag_kernel_report(tile: Int4Frag | None = None, K: int = 4096, group: int = 128) -> dict:
    """quant_frag._int4_frag compiled for sm_90 with ``tile`` (an Int4Frag; None: its defaults): registers,
    spills, shared memory and its main loop's mix."""
    from pretrainctl_kernels.quant_frag import Int4Frag, _int4_frag

    tile = tile or Int4Frag()
    sig = {"X": "*i32", "WR": "*i32", "S2": "*i32", "Z2": "*i32", "OUT": "*bf16", "M": "i32", "s_xm": "i32",
           "s_om": "i32"}  # fmt: skip
    out = compile_gluon(
        _int4_frag, sig, tile.consts(K, group), tile.nw * tile.nwn, aligned=(0, 1, 2, 3, 4, 6, 7)
    )
    out["loop"] = loop_mix(out.pop("sass"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from dataclasses import fields

    from pretrainctl_kernels.quant_frag import Int4Frag

    tile_fields = [(f.name, int(f.default)) for f in fields(Int4Frag)]  # the defaults; bools as 0 / 1
    for name, default in (*tile_fields, ("k", 4096), ("group", 128)):
        p.add_argument(f"--{name}", type=int, default=default)
    a = vars(p.parse_args(argv))
    tile = Int4Frag(**{name: type(default)(a[name]) for name, default in tile_fields})
    rep = frag_kernel_report(tile, a["k"], a["group"])
    loop = rep.pop("loop")
    print(rep)
    print("main loop:", dict(loop.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
