"""What a training job's evaluations compute from the logits of its seed replicas (one model per seed, see
scaling.train.loop): at every evaluation the replicas' mean metrics; at the final one also calibration per seed,
the seeds as an ensemble, and the per-image test probabilities that the job saves (PREDICTIONS_FILE).

Logits and targets come per replica as (logits, targets) pairs of float32 numpy arrays in the split's order.
Probabilities are computed in torch, as the loop always has, so that the reported numbers do not move.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from scaling.evaluate import calibration, uncertainty
from scaling.evaluate.metrics import METRICS, confusion_matrix, evaluate


def probabilities(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """Softmax (multiclass) or sigmoid probabilities of float32 logits; binary ones as (n,)."""
    logits = logits.float()
    if kind == "multiclass":
        return logits.softmax(1)
    probs = logits.sigmoid()
    return probs.squeeze(1) if kind == "binary" else probs


def replica_metrics(kind: str, outputs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """The replicas' mean of every metric (scaling.evaluate.metrics.METRICS); their ROC-AUCs and confusion
    matrices one per seed (JSON lists) and the spread of ROC-AUC over them."""
    per_replica = [_metrics(kind, logits, y) for logits, y in outputs]
    out = {k: float(np.mean([m[k] for m in per_replica])) for k in per_replica[0] if k != "confusion"}
    if len(per_replica) > 1:
        out["roc_auc_sd"] = float(np.std([m["roc_auc"] for m in per_replica], ddof=1))
    out["roc_auc_seeds"] = json.dumps([m["roc_auc"] for m in per_replica])
    out["confusion"] = json.dumps([m["confusion"] for m in per_replica])
    return out


def _metrics(kind: str, logits: np.ndarray, y: np.ndarray) -> dict:
    probs = probabilities(kind, torch.from_numpy(logits)).numpy()
    return {**evaluate(kind, y, probs), "confusion": confusion_matrix(kind, y, probs).tolist()}


def final_evaluation(kind: str, val: list[tuple], test: list[tuple], test_index, seeds) -> tuple[dict, dict | None]:
    """The test metrics of the final evaluation (`replica_metrics`, then `trust`) and the per-image predictions
    to save; `test_index` and `seeds` are the job's test rows and seeds, stored with them."""
    metrics = replica_metrics(kind, test)
    scores, predictions = trust(kind, val, test, test_index, seeds)
    return {**metrics, **scores}, predictions


def trust(kind: str, val: list[tuple], test: list[tuple], test_index, seeds) -> tuple[dict, dict | None]:
    """Calibration (per seed, then their mean; `temperature_at_bound` counts seeds) and the seeds as an ensemble,
    from the final evaluation's logits; with the per-image test probabilities of every seed (probs, labels, index,
    seeds). Binary and multiclass tasks (the fine-tuning targets); none for multilabel."""
    if kind not in ("binary", "multiclass"):
        return {}, None
    started = time.perf_counter()
    per_seed, diagrams = [], []
    for (val_logits, val_y), (test_logits, test_y) in zip(val, test, strict=True):
        scalars, _, diagram = calibration.calibrate(kind, _squeezed(kind, val_logits), val_y,
                                                    _squeezed(kind, test_logits), test_y)
        per_seed.append({k: v for k, v in scalars.items() if k not in METRICS})  # those the plain metrics have
        diagrams.append(diagram)
    out = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
    out["temperature_at_bound"] = int(sum(m["temperature_at_bound"] for m in per_seed))
    labels = test[0][1]
    probs = np.stack([calibration.probabilities(kind, _squeezed(kind, z)) for z, _ in test]).astype(np.float32)
    out.update(uncertainty.ensemble(kind, labels, probs))
    if kind == "binary":
        out["roc_auc_low"], out["roc_auc_high"] = uncertainty.auc_interval(labels, probs)
    out["reliability"] = json.dumps({stage: {k: np.sum([d[stage][k] for d in diagrams], axis=0).tolist()
                                             for k in diagrams[0][stage]} for stage in diagrams[0]})
    out["trust_seconds"] = time.perf_counter() - started
    return out, {"probs": probs, "labels": labels, "index": np.asarray(test_index), "seeds": np.asarray(seeds)}


def _squeezed(kind: str, logits: np.ndarray) -> np.ndarray:
    """Binary logits (n, 1) as (n,), the shape calibration takes."""
    return logits[:, 0] if kind == "binary" else logits
