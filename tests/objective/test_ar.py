"""The AR objective's knobs: chunked head + loss equals the plain path (loss and gradients), label
smoothing and z-loss match their textbook definitions, the fused Triton route matches the torch
path, and z-loss lowers the log-partition of a trained model."""

import pytest
import torch
import torch.nn.functional as F

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.errors import UserError
from pretrainctl.objective.ar import NextTokenObjective

V = 97


def tiny_model(seed: int = 0, backend: str = "torch") -> DenseTransformer:
    torch.manual_seed(seed)
    return DenseTransformer(V, d_model=32, n_layers=2, n_heads=4, tie_embeddings=False, backend=backend)


def batch(seed: int = 1, B: int = 3, L: int = 17) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, L, generator=g) > 0.2
    return {"tokens": torch.randint(0, V, (B, L), generator=g), "loss_mask": mask}


def objective(**kw) -> NextTokenObjective:
    return NextTokenObjective(torch.ones(V, dtype=torch.long), **kw)


def loss_and_grads(model, obj, b):
    model.zero_grad()
    out = obj.loss(model, b)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_chunked_equals_plain(chunk):
    model, b = tiny_model(), batch()
    kw = {"z_loss": 1e-2, "label_smoothing": 0.1}
    plain, g_plain = loss_and_grads(model, objective(**kw), b)
    chunked, g_chunk = loss_and_grads(model, objective(chunk_size=chunk, **kw), b)
    torch.testing.assert_close(chunked.loss, plain.loss, rtol=1e-6, atol=1e-6)
    assert chunked.n_targets == plain.n_targets == int(b["loss_mask"][:, 1:].sum())
    for name, g in g_plain.items():
        torch.testing.assert_close(g_chunk[name], g, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(objective(chunk_size=chunk).nll(model, b).bits, objective().nll(model, b).bits)


def test_chunked_path_never_keeps_full_logits_for_backward():
    """The largest tensor autograd keeps is one chunk of logits, not (N, V) of them."""
    vocab, n_tokens = 4096, 4 * 64  # a vocabulary large enough for the logits to dominate
    torch.manual_seed(0)
    model = DenseTransformer(vocab, d_model=32, n_layers=1, n_heads=4)
    b = {"tokens": torch.randint(0, vocab, (4, 65))}
    obj_kw = {"token_bytes": torch.ones(vocab, dtype=torch.long)}

    def largest_saved(obj) -> int:
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            obj.loss(model, b).loss.backward()
        return max(sizes)

    assert largest_saved(NextTokenObjective(**obj_kw)) >= n_tokens * vocab  # plain: whole logits
    assert largest_saved(NextTokenObjective(chunk_size=32, **obj_kw)) <= 32 * vocab


def test_loss_matches_reference_definitions():
    """Against F.cross_entropy's label smoothing and the PaLM z-loss written out on full logits."""
    model, b = tiny_model(), batch()
    eps, z = 0.1, 1e-2
    tokens, keep = b["tokens"], b["loss_mask"][:, 1:]
    logits = model.logits(model(tokens[:, :-1])).float()[keep]  # (n, V)
    targets = tokens[:, 1:][keep]
    ref = (
        F.cross_entropy(logits, targets, label_smoothing=eps)
        + z * torch.logsumexp(logits, -1).square().mean()
    )
    out = objective(z_loss=z, label_smoothing=eps).loss(model, b)
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(out.metrics["ce"], F.cross_entropy(logits, targets))
    torch.testing.assert_close(out.metrics["log_z"], torch.logsumexp(logits, -1).mean())
    # validation likelihood ignores both knobs
    bits = objective(z_loss=z, label_smoothing=eps).nll(model, b).bits
    torch.testing.assert_close(
        bits, F.cross_entropy(logits, targets, reduction="sum") / torch.log(torch.tensor(2.0))
    )


@pytest.mark.parametrize("chunk", [None, 5])
def test_fused_triton_route_matches_torch_path(chunk):
    """arch.backend=triton routes the head + loss through the fused kernel (Triton interpreter on CPU)."""
    pytest.importorskip("triton")
    from pretrainctl.objective.head import _fused_kernel

    if _fused_kernel() is None or _fused_kernel()[1] != "interpreter":
        pytest.skip("needs the Triton interpreter (TRITON_INTERPRET=1, set by conftest) on CPU")
    b = batch(B=2, L=9)
    torch_out, g_torch = loss_and_grads(tiny_model(), objective(z_loss=1e-2), b)
    triton_model = tiny_model(backend="triton")
    fused_out, g_fused = loss_and_grads(triton_model, objective(z_loss=1e-2, chunk_size=chunk), b)
    assert "ce" not in fused_out.metrics  # the fused route was taken (it reports no per-token metrics)
    torch.testing.assert_close(fused_out.loss, torch_out.loss, rtol=1e-5, atol=1e-6)
    for name in ("head.weight", "blocks.0.attn.q.weight", "embed.weight"):
        torch.testing.assert_close(g_fused[name], g_torch[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fused_triton_route_under_autocast():
    """Mixed precision (trainer=gpu is bf16-mixed) runs the loss under autocast with low-precision hidden
    states and a float32 head weight; the fused route must take them as the plain path does. fp16
    autocast on CPU here (the interpreter computes bf16 wrongly): the two routes agree to fp16 rounding."""
    pytest.importorskip("triton")
    from pretrainctl.objective.head import _fused_kernel

    if _fused_kernel() is None or _fused_kernel()[1] != "interpreter":
        pytest.skip("needs the Triton interpreter (TRITON_INTERPRET=1, set by conftest) on CPU")
    b = batch(B=2, L=9)
    outs = []
    for backend in ("torch", "triton"):
        model = tiny_model(backend=backend)
        with torch.autocast("cpu", dtype=torch.float16):
            outs.append(loss_and_grads(model, objective(chunk_size=5), b))
    (torch_out, g_torch), (fused_out, g_fused) = outs
    assert "ce" not in fused_out.metrics  # the fused route was taken
    torch.testing.assert_close(fused_out.loss, torch_out.loss, rtol=2e-3, atol=2e-3)
    assert g_fused["head.weight"].dtype == torch.float32
    torch.testing.assert_close(g_fused["head.weight"], g_torch["head.weight"], rtol=2e-2, atol=2e-3)


def mean_log_partition_after_training(z_loss: float, steps: int = 40) -> tuple[float, float]:
    model = tiny_model(seed=3)
    obj = objective(z_loss=z_loss)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(5)
    # a learnable stream: each token is followed by (token * 7 + 3) mod V half of the time
    base = torch.randint(0, V, (steps, 8, 33), generator=g)
    base[:, :, 1::2] = (base[:, :, 0:-1:2] * 7 + 3) % V
    for step in range(steps):
        loss = obj.loss(model, {"tokens": base[step]}).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = objective().loss(model, {"tokens": base[-1]})
    return float(out.metrics["log_z"]), float(out.metrics["ce"])


def test_z_loss_lowers_log_partition():
    lse_plain, ce_plain = mean_log_partition_after_training(0.0)
    lse_z, ce_z = mean_log_partition_after_training(0.1)
    # measured: 5.54 without z-loss, 0.31 with 0.1 (0.0: lse ~ log V at init, then drifts upwards)
    assert lse_z < lse_plain - 2.0, (lse_z, lse_plain)
    assert ce_z < ce_plain + 0.5, (ce_z, ce_plain)  # it still learns


@pytest.mark.parametrize("bad", [{"z_loss": -1.0}, {"label_smoothing": 1.0}, {"chunk_size": 0}])
def test_bad_knobs_are_user_errors(bad):
    with pytest.raises(UserError, match="objective\\."):
        objective(**bad)
