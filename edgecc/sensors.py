"""Is a pair comparable at all? Warnings for pairs from different sensors or very different ground resolutions.

A change model compares like with like. An optical image against SAR (grey speckle) or a panchromatic one, or two
images whose ground resolutions differ several-fold, can differ everywhere without anything having changed, and
the model's score on them means little. These checks are cheap (a few sampled windows) and only warn.

Example:
    >>> with read_pair("pre.tif", "post.tif") as pair:
    ...     for msg in pair_warnings(pair):
    ...         print(msg)
"""

from __future__ import annotations

import numpy as np

GREY = 0.5  # mean per-pixel spread across R, G, B (0-255) below which an image is single-channel in effect
COLOUR = 2.0  # ... and above which it is colour
GSD_RATIO = 2.0  # ground resolutions further apart than this are "very different"


def colourfulness(rgb: np.ndarray, valid: np.ndarray | None = None) -> float:
    """uint8 [H,W,3] -> mean over valid pixels of the standard deviation across the three bands."""
    spread = rgb.astype(np.float32).std(-1)
    return float(spread[valid].mean() if valid is not None and valid.any() else spread.mean())


def _samples(pair, side: int = 512):
    """Up to five windows of the pair's grid: the centre and the four quadrant centres."""
    w, h = pair.width, pair.height
    s = min(side, w, h)
    for fx, fy in ((0.5, 0.5), (0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)):
        yield pair.read_window(int(fx * w - s / 2), int(fy * h - s / 2), s, s)


def _gsd(raster) -> float | None:
    t = raster.transform
    return float(np.hypot(t[0], t[3])) if raster.georeferenced else None


def pair_warnings(pair) -> list[str]:
    """Messages (one line each, naming the files) when the two dates look like different sensors or resolutions."""
    out = []
    pre_c, post_c = [], []
    for pre, post, valid in _samples(pair):
        if valid.any():
            pre_c.append(colourfulness(pre, valid))
            post_c.append(colourfulness(post, valid))
    if pre_c:
        a, b = float(np.mean(pre_c)), float(np.mean(post_c))
        grey, colour = (pair.pre.path, pair.post.path) if a < b else (pair.post.path, pair.pre.path)
        if min(a, b) < GREY and max(a, b) > COLOUR:
            out.append(f"{grey}: single-channel in effect (SAR, panchromatic or greyscale) while {colour} is colour: "
                       "the two dates look like different sensors, so the change score and caption are not reliable")
    ga, gb = _gsd(pair.pre), _gsd(pair.post)
    if ga and gb and (pair.pre.crs == pair.post.crs) and max(ga, gb) / min(ga, gb) > GSD_RATIO:
        out.append(f"{pair.post.path}: ground resolution {gb:.3g} vs {ga:.3g} for {pair.pre.path} (same CRS units): "
                   f"more than {GSD_RATIO:g}x apart, so detail in one date is missing from the other")
    return out
