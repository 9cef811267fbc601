"""Tracking a study (the only code that talks to MLflow): its own MLflow server (server), its runs (runs), and
the live progress view (progress)."""
