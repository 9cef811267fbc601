"""Image files on disk: decoding them, and the base class of every dataset that is a tree of image files.

`read_image` decodes 8/16-bit PNG and JPEG (and the other formats Pillow reads) and DICOM (pydicom) into
the arrays `Dataset.load` returns. `ImageTree` is the shared half of the real datasets: a root folder, label
files the subclass parses into records, keys that are paths relative to the root, a cheap existence check
of every listed image (one directory listing per folder), and a fingerprint of the label files.
"""
from __future__ import annotations

import abc
import json
import os
import posixpath
import re
from hashlib import sha256
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from scaling.data.base import RECORD_COLUMNS, SPLITS, DataError, Dataset

#: suffixes decoded with pydicom; everything else goes to Pillow (a suffix-less file is sniffed)
DICOM_SUFFIXES = (".dcm", ".dicom")
#: image files an image-folder dataset picks up (lower case)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm") + DICOM_SUFFIXES
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path: str | os.PathLike, *, channels: int = 1) -> np.ndarray:
    """Decode one image file.

    channels=1 gives HxW: uint8 for 8-bit files (colour files are converted to luma), uint16 for 16-bit
    PNG/TIFF and for DICOM with more than 8 bits stored. channels=3 gives HxWx3 uint8 (grayscale repeated,
    16-bit reduced to its high byte).

    DICOM: MONOCHROME1 is inverted so that bright means dense in every format, and the `BitsStored` bits are
    stretched to the full range of the output dtype (a 12-bit 4095 becomes 65535), because downstream
    preprocessing scales pixels by the dtype's range. Modality/VOI LUTs are not applied: X-ray pixel data is
    used as stored.

    Raises DataError naming the file when it is missing, truncated, corrupt or of an unsupported kind."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file is missing")
    if _is_dicom(path):
        pixels = _read_dicom(path)
    else:
        pixels = _read_pillow(path, channels)
    return _to_channels(pixels, channels)


def _is_dicom(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix:
        return False
    with open(path, "rb") as f:  # suffix-less files (common in DICOM exports): look for the preamble magic
        return f.read(132)[128:] == b"DICM"


def _read_pillow(path: Path, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()  # decode everything now: truncated or corrupt data fails here, not half-way into training
            if im.mode in _SIXTEEN_BIT_MODES:
                return np.asarray(im).astype(np.uint16)
            if im.mode == "I":  # 32-bit integer mode: some readers widen 16-bit files to it
                pixels = np.asarray(im)
                if pixels.min() < 0 or pixels.max() > 65535:
                    raise DataError(f"{path}: 32-bit integer pixels outside 0..65535 are not supported")
                return pixels.astype(np.uint16)
            if im.mode == "F":
                raise DataError(f"{path}: floating-point images are not supported")
            return np.asarray(im.convert("L" if channels == 1 else "RGB"))
    except DataError:
        raise
    except Exception as err:  # Pillow signals bad files with OSError, SyntaxError, ValueError, ...
        raise DataError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom  # imported here: only DICOM datasets pay for it

    try:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            raise DataError(f"{path}: DICOM file has no pixel data")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{path}: multi-frame DICOM is not supported (NumberOfFrames={ds.NumberOfFrames})")
        pixels = ds.pixel_array  # pydicom masks the bits above BitsStored and sign-extends signed data
        photometric = str(ds.PhotometricInterpretation)
        bits = int(ds.BitsStored)
        signed = int(ds.get("PixelRepresentation", 0)) == 1
    except DataError:
        raise
    except Exception as err:  # pydicom: InvalidDicomError, ValueError (short pixel data), missing handlers, ...
        raise DataError(f"{path}: cannot decode DICOM ({type(err).__name__}: {err})") from err
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _monochrome(pixels, bits, signed, invert=photometric == "MONOCHROME1")
    if pixels.ndim == 3 and pixels.shape[-1] == 3 and pixels.dtype == np.uint8:
        return pixels  # RGB / YBR (pydicom converts YBR to RGB)
    raise DataError(f"{path}: unsupported DICOM PhotometricInterpretation {photometric!r} "
                    f"with {pixels.dtype} pixels of shape {pixels.shape}")


def _monochrome(pixels: np.ndarray, bits: int, signed: bool, invert: bool) -> np.ndarray:
    top = (1 << bits) - 1
    values = pixels.astype(np.int64)
    if signed:
        values += 1 << (bits - 1)  # two's complement -> offset binary, so 0 is the darkest value
    values = np.clip(values, 0, top)
    if invert:
        values = top - values
    out_dtype, out_top = (np.uint8, 255) if bits <= 8 else (np.uint16, 65535)
    if top != out_top:
        values = (values * out_top + top // 2) // top
    return values.astype(out_dtype)


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        if pixels.ndim == 3:  # colour DICOM
            return np.asarray(Image.fromarray(pixels).convert("L"))
        return pixels
    if pixels.ndim == 3:
        return pixels
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels[:, :, None], 3, axis=2)


def key_problem(key: str) -> str | None:
    """Why `key` cannot name a file under a dataset root (absolute, empty, or escaping it), or None."""
    if not isinstance(key, str) or not key.strip():
        return "empty path"
    if key.startswith(("/", "\\")) or os.path.isabs(key) or re.match(r"[A-Za-z]:[\\/]", key):
        return "absolute path"
    normal = posixpath.normpath(key.replace("\\", "/"))
    if normal == ".." or normal.startswith("../") or normal == ".":
        return "path escapes the dataset root"
    return None


def resolve_key(root: Path, key: str) -> Path:
    """The file that `key` names under `root`; DataError for a key that would leave the root."""
    problem = key_problem(key)
    if problem:
        raise DataError(f"{root}: key {key!r} is not a file under the dataset root ({problem})")
    return root / posixpath.normpath(key)


def row_origins(path: Path, rows) -> list[str]:
    """'file:line' for rows of a one-header-line CSV/text file, given 0-based data-row positions."""
    return [f"{path}:{int(r) + 2}" for r in rows]


def find_file(root: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of `names` that exists in `root`; DataError listing the names otherwise."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no {what} found; expected one of: {', '.join(names)}")


def read_csv(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    """A CSV with the given columns required; DataError naming the file and the missing columns."""
    try:
        table = pd.read_csv(path, **kwargs)
    except Exception as err:  # pandas: ParserError, UnicodeDecodeError, EmptyDataError, BadGzipFile, ...
        raise DataError(f"{path}: cannot read CSV ({type(err).__name__}: {err})") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the header has {list(table.columns)}")
    return table


class ImageTree(Dataset):
    """A dataset of image files under `root`, described by label/split files that a subclass parses.

    Subclasses implement `_parse` (records, plus an optional `origin` column, "file:line", that error
    messages name; without it they name the image path) and `_label_files`, and take keyword-only options:
    `root`, and `check_files` where label files (not a listing) name the images.
    `records()` parses once, then checks what can be checked without decoding images: keys stay inside the
    root, no key is listed twice, no patient straddles two splits, and (with check_files) every listed
    image exists -- one directory listing per folder, so a missing file is reported before any expensive
    work. `fingerprint()` hashes the label files' bytes, the root and the options, not the images (hashing
    ImageNet-21k would take hours): replacing image files in place needs a new cache directory. Datasets
    whose labels are the file listing itself (no label files) hash the listing: keys, splits and labels.
    """

    channels = 1

    def __init__(self, *, root: str, check_files: bool = True) -> None:
        self.root = Path(root)
        self.check_files = bool(check_files)
        self._records: pd.DataFrame | None = None

    @abc.abstractmethod
    def _parse(self) -> pd.DataFrame:
        """RECORD_COLUMNS (plus `origin` where known); raises DataError for bad label files."""

    @abc.abstractmethod
    def _label_files(self) -> list[Path]:
        """The files whose bytes decide the records (hashed by `fingerprint`)."""

    def _options(self) -> dict:
        """The options besides root/check_files that decide the records (hashed by `fingerprint`)."""
        return {}

    def records(self) -> pd.DataFrame:
        if self._records is None:
            if not self.root.is_dir():
                raise DataError(f"{self.root}: dataset root of {self.name} is not a directory")
            table = self._parse().reset_index(drop=True)
            self._check_table(table)
            if self.check_files:
                self._check_files_exist(table)
            self._records = table[list(RECORD_COLUMNS)]
        return self._records.copy(deep=False)

    def load(self, key: str) -> np.ndarray:
        return read_image(resolve_key(self.root, key), channels=self.channels)

    def fingerprint(self) -> str:
        digest = sha256(json.dumps({"dataset": self.name, "root": str(self.root.absolute()),
                                    "options": self._options()}, sort_keys=True, default=str).encode())
        label_files = self._label_files()
        for path in label_files:
            digest.update(path.name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        if not label_files:  # labels come from the file listing itself (folder or file names): hash it
            records = self.records()
            digest.update(pd.util.hash_pandas_object(records[["split", "key", "y"]], index=False).to_numpy().tobytes())
        return digest.hexdigest()

    def _origin(self, table: pd.DataFrame, row: int) -> str:
        if "origin" in table:
            return str(table["origin"].iat[row])
        return str(self.root / table["key"].iat[row])

    def _check_table(self, table: pd.DataFrame) -> None:
        if len(table) == 0:
            raise DataError(f"{self.root}: {self.name} lists no images")
        for row, key in enumerate(table["key"].tolist()):
            # the cheap test first: only keys that could leave the root get the full check
            problem = key_problem(key) if not key or key[0] in "/\\. \t" or ".." in key or key[1:2] == ":" else None
            if problem:
                raise DataError(f"{self._origin(table, row)}: image path {key!r} is not a file under "
                                f"{self.root} ({problem})")
        dup = table["key"].duplicated(keep=False).to_numpy()
        if dup.any():
            first, again = np.flatnonzero(table["key"].to_numpy() == table["key"].to_numpy()[dup][0])[:2]
            raise DataError(f"{self._origin(table, again)}: image {table['key'].iat[first]!r} is listed twice "
                            f"(also at {self._origin(table, first)}); {int(dup.sum())} rows repeat a key")
        splits = table.groupby("patient", sort=False)["split"].nunique()
        if (splits > 1).any():
            patient = splits.index[splits > 1][0]
            rows = np.flatnonzero((table["patient"] == patient).to_numpy())
            seen: dict[str, str] = {}
            for row in rows:
                seen.setdefault(table["split"].iat[row], self._origin(table, row))
            where = ", ".join(f"{split} ({origin})" for split, origin in seen.items())
            raise DataError(f"patient {patient!r} of {self.name} has images in more than one split: {where}; "
                            f"a patient's images must stay in one split ({int((splits > 1).sum())} such patients)")

    def _check_files_exist(self, table: pd.DataFrame) -> None:
        listings: dict[str, set[str]] = {}
        missing = []
        for row, key in enumerate(table["key"].tolist()):
            folder, _, name = posixpath.normpath(key).rpartition("/")
            if folder not in listings:
                try:
                    listings[folder] = set(os.listdir(self.root / folder))
                except (FileNotFoundError, NotADirectoryError):
                    listings[folder] = set()
            if name not in listings[folder]:
                missing.append(row)
        if missing:
            row = missing[0]
            raise DataError(f"{self._origin(table, row)}: image {table['key'].iat[row]!r} is missing under "
                            f"{self.root} ({len(missing)} of {len(table)} listed images are missing; "
                            f"option check_files=false describes the labels without looking for images)")


def require_rows(part: pd.DataFrame, split: str, source: Path | str, after: str = "") -> None:
    """DataError when a split that its source file defines came out empty (after filtering)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if len(part) == 0:
        why = f" after {after}" if after else ""
        raise DataError(f"{source}: split {split!r} is empty{why}")
