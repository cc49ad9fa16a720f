"""Masked diffusion language modelling: MDLM (Sahoo et al. 2024, arXiv:2406.07524) and LLaDA (Nie et
al. 2025, arXiv:2502.09992).

Forward process: at time t every token is independently replaced by MASK with probability m(t)
(``noise.py``). The model sees the partly masked sequence with bidirectional attention and predicts
the original token at every masked position; it never predicts MASK itself (MDLM's "zero masking
probabilities": the MASK logit is removed). The continuous-time ELBO

    -log p(x) <= integral_0^1 w(t) E_{x_t} [ sum_{i masked} -log p(x_i | x_t) ] dt,   w = m'/m

is the training loss, estimated with one t per sequence drawn from U(t_min, 1) (stratified across the
batch, MDLM's low-discrepancy sampler) and normalised per scored token so it reads like the
``ar`` loss.

Validation (``nll``) estimates the same ELBO in its equivalent discrete form (LLaDA eq. 6, and the
any-order autoregressive bound of Hoogeboom et al. 2022): with n scored tokens,

    ELBO = E_{l ~ U{1..n}} E_{S: |S| = l, uniform} [ (n / l) sum_{i in S} -log p(x_i | x with S masked) ],

because integral_0^1 (1/t) Binomial(l; n, t) dt = 1/l. It is exact for every schedule with m(0) = 0,
m(1) = 1 (no t_min truncation) and its weights are bounded by n, where the 1/t form has an
unbounded variance near t = 0. ``val_samples`` masks per sequence, with l stratified over
{1..n}, drawn from a local generator seeded by ``val_seed`` and the batch's contents: the same batch
gets the same masks in every run, so numbers compare between runs and checkpoints, and the global RNG
is untouched. The exact expectation is checked by enumeration in tests/objective/test_diffusion_elbo.py.

Positions whose batch ``loss_mask`` is False are never masked and never scored: they condition the
model (like LLaDA's SFT prompt), and the bound is then on -log p(targets | the rest).

``shift`` (DiffuLLaMA, Gong et al. 2024, arXiv:2410.17891): the prediction for position i is read from
the output at position i - 1, as a next-token model's is, so an AR checkpoint (``init_from``) starts
with its next-token function in place of a function it never learned. The first position of every row
is then never masked or scored (it has no previous output); like ``ar``, the bound is on the rest of the
row given its first token, and the bytes of that token are not counted.

Generation (``generate``, in ``diffusion_sampling.py``): LLaDA's reverse process with semi-autoregressive
blocks and low-confidence remasking.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from pretrainctl.arch.base import LanguageModel
from pretrainctl.errors import UserError
from pretrainctl.objective.base import LossOutput, NLLOutput, Objective, target_mask
from pretrainctl.objective.diffusion_sampling import sample_masked_diffusion
from pretrainctl.objective.noise import LinearSchedule, NoiseSchedule


def masked_token_nll(
    model: LanguageModel, tokens: torch.Tensor, masked: torch.Tensor, mask_id: int, shift: bool = False
) -> torch.Tensor:
    """tokens, masked (B, L) -> (B,) summed -log p(x_i | x_t) in nats over the masked positions, with
    x_t = tokens where masked is False and MASK elsewhere. Only masked positions go through the
    output head (the head is most of the FLOPs of a small model). ``shift``: position i's prediction
    is the output at i - 1 (``masked[:, 0]`` must then be False)."""
    noisy = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
    hidden = model(noisy, causal=False)  # (B, L, D)
    # shift: the outputs one to the left of the masked positions, in the same (row-major) order
    picked = hidden[:, :-1][masked[:, 1:]] if shift else hidden[masked]  # (N, D)
    rows = masked.nonzero(as_tuple=True)[0]  # (N,) the sequence of each masked position
    logits = model.logits(picked).float()  # (N, V)
    logits[:, mask_id] = float("-inf")  # the model never predicts MASK
    nll = F.cross_entropy(logits, tokens[masked], reduction="none")  # (N,)
    return torch.zeros(tokens.shape[0], device=nll.device, dtype=nll.dtype).index_add(0, rows, nll)


def batch_generator(tokens: torch.Tensor, seed: int) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and the batch's contents (same batch -> same draws)."""
    digest = hashlib.blake2b(tokens.detach().cpu().numpy().tobytes(), digest_size=8).digest()
    return torch.Generator().manual_seed((seed * 1_000_003 + int.from_bytes(digest, "little")) % 2**63)


def mask_exactly(scores: torch.Tensor, keep: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """scores (B, L) iid uniform, keep (B, L) bool, count (B,) -> (B, L) bool: the ``count[b]`` kept
    positions with the smallest scores, i.e. a uniformly random subset of that size."""
    scores = scores.masked_fill(~keep, float("inf"))
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, L) rank of each position's score
    return (rank < count[:, None]) & keep


class MaskedDiffusionObjective(Objective):
    """Args:
    token_bytes: (V,) UTF-8 bytes per token (build.py).
    mask_id: the tokenizer's MASK token (build.py).
    noise: the noise schedule (m(t) and the ELBO weight m'/m) training samples t under.
    t_min: lower end of the training times t ~ U(t_min, 1) (keeps the 1/t weights bounded).
    stratified: one stratum of [t_min, 1] per sequence of a batch (MDLM's low-discrepancy sampler)
        instead of independent draws; same expectation, lower variance.
    val_samples: masks per sequence in the validation ELBO (stratified over the masked count).
    val_seed: seed of the validation masks (with the batch's contents).
    shift: predict position i from the output at i - 1 (module docstring; for AR initialization).
    """

    causal = False
    uses_mask_token = True
    sampling_options = "diffusion"

    def __init__(
        self,
        token_bytes: torch.Tensor,
        mask_id: int,
        noise: NoiseSchedule | None = None,
        t_min: float = 1e-3,
        stratified: bool = True,
        val_samples: int = 2,
        val_seed: int = 0,
        shift: bool = False,
    ) -> None:
        super().__init__(token_bytes)
        if not 0 <= t_min < 1:
            raise UserError(f"objective.t_min={t_min} must be in [0, 1) (LLaDA and MDLM use 1e-3).")
        if val_samples < 1:
            raise UserError(f"objective.val_samples={val_samples} must be at least 1.")
        self.mask_id, self.noise = int(mask_id), noise or LinearSchedule()
        self.t_min, self.stratified = t_min, stratified
        self.val_samples, self.val_seed = val_samples, val_seed
        self.shift = shift

    def scored(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) bool: the positions that may be masked and are scored."""
        keep = target_mask(batch)
        if self.shift:
            keep = keep.clone()
            keep[:, 0] = False
        return keep

    def sample_times(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B,) training times in [t_min, 1)."""
        u = torch.rand(batch_size, device=device)
        if self.stratified:  # one draw in each of B equal strata, in random order
            u = (torch.randperm(batch_size, device=device) + u) / batch_size
        return (self.t_min + (1 - self.t_min) * u).clamp(min=1e-6)  # t_min=0: never divide by t = 0

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        tokens = batch["tokens"]
        keep = self.scored(batch)
        t = self.sample_times(tokens.shape[0], tokens.device)  # (B,)
        rate = self.noise.mask_rate(t)
        masked = (torch.rand(tokens.shape, device=tokens.device) < rate[:, None]) & keep  # (B, L)
        nll = masked_token_nll(model, tokens, masked, self.mask_id, self.shift)  # (B,)
        n = int(keep.sum())
        n_masked = masked.sum()
        loss = (self.noise.weight(t) * nll).sum() / max(n, 1)
        metrics = {
            "mask_rate": n_masked / max(n, 1),
            "masked_ce": nll.detach().sum() / n_masked.clamp(min=1),  # unweighted, nats per masked token
        }
        return LossOutput(loss=loss, n_targets=n, metrics=metrics)

    @torch.no_grad()
    def nll(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> NLLOutput:
        """The ELBO in bits (an upper bound on -log2 p), ``val_samples`` masks per sequence."""
        tokens = batch["tokens"]
        keep = self.scored(batch)
        B, L = tokens.shape
        K = self.val_samples
        gen = batch_generator(tokens, self.val_seed)
        n = keep.sum(1).cpu()  # (B,) scored positions per sequence
        # l = 1 + floor(n (k + u) / K) for sample k: one masked count in each of K strata of {1..n}.
        strata = (torch.arange(K)[None, :] + torch.rand(B, K, generator=gen)) / K  # (B, K)
        count = (1 + (n[:, None] * strata).floor().long()).clamp(max=n[:, None].clamp(min=1))  # (B, K)
        count = torch.where(n[:, None] > 0, count, torch.zeros_like(count))
        scores = torch.rand(K, B, L, generator=gen)
        tokens_k, keep_k = tokens.repeat(K, 1), keep.repeat(K, 1)  # (K B, L), sample-major
        count_k = count.t().reshape(-1)  # (K B,) in the same order
        masked = mask_exactly(scores.reshape(K * B, L).to(tokens.device), keep_k, count_k.to(tokens.device))
        nll = masked_token_nll(model, tokens_k, masked, self.mask_id, self.shift)  # (K B,)
        weight = (n.repeat(K) / count_k.clamp(min=1)).to(nll)  # n / l
        bits = (weight * nll).sum() / K / math.log(2)
        return NLLOutput(bits=bits, bytes=(self.token_bytes[tokens] * keep).sum(), tokens=keep.sum())

    @torch.no_grad()
    def generate(
        self, model: LanguageModel, prompt: torch.Tensor, max_new_tokens: int, temperature: float,
        top_k: int | None, generator: torch.Generator, max_context: int, stop_id: int | None = None,
        steps: int = 64, block_length: int = 32, remasking: str = "low_confidence",
    ) -> torch.Tensor:  # fmt: skip
        """prompt (1, T) -> (1, T' + n) ids: see ``diffusion_sampling.sample_masked_diffusion``."""
        return sample_masked_diffusion(
            model, prompt, self.mask_id, max_new_tokens=max_new_tokens, steps=steps,
            block_length=block_length, remasking=remasking, temperature=temperature, top_k=top_k,
            generator=generator, max_context=max_context, stop_id=stop_id, shift=self.shift,
        )  # fmt: skip
