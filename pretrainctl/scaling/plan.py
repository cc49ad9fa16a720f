"""Training plans: how many steps to run, derived from a step count, a token budget or a FLOP budget.

Every plan resolves to a ``Plan`` with the derived quantities, which is printed at the start of a run
and saved in its run directory. Training FLOPs use the architecture's own ``flops_per_token``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pretrainctl.errors import UserError


@dataclass(frozen=True)
class Plan:
    params_total: int
    params_active: int
    params_non_embedding: int
    flops_per_token: int
    tokens_per_step: int
    steps: int
    tokens: int
    train_flops: float
    rule: str  # how steps were derived, in words

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelFacts:
    params_total: int
    params_active: int
    params_non_embedding: int
    flops_per_token: int


def _plan(facts: ModelFacts, tokens_per_step: int, steps: int, rule: str) -> Plan:
    if steps < 1:
        raise UserError(f"the scaling plan gives {steps} training steps ({rule}); raise the budget.")
    return Plan(
        params_total=facts.params_total,
        params_active=facts.params_active,
        params_non_embedding=facts.params_non_embedding,
        flops_per_token=facts.flops_per_token,
        tokens_per_step=tokens_per_step,
        steps=steps,
        tokens=steps * tokens_per_step,
        train_flops=float(steps * tokens_per_step * facts.flops_per_token),
        rule=rule,
    )


class StepsPlan:
    """A fixed number of optimizer steps."""

    def __init__(self, steps: int = 1000) -> None:
        self.steps = steps

    def resolve(self, facts: ModelFacts, tokens_per_step: int) -> Plan:
        return _plan(facts, tokens_per_step, self.steps, f"{self.steps} steps")


class TokensPlan:
    """A token budget: ``tokens`` directly, or ``tokens_per_param`` x active parameters
    (20 is Chinchilla's compute-optimal ratio)."""

    def __init__(self, tokens: float | None = None, tokens_per_param: float | None = None) -> None:
        if (tokens is None) == (tokens_per_param is None):
            raise UserError(
                "scaling=tokens needs exactly one of scaling.tokens and scaling.tokens_per_param."
            )
        self.tokens, self.tokens_per_param = tokens, tokens_per_param

    def resolve(self, facts: ModelFacts, tokens_per_step: int) -> Plan:
        if self.tokens is not None:
            budget, rule = float(self.tokens), f"{self.tokens:.3g} tokens"
        else:
            budget = self.tokens_per_param * facts.params_active
            rule = f"{self.tokens_per_param} tokens x {facts.params_active:,} active params"
        return _plan(facts, tokens_per_step, math.ceil(budget / tokens_per_step), rule)


class FlopsPlan:
    """A compute budget in training FLOPs: steps = budget / (flops_per_token x tokens_per_step)."""

    def __init__(self, flops: float = 1e15) -> None:
        self.flops = float(flops)

    def resolve(self, facts: ModelFacts, tokens_per_step: int) -> Plan:
        steps = math.floor(self.flops / (facts.flops_per_token * tokens_per_step))
        return _plan(
            facts,
            tokens_per_step,
            steps,
            f"{self.flops:.3g} FLOPs / {facts.flops_per_token:,} FLOPs per token",
        )


def override_steps(plan: Plan, steps: int) -> Plan:
    """``trainer.max_steps`` set by the user wins over the plan."""
    facts = ModelFacts(plan.params_total, plan.params_active, plan.params_non_embedding, plan.flops_per_token)
    return _plan(facts, plan.tokens_per_step, steps, f"trainer.max_steps={steps} (overrides {plan.rule})")
