"""Noise schedules of masked diffusion (MDLM, Sahoo et al. 2024, arXiv:2406.07524, §3; LLaDA, Nie et
al. 2025, arXiv:2502.09992).

A schedule maps diffusion time t in [0, 1] to the probability ``m(t)`` that a token is masked
(``1 - alpha_t`` in MDLM's notation; m(0) = 0, increasing) and gives the continuous-time ELBO weight
``w(t) = m'(t) / m(t)`` (= ``-alpha'_t / (1 - alpha_t)``), so that

    -log p(x) <= integral_0^1 w(t) E_{x_t ~ q_t(. | x)} [ sum_{i masked in x_t} -log p(x_i | x_t) ] dt.

Substituting s = m(t) turns the integral into ``integral_0^1 (1/s) E_{rate s}[...] ds`` for every
schedule with m(0) = 0 and m(1) = 1: the schedule does not change the bound, only which masking
rates training samples most often (it is an importance-sampling proposal over rates, MDLM §3.3).
"""

from __future__ import annotations

import math

import torch

from pretrainctl.errors import UserError


class NoiseSchedule:
    """``mask_rate(t)`` and ``weight(t)`` on a tensor of times in (0, 1]."""

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LinearSchedule(NoiseSchedule):
    """m(t) = t, w(t) = 1/t: LLaDA's schedule."""

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 / t


class LogLinearSchedule(NoiseSchedule):
    """MDLM's log-linear noise: total noise sigma(t) = -log(1 - (1 - eps) t), so alpha_t = exp(-sigma)
    and m(t) = (1 - eps) t, w(t) = m'/m = 1/t. ``eps`` keeps a sliver of tokens unmasked at t = 1
    (MDLM's numerical guard); the bound then misses the rates above 1 - eps, a negligible share."""

    def __init__(self, eps: float = 1e-3) -> None:
        if not 0 <= eps < 1:
            raise UserError(f"objective.noise.eps={eps} must be in [0, 1) (MDLM uses 1e-3).")
        self.eps = eps

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) * t

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 / t


class CosineSchedule(NoiseSchedule):
    """m(t) = 1 - cos(pi t / 2), w(t) = (pi/2) sin(pi t / 2) / (1 - cos(pi t / 2)): fewer low mask
    rates than linear (m ~ pi^2 t^2 / 8 near 0), more high ones (as MaskGIT's cosine, Chang et al. 2022)."""

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - torch.cos(0.5 * math.pi * t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        # 1 - cos(x) = 2 sin^2(x/2) keeps precision for small t, where 1 - cos(x) cancels.
        x = 0.5 * math.pi * t
        return 0.5 * math.pi * torch.sin(x) / (2 * torch.sin(0.5 * x) ** 2)
