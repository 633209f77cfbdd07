"""The wound model's canonical input: one picture of the wound whatever the source."""

from __future__ import annotations

import numpy as np
import pytest

from lidar_capture import (
    MODEL_CHANNELS,
    MODEL_INPUT_SIZE,
    PointCloud,
    Scan,
    SyntheticScan,
    WoundSpec,
    generate,
    measure,
    model_input,
    raster_mask,
    synthetic_labels,
)
from lidar_capture._points import merge_frames


@pytest.fixture(scope="module")
def scanned() -> SyntheticScan:
    return generate(WoundSpec(seed=17, surface="sacrum", radius_m=0.015, frames=3))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def test_input_has_the_documented_channels_and_ranges(scanned: SyntheticScan) -> None:
    m = measure(scanned.scan)
    inp = model_input(m.raster)
    assert inp.image.shape == (len(MODEL_CHANNELS), MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)
    assert inp.image.dtype == np.float32
    rgb, depth, valid = inp.image[:3], inp.image[3], inp.image[4]
    assert set(np.unique(valid)) <= {0.0, 1.0} and valid.mean() > 0.95
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert depth.min() >= -1.0 and depth.max() <= 2.0
    # The wound is in the middle and deeper than the skin around it.
    mid = slice(MODEL_INPUT_SIZE // 2 - 4, MODEL_INPUT_SIZE // 2 + 4)
    assert depth[mid, mid].mean() > depth[:8, :8].mean() + 0.1


def test_labels_follow_the_generator_and_agree_with_the_measured_outline(
    scanned: SyntheticScan,
) -> None:
    m = measure(scanned.scan)
    inp = model_input(m.raster)
    labels = synthetic_labels(scanned, inp, m.raster)
    wound = labels > 0
    assert 0.15 < wound.mean() < 0.6  # scaled to the wound
    share = np.bincount(labels[wound], minlength=5)[1:] / np.count_nonzero(wound) * 100
    truth = scanned.truth.tissue_composition
    for k, name in enumerate(("granulation", "slough", "necrosis", "epithelium")):
        assert abs(share[k] - truth[name]) < 6.0, (name, share[k], truth[name])
    # Back on the measurement grid, the label's wound is the measured wound.
    assert dice(raster_mask(wound, inp, m.raster), m.raster.wound) > 0.9


def test_frames_and_a_point_cloud_of_the_same_wound_give_the_same_picture(
    scanned: SyntheticScan,
) -> None:
    from_frames = measure(scanned.scan)
    cloud = merge_frames(scanned.scan)
    from_cloud = measure(
        Scan("pointcloud", "test", cloud=PointCloud(cloud.points, cloud.colors)),
        body_axis=scanned.truth.body_axis,
    )
    a, b = model_input(from_frames.raster), model_input(from_cloud.raster)
    labels_a = synthetic_labels(scanned, a, from_frames.raster) > 0
    labels_b = synthetic_labels(scanned, b, from_cloud.raster) > 0
    assert abs(labels_a.mean() - labels_b.mean()) < 0.05
    # Same framing: the wound's depth map matches closely.
    assert np.abs(a.image[3] - b.image[3]).mean() < 0.05


def test_an_input_without_colour_has_zero_colour_channels(scanned: SyntheticScan) -> None:
    cloud = merge_frames(scanned.scan)
    m = measure(Scan("pointcloud", "test", cloud=PointCloud(cloud.points, None)))
    inp = model_input(m.raster)
    assert m.raster.colour is None
    assert not inp.image[:3].any() and inp.image[4].any()
