"""Procedural textures, made once per process and cropped per render (no files, no /work/shared needed).

Example:
    >>> from edgecc.train.synth._textures import texture
    >>> tile = texture("bareland")  # uint8 [512, 512, 3] RGB, deterministic (fixed seed)
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

TILE = 512  # texture tiles are TILE x TILE; renders crop from them at a random offset (size <= TILE)


def _fractal(rng: np.random.Generator, size: int, octaves: tuple[int, ...], weights: tuple[float, ...]) -> np.ndarray:
    """Sum of upsampled random grids: float32 [size, size] roughly in [-1, 1]."""
    out = np.zeros((size, size), np.float32)
    for cells, w in zip(octaves, weights, strict=True):
        g = rng.standard_normal((cells, cells)).astype(np.float32)
        out += w * cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)
    return out / max(sum(weights), 1e-6)


def _colorize(base: tuple[float, float, float], n: np.ndarray, amp: tuple[float, float, float]) -> np.ndarray:
    """base RGB + n * amp -> uint8 [H, W, 3]."""
    img = np.asarray(base, np.float32)[None, None, :] + n[..., None] * np.asarray(amp, np.float32)[None, None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


@cache
def texture(name: str) -> np.ndarray:
    """A named texture tile, uint8 [TILE, TILE, 3] RGB. Cached; never modify the returned array."""
    rng = np.random.default_rng(abs(hash_name(name)))
    s = TILE
    if name == "bareland":
        n = _fractal(rng, s, (4, 16, 64, 256), (1.0, 0.6, 0.35, 0.25))
        img = _colorize((190, 172, 142), n, (38, 34, 30))
    elif name == "desert":
        n = _fractal(rng, s, (4, 16, 64, 256), (1.0, 0.5, 0.3, 0.3))
        img = _colorize((205, 186, 150), n, (30, 28, 24))
    elif name == "scar":  # freshly cleared / graded ground: lighter, smoother
        n = _fractal(rng, s, (8, 32, 256), (0.6, 0.4, 0.3))
        img = _colorize((206, 192, 168), n, (22, 20, 18))
    elif name == "grass":
        n = _fractal(rng, s, (4, 16, 64, 256), (1.0, 0.7, 0.4, 0.35))
        img = _colorize((118, 134, 84), n, (26, 30, 20))
    elif name == "forest":  # canopy: dark greens with crown-scale blobs
        n = _fractal(rng, s, (32, 96, 256), (0.5, 1.0, 0.6))
        img = _colorize((52, 78, 44), n, (22, 28, 16))
    elif name == "forest_lit":
        img = np.clip(texture("forest").astype(np.float32) * 1.35 + 8, 0, 255).astype(np.uint8)
    elif name == "farmland":
        img = _farmland(rng, s)
    elif name == "asphalt":
        n = _fractal(rng, s, (16, 128, 512), (0.4, 0.4, 0.6))
        img = _colorize((104, 104, 108), n, (10, 10, 10))
    elif name == "dirt":
        n = _fractal(rng, s, (16, 128, 512), (0.6, 0.4, 0.5))
        img = _colorize((170, 150, 122), n, (16, 14, 12))
    elif name == "concrete":
        n = _fractal(rng, s, (16, 128, 512), (0.4, 0.4, 0.5))
        img = _colorize((178, 176, 170), n, (12, 12, 12))
    elif name == "water":
        n = _fractal(rng, s, (8, 32, 128), (1.0, 0.5, 0.3))
        img = _colorize((48, 70, 78), n, (10, 14, 14))
    elif name.startswith("noise"):  # Gaussian sensor noise of sigma int(name[5:]), int16 [TILE, TILE, 3]
        sigma = float(name[5:])
        img = np.round(np.random.default_rng(7).standard_normal((s, s, 3)) * sigma).astype(np.int16)
    else:
        raise KeyError(f"unknown texture {name!r}")
    img.setflags(write=False)
    return img


def _farmland(rng: np.random.Generator, s: int) -> np.ndarray:
    """Parcels of crop stripes with different orientation and colour: uint8 [s, s, 3]."""
    out = np.zeros((s, s, 3), np.uint8)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    palettes = [(128, 140, 88), (150, 146, 96), (172, 160, 120), (104, 126, 76), (160, 150, 110)]
    cell = s // 4
    grain = _fractal(rng, s, (16, 128), (0.6, 0.4))
    for gy in range(4):
        for gx in range(4):
            ang = rng.uniform(0, np.pi)
            period = rng.uniform(5, 10)
            base = np.asarray(palettes[rng.integers(len(palettes))], np.float32)
            sl = np.s_[gy * cell:(gy + 1) * cell, gx * cell:(gx + 1) * cell]
            ph = (xx[sl] * np.cos(ang) + yy[sl] * np.sin(ang)) * (2 * np.pi / period)
            v = 0.5 + 0.5 * np.sin(ph)
            img = base[None, None] * (0.86 + 0.2 * v[..., None]) + 14 * grain[sl][..., None]
            out[sl] = np.clip(img, 0, 255).astype(np.uint8)
            # field boundary: a thin light track between parcels
            out[gy * cell:(gy + 1) * cell, gx * cell:gx * cell + 2] = (176, 164, 136)
            out[gy * cell:gy * cell + 2, gx * cell:(gx + 1) * cell] = (176, 164, 136)
    return out


def hash_name(name: str) -> int:
    """Stable 32-bit seed of a string (zlib.crc32; never Python's salted hash())."""
    import zlib

    return zlib.crc32(name.encode("utf-8"))
