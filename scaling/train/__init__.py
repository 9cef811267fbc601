"""Training: the per-worker loop, evaluation metrics and the store of pre-trained checkpoints."""
