"""Calibration sets refuse unusable data; INT8 (QDQ) and FP16 variants are real, smaller, close to fp32, recorded."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnx", reason="calibration is factory code: needs the train extra (onnx)")

from edgecc.calibration.quantize import QuantizeOptions, graph_roles, quantize_bundle, quantize_int8  # noqa: E402
from edgecc.calibration.sets import (  # noqa: E402
    DEFAULT_SET,
    CalibrationError,
    CalibrationSet,
    RealEntry,
    SynthEntry,
    check_arrays,
    load_pairs,
    parse_set,
)

from edgecc.bundle import Bundle  # noqa: E402


def _scenes(n: int, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n seeded smooth before/after pairs, uint8 [n,S,S,3] x2 (the post image has a bright new rectangle)."""
    from make_imagery import scene, with_changes

    pre = np.stack([scene(seed + i, size, size) for i in range(n)])
    post = np.stack([with_changes(p, ((30 + 20 * i, 40, 60, 50),)) for i, p in enumerate(pre)])
    return pre, post


def _write_real_root(root: Path, n: int = 3) -> str:
    """A data root with n PNG pairs (320 x 300) and the set text naming a crop of each."""
    pre, post = _scenes(n, 320)
    lines = []
    for i in range(n):
        for d, img in (("A", pre[i]), ("B", post[i])):
            (root / "pairs" / d).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "pairs" / d / f"{i}.png"), cv2.cvtColor(img[:300], cv2.COLOR_RGB2BGR))
        lines.append(f"real pairs/A/{i}.png pairs/B/{i}.png {8 * i} 4 288   # crop, resized to 256")
    return "# test set\n\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- sets


def test_parser_reads_both_kinds_and_comments():
    got = parse_set("# header\n\nsynth val_000001 1\nreal a/pre.png a/post.png 0 16 256  # note\n")
    assert got == (SynthEntry("val_000001", 1), RealEntry("a/pre.png", "a/post.png", 0, 16, 256))


@pytest.mark.parametrize("line", [
    "synth val_000001",                    # no variant
    "synth val_000001 one",                # not an integer
    "synth val_000001 -1",                 # negative variant
    "real a.png b.png 0 0",                # no size
    "real a.png b.png 0 -4 256",           # negative offset
    "real a.png b.png 0 0 8",              # tiny crop
    "random 42",                           # unknown kind
])
def test_parser_rejects_malformed_lines(line):
    with pytest.raises(CalibrationError, match=r"^my\.txt:3: expected 'synth PAIR_ID VARIANT'"):
        parse_set(f"# ok\nsynth val_000001 0\n{line}\n", "my.txt")


def test_empty_set_is_refused(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("# nothing here\n\n")
    with pytest.raises(CalibrationError, match="calibration set is empty"):
        load_pairs(CalibrationSet.load(p))


def test_missing_set_and_missing_pair_file_are_named(tmp_path):
    with pytest.raises(CalibrationError, match=r"nope\.txt: calibration set not found"):
        CalibrationSet.load(tmp_path / "nope.txt")
    p = tmp_path / "set.txt"
    p.write_text("real gone/pre.png gone/post.png 0 0 256\n")
    with pytest.raises(CalibrationError, match=r"gone/pre\.png: calibration pair file not found"):
        load_pairs(CalibrationSet.load(p), data_root=tmp_path)


def test_random_and_constant_data_are_refused():
    rng = np.random.default_rng(0)
    pre, post = _scenes(2)
    check_arrays(pre, post)  # smooth imagery passes
    for noise in (rng.integers(0, 256, pre.shape, dtype=np.uint8), rng.integers(100, 108, pre.shape, dtype=np.uint8),
                  rng.normal(128, 40, pre.shape).clip(0, 255).astype(np.uint8)):
        with pytest.raises(CalibrationError, match=r"pair 0 \(pre\): looks like random noise"):
            check_arrays(noise, post)
    with pytest.raises(CalibrationError, match=r"pair 1 \(post\): constant image"):
        check_arrays(pre, np.concatenate([post[:1], np.full_like(post[:1], 97)]))
    with pytest.raises(CalibrationError, match="calibration data is empty"):
        check_arrays(pre[:0], post[:0])


def test_real_entries_decode_to_model_size(tmp_path):
    p = tmp_path / "set.txt"
    p.write_text(_write_real_root(tmp_path))
    cs = CalibrationSet.load(p)
    data = load_pairs(cs, 256, tmp_path)
    assert data.pre.shape == data.post.shape == (3, 256, 256, 3) and data.pre.dtype == np.uint8
    assert (data.n_synth, data.n_real) == (0, 3) and len(cs.sha256) == 64
    assert load_pairs(cs, 256, tmp_path).sha256 == data.sha256  # deterministic decode


def test_default_set_is_committed_and_parses():
    cs = CalibrationSet.load(DEFAULT_SET)
    kinds = [type(e) for e in cs.entries]
    assert kinds.count(SynthEntry) >= 100 and kinds.count(RealEntry) >= 20
    assert cs.label == "calibration/sets/default.txt"


@pytest.mark.requires_shared
def test_default_set_entries_load(shared_data):
    cs = CalibrationSet.load(DEFAULT_SET)
    synth = [e for e in cs.entries if isinstance(e, SynthEntry)][:2]
    real = [e for e in cs.entries if isinstance(e, RealEntry)]
    few = CalibrationSet(cs.name, cs.sha256, (*synth, real[0], real[-1]))  # one per end of the real list
    data = load_pairs(few, 256, shared_data)
    assert data.pre.shape == (4, 256, 256, 3) and (data.n_synth, data.n_real) == (2, 2)


# ---------------------------------------------------------------------------------------------- quantize


@pytest.fixture(scope="module")
def quantized(tiny_bundle, tmp_path_factory):
    """The tiny bundle with int8 + fp16 variants, built through the CLI from a real-entry set (no accuracy control)."""
    from typer.testing import CliRunner

    from edgecc.cli import app

    root = tmp_path_factory.mktemp("quant")
    shutil.copytree(tiny_bundle, root / "b")
    (root / "set.txt").write_text(_write_real_root(root / "data", 4))
    res = CliRunner().invoke(app, ["quantize", str(root / "b"), "--calibration-set", str(root / "set.txt"),
                                   "--data-root", str(root / "data"), "--control-pairs", "0"])
    assert res.exit_code == 0, res.output
    assert "int8" in res.output and "static-qdq-minmax" in res.output
    return root / "b"


def _ops(path) -> dict:
    import collections

    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_int8_variant_is_qdq_and_smaller(quantized):
    b = Bundle.open(quantized)  # every new file is sha256-listed and verifies
    v8, v32 = b.variant("int8"), b.variant("fp32")
    assert graph_roles(v8).keys() == graph_roles(v32).keys()
    assert v8["dynamic_roles"] == ["decoder"]
    for role, f in graph_roles(v8).items():
        ops = _ops(b.path(f))
        if role in v8["dynamic_roles"]:  # int8 weights, activations quantized per call
            assert ops["DynamicQuantizeLinear"] > 0 and ops["MatMulInteger"] > 0
        else:
            assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert v8["size_bytes"] < sum(b.path(f).stat().st_size for f in graph_roles(v32).values())
    assert v8["size_bytes"] == sum(b.manifest["files"][f]["bytes"] for f in graph_roles(v8).values())


def test_manifest_records_method_calibration_and_float_nodes(quantized):
    m = Bundle.open(quantized).manifest
    v = m["variants"]["int8"]
    assert v["method"] == "static-qdq-minmax+dynamic-decoder" and v["format"].startswith("QDQ")
    cal = v["calibration"]
    assert cal["set"].endswith("set.txt") and len(cal["sha256"]) == 64 and len(cal["data_sha256"]) == 64
    assert (cal["n_pairs"], cal["n_synth"], cal["n_real"]) == (4, 0, 4)
    assert set(cal["feeds"]) == set(v["float_nodes"]) == set(graph_roles(m["variants"]["fp32"]))
    assert v["accuracy_control"] == "off" and v["metrics"] is None
    assert m["variants"]["fp16"]["method"] == "fp16-keep-io-types"


@pytest.mark.parametrize("precision,tol", [("int8", 0.25), ("fp16", 0.01)])
def test_variants_run_close_to_fp32(quantized, precision, tol):
    import edgecc

    pre, post = _scenes(3, seed=100)  # not the calibration images
    ref = edgecc.load(quantized, precision="fp32").engine.encode(pre, post)
    cap = edgecc.load(quantized, precision=precision)
    got = cap.engine.encode(pre, post)
    for name in ref.memory:
        a, b = ref.memory[name], got.memory[name]
        assert b.dtype == np.float32 and np.linalg.norm(b - a) / np.linalg.norm(a) < tol, name
    assert np.abs(got.gate_prob - ref.gate_prob).max() < tol
    assert len(cap.caption_batch(pre, post)) == 3


def test_random_calibration_writes_nothing(tiny_bundle, tmp_path):
    shutil.copytree(tiny_bundle, tmp_path / "b")
    before = (tmp_path / "b" / "manifest.json").read_text()
    listing = sorted(p.name for p in (tmp_path / "b").iterdir())
    noise = np.random.default_rng(1).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    with pytest.raises(CalibrationError, match="random noise"):
        quantize_bundle(tmp_path / "b", QuantizeOptions(control_pairs=0), calibration=(noise, noise))
    assert (tmp_path / "b" / "manifest.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == listing


def test_accuracy_control_keeps_noisiest_nodes_in_float(tiny_bundle, tmp_path):
    """A stand-in metric whose drop shrinks with the number of quantized nodes: the loop must stop within max_drop."""
    import onnx
    from edgecc.calibration.quantize import prepare_graph, record_feeds
    from edgecc.calibration.sensitivity import quantized_nodes

    b = Bundle.open(tiny_bundle)
    roles = graph_roles(b.variant("fp32"))
    feeds = record_feeds(b, *_scenes(4), max_feeds=8)
    prepared = {r: tmp_path / f"{r}.prep.onnx" for r in roles}
    for r, f in roles.items():
        prepare_graph(b.path(f), prepared[r])
    counts = []

    def metrics(prec, files):
        n = sum(len(quantized_nodes(onnx.load(str(tmp_path / f)))) for f in files.values())
        counts.append(n)
        drop = 0.05 * (n / counts[0]) ** 8  # all quantized: 0.05; fewer quantized nodes, smaller drop
        return {"CIDEr-D": 0.6 - drop, "drop": round(drop, 4)}

    v = quantize_int8(roles, prepared, feeds, QuantizeOptions(max_drop=0.04, max_evals=6), tmp_path, metrics)
    kept = [n for nodes in v["float_nodes"].values() for n in nodes]
    evals = v["accuracy_control"]["evaluations"]
    assert kept and evals[0]["float_nodes"] == 0 and evals[0]["drop"] > 0.04
    assert v["metrics"]["drop"] <= 0.04 and len(evals) <= 6
    for r, nodes in v["float_nodes"].items():  # the kept nodes really read float inputs now
        q = onnx.load(str(tmp_path / v[r]))
        assert not {n.name for n in quantized_nodes(q)} & set(nodes)


@pytest.mark.requires_shared
def test_control_metrics_on_levircc_synth(tiny_bundle, shared_data, tmp_path):
    """The whole path with the real data root: synth + real calibration pairs, control CIDEr-D vs fp32 recorded."""
    shutil.copytree(tiny_bundle, tmp_path / "b")
    cs = CalibrationSet.load(DEFAULT_SET)
    synth = [e for e in cs.entries if isinstance(e, SynthEntry)][:3]
    real = [e for e in cs.entries if isinstance(e, RealEntry)][:1]
    lines = [f"synth {e.pair_id} {e.variant}" for e in synth] + [f"real {e.pre} {e.post} {e.col} {e.row} {e.size}"
                                                                  for e in real]
    (tmp_path / "small.txt").write_text("\n".join(lines) + "\n")
    m = quantize_bundle(tmp_path / "b", QuantizeOptions(control_pairs=4, precisions=("int8",),
                                                        calibration_set=str(tmp_path / "small.txt"),
                                                        data_root=str(shared_data)))
    v = m["variants"]["int8"]
    assert (v["calibration"]["n_synth"], v["calibration"]["n_real"]) == (3, 1)
    met = v["metrics"]
    assert met["dataset"] == "levircc-synth" and met["n"] == 4 and met["calibration_overlap"] == 0
    assert met["drop"] == pytest.approx(met["fp32_CIDEr-D"] - met["CIDEr-D"], abs=1e-4)
    assert v["accuracy_control"]["evaluations"][0]["float_nodes"] == 0
