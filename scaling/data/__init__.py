"""Datasets behind one interface (`Dataset`) and one registry; `python -m scaling.data` describes and
prepares them."""
from scaling.data.base import RECORD_COLUMNS, SPLITS, DataError, Dataset, Task, describe
from scaling.data.registry import NAMES, dataset_class, dataset_options, open_dataset

__all__ = ["RECORD_COLUMNS", "SPLITS", "DataError", "Dataset", "Task", "describe", "NAMES", "dataset_class",
           "dataset_options", "open_dataset"]
