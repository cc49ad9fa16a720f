"""A selective state-space layer of the Mamba-2 kind (SSD; Dao & Gu 2024, arXiv:2405.21060), in torch.

Per head h (head dim P) with a scalar decay A_h < 0, an input-dependent step dt_t > 0 and input /
output projections B_t, C_t of state size N shared by all heads (one group):

    h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T        (P, N)
    y_t = h_t C_t + D_h x_t

The training path evaluates this with the chunked SSD algorithm: inside a chunk of Q steps the
output is a masked (Q, Q) "attention" with decays exp(cumsum), across chunks a P x N state is
carried, so the work is a few matmuls per chunk plus a loop over T / Q chunks. ``ssd_scan`` is exact
(the tests compare it in float64 with the step-by-step recurrence ``ssd_sequential``). Around the
scan: one input projection to (z, x, B, C, dt), a short causal depthwise convolution over (x, B, C),
SiLU, and an output gated by SiLU(z) through an RMSNorm, as in Mamba-2.

Bidirectional objectives (``causal=False``): the layer runs the same scan over the reversed sequence
as well and averages the two directions (weights shared, as in Caduceus' BiMamba, arXiv:2403.03234),
so no position is silently blind to its right context. FLOP accounting counts one direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pretrainctl.arch.layers import RMSNorm
from pretrainctl.errors import UserError


def ssd_sequential(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The recurrence, one step at a time. x (B, T, H, P), dt (B, T, H), A (H,), Bm/Cm (B, T, N),
    state (B, H, P, N) -> y (B, T, H, P) (without the D skip), final state."""
    Bsz, T, H, P = x.shape
    h = x.new_zeros(Bsz, H, P, Bm.shape[-1]) if state is None else state
    ys = []
    for t in range(T):
        decay = torch.exp(dt[:, t] * A)  # (B, H)
        h = decay[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * Bm[:, t, None, None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", h, Cm[:, t]))
    return torch.stack(ys, 1), h


def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
    chunk: int, state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Chunked SSD: same inputs and outputs as ``ssd_sequential``."""
    Bsz, T, H, P = x.shape
    pad = -T % chunk
    a = dt * A  # (B, T, H) log-decays, <= 0
    xdt = x * dt[..., None]  # (B, T, H, P)
    if pad:  # zero input and zero log-decay: padded steps leave the state unchanged
        a, xdt = F.pad(a, (0, 0, 0, pad)), F.pad(xdt, (0, 0, 0, 0, 0, pad))
        Bm, Cm = F.pad(Bm, (0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, pad))
    nc = (T + pad) // chunk
    a = a.view(Bsz, nc, chunk, H)
    xdt = xdt.view(Bsz, nc, chunk, H, P)
    Bm, Cm = Bm.view(Bsz, nc, chunk, -1), Cm.view(Bsz, nc, chunk, -1)  # (B, C, Q, N)
    cum = a.cumsum(2)  # (B, C, Q, H)
    # within a chunk: y_l = sum_{s<=l} (C_l . B_s) exp(cum_l - cum_s) xdt_s
    tril = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril()
    seg = (cum[:, :, :, None] - cum[:, :, None, :]).masked_fill(~tril[..., None], float("-inf"))
    decay = seg.exp()  # (B, C, Q_l, Q_s, H), zero above the diagonal
    cb = torch.einsum("bcln,bcsn->bcls", Cm, Bm)  # (B, C, Q, Q)
    y = torch.einsum("bcls,bclsh,bcshp->bclhp", cb, decay, xdt)  # (B, C, Q, H, P)
    # each chunk's contribution to the state at its end
    to_end = (cum[:, :, -1:] - cum).exp()  # (B, C, Q, H)
    chunk_states = torch.einsum("bcsn,bcsh,bcshp->bchpn", Bm, to_end, xdt)  # (B, C, H, P, N)
    h = x.new_zeros(Bsz, H, P, Bm.shape[-1]) if state is None else state  # (B, H, P, N)
    inter = []
    for c in range(nc):  # carry the state across chunks: T / Q steps
        inter.append(torch.einsum("bln,blh,bhpn->blhp", Cm[:, c], cum[:, c].exp(), h))
        h = cum[:, c, -1].exp()[..., None, None] * h + chunk_states[:, c]
    y = y + torch.stack(inter, 1)
    return y.reshape(Bsz, nc * chunk, H, P)[:, :T], h


@dataclass
class SSMCache:
    """Constant-size decoding state: the last d_conv - 1 conv inputs and the SSM state."""

    conv: torch.Tensor  # (B, d_conv - 1, conv_dim)
    ssm: torch.Tensor  # (B, H, P, N)


class Mamba2(nn.Module):
    """Mamba-2 token mixer (see module docstring). d_inner = expand * dim heads of ``head_dim``."""

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: int = 2,
        head_dim: int = 16,
        d_conv: int = 4,
        chunk_size: int = 32,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        d_inner = expand * dim
        if d_inner % head_dim:
            raise UserError(f"arch.ssm_head_dim={head_dim} must divide expand * d_model = {d_inner}.")
        if d_state < 1 or d_conv < 1 or chunk_size < 1:
            raise UserError("arch.d_state, arch.d_conv and arch.chunk_size must be at least 1.")
        self.d_inner, self.n_heads, self.head_dim, self.d_state = (
            d_inner,
            d_inner // head_dim,
            head_dim,
            d_state,
        )
        self.d_conv, self.chunk = d_conv, chunk_size
        self.conv_dim = d_inner + 2 * d_state
        self.in_proj = nn.Linear(dim, 2 * d_inner + 2 * d_state + self.n_heads, bias=False)  # z, x, B, C, dt
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim)
        self.conv.weight.keep_init = True  # PyTorch's fan-in init: std 0.02 would mute the short conv
        # dt starts log-uniform in [1e-3, 1e-1] and A in [1, 16], as in Mamba-2
        dt = torch.exp(torch.rand(self.n_heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(self.n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm = RMSNorm(d_inner, eps)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def _mix(self, x: torch.Tensor, cache: SSMCache | None) -> torch.Tensor:
        """One causal pass: x (B, T, D) -> (B, T, D); reads and updates ``cache`` when given."""
        Bsz, T, _ = x.shape
        z, xbc, dt = self.in_proj(x).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        pad = x.new_zeros(Bsz, self.d_conv - 1, self.conv_dim) if cache is None else cache.conv
        xbc = torch.cat([pad, xbc], dim=1)  # (B, d_conv - 1 + T, conv_dim): causal left context
        if cache is not None:
            cache.conv = xbc[:, -(self.d_conv - 1) :] if self.d_conv > 1 else cache.conv
        xbc = F.silu(self.conv(xbc.transpose(1, 2)).transpose(1, 2))  # (B, T, conv_dim)
        xs, Bm, Cm = xbc.split([self.d_inner, self.d_state, self.d_state], dim=-1)
        xs = xs.reshape(Bsz, T, self.n_heads, self.head_dim)  # (B, T, H, P)
        dt = F.softplus(dt + self.dt_bias)  # (B, T, H)
        A = -torch.exp(self.A_log.float())  # (H,)
        y, state = ssd_scan(xs, dt, A, Bm, Cm, self.chunk, None if cache is None else cache.ssm)
        if cache is not None:
            cache.ssm = state
        y = y + self.D[:, None] * xs
        y = self.norm(y.reshape(Bsz, T, self.d_inner) * F.silu(z))  # gated RMSNorm
        return self.out_proj(y)

    def forward(
        self, x: torch.Tensor, *, causal: bool, cache: SSMCache | None = None, pos: int = 0
    ) -> torch.Tensor:
        if causal:
            return self._mix(x, cache)
        return 0.5 * (self._mix(x, None) + self._mix(x.flip(1), None).flip(1))  # forward + backward scan

    def init_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> SSMCache:
        return SSMCache(
            torch.zeros(batch, self.d_conv - 1, self.conv_dim, device=device, dtype=dtype),
            torch.zeros(batch, self.n_heads, self.head_dim, self.d_state, device=device, dtype=dtype),
        )

    def flops_per_token(self, seq_len: int) -> int:
        """Non-weight FLOPs of one causal pass, counted on the recurrence (the model's intrinsic cost,
        like attention's no-discount convention; the chunked form does a little more): per head, the
        decay multiply (P N), the input outer product and add (2 P N), the output contraction
        (2 P N). The conv's depthwise taps are weights, counted with the projections."""
        return 5 * self.n_heads * self.head_dim * self.d_state

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 0  # the state does not grow with context

    def state_bytes(self, dtype_bytes: int) -> int:
        """Per-sequence decoding state: conv window plus SSM state."""
        return ((self.d_conv - 1) * self.conv_dim + self.n_heads * self.head_dim * self.d_state) * dtype_bytes
