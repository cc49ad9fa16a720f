"""pretrainctl."""
