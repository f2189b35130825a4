"""`Captioner`: a bundle + an engine + decoding options; captions arrays, files and whole scenes.

Example:
    >>> cap = load().caption("pre.png", "post.png")                       # one pair, any size (tiled if large)
    >>> caps = load(backend="ort-cpu").caption_batch(pre, post)           # uint8 [B,S,S,3] x2 -> [Caption]
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .bundle import Bundle
from .decoding import Caption, DecodingOptions, decode
from .engines import Engine, create_engine
from .vocab import Vocab


@dataclass(frozen=True)
class Captioner:
    """Frozen: to change the engine or the options, make a new one (`dataclasses.replace(cap, options=...)`)."""

    bundle: Bundle
    engine: Engine
    options: DecodingOptions = DecodingOptions()
    precision: str = "fp32"  # the bundle variant the engine runs
    threshold: float | None = None  # change_score at or above which a pair is changed (None: the bundle's)
    tuning: dict | None = None  # the per-machine choice load() applied (edgecc.tune), None: none
    vocab: Vocab = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "vocab", self.bundle.vocab())

    @property
    def input_size(self) -> int:
        return int(self.bundle.manifest["input"]["size"])

    @property
    def gate_threshold(self) -> float:
        return float(self.bundle.manifest["gate"]["threshold"] if self.threshold is None else self.threshold)

    def caption_batch(self, pre: np.ndarray, post: np.ndarray) -> list[Caption]:
        """uint8 [B,S,S,3] RGB x2 (S = input_size; one pair may drop B) -> B captions ([] for B = 0).

        Other dtypes are refused, not cast: a float 0-1 image cast to uint8 is black, a uint16 one wraps around.
        Files of any bit depth go through `caption()`, which stretches them."""
        pre, post = np.asarray(pre), np.asarray(post)
        s = self.input_size
        if pre.ndim == 3 and post.ndim == 3:
            pre, post = pre[None], post[None]
        if pre.shape[1:] != (s, s, 3) or post.shape != pre.shape:
            raise ValueError(f"caption_batch takes uint8 [B,{s},{s},3] pairs, got {pre.shape} and {post.shape}")
        if pre.dtype != np.uint8 or post.dtype != np.uint8:
            raise ValueError(f"caption_batch takes uint8 RGB (0-255), got {pre.dtype} and {post.dtype}: scale to "
                             "uint8 first, or caption the files (caption() stretches other bit depths)")
        if len(pre) == 0:
            return []
        return decode(self.engine, self.vocab, np.ascontiguousarray(pre), np.ascontiguousarray(post), self.decoding,
                      self.gate_threshold)

    @property
    def decoding(self) -> DecodingOptions:
        """The options as run: max_len clamped to what the bundle's decoder was exported for."""
        return replace(self.options, max_len=min(self.options.max_len, self.bundle.manifest["decoder"]["max_len"]))

    def caption(self, pre_path: str | Path, post_path: str | Path, read_options=None, tile_options=None,
                geojson: str | Path | None = None, heatmap: str | Path | None = None, geojson_crs: str = "image",
                gsd: float | None = None):
        """Caption an image pair from files (GeoTIFF, PNG, JPEG), tiling it if it is larger than the model input.

        `gsd` (metres per pixel; default: read from a georeferenced pair in a metric CRS, else unknown) sets the
        tile size: imagery coarser than the model's (manifest input.gsd_m, 0.5 m) is cut into smaller tiles that
        are upsampled, so a tile covers the ground a model input was trained on. An explicit `tile_options.tile`
        other than the input size is kept as given.

        Returns a `SceneResult` (tiles, summary, caption, changed, change_score).
        """
        from .errors import ImageryWarning
        from .imagery import ReadOptions, read_pair
        from .sensors import MAX_UPSAMPLE, MODEL_GSD_M, ground_resolution, pair_warnings, tile_for_gsd
        from .tiling import TileOptions, caption_scene

        with read_pair(pre_path, post_path, read_options or ReadOptions()) as pair:
            for msg in pair_warnings(pair):
                warnings.warn(msg, ImageryWarning, stacklevel=2)
            opts = tile_options or TileOptions(tile=self.input_size)
            gsd = ground_resolution(pair) if gsd is None else gsd
            if opts.tile == self.input_size and gsd:  # tiles cover the ground a model input was trained on
                model_gsd = float(self.bundle.manifest["input"].get("gsd_m", MODEL_GSD_M))
                tile = tile_for_gsd(self.input_size, gsd, model_gsd)
                opts = replace(opts, tile=tile, overlap=opts.overlap * tile // self.input_size)
                if gsd > model_gsd * MAX_UPSAMPLE:
                    warnings.warn(f"{pre_path}: {gsd:.2g} m/px is coarser than the model's domain "
                                  f"(<= {model_gsd * MAX_UPSAMPLE:g} m/px): small changes are invisible to it, and "
                                  "season or sensor differences are more often called changes (e.g. every interval "
                                  "of a 5 m NAIP series)", ImageryWarning, stacklevel=2)
            return caption_scene(self, pair, opts,
                                 heatmap_path=heatmap, geojson_path=geojson, geojson_crs=geojson_crs)


def load(bundle: str | Path | None = None, backend: str = "ort-cpu", precision: str | None = None,
         options: DecodingOptions | None = None, threshold: float | None = None, **engine_options) -> Captioner:
    """Open a bundle (default: the bundled model), verify its files, and build an engine for it.

    Precision None: on a CPU backend this machine's tuned choice (`edgecc tune`, cached per bundle, ONNX Runtime
    and CPU), else the bundle's recommendation (manifest "runtime" "cpu_precision": the student's int8, measured as
    fast and as good); fp32 elsewhere. Thread counts and date batching on ONNX Runtime CPU come from the same choice
    unless given. Decoding options default to the bundle's recommendation (manifest "decoding", e.g. beam size 2).
    `threshold` overrides the bundle's change threshold (manifest "gate" "threshold"; `change_score` is a
    calibrated probability, see README).
    """
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
                                  or not 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    from .engines import BACKENDS

    b = Bundle.open(bundle, verify="on_use")  # each graph's sha256 when its session is made: one variant's files
    backend_info = BACKENDS.get(backend)
    cpu = backend_info is not None and backend_info.device == "cpu"
    tuning = None
    if cpu and backend_info.kind == "ort":
        from .tune import current

        choice = current(b)
        precision = precision or choice.precision
        if precision == choice.precision:  # threads were measured for that variant
            engine_options = {**choice.engine_options(), **engine_options}
            tuning = {"source": choice.source, "why": choice.why, **choice.engine_options()}
    if precision is None:  # the bundle's CPU pick is an ONNX Runtime variant; PyTorch runs the checkpoint in fp32
        precision = b.cpu_precision if cpu and backend_info.kind == "ort" else "fp32"
    if options is None:
        options = DecodingOptions(**b.manifest.get("decoding", {}))
    from .engines.capability import check

    check(backend, precision, b, engine_options.get("checkpoint"))  # one line: why this cannot run here
    return Captioner(b, create_engine(backend, b, precision, **engine_options), options, precision, threshold,
                     tuning)
