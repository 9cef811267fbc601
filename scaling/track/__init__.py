"""Tracking: the study's MLflow server and runs (the only code that talks to MLflow), and live progress."""
