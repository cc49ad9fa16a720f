"""Fine-grained mixture-of-experts FFN with shared experts (DeepSeekMoE, arXiv:2401.06066) and the
DeepSeek-V3 routing (arXiv:2412.19437): sigmoid or softmax scores, optional group-limited top-k,
and either a switch-style auxiliary loss (Fedus et al. 2021) or auxiliary-loss-free balancing — a
per-expert bias added to the scores for *selection only*, moved by +-gamma after every step toward
balance.

Dispatch is a thin front-end with the signature of ``pretrainctl_kernels.moe.moe_ffn`` and its
weight layout (w_gate/w_up (E, D, H), w_down (E, H, D)): assignments are sorted by expert so each
expert's rows form one segment, the segments go through one grouped matmul per projection
(``torch._grouped_mm`` where it is usable, else a loop over the experts that received tokens), and
the weighted outputs are scattered back to their tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pretrainctl.arch.backends import check_backend
from pretrainctl.arch.decoder import Block, Decoder
from pretrainctl.arch.dense import check_attention, layer_window
from pretrainctl.arch.layers import Attention, SwiGLU, swiglu_hidden
from pretrainctl.errors import UserError

_GROUPED_OK: dict[tuple[str, torch.dtype], bool] = {}


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous: ``_grouped_mm``'s backward rejects the
    stride-0 gradients that e.g. ``.sum()`` produces."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous()


def grouped_mm_usable(a: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` should run (a (M, K), w (E, K, N)). On CPU (torch 2.13) it runs
    float32/bf16 but is slower than the segment loop: 74 ms vs 39 ms for 10 products of 4096 rows
    (256 -> 128, 16 experts) on 2 cores. So it is used on CUDA only, after a one-time probe."""
    if not hasattr(torch, "_grouped_mm") or a.device.type != "cuda":
        return False
    if a.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return False
    if (a.shape[1] * a.element_size()) % 16 or (w.shape[2] * w.element_size()) % 16:
        return False  # row strides must be 16-byte multiples
    key = (str(a.device), a.dtype)
    if key not in _GROUPED_OK:
        try:
            x = torch.randn(8, 16, device=a.device, dtype=a.dtype, requires_grad=True)
            w = torch.randn(2, 16, 16, device=a.device, dtype=a.dtype)
            offs = torch.tensor([4, 8], device=a.device, dtype=torch.int32)
            y = torch._grouped_mm(x, w, offs=offs)
            y.float().sum().backward()
            _GROUPED_OK[key] = True
        except RuntimeError:
            _GROUPED_OK[key] = False
    return _GROUPED_OK[key]


def grouped_mm(
    a: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, use_grouped: bool | None = None
) -> torch.Tensor:
    """a (M, K) sorted by expert with counts (E,) rows each, w (E, K, N) -> (M, N): segment e @ w[e]."""
    if use_grouped is None:
        use_grouped = grouped_mm_usable(a, w)
    if a.shape[0] == 0:
        return a.new_zeros(0, w.shape[2])
    if use_grouped:
        offs = counts.cumsum(0).to(torch.int32)
        # _grouped_mm does not autocast: bring both operands to the autocast (or activation) dtype.
        if torch.is_autocast_enabled(a.device.type):
            dtype = torch.get_autocast_dtype(a.device.type)
            a, w = a.to(dtype), w.to(dtype)
        elif w.dtype != a.dtype:
            w = w.to(a.dtype)
        return _ContiguousGrad.apply(torch._grouped_mm(a.contiguous(), w, offs=offs))
    sizes = counts.tolist()  # one host sync; the loop visits only experts that received rows
    segments = a.split(sizes)
    return torch.cat([segments[e] @ w[e] for e in range(len(sizes)) if sizes[e]])


def moe_ffn(
    x: torch.Tensor,
    expert_idx: torch.Tensor,
    expert_weight: torch.Tensor,
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    use_grouped: bool | None = None,
) -> torch.Tensor:
    """Routed SwiGLU experts: out[t] = sum_j expert_weight[t, j] * FFN_{expert_idx[t, j]}(x[t]).

    x (N, D), expert_idx/expert_weight (N, k), w_gate/w_up (E, D, H), w_down (E, H, D); ``keep`` (N, k)
    bool drops assignments (capacity overflow). Same contract as the Triton ``moe_ffn``."""
    N, k = expert_idx.shape
    E = w_gate.shape[0]
    flat = expert_idx.flatten()  # (N*k,) assignment -> expert
    order = flat.argsort(stable=True)  # sorted row -> assignment; stable keeps token order per expert
    if keep is not None:
        order = order[keep.flatten()[order]]
    counts = torch.bincount(flat[order], minlength=E)  # (E,) rows per expert
    tok = order // k  # sorted row -> token
    xs = x[tok]  # (M, D)
    h = F.silu(grouped_mm(xs, w_gate, counts, use_grouped)) * grouped_mm(xs, w_up, counts, use_grouped)
    y = grouped_mm(h, w_down, counts, use_grouped)  # (M, D)
    y = y * expert_weight.flatten()[order, None].to(y.dtype)
    return torch.zeros_like(x).index_add(0, tok, y.to(x.dtype))  # (N, D); y is bf16 under autocast


def _softmax_scores(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(-1)


SCORE_FUNCS = {"softmax": _softmax_scores, "sigmoid": torch.sigmoid}
BALANCE = ("aux_loss", "aux_free", "none")


class MoE(nn.Module):
    """Shared experts (always on) + ``n_experts`` routed SwiGLU experts of width ``expert_hidden``,
    ``top_k`` per token. See ``MoETransformer`` for the arguments."""

    def __init__(
        self,
        dim: int,
        n_experts: int,
        expert_hidden: int,
        top_k: int,
        n_shared_experts: int = 1,
        score_func: str = "sigmoid",
        n_groups: int | None = None,
        topk_groups: int | None = None,
        capacity_factor: float | None = None,
        balance: str = "aux_free",
        aux_loss_weight: float = 0.01,
        bias_update_speed: float = 0.001,
    ) -> None:
        super().__init__()
        self.moe_fn = self.torch_moe_fn = moe_ffn  # moe_fn is swapped by Decoder.set_backend
        if not 1 <= top_k <= n_experts:
            raise UserError(f"arch.top_k={top_k} must be between 1 and arch.n_experts={n_experts}.")
        if score_func not in SCORE_FUNCS:
            raise UserError(f"arch.score_func={score_func!r} is not one of: {', '.join(SCORE_FUNCS)}.")
        if balance not in BALANCE:
            raise UserError(f"arch.balance={balance!r} is not one of: {', '.join(BALANCE)}.")
        if n_groups is not None and (
            n_experts % n_groups or not topk_groups or not 1 <= topk_groups <= n_groups
        ):
            raise UserError(
                f"arch.n_groups={n_groups} must divide arch.n_experts={n_experts}, with "
                f"1 <= arch.topk_groups={topk_groups} <= n_groups."
            )
        if n_groups is not None and topk_groups * (n_experts // n_groups) < top_k:
            raise UserError(
                f"arch.topk_groups={topk_groups} groups hold fewer than arch.top_k={top_k} experts."
            )
        if capacity_factor is not None and capacity_factor <= 0:
            raise UserError(
                f"arch.capacity_factor={capacity_factor} must be positive (or null: no dropping)."
            )
        self.n_experts, self.top_k, self.hidden = n_experts, top_k, expert_hidden
        self.score_func, self.balance = score_func, balance
        self.n_groups, self.topk_groups, self.capacity_factor = n_groups, topk_groups, capacity_factor
        self.aux_loss_weight, self.bias_update_speed = aux_loss_weight, bias_update_speed
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.w_gate = nn.Parameter(torch.empty(n_experts, dim, expert_hidden))
        self.w_up = nn.Parameter(torch.empty(n_experts, dim, expert_hidden))
        self.w_down = nn.Parameter(torch.empty(n_experts, expert_hidden, dim))
        self.shared = SwiGLU(dim, n_shared_experts * expert_hidden) if n_shared_experts else None
        # Selection-only bias of aux-loss-free balancing; a buffer (not trained by the optimizer),
        # saved in checkpoints so a resumed run routes identically.
        self.register_buffer("expert_bias", torch.zeros(n_experts))
        self._aux: torch.Tensor | None = None
        self._load: torch.Tensor | None = None  # (E,) assignments of the last training batch
        self._stats: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, D) -> expert_idx (N, k), expert_weight (N, k), scores (N, E) in float32."""
        scores = SCORE_FUNCS[self.score_func](self.router(x).float())  # (N, E)
        select = scores.detach() + self.expert_bias  # the bias steers selection, never the weights
        if self.n_groups is not None:
            N, G = select.shape[0], self.n_groups
            grouped = select.view(N, G, -1)  # (N, G, E/G)
            # a group's score: sum of its top-2 experts (DeepSeek-V3)
            group_score = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)  # (N, G)
            chosen = group_score.topk(self.topk_groups, dim=-1).indices  # (N, topk_groups)
            allowed = torch.zeros_like(group_score, dtype=torch.bool).scatter(1, chosen, True)
            select = grouped.masked_fill(~allowed[..., None], float("-inf")).view(N, -1)
        idx = select.topk(self.top_k, dim=-1).indices  # (N, k)
        weight = scores.gather(1, idx)  # (N, k)
        if self.score_func == "sigmoid":  # independent gates: normalize the chosen ones (DeepSeek-V3)
            weight = weight / weight.sum(-1, keepdim=True)
        return idx, weight, scores

    def _capacity_keep(self, idx: torch.Tensor) -> torch.Tensor | None:
        """(N, k) bool: the first ``capacity`` assignments of each expert in token order are kept."""
        if self.capacity_factor is None:
            return None
        N, k = idx.shape
        capacity = math.ceil(self.capacity_factor * N * k / self.n_experts)
        flat = idx.flatten()
        order = flat.argsort(stable=True)  # as in moe_ffn: token order within each expert
        counts = torch.bincount(flat, minlength=self.n_experts)
        starts = counts.cumsum(0) - counts  # (E,) first sorted row of each expert
        rank = torch.arange(flat.numel(), device=idx.device) - starts[flat[order]]  # rank in its expert
        keep = torch.empty_like(flat, dtype=torch.bool)
        keep[order] = rank < capacity
        return keep.view(N, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, D)
        idx, weight, scores = self.route(x)
        keep = self._capacity_keep(idx)
        out = self.moe_fn(x, idx, weight, self.w_gate, self.w_up, self.w_down, keep=keep)
        if self.shared is not None:
            out = out + self.shared(x)
        if self.training:
            self._record(idx, scores, keep)
        return out.view(shape)

    @torch.no_grad()
    def _statistics(self, load: torch.Tensor, probs: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        frac = load / load.sum()  # (E,)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        dropped = torch.zeros(()) if keep is None else 1 - keep.float().mean()
        return torch.stack([
            frac.max(), frac.min(), load.max() / load.mean() - 1, entropy, dropped.to(frac),
            self.expert_bias.min(), self.expert_bias.max(),
        ])  # fmt: skip

    def _record(self, idx: torch.Tensor, scores: torch.Tensor, keep: torch.Tensor | None) -> None:
        load = torch.bincount(idx.flatten(), minlength=self.n_experts).float()  # (E,) before dropping
        probs = scores / scores.sum(-1, keepdim=True)  # (N, E): a distribution for both score funcs
        self._load = load
        self._stats = self._statistics(load, probs.detach(), keep)
        self._aux = None
        if self.balance == "aux_loss":
            # switch-style: E * sum_i f_i P_i, f_i = share of assignments (no gradient), P_i = mean prob
            f = load / load.sum()
            self._aux = self.aux_loss_weight * self.n_experts * (f * probs.mean(0)).sum()

    # -- hooks the decoder gathers ----------------------------------------------------------------
    def aux_loss(self) -> torch.Tensor | None:
        return self._aux

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.balance == "aux_free" and self._load is not None:
            # overloaded experts (load above the mean) get -gamma, underloaded ones +gamma
            self.expert_bias += self.bias_update_speed * torch.sign(self._load.mean() - self._load)
        self._load = None

    def diagnostics(self, prefix: str) -> dict[str, float]:
        if self._stats is None:
            return {}
        names = ("max_load", "min_load", "max_violation", "entropy", "dropped", "bias_min", "bias_max")
        return {prefix + n: v for n, v in zip(names, self._stats.tolist(), strict=True)}

    def inactive_params(self) -> int:
        """Routed experts a token is not sent to (the router and shared experts are always active)."""
        return (self.n_experts - self.top_k) * 3 * self.w_gate.shape[1] * self.hidden


class MoETransformer(Decoder):
    """Decoder whose FFNs after the first ``first_k_dense`` layers are MoE.

    Args (beyond DenseTransformer's): n_experts, expert_hidden (routed expert width), top_k,
    n_shared_experts (their SwiGLU is n_shared_experts * expert_hidden wide), score_func
    (softmax|sigmoid), n_groups/topk_groups (group-limited routing; None = off), first_k_dense,
    capacity_factor (None = no drop; else capacity = ceil(factor * N * top_k / n_experts) per
    expert and batch, the overflow is dropped in token order and reported), balance
    (aux_loss|aux_free|none), aux_loss_weight, bias_update_speed (gamma). ``attention``: a factory
    ``(d_model, n_heads) -> mixer`` (e.g. MLA via a Hydra ``_partial_``); None = the dense attention
    with n_kv_heads/qk_norm/softcap/window/global_every.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        n_experts: int = 16,
        expert_hidden: int = 128,
        top_k: int = 2,
        n_shared_experts: int = 1,
        score_func: str = "sigmoid",
        n_groups: int | None = None,
        topk_groups: int | None = None,
        first_k_dense: int = 1,
        capacity_factor: float | None = None,
        balance: str = "aux_free",
        aux_loss_weight: float = 0.01,
        bias_update_speed: float = 0.001,
        mlp_hidden: int | None = None,
        n_kv_heads: int | None = None,
        qk_norm: bool = False,
        softcap: float | None = None,
        window: int | None = None,
        global_every: int | None = None,
        attention=None,
        tie_embeddings: bool = True,
        rope_theta: float = 10_000.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        backend: str = "torch",
    ) -> None:
        check_backend(backend)
        n_kv_heads = n_kv_heads or n_heads
        if attention is None:
            check_attention(d_model, n_heads, n_kv_heads, softcap, window, global_every)
        if not 0 <= first_k_dense <= n_layers:
            raise UserError(
                f"arch.first_k_dense={first_k_dense} must be between 0 and arch.n_layers={n_layers}."
            )
        hidden = mlp_hidden or swiglu_hidden(d_model)

        def make_block(i: int) -> Block:
            if attention is None:
                mixer = Attention(
                    d_model, n_heads, n_kv_heads, rope_theta, qk_norm=qk_norm, softcap=softcap,
                    window=layer_window(i, window, global_every), eps=norm_eps,
                )  # fmt: skip
            else:
                mixer = attention(d_model, n_heads)
            if i < first_k_dense:
                return Block(d_model, mixer, SwiGLU(d_model, hidden), norm_eps)
            ffn = MoE(
                d_model, n_experts, expert_hidden, top_k, n_shared_experts, score_func, n_groups,
                topk_groups, capacity_factor, balance, aux_loss_weight, bias_update_speed,
            )  # fmt: skip
            return Block(d_model, mixer, ffn, norm_eps)

        super().__init__(
            vocab_size, d_model, n_layers, make_block, tie_embeddings, norm_eps, init_std, backend
        )
