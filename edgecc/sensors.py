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

import math

import numpy as np

GREY = 0.5  # mean per-pixel spread across R, G, B (0-255) below which an image is single-channel in effect
COLOUR = 2.0  # ... and above which it is colour
GSD_RATIO = 2.0  # ground resolutions further apart than this are "very different"


def colourfulness(rgb: np.ndarray, valid: np.ndarray | None = None, step: int = 2) -> float:
    """uint8 [H,W,3] -> mean over valid pixels (every `step`-th row and column) of the standard deviation across the
    three bands. Per band plane, not std(-1): a reduction over a 3-long axis is ~10x slower."""
    r, g, b = (rgb[::step, ::step, i].astype(np.float32) for i in range(3))
    m = (r + g + b) / 3
    spread = np.sqrt(((r - m) ** 2 + (g - m) ** 2 + (b - m) ** 2) / 3)
    v = valid[::step, ::step] if valid is not None else None
    return float(spread[v].mean() if v is not None and v.any() else spread.mean())


def _samples(pair, side: int = 512):
    """The whole grid when it fits in one window; else five windows: the centre and the four quadrant centres."""
    w, h = pair.width, pair.height
    if w <= side and h <= side:
        yield pair.read_window(0, 0, w, h)
        return
    s = min(side, w, h)
    for fx, fy in ((0.5, 0.5), (0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)):
        yield pair.read_window(int(fx * w - s / 2), int(fy * h - s / 2), s, s)


def pixel_size(transform) -> float:
    """Mean side of a pixel in the CRS's units, from a GDAL-order affine (rotation included)."""
    a, b, _, d, e, _ = transform
    return float((np.hypot(a, d) + np.hypot(b, e)) / 2)


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
    ga, gb = (pixel_size(r.transform) if r.georeferenced else None for r in (pair.pre, pair.post))
    if ga and gb and (pair.pre.crs == pair.post.crs) and max(ga, gb) / min(ga, gb) > GSD_RATIO:
        out.append(f"{pair.post.path}: ground resolution {gb:.3g} vs {ga:.3g} for {pair.pre.path} (same CRS units): "
                   f"more than {GSD_RATIO:g}x apart, so detail in one date is missing from the other")
    return out


# ------------------------------------------------------------------------------------------- ground resolution
MODEL_GSD_M = 0.5  # LEVIR-CC's ground resolution: a 256-px model input covers 128 m
MAX_UPSAMPLE = 4.0  # coarser imagery is outside the model's domain (<= 2 m/px): the factor stops here


def ground_resolution(pair) -> float | None:
    """Metres per pixel of the pair's grid, when it is georeferenced in a projected CRS with metre units."""
    return grid_gsd(pair.transform, pair.crs)


def grid_gsd(transform, crs) -> float | None:
    """Metres per pixel of a grid (GDAL-order affine + CRS) in a projected CRS with metre units, else None."""
    if not (crs and transform):
        return None
    try:
        from rasterio.crs import CRS

        c = CRS.from_user_input(crs)
        if not c.is_projected or (c.linear_units or "").lower() not in ("metre", "meter", "m"):
            return None
        proj = c.to_dict()
        if proj.get("proj") == "merc":  # Web Mercator and kin: a map metre is 1 / cos(lat) ground metres
            from rasterio.warp import transform as reproject_points

            _, (lat,) = reproject_points(c, "EPSG:4326", [transform[2]], [transform[5]])
            lat_ts = float(proj.get("lat_ts", 0.0))
            return pixel_size(transform) * math.cos(math.radians(lat)) / math.cos(math.radians(lat_ts))
    except Exception:  # noqa: BLE001 - no rasterio or an odd CRS: resolution unknown
        return None
    return pixel_size(transform)


def tile_for_gsd(size: int, gsd: float | None, model_gsd: float = MODEL_GSD_M) -> int:
    """Scene pixels per model input so that a tile covers the ground the model was trained on.

    Only coarser imagery is changed (tiles cut smaller and upsampled). Measured leave-one-source-out (student, int8,
    benchmarks/results/real-loso-int8-2026-12-02.json): SZTAKI's 1.5 m tiles cut to 85 px rank better (AUROC 0.64
    -> 0.71, recall at the shipped rule 28% -> 72%), and with SZTAKI and DSIFN seen this way the threshold chosen
    without LEVIR-CD transfers to it (false alarms 61% -> 20%). Finer imagery keeps `size` (not measured).
    """
    if not gsd or gsd <= model_gsd * 1.2:
        return size
    return max(16, int(round(size / min(gsd / model_gsd, MAX_UPSAMPLE))))
