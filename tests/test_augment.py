"""Flip + 4-pixel pad/crop augmentation (minilottery.augment), checked pixel by pixel."""

import numpy as np
import pytest

from minilottery.augment import flip_and_crop, shift_and_flip


def images(n=6, channels=3, size=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, channels, size, size)).astype(np.float32)


def shift_and_flip_loop(x, offsets, flips, pad=4):
    """The plain per-image version: pad with np.pad, slice the crop, reverse the columns."""
    height, width = x.shape[2:]
    out = np.empty_like(x)
    for i, image in enumerate(x):
        padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
        dy, dx = offsets[i]
        crop = padded[:, dy:dy + height, dx:dx + width]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


def test_vectorised_version_matches_the_loop():
    x = images(n=40)
    rng = np.random.default_rng(1)
    offsets, flips = rng.integers(0, 9, size=(40, 2)), rng.random(40) < 0.5
    np.testing.assert_array_equal(shift_and_flip(x, offsets, flips), shift_and_flip_loop(x, offsets, flips))


def test_centre_offset_without_flip_is_the_identity_and_flipping_twice_undoes_it():
    x = images()
    centre, n = np.full((len(x), 2), 4), len(x)
    np.testing.assert_array_equal(shift_and_flip(x, centre, np.zeros(n, bool)), x)
    flipped = shift_and_flip(x, centre, np.ones(n, bool))
    np.testing.assert_array_equal(flipped, x[:, :, :, ::-1])
    np.testing.assert_array_equal(shift_and_flip(flipped, centre, np.ones(n, bool)), x)


def test_zero_offset_is_the_top_left_corner_of_the_padded_image():
    x = images(n=2)
    out = shift_and_flip(x, np.zeros((2, 2), int), np.zeros(2, bool))
    # The image moves 4 pixels down and right; zeros come in at the top and left.
    np.testing.assert_array_equal(out[:, :, 4:, 4:], x[:, :, :28, :28])
    assert not out[:, :, :4, :].any() and not out[:, :, :, :4].any()
    corner = shift_and_flip(x, np.full((2, 2), 8), np.zeros(2, bool))
    np.testing.assert_array_equal(corner[:, :, :28, :28], x[:, :, 4:, 4:])


def test_flip_and_crop_is_seeded_and_keeps_shape_and_dtype():
    x = images(n=128)
    first = flip_and_crop(x, np.random.default_rng(7))
    again = flip_and_crop(x, np.random.default_rng(7))
    other = flip_and_crop(x, np.random.default_rng(8))
    assert first.shape == x.shape and first.dtype == np.float32 and first.flags.c_contiguous
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.array_equal(x, images(n=128))  # the input batch is left alone


def test_every_offset_and_both_orientations_occur_about_as_often_as_they_should():
    # A single bright pixel at the image centre lands at (16 + 4 - dy, 16 + 4 - dx),
    # mirrored in the column when flipped, so each output reveals the choices made.
    n = 8000
    x = np.zeros((n, 1, 32, 32), np.float32)
    x[:, 0, 16, 16] = 1
    out = flip_and_crop(x, np.random.default_rng(0))
    _, _, rows, cols = np.nonzero(out)
    assert len(rows) == n  # the pixel is never cropped away or duplicated
    dy = 20 - rows
    assert set(dy) == set(range(9))
    counts = np.bincount(dy, minlength=9)
    assert counts.min() > n / 9 * 0.8 and counts.max() < n / 9 * 1.2
    # Unflipped: column 20 - dx in 12..20; flipped: 31 - (20 - dx) in 11..19.
    # Both share 12..19, so count only the columns one orientation alone reaches.
    assert abs(np.mean(cols == 20) - np.mean(cols == 11)) < 0.02


@pytest.mark.parametrize("pad", [0, 2, 4])
def test_other_pad_widths(pad):
    x = images(n=3)
    rng = np.random.default_rng(2)
    out = flip_and_crop(x, rng, pad=pad)
    rng = np.random.default_rng(2)
    offsets, flips = rng.integers(0, 2 * pad + 1, size=(3, 2)), rng.random(3) < 0.5
    np.testing.assert_array_equal(out, shift_and_flip_loop(x, offsets, flips, pad))
