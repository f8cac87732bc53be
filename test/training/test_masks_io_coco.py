"""COCO RLE through pycocotools: the project's encode/decode agree with the library
in both directions, and malformed RLEs are refused before the library sees them."""

import numpy as np
import pytest

coco = pytest.importorskip("pycocotools.mask", reason="pycocotools is not installed")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from vggts_ros.training.masks_io import (
    counts_to_string, decode_segmentation, rle_decode, rle_encode, string_to_counts,
)


def masks():
    rng = np.random.default_rng(3)
    yield np.zeros((5, 4), np.uint8)
    yield np.ones((3, 7), np.uint8)
    for shape in [(1, 1), (9, 13), (64, 48), (480, 640)]:
        yield (rng.random(shape) > 0.5).astype(np.uint8)
        blob = np.zeros(shape, np.uint8)
        blob[shape[0] // 4 : 3 * shape[0] // 4 + 1, shape[1] // 3 : 2 * shape[1] // 3 + 1] = 1
        yield blob


@pytest.mark.parametrize("index", range(10))
def test_round_trip_against_pycocotools(index):
    m = list(masks())[index]
    ours = rle_encode(m)
    theirs = coco.encode(np.asfortranarray(m))
    assert ours["size"] == [m.shape[0], m.shape[1]] == list(theirs["size"])
    assert ours["counts"] == theirs["counts"].decode("ascii")
    assert np.array_equal(rle_decode({"size": theirs["size"], "counts": theirs["counts"]}), m)
    assert np.array_equal(coco.decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)
    raw = rle_encode(m, compressed=False)
    assert string_to_counts(ours["counts"]) == raw["counts"]
    assert counts_to_string(raw["counts"]) == ours["counts"]
    assert np.array_equal(rle_decode(raw), m)
    assert np.array_equal(decode_segmentation(theirs, *m.shape), m)


def test_short_or_long_strings_are_refused():
    full = rle_encode(np.eye(4, dtype=np.uint8))
    short = counts_to_string(string_to_counts(full["counts"])[:-1])  # last run missing
    with pytest.raises(ValueError, match="covers 15 pixels but size 4x4 has 16"):
        rle_decode({"size": [4, 4], "counts": short})
    with pytest.raises(ValueError, match="covers 20 pixels"):
        rle_decode({"size": [4, 4], "counts": counts_to_string([4, 16])})
    with pytest.raises(ValueError, match="truncated"):
        rle_decode({"size": [4, 4], "counts": "3Y"})  # 'Y' promises another group
