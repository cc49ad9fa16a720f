"""Hydra config groups for pretrainctl (installed as the package ``pretrainctl_conf``)."""
