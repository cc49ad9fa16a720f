"""`pretrainctl scaling plan|sweep|fit` (issue 9): FLOP accounting against hand counts, CLI errors,
a fit on synthetic run directories drawn from a known law, and a tiny IsoFLOP sweep (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pretrainctl.errors import UserError
from pretrainctl.scaling.accounting import Shape, load_law, size_facts
from pretrainctl.scaling.fit_cmd import run_fit
from pretrainctl.scaling.laws import ChinchillaLaw
from pretrainctl.scaling.plan_cmd import run_plan
from tests.helpers import TINY, compose_config


def hand_dense(d: int, layers: int, vocab: int, seq: int, hidden: int) -> tuple[int, int, int]:
    """(non-embedding params, Chinchilla FLOPs/token, Kaplan FLOPs/token) of the dense Llama block,
    counted by hand: attention 4 d^2, SwiGLU 3 d h, two RMSNorm gains per layer and a final one."""
    matmul = layers * (4 * d * d + 3 * d * hidden)
    non_embedding = matmul + layers * 2 * d + d
    attention = layers * 2 * seq * d * 2  # scores + values, forward
    chinchilla = 3 * (2 * (matmul + vocab * d) + attention)
    kaplan = 6 * non_embedding + 6 * layers * seq * d
    return non_embedding, chinchilla, kaplan


@pytest.mark.parametrize("preset,d,layers,hidden", [("dense", 256, 4, 704), ("llama_124m", 768, 12, 2048)])
def test_dense_presets_match_hand_counted_flops(preset, d, layers, hidden):
    cfg = compose_config("scaling_plan", [f"arch={preset}", "budget=1e17"])
    shape = Shape.from_width(d)
    assert (shape.n_layers, shape.n_heads) == (layers, d // 64)  # the rule reproduces the presets
    non_emb, chin, kap = hand_dense(d, layers, 4096, 256, hidden)
    facts = size_facts(cfg, shape, 4096, 256, "chinchilla")
    assert facts.params_non_embedding == non_emb
    assert facts.flops_per_token == chin
    assert size_facts(cfg, shape, 4096, 256, "kaplan").flops_per_token == kap
    untied = preset == "llama_124m"
    assert facts.params_total == non_emb + 4096 * d * (2 if untied else 1)


@pytest.mark.parametrize("preset", ["dense", "gqa", "moe", "mla", "moe_mla", "hybrid"])
def test_plan_uses_the_architectures_own_flops(preset):
    from pretrainctl.build import build_model

    cfg = compose_config("scaling_plan", [f"arch={preset}", "budget=1e15"])
    a = cfg.arch
    model = build_model(cfg, type("Tok", (), {"vocab_size": 1000})())
    facts = size_facts(cfg, Shape(a.d_model, a.n_layers, a.n_heads), 1000, 256, "chinchilla")
    assert facts.flops_per_token == model.flops_per_token(256)
    assert facts.params_active == model.num_params().active


def test_plan_table_and_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    cfg = compose_config("scaling_plan", ["budget=1e17", f"out={out}", "num_sizes=5"])
    result = run_plan(cfg)
    assert json.loads(out.read_text())["budget"] == 1e17
    rows = result["candidates"]
    assert len(rows) == 5 and sum(r["optimal"] for r in rows) == 1
    for r in rows:
        assert r["tokens"] == pytest.approx(1e17 / r["flops_per_token"])
    best = min(rows, key=lambda r: r["predicted_loss"])
    assert best["optimal"] and not (rows[0]["optimal"] or rows[-1]["optimal"])
    # the law's continuous optimum lies within the candidates' span
    assert rows[0]["params_non_embedding"] < result["n_opt"] < rows[-1]["params_non_embedding"]
    assert "optimal" in capsys.readouterr().out


def test_unknown_law_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown law 'nope'"):
        load_law("nope")
    bad = tmp_path / "fit.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not a fit.json"):
        load_law(str(bad))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pretrainctl.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args,expected",
    [
        (["scaling", "plan", "budget=1e17", "law=nope"], "unknown law 'nope'; choose one of: hoffmann"),
        (["scaling", "fit", "runs={tmp}"], "holds no completed run"),
        (["scaling", "frobnicate"], "needs a verb; choose one of: plan, sweep, fit"),
    ],
)
def test_cli_errors_exit_2(args, expected, tmp_path):
    out = cli(*[a.format(tmp=tmp_path) for a in args])
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr and "Traceback" not in out.stderr


TRUE = ChinchillaLaw(E=1.9, A=300.0, B=900.0, alpha=0.32, beta=0.29)


def fake_run(path: Path, n: float, d: float, budget: float | None, k: float = 7.0) -> None:
    path.mkdir(parents=True)
    summary = {
        "status": "completed", "params_non_embedding": n, "params_total": n * 1.2, "tokens": d,
        "train_flops": k * n * d, "val_loss": float(TRUE.loss(n, d)), "val_bpb": 1.0,
    }  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.yaml").write_text("{}\n")
    if budget is not None:
        (path / "scaling.json").write_text(json.dumps({"budget": budget}))


def test_fit_recovers_a_known_law_and_predicts_heldout(tmp_path):
    sweep = tmp_path / "sweep"
    for c in (1e17, 1e18, 1e19, 1e20):
        n_opt = float(TRUE.optimal_allocation(c, 7.0)[0])
        for j, f in enumerate((1 / 8, 1 / 3, 1, 3, 8)):
            fake_run(sweep / f"C{c:g}-{j}", n_opt * f, c / (7.0 * n_opt * f), c)
    held = tmp_path / "held"
    fake_run(held, 2e9, 5e10, None)
    cfg = OmegaConf.merge(
        OmegaConf.load(Path(__file__).parents[2] / "conf" / "scaling_fit.yaml"),
        {"runs": str(sweep), "heldout": str(held), "n_bootstrap": 10},
    )
    result = run_fit(cfg)
    coeffs = json.loads((sweep / "fit.json").read_text())["approach3"]["coefficients"]
    for key, true in TRUE.to_dict().items():
        assert coeffs[key] == pytest.approx(true, rel=0.02), key
    assert result["flops_per_param_token"] == pytest.approx(7.0)
    two = result["approach2"]
    assert two["a"] == pytest.approx(TRUE.a, abs=0.02) and two["b"] == pytest.approx(TRUE.b, abs=0.02)
    assert abs(result["heldout"]["rel_error"][0]) < 0.005
    for png in ("isoflop.png", "allocation.png", "law_vs_data.png", "residuals.png"):
        assert (sweep / png).stat().st_size > 1000
    # the fitted law plans: law=<fit.json>
    law, _ = load_law(str(sweep / "fit.json"))
    assert law.alpha == pytest.approx(TRUE.alpha, rel=0.02)


def test_fit_without_budgets_skips_approach2_and_checks_inputs(tmp_path):
    for i, (n, d) in enumerate([(1e6, 1e8), (3e6, 1e8), (1e7, 3e8), (3e7, 1e9), (1e8, 1e9), (3e8, 1e10)]):
        fake_run(tmp_path / f"r{i}", n, d, None)
    cfg = OmegaConf.merge(
        OmegaConf.load(Path(__file__).parents[2] / "conf" / "scaling_fit.yaml"),
        {"runs": str(tmp_path), "n_bootstrap": 5},
    )
    result = run_fit(cfg)
    assert result["approach2"] is None and "Approach 2" in result["notes"][0]
    with pytest.raises(UserError, match="unique_tokens"):
        run_fit(OmegaConf.merge(cfg, {"law": "data_constrained"}))
    with pytest.raises(UserError, match="unknown law"):
        run_fit(OmegaConf.merge(cfg, {"law": "kaplan"}))


@pytest.mark.slow
def test_tiny_sweep_tags_runs_with_budgets(tmp_path, cache_dir):
    from pretrainctl.scaling.sweep_cmd import run_sweep

    user = [*TINY, f"cache_dir={cache_dir}", "trainer.val_check_interval=1000", "trainer.limit_val_batches=2"]
    sweep_keys = ["budgets=[2e9,4e9]", "widths=[16,32,48]", "width_multiple=16", "head_dim=16", "aspect=32"]
    user = [o for o in user if not o.startswith("arch.")]
    cfg = compose_config("scaling_sweep", [*user, *sweep_keys])
    rows = run_sweep(cfg, tmp_path / "sweep", [*user, *sweep_keys])
    assert len(rows) == 6 and all(r["status"] == "completed" for r in rows)
    for r in rows:
        tag = json.loads((Path(r["run"]) / "scaling.json").read_text())
        assert tag["budget"] in (2e9, 4e9)
        assert r["train_flops"] <= tag["budget"] and r["train_flops"] > 0.8 * tag["budget"]
        assert f"scaling.flops={tag['budget']:g}" in r["overrides"]
    assert (tmp_path / "sweep" / "sweep.json").is_file()
    assert not math.isnan(rows[0]["val_loss"])
