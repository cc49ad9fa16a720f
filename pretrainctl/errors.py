"""User-facing errors. A ``UserError`` is a mistake in what the user asked for (a bad option, a missing
file, an impossible combination): the CLI prints its one sentence and exits with code 2, no traceback.
Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's request, reported as one clear sentence."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run stops and keeps its last good checkpoint."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"the training loss became {value} at step {step}")
        self.step = step
        self.value = value
