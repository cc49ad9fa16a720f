"""pretrainctl_kernels: Triton kernels with plain-torch reference twins.

This package stands alone: it never imports ``pretrainctl``. ``pretrainctl`` imports it and falls
back to its torch path whenever :func:`available` says Triton cannot run here.
"""

from pretrainctl_kernels.probe import Availability, available, fp8_available

__all__ = ["Availability", "available", "fp8_available"]
