"""Shared test fixtures: generated imagery, the real-data folder, and a model double for tiling tests.

    def test_x(fixtures_dir, pixel_diff_captioner):
        pair = read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif")
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
# a machine's `edgecc tune` cache must not change what the tests run (tests/test_tune.py turns it back on)
os.environ.setdefault("EDGECC_TUNE", "0")
SHARED_DATA = TESTS.parents[1] / "shared" / "data"  # /work/shared/data next to the repo; absent in a user's clone


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    """Directory with every file tests/data/make_imagery.py writes (seeded, ~1 s)."""
    import make_imagery
    out = tmp_path_factory.mktemp("imagery")
    make_imagery.make_all(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present next to the project checkout)")
    return SHARED_DATA


# ---------------------------------------------------------------------------------------------- model double


@dataclass(frozen=True)
class FakeCaption:
    """Same fields as edgecc.decoding.Caption uses for tiling: text, changed, change_score, mask."""

    text: str
    changed: bool
    change_score: float
    mask: np.ndarray | None


class PixelDiffCaptioner:
    """MODEL DOUBLE for the tiling logic, not a model: deterministic, no learning.

    change_score = fraction of pixels whose max abs RGB difference > 40; changed = score > `threshold`;
    mask = that per-pixel indicator averaged down to 16 x 16 float32; text fixed by `changed`.
    Real-model tests live with the model runtime.
    """

    def __init__(self, input_size: int = 64, threshold: float = 0.01, fail_after: int | None = None):
        self.input_size = input_size
        self.threshold = threshold
        self.fail_after = fail_after  # raise on the call after this many batches (tests atomic outputs)
        self.calls = 0
        self.batch_sizes: list[int] = []

    def caption_batch(self, pre: np.ndarray, post: np.ndarray) -> list[FakeCaption]:
        assert pre.dtype == np.uint8 and pre.shape == post.shape and pre.shape[1:] == (
            self.input_size, self.input_size, 3), (pre.shape, pre.dtype)
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("captioner failed mid-scene (test double)")
        self.calls += 1
        self.batch_sizes.append(len(pre))
        diff = np.abs(pre.astype(np.int16) - post.astype(np.int16)).max(axis=3) > 40  # [B,S,S] bool
        s = self.input_size
        out = []
        for d in diff:
            score = float(d.mean())
            k = s // 16
            mask = d[: k * 16, : k * 16].reshape(16, k, 16, k).mean(axis=(1, 3)).astype(np.float32)  # [16,16]
            changed = score > self.threshold
            out.append(FakeCaption("some buildings are built" if changed else "there is no difference",
                                   changed, score, mask))
        return out


@pytest.fixture
def pixel_diff_captioner() -> PixelDiffCaptioner:
    return PixelDiffCaptioner()


# ---------------------------------------------------------------------------------------------- tiny real model


@pytest.fixture(scope="session")
def _tiny(tmp_path_factory):
    """A tiny seeded random-init teacher, exported (and validated) as a real bundle by the factory's own code."""
    pytest.importorskip("torch", reason="building the tiny test bundle needs the factory extra (torch, onnx)")
    import make_tiny_bundle
    return make_tiny_bundle.make_tiny_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_bundle(_tiny) -> Path:
    return _tiny[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(_tiny) -> Path:
    return _tiny[0]


# ---------------------------------------------------------------------------------------------- runtime purity

_BLOCK_FACTORY = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in {blocked!r}):
            raise ImportError('the runtime imported ' + name)
sys.meta_path.insert(0, _Block())
"""
FACTORY_PACKAGES = ("edgecc.train", "edgecc.export", "edgecc.calibration")


@pytest.fixture(scope="session")
def run_without_factory():
    """run(code, timeout=300, packages=False) -> CompletedProcess: `code` in a fresh interpreter where importing
    torch / onnx raises (with packages=True, importing edgecc.train / .export / .calibration too)."""
    import subprocess

    def run(code: str, timeout: int = 300, packages: bool = False):
        blocked = ("torch", "onnx", "onnxscript") + (FACTORY_PACKAGES if packages else ())
        return subprocess.run([sys.executable, "-c", _BLOCK_FACTORY.format(blocked=blocked) + code],
                              capture_output=True, text=True, timeout=timeout)

    return run
