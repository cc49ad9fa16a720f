"""Masked diffusion end to end: sampling (against plain reference loops), bidirectional attention
in every architecture, the missing-MASK error, and AR-to-diffusion continued pretraining."""

from __future__ import annotations

import pytest
import torch

from pretrainctl import build
from pretrainctl.cli import options
from pretrainctl.errors import UserError
from pretrainctl.evaluate.generate import generate
from pretrainctl.objective.diffusion import MaskedDiffusionObjective, masked_token_nll
from pretrainctl.objective.diffusion_sampling import sample_masked_diffusion
from pretrainctl.runs import RunDir
from pretrainctl.tokenizer.bytes import ByteTokenizer
from pretrainctl.train import run_train
from tests.helpers import tiny_config

TOK = ByteTokenizer()
MASK = TOK.mask_id


def tiny_model(arch: str = "dense", seed: int = 0):
    torch.manual_seed(seed)
    model = build.build_model(tiny_config([f"arch={arch}", "tokenizer=bytes"]), TOK)
    return model.eval()


def sample(model, prompt, n, **kw):
    opts = dict(steps=8, block_length=8, remasking="low_confidence", temperature=0.0, top_k=None)
    opts.update(kw)
    gen = torch.Generator().manual_seed(0)
    return sample_masked_diffusion(
        model, prompt, MASK, max_new_tokens=n, generator=gen, max_context=64, **opts
    )


class CountCalls(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, tokens, *, causal=True):
        assert not causal
        self.calls += 1
        return self.model(tokens, causal=causal)

    def logits(self, hidden):
        return self.model.logits(hidden)


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("n,steps,block", [(20, 8, 8), (13, 13, 5), (7, 3, 32)])
def test_sampling_fills_every_new_token(remasking, n, steps, block):
    model = CountCalls(tiny_model())
    prompt = torch.tensor([TOK.encode("def f(x):")])
    out = sample(model, prompt, n, steps=steps, block_length=block, remasking=remasking, temperature=1.0)
    assert out.shape == (1, prompt.shape[1] + n)
    assert torch.equal(out[:, : prompt.shape[1]], prompt)
    assert not (out == MASK).any()
    # one model call per step; each block gets its share of the steps (at most one per token)
    blocks = [min(block, n - s) for s in range(0, n, block)]
    assert model.calls == sum(max(1, min(round(steps / len(blocks)), b)) for b in blocks)


def test_one_token_blocks_are_greedy_left_to_right():
    """block_length=1, one step per token, temperature 0: the plain loop that predicts the leftmost
    MASK given everything before it (and MASKs after it)."""
    model = tiny_model()
    prompt, n = torch.tensor([TOK.encode("import os\n")]), 6
    x = torch.cat([prompt, torch.full((1, n), MASK)], dim=1)
    for i in range(prompt.shape[1], x.shape[1]):
        logits = model.logits(model(x, causal=False))[0, i]
        logits[MASK] = float("-inf")
        x[0, i] = logits.argmax()
    assert torch.equal(sample(model, prompt, n, steps=n, block_length=1), x)


def test_shifted_sampling_reads_the_previous_position():
    """objective.shift: the same greedy loop, each new token read from the output one to its left."""
    model = tiny_model()
    prompt, n = torch.tensor([TOK.encode("import os\n")]), 6
    x = torch.cat([prompt, torch.full((1, n), MASK)], dim=1)
    for i in range(prompt.shape[1], x.shape[1]):
        logits = model.logits(model(x, causal=False))[0, i - 1]
        logits[MASK] = float("-inf")
        x[0, i] = logits.argmax()
    assert torch.equal(sample(model, prompt, n, steps=n, block_length=1, shift=True), x)
    with pytest.raises(UserError, match="non-empty prompt"):
        sample(model, prompt[:, :0], n, shift=True)


def test_shift_scores_from_the_previous_output_and_never_the_first_token():
    """Training loss and validation ELBO under shift: position 0 is never masked, scored or counted in
    the bytes, and each masked token's loss comes from the output at the position before it."""
    model = tiny_model()
    tokens = torch.tensor([TOK.encode("def fib(n):\n  return n")] * 3)
    obj = MaskedDiffusionObjective(torch.ones(TOK.vocab_size), MASK, shift=True)
    assert not obj.scored({"tokens": tokens})[:, 0].any() and obj.scored({"tokens": tokens})[:, 1:].all()
    out = obj.nll(model, {"tokens": tokens})
    assert int(out.tokens) == int(out.bytes) == tokens.numel() - tokens.shape[0]
    masked = torch.zeros_like(tokens, dtype=torch.bool)
    masked[:, [3, 7, 8]] = True
    noisy = torch.where(masked, torch.full_like(tokens, MASK), tokens)
    logits = model.logits(model(noisy, causal=False)).float()
    logits[..., MASK] = float("-inf")
    want = sum(torch.nn.functional.cross_entropy(logits[:, i - 1], tokens[:, i], reduction="none")
               for i in (3, 7, 8))  # fmt: skip
    got = masked_token_nll(model, tokens, masked, MASK, shift=True)
    torch.testing.assert_close(got, want)
    torch.manual_seed(0)
    loss = obj.loss(model, {"tokens": tokens}).loss
    loss.backward()
    assert torch.isfinite(loss) and model.embed.weight.grad.abs().sum() > 0


def test_low_confidence_commits_the_most_confident_position_first():
    """One block, one token per step, temperature 0: at each step the plain loop commits the masked
    position whose argmax probability is highest."""
    model = tiny_model(seed=3)
    prompt, n = torch.tensor([TOK.encode("for i in")]), 5
    x = torch.cat([prompt, torch.full((1, n), MASK)], dim=1)
    for _ in range(n):
        logits = model.logits(model(x, causal=False))[0]
        logits[:, MASK] = float("-inf")
        prob, pred = torch.softmax(logits, -1).max(-1)
        prob[x[0] != MASK] = -1
        i = int(prob.argmax())
        x[0, i] = pred[i]
    assert torch.equal(sample(model, prompt, n, steps=n, block_length=n), x)


def test_sampling_stops_after_the_stop_token_and_checks_its_options():
    model = tiny_model()
    prompt = torch.tensor([TOK.encode("x = ")])
    full = sample(model, prompt, 16)
    stop = int(full[0, prompt.shape[1] + 2])  # make the third new token the stop token
    out = sample(model, prompt, 16, stop_id=stop)
    new = out[0, prompt.shape[1] :].tolist()
    assert new[-1] == stop and stop not in new[:-1] and len(new) <= 16
    with pytest.raises(UserError, match="remasking"):
        sample(model, prompt, 4, remasking="confident")
    with pytest.raises(UserError, match="context"):
        sample(model, prompt, 64)
    # a long prompt keeps its most recent tokens
    long = torch.randint(0, 256, (1, 100))
    assert torch.equal(sample(model, long, 10)[0, :54], long[0, -54:])


@pytest.mark.parametrize("arch", options("arch"))
def test_every_arch_attends_both_ways_when_asked(arch):
    """causal=False must let position 0 see the last token (SSM layers scan both directions), and
    causal=True must not: the diffusion and MLM objectives rely on it."""
    model = tiny_model(arch)
    a = torch.randint(0, 256, (1, 12))
    b = a.clone()
    b[0, -1] = (a[0, -1] + 1) % 256
    with torch.no_grad():
        assert not torch.allclose(model(a, causal=False)[0, 0], model(b, causal=False)[0, 0])
        assert torch.allclose(model(a, causal=True)[0, 0], model(b, causal=True)[0, 0], atol=1e-6)


def test_a_tokenizer_without_mask_is_refused(cache_dir):
    no_mask = ByteTokenizer()
    no_mask.mask_id = None  # e.g. a SentencePiece model reused by path, trained without <mask>
    for objective in ("diffusion", "mlm"):
        cfg = tiny_config([f"objective={objective}", "tokenizer=bytes"], cache_dir)
        with pytest.raises(UserError, match="no MASK token"):
            build.build_objective(cfg, no_mask)
    objective = build.build_objective(tiny_config(["objective=diffusion", "tokenizer=bytes"], cache_dir), TOK)
    assert isinstance(objective, MaskedDiffusionObjective) and objective.mask_id == MASK


@pytest.mark.slow
def test_ar_to_diffusion_continued_pretraining_and_generate(tmp_path, cache_dir):
    """init_from an AR run: same weights at step 0, then diffusion training lowers its ELBO; the
    diffusion run generates with its own options; an mlm run refuses to generate."""
    base = ["tokenizer=bytes", "optim.lr=1e-2", "trainer.val_check_interval=20"]
    ar = run_train(tiny_config([*base, "trainer.max_steps=40"], cache_dir), tmp_path / "ar")
    assert ar["status"] == "completed"
    cfg = tiny_config([*base, "objective=diffusion", "trainer.max_steps=40", f"init_from={tmp_path / 'ar'}"])
    exp = build.build_experiment(cfg)
    ar_weights = torch.load(RunDir(tmp_path / "ar").checkpoint("last"), weights_only=False)["state_dict"]
    assert torch.equal(exp.model.embed.weight, ar_weights["model.embed.weight"])
    summary = run_train(cfg, tmp_path / "diff")
    vals = [r["val_bpb"] for r in RunDir(tmp_path / "diff").read_metrics() if "val_bpb" in r]
    assert summary["status"] == "completed" and vals[-1] < vals[0]
    diffusion = {"steps": 4, "block_length": 6, "remasking": "low_confidence"}
    out = generate(
        str(tmp_path / "diff"), "def ", max_new_tokens=12, temperature=0.0, options={"diffusion": diffusion}
    )
    assert out[0].startswith("def ") and len(out[0]) > len("def ")
