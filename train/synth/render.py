"""Caption-conditioned pair renderer: (pair id, ChangeSpec) -> before image, after image, change mask.

Example:
    >>> from edgecc.train.synth import parse_caption, render_pair, CLASSES
    >>> spec = parse_caption("many houses are built on both sides of the road at the top".split())
    >>> pre, post, mask = render_pair("train_000123", spec, size=256, variant=0)
    >>> pre.shape, post.dtype, CLASSES[int(mask.max())]
    ((256, 256, 3), dtype('uint8'), 'house')

Determinism: every random draw comes from numpy's Generator seeded by zlib.crc32(f"{pair_id}:{variant}"), and the
textures from fixed seeds, so the same arguments give the same bytes on any machine with the same numpy/OpenCV.
Nuisances that differ between the two dates (never change): gain, gamma, colour cast, haze, vegetation season
tint, shadow direction and length, 1-3 px misregistration of the before image, sensor noise, JPEG quality.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from ._layout import layout
from ._paint import DateLook, finish, paint
from ._textures import TILE
from .parser import CLASSES, ChangeSpec

_CLS_INDEX = {c: i for i, c in enumerate(CLASSES)}


def _seed(pair_id: str, variant: int) -> int:
    return zlib.crc32(f"{pair_id}:{variant}".encode())


def render_pair(pair_id: str, spec: ChangeSpec, size: int = 256, variant: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the before/after pair that realizes `spec`.

    Args:
        pair_id: dataset id (e.g. "train_000016" or the file name); seeds layout and nuisances.
        spec: what changed (from parse_caption / merge_specs); spec.changed False gives an unchanged scene.
        size: output side in pixels (<= 512); object sizes assume ~0.5 m/px at 256.
        variant: another render of the same id (other layout and nuisances, same spec).

    Returns:
        pre: uint8 [size, size, 3] RGB before image.
        post: uint8 [size, size, 3] RGB after image.
        mask: uint8 [size, size], index into CLASSES of the object that changed at each pixel (0 = no change),
            aligned with `post` (the misregistration is applied to `pre`).
    """
    if not 16 <= size <= TILE:
        raise ValueError(f"size must be in [16, {TILE}], got {size}")
    rng = np.random.default_rng(_seed(pair_id, variant))
    lay = layout(spec, rng, size)
    sun = rng.uniform(0, 2 * np.pi)
    look_pre, look_post = DateLook.sample(rng, sun), DateLook.sample(rng, sun)
    if look_pre.shift == (0, 0):  # always some misregistration between the dates
        look_pre = DateLook(**{**look_pre.__dict__, "shift": (1, 0)})
    look_post = DateLook(**{**look_post.__dict__, "shift": (0, 0)})
    img0, ids0 = paint(lay.bg, lay.bg_off, lay.before, look_pre, size)  # [s,s,3], [s,s]
    img1, ids1 = paint(lay.bg, lay.bg_off, lay.after, look_post, size)
    # Mask: pixels whose top object differs between the dates; class of the new object there, else of the old one.
    cls_of = np.zeros(256, np.uint8)  # oid -> class index (oids are < 256 in practice; wrap is harmless)
    new_cls = np.zeros(256, np.uint8)  # oid -> class index if the object is new in the after scene, else 0
    parent = np.arange(256, dtype=np.uint8)  # a widened road is the same road where both dates have it
    before_ids = {o.oid & 255 for o in lay.before}
    for o in lay.before + lay.after:
        cls_of[o.oid & 255] = _CLS_INDEX.get(o.cls, 0)
    for o in lay.after:
        if (o.oid & 255) not in before_ids:
            new_cls[o.oid & 255] = _CLS_INDEX.get(o.cls, 0)
        if "parent" in o.geom:
            parent[o.oid & 255] = o.geom["parent"] & 255
    changed = ids0 != cv2.LUT(ids1, parent)  # [s, s] bool
    # Class at a changed pixel: the new object's if one stands there, else the old (removed) object's.
    cls = cv2.LUT(ids1, new_cls)
    np.copyto(cls, cv2.LUT(ids0, cls_of), where=cls == 0)
    np.copyto(cls, cv2.LUT(ids1, cls_of), where=cls == 0)
    mask = np.where(changed, cls, np.uint8(0))  # uint8 [s, s]
    n0 = (int(rng.integers(0, TILE - size + 1)), int(rng.integers(0, TILE - size + 1)))
    n1 = (int(rng.integers(0, TILE - size + 1)), int(rng.integers(0, TILE - size + 1)))
    pre = finish(img0, look_pre, n0)
    post = finish(img1, look_post, n1)
    return pre, post, mask


__all__ = ["render_pair"]
