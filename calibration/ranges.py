"""Activation ranges of every float tensor of a graph, from recorded feeds: MinMax, Percentile or Entropy (KL).

Streams one feed at a time (feeds may differ in shape, as decoder steps do) and writes ONNX Runtime's calibration
cache, which `quantize_static(calibration_cache_path=...)` reads. ORT 1.32's own histogram calibrators fail on
these graphs (decoder feeds of growing length: "inhomogeneous shape"; a saturated sigmoid output: "Too many bins
for data range") and hold every tensor of a whole stride of feeds in memory.

Example:
    >>> ranges = tensor_ranges("decoder.onnx", feeds, "percentile")     # {tensor: (low, high)}
    >>> save_ranges(ranges, "percentile", "decoder.ranges.json")         # then quantize_static(..., cache)
"""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "entropy")
BINS = 2048  # histogram bins (percentile, entropy)
PERCENTILE = 99.999  # percentile: each tail keeps all but 0.001 % of the values (ORT's default level)
LEVELS = 128  # entropy: quantized magnitude bins (int8), TensorRT's KL calibration
_KL_STEP = 16  # entropy: candidate thresholds every 16 bins
_HIST_SAMPLE = 1 << 18  # histogram at most this many values per tensor per feed (a regular stride over the rest)


def exposed_session(model, names: list[str], threads: int = 1):
    """An ORT session for `model` (ModelProto) that also outputs every tensor in `names`, unoptimised."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                          for n in names if n not in have)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named tensor
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def float_tensors(model) -> list[str]:
    """float32 tensors computed by nodes or fed as inputs (not initializers), in a shape-inferred model."""
    import onnx

    g = model.graph
    made = {o for n in g.node if n.op_type != "Constant" for o in n.output} | {i.name for i in g.input}
    inits = {t.name for t in g.initializer}
    return list(dict.fromkeys(v.name for v in (*g.input, *g.value_info, *g.output)
                              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name in made
                              and v.name not in inits))


def _each(sess, feeds):
    names = [o.name for o in sess.get_outputs()]
    for feed in feeds:
        for name, value in zip(names, sess.run(None, feed)):
            v = np.asarray(value, np.float32).ravel()
            v = v[np.isfinite(v)]
            if v.size:
                yield name, v


def tensor_ranges(path, feeds: list[dict], method: str = "minmax") -> dict[str, tuple[float, float]]:
    """{tensor: (low, high)} over `feeds` for every float tensor of the graph at `path`."""
    import onnx

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    sess = exposed_session(model, float_tensors(model))
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for name, v in _each(sess, feeds):  # pass 1: min / max
        lo[name] = min(lo.get(name, np.inf), float(v.min()))
        hi[name] = max(hi.get(name, -np.inf), float(v.max()))
    if method == "minmax":
        return {n: (lo[n], hi[n]) for n in lo}
    signed = method == "percentile"  # percentile: both tails of x; entropy: |x|
    span = {n: (lo[n], hi[n]) if signed else (0.0, max(abs(lo[n]), abs(hi[n]))) for n in lo}
    hist = {n: np.zeros(BINS, np.int64) for n in lo if span[n][1] > span[n][0]}
    for name, v in _each(sess, feeds):  # pass 2: histograms over the pass-1 span
        if name in hist:
            a, b = span[name]
            x = v[:: v.size // _HIST_SAMPLE + 1]
            x = x if signed else np.abs(x)
            idx = np.clip(((x - np.float32(a)) * np.float32(BINS / (b - a))).astype(np.int32), 0, BINS - 1)
            hist[name] += np.bincount(idx, minlength=BINS)
    out = {}
    for n in lo:
        if n not in hist:
            out[n] = (lo[n], hi[n])
            continue
        a, b = span[n]
        edges = np.linspace(a, b, BINS + 1)
        if signed:
            cdf = np.cumsum(hist[n]) / hist[n].sum()
            tail = 1 - PERCENTILE / 100
            out[n] = (float(edges[np.searchsorted(cdf, tail)]), float(edges[np.searchsorted(cdf, 1 - tail) + 1]))
        else:
            t = float(edges[_kl_bins(hist[n])])
            out[n] = (max(lo[n], -t), min(hi[n], t))
    return out


def _kl_bins(hist: np.ndarray, levels: int = LEVELS) -> int:
    """TensorRT's entropy calibration: the |x| histogram prefix whose `levels`-bin quantization loses least (KL)."""
    best, best_i = np.inf, len(hist)
    for i in range(levels, len(hist) + 1, _KL_STEP):
        p = hist[:i].astype(np.float64)
        p[-1] += hist[i:].sum()  # clipped outliers land in the last bin
        nonzero = hist[:i] != 0
        starts = np.linspace(0, i, levels + 1).astype(np.int64)[:-1]
        merged = np.add.reduceat(hist[:i].astype(np.float64), starts)  # [levels]
        count = np.add.reduceat(nonzero.astype(np.float64), starts)
        q = np.repeat(merged / np.maximum(count, 1), np.diff(np.append(starts, i))) * nonzero  # [i] expanded
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        m = p > 0
        kl = float(np.sum(p[m] / ps * np.log((p[m] / ps) / np.maximum(q[m] / qs, 1e-12))))
        if kl < best:
            best, best_i = kl, i
    return best_i


def save_ranges(ranges: dict[str, tuple[float, float]], method: str, path) -> None:
    """Write ranges as ONNX Runtime's calibration cache (JSON) for `quantize_static(calibration_cache_path=path)`."""
    from onnxruntime.quantization import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    data = {n: TensorData(lowest=np.array(a, np.float32), highest=np.array(b, np.float32))
            for n, (a, b) in ranges.items()}
    save_tensors_data(TensorsData(calib, data), path)
