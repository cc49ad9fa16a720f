"""pretrainctl: a declarative experiment CLI for LLM pretraining research."""

__version__ = "0.1.0"
