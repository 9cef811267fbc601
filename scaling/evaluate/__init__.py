"""Evaluation of trained models: metrics, calibration, uncertainty, what a job's evaluations compute from its seed
replicas' logits, saliency maps. Below train/ (the loop calls them; nothing here imports train/); numpy/scipy, and
torch where models or their logits are handled."""
