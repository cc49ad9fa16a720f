"""The benchmark script runs end to end (tiny shapes, interpreter) and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from pretrainctl_kernels import bench

from tests.kernels._tol import need_interpreter


def test_bench_smoke(tmp_path: Path) -> None:
    need_interpreter()
    out = tmp_path / "bench.json"
    # attention, moe and ce are covered by `python -m pretrainctl_kernels.bench --smoke` (~25 s); the
    # cheap ops keep this test quick while exercising the timing, ratio and JSON paths.
    assert bench.main(["--smoke", "--only", "quant,fp8,norms", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["env"]["torch"]
    impls = {r["impl"] for r in data["results"]}
    assert {"triton_int4", "triton_int8", "bf16_matmul", "triton", "torch_eager", "ratio"} <= impls
    assert any(i.startswith("triton_fp8") for i in impls)
    assert any(r.get("timing") == "cuda_graph" for r in data["results"])
    assert not [r for r in data["results"] if "error" in r]
