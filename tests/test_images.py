"""Decoding image files (PNG 8/16-bit, JPEG, DICOM) and refusing bad ones with a DataError naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaling.data.base import DataError
from scaling.data.images import key_problem, read_image, resolve_key
from scaling.rehearse.formats import write_dicom, write_jpeg, write_png


def ramp(shape=(6, 8), top=255, dtype=np.uint8) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) * top // (np.prod(shape) - 1)).astype(dtype)


def test_8bit_png_reads_back_exactly(tmp_path):
    pixels = ramp()
    out = read_image(write_png(tmp_path / "a.png", pixels))
    assert out.dtype == np.uint8 and np.array_equal(out, pixels)


def test_16bit_png_keeps_all_16_bits(tmp_path):
    pixels = ramp(top=65535, dtype=np.uint16)
    out = read_image(write_png(tmp_path / "a.png", pixels))
    assert out.dtype == np.uint16 and np.array_equal(out, pixels) and out.max() == 65535


def test_16bit_png_as_colour_keeps_the_high_byte(tmp_path):
    pixels = ramp(top=65535, dtype=np.uint16)
    out = read_image(write_png(tmp_path / "a.png", pixels), channels=3)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 1], (pixels >> 8).astype(np.uint8))


def test_colour_jpeg_becomes_grayscale_or_stays_colour(tmp_path):
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # pure red: luma 0.299 * 200
    path = write_jpeg(tmp_path / "a.jpg", pixels)
    gray = read_image(path)
    assert gray.shape == (16, 16) and gray.dtype == np.uint8
    assert abs(int(gray.mean()) - 60) <= 3
    colour = read_image(path, channels=3)
    assert colour.shape == (16, 16, 3) and abs(int(colour[..., 0].mean()) - 200) <= 3


def test_grayscale_png_is_repeated_for_colour(tmp_path):
    pixels = ramp()
    out = read_image(write_png(tmp_path / "a.png", pixels), channels=3)
    assert out.shape == (6, 8, 3) and all(np.array_equal(out[..., c], pixels) for c in range(3))


def test_dicom_monochrome2_12bit_is_stretched_to_16_bits(tmp_path):
    raw = np.array([[0, 2048, 4095]], dtype=np.uint16)
    out = read_image(write_dicom(tmp_path / "a.dcm", raw, bits_stored=12))
    assert out.dtype == np.uint16
    assert out.tolist() == [[0, 32776, 65535]]  # round(2048 * 65535 / 4095) = 32776


def test_dicom_monochrome1_is_inverted(tmp_path):
    raw = np.array([[0, 1000, 4095]], dtype=np.uint16)
    out = read_image(write_dicom(tmp_path / "a.dcm", raw, photometric="MONOCHROME1", bits_stored=12))
    assert out.tolist() == [[65535, round((4095 - 1000) * 65535 / 4095), 0]]


def test_dicom_bits_above_bits_stored_are_ignored(tmp_path):
    raw = np.array([[0xF000 | 291, 291]], dtype=np.uint16)  # overlay garbage in the top 4 bits
    out = read_image(write_dicom(tmp_path / "a.dcm", raw, bits_stored=12))
    assert out[0, 0] == out[0, 1] == round(291 * 65535 / 4095)


def test_signed_dicom_maps_the_most_negative_value_to_black(tmp_path):
    raw = np.array([[-2048, 0, 2047]], dtype=np.int16)
    out = read_image(write_dicom(tmp_path / "a.dcm", raw, bits_stored=12, signed=True))
    assert out.tolist() == [[0, round(2048 * 65535 / 4095), 65535]]


def test_8bit_dicom_stays_8bit(tmp_path):
    raw = np.array([[0, 7, 255]], dtype=np.uint8)
    out = read_image(write_dicom(tmp_path / "a.dcm", raw, bits_stored=8, bits_allocated=8))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 7, 255]]


def test_dicom_without_suffix_is_recognised(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.array([[0, 4095]], dtype=np.uint16))
    out = read_image(path.rename(tmp_path / "IM0001"))
    assert out.tolist() == [[0, 65535]]


def noise(shape, top, dtype) -> np.ndarray:
    return np.random.default_rng(0).integers(0, top, shape, dtype=dtype)


def truncated(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize("make", [
    lambda d: truncated(write_png(d / "a.png", noise((64, 64), 255, np.uint8)), 0.5),
    lambda d: truncated(write_png(d / "a.png", noise((64, 64), 65535, np.uint16)), 0.5),
    lambda d: truncated(write_jpeg(d / "a.jpg", noise((64, 64, 3), 255, np.uint8)), 0.5),
    lambda d: truncated(write_dicom(d / "a.dcm", np.zeros((16, 16), dtype=np.uint16)), 0.8),
    lambda d: (d / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64) and d / "a.png",
    lambda d: (d / "a.jpg").write_bytes(b"this is not a jpeg") and d / "a.jpg",
    lambda d: (d / "a.dcm").write_bytes(b"this is not a dicom file") and d / "a.dcm",
], ids=["png-truncated", "png16-truncated", "jpeg-truncated", "dicom-truncated", "png-garbage", "jpeg-garbage",
        "dicom-garbage"])
def test_corrupt_or_truncated_images_raise_data_error_naming_the_file(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(DataError, match=str(path)):
        read_image(path)


def test_missing_image_raises_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="missing") as err:
        read_image(tmp_path / "nope.png")
    assert str(tmp_path / "nope.png") in str(err.value)


@pytest.mark.parametrize("key,problem", [("../x.png", "escapes"), ("a/../../x.png", "escapes"), ("..", "escapes"),
                                         ("/etc/passwd", "absolute"), ("", "empty"), (".", "escapes")])
def test_keys_that_leave_the_root_are_refused(tmp_path, key, problem):
    assert problem in key_problem(key)
    with pytest.raises(DataError, match="not a file under the dataset root"):
        resolve_key(tmp_path, key)


def test_keys_inside_the_root_resolve(tmp_path):
    assert key_problem("train/a.png") is None and key_problem("a/../b.png") is None
    assert resolve_key(tmp_path, "a/../b.png") == tmp_path / "b.png"
