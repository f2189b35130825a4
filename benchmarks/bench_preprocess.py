"""Where the trunk's preprocessing (uint8 -> float, normalisation, the 256 -> 128 average pooling) costs least: in
the graph (as shipped), in NumPy (convert then pool, or pool the uint8 sums before converting), or in OpenCV.

    python benchmarks/bench_preprocess.py [--precision int8] [--reps 200] [--out benchmarks/results/x.json]

The in-graph path is the shipped trunk on uint8 NHWC [2,256,256,3] (both dates). The others run their
preprocessing, then the same trunk cut after its preprocessing (input: the normalised, pooled NCHW tensor),
extracted with onnx.utils. Each path reports its time per call (median, interleaved so load hits all alike) and
the largest difference of its normalised input from the graph's (0.0: bit-identical, so captions are unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def cut_trunk(path: Path, tmp: Path) -> tuple[Path, str, str]:
    """The trunk from its normalised input on: (path of the cut graph, the cut tensor's name, the output's)."""
    import onnx
    from onnx.utils import Extractor

    m = onnx.load(str(path))
    div = next(n for n in m.graph.node if n.op_type == "Div")  # (pool - mean) / std: the last preprocessing op
    out = m.graph.output[0].name
    cut = Extractor(m).extract_model([div.output[0]], [out])
    p = tmp / "trunk_cut.onnx"
    onnx.save(cut, str(p))
    return p, div.output[0], out


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--out")
    a = ap.parse_args()
    from edgecc.bench import make_inputs
    from edgecc.bundle import Bundle
    from edgecc.cpu import cpu

    b = Bundle.open()
    mean = np.asarray(b.manifest["input"]["normalization"]["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(b.manifest["input"]["normalization"]["std"], np.float32).reshape(1, 3, 1, 1)
    pre, post = make_inputs(256, 2, 0)
    img = np.ascontiguousarray(np.concatenate([pre[:1], post[:1]]))  # [2,256,256,3] uint8
    trunk_path = b.path(b.variant(a.precision)["trunk"])
    with tempfile.TemporaryDirectory() as tmp:
        cut_path, cut_name, out_name = cut_trunk(trunk_path, Path(tmp))
        full, cut = session(trunk_path, a.threads), session(cut_path, a.threads)
        import onnx

        probe = onnx.load(str(trunk_path))
        probe.graph.output.extend([onnx.ValueInfoProto(name=cut_name)])
        ref_x = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            [cut_name], {"img": img})[0]  # the graph's normalised input [2,3,128,128]

    def numpy_convert_then_pool(x):
        f = x.astype(np.float32).transpose(0, 3, 1, 2)  # [2,3,256,256]
        p = f.reshape(2, 3, 128, 2, 128, 2).sum(axis=(3, 5), dtype=np.float32) / np.float32(4)
        return np.ascontiguousarray((p - mean) / std)

    def numpy_pool_then_convert(x):
        s = x.reshape(2, 128, 2, 128, 2, 3).sum(axis=(2, 4), dtype=np.uint16)  # exact integer sums [2,128,128,3]
        p = s.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(4)
        return np.ascontiguousarray((p - mean) / std)

    def opencv_area(x):
        p = np.stack([cv2.resize(im.astype(np.float32), (128, 128), interpolation=cv2.INTER_AREA) for im in x])
        return np.ascontiguousarray((p.transpose(0, 3, 1, 2) - mean) / std)

    paths = {
        "in_graph": lambda: full.run(None, {"img": img}),
        "numpy_convert_then_pool": lambda: cut.run(None, {cut_name: numpy_convert_then_pool(img)}),
        "numpy_pool_then_convert": lambda: cut.run(None, {cut_name: numpy_pool_then_convert(img)}),
        "opencv_area": lambda: cut.run(None, {cut_name: opencv_area(img)}),
    }
    preps = {"numpy_convert_then_pool": numpy_convert_then_pool, "numpy_pool_then_convert": numpy_pool_then_convert,
             "opencv_area": opencv_area}
    times = {k: [] for k in (*paths, *(f"{k}_prep_only" for k in preps))}
    for f in paths.values():
        f()
    for _ in range(a.reps):
        for k, f in paths.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
        for k, f in preps.items():
            t = time.perf_counter()
            f(img)
            times[f"{k}_prep_only"].append(time.perf_counter() - t)
    c = cpu()
    res = {"machine": {**c.as_dict(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
                       "onnxruntime": ort.__version__},
           "precision": a.precision, "threads": a.threads, "reps": a.reps,
           "ms_p50": {k: round(float(np.median(v)) * 1e3, 4) for k, v in times.items()},
           "max_abs_diff_of_normalised_input": {k: float(np.abs(f(img) - ref_x).max()) for k, f in preps.items()}}
    print(json.dumps(res, indent=2))
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"preprocess-{a.precision}-{time.strftime('%Y-%m-%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
