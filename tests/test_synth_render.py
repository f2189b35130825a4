"""Tests for edgecc.train.synth.render: shapes, determinism, masks, nuisance-only unchanged pairs."""

import cv2
import numpy as np
import pytest
from edgecc.train.synth import CLASSES, ChangeSpec, merge_specs, parse_caption, render_pair
from edgecc.train.synth.parser import ChangeItem

HOUSES = parse_caption("many houses are built along the road".split())
NO_CHANGE = merge_specs([parse_caption("there is no difference".split())] * 5, changeflag=0)


def test_shapes_and_dtypes():
    pre, post, mask = render_pair("train_000001", HOUSES)
    assert pre.shape == post.shape == (256, 256, 3) and mask.shape == (256, 256)
    assert pre.dtype == post.dtype == mask.dtype == np.uint8
    pre, post, mask = render_pair("train_000001", HOUSES, size=128)
    assert pre.shape == (128, 128, 3) and mask.shape == (128, 128)


def test_deterministic_and_variant():
    a = render_pair("val_000042", HOUSES, variant=0)
    b = render_pair("val_000042", HOUSES, variant=0)
    for x, y in zip(a, b, strict=True):
        assert x.tobytes() == y.tobytes()
    c = render_pair("val_000042", HOUSES, variant=1)
    assert a[1].tobytes() != c[1].tobytes()
    d = render_pair("val_000043", HOUSES, variant=0)
    assert a[0].tobytes() != d[0].tobytes()


def test_add_houses_mask():
    for i in range(5):
        pre, post, mask = render_pair(f"train_{i:06d}", HOUSES)
        house = mask == CLASSES.index("house")
        assert house.sum() > 1500, "many houses should cover a visible area"
        # after removing the global radiometric nuisance (per-image standardization), the images differ where the
        # houses appear far more than elsewhere
        a, b = (cv2.GaussianBlur(x.astype(np.float32).mean(2), (5, 5), 2) for x in (pre, post))
        diff = np.abs((a - a.mean()) / a.std() - (b - b.mean()) / b.std())
        assert diff[house].mean() > 2 * diff[mask == 0].mean()


def test_counts_scale_the_change():
    def area(count):
        spec = ChangeSpec(items=(ChangeItem("building", count, "add"),))
        return np.mean([(render_pair(f"id{i}", spec)[2] > 0).sum() for i in range(6)])

    assert area("one") < area("several")


def test_position_places_the_change():
    spec = parse_caption("some buildings are built at the bottom".split())
    for i in range(4):
        mask = render_pair(f"pos{i}", spec)[2] == CLASSES.index("building")
        assert mask.any() and mask[:128].sum() < 0.2 * mask[128:].sum()


def test_removal_marks_removed_class():
    spec = parse_caption("the trees are removed".split())
    pre, post, mask = render_pair("rm0", spec)
    assert (mask == CLASSES.index("tree")).sum() > 300


def test_unchanged_pair_differs_only_by_nuisance():
    for i in range(4):
        pre, post, mask = render_pair(f"test_{i:06d}", NO_CHANGE)
        assert not mask.any()
        d = np.abs(pre.astype(np.int16) - post.astype(np.int16)).mean()
        assert 0.5 < d < 60  # radiometry, noise, jpeg, 1-3 px shift: never identical, never a different scene
        # the structure is the same: a blurred, normalized before correlates strongly with the after
        a = cv2.GaussianBlur(pre.astype(np.float32).mean(2), (9, 9), 3)
        b = cv2.GaussianBlur(post.astype(np.float32).mean(2), (9, 9), 3)
        a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
        assert (a * b).mean() > 0.6


def test_changed_without_items_still_changes():
    pre, post, mask = render_pair("x", ChangeSpec(changed=True))
    assert mask.any()


def test_bad_size():
    with pytest.raises(ValueError):
        render_pair("x", HOUSES, size=1024)
