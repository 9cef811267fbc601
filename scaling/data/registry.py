"""Dataset names -> dataset classes. Entries are imported lazily so that naming a dataset does not import
every parser (and torchxrayvision) up front."""
from __future__ import annotations

import importlib
import inspect

from scaling.data.base import Dataset

_ENTRIES = {
    "synthetic-natural": "scaling.data.synthetic:SyntheticNatural",
    "synthetic-medical": "scaling.data.synthetic:SyntheticMedical",
    "synthetic-covidx": "scaling.data.synthetic:SyntheticCovidx",
    "synthetic-tb": "scaling.data.synthetic:SyntheticTB",
    "covidx": "scaling.data.covidx:Covidx",
    "chexpert": "scaling.data.chexpert:CheXpert",
    "nih": "scaling.data.nih:NIHChestXray14",
    "padchest": "scaling.data.padchest:PadChest",
    "mimic-cxr": "scaling.data.mimic:MimicCXR",
    "shenzhen-montgomery": "scaling.data.tb:ShenzhenMontgomery",
    "tbx11k": "scaling.data.tb:TBX11K",
    "image-folder": "scaling.data.folders:ImageFolder",
}

NAMES = tuple(_ENTRIES)


def dataset_class(name: str) -> type[Dataset]:
    if name not in _ENTRIES:
        raise KeyError(f"unknown dataset {name!r}; expected one of: {', '.join(NAMES)}")
    module, attr = _ENTRIES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def dataset_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options a dataset accepts (its constructor's parameters), for config validation."""
    params = inspect.signature(dataset_class(name).__init__).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind is p.KEYWORD_ONLY}


def open_dataset(name: str, **options) -> Dataset:
    return dataset_class(name)(**options)
