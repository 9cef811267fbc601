"""Evaluation of trained models: metrics, calibration, uncertainty from the seed replicas, saliency. Below
train/ (the loop calls them at its evaluations); numpy/scipy, and torch only where a model is run."""
