"""Export validates by default; a checkpoint of another architecture is refused in one line."""

import pytest

torch = pytest.importorskip("torch", reason="export needs the factory extra (torch, onnx)")

from edgecc.export.onnx import ExportOptions, export_bundle  # noqa: E402
from edgecc.train.checkpoint import CheckpointError, load_checkpoint  # noqa: E402


def test_export_records_parity(tiny_bundle):
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    v = m["validation"]
    assert v["greedy_tokens_identical"] == ExportOptions().check_pairs
    assert max(v["max_abs_diff"].values()) < ExportOptions().atol
    assert m["input"] == {**m["input"], "size": 256, "dtype": "uint8", "layout": "NHWC"}
    assert m["opset"] == 17 and m["precision"] == "fp32" and len(m["source_revision"]) > 0


def test_checkpoint_of_another_architecture(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"arch": "resnet50", "state_dict": {}}, p)
    with pytest.raises(CheckpointError, match="architecture 'resnet50'"):
        load_checkpoint(p)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_with_wrong_weights(tiny_checkpoint, tmp_path):
    ck = torch.load(tiny_checkpoint, weights_only=True)
    ck["config"]["d_model"] = 48
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: does not fit edgecc-teacher-v1"):
        export_bundle(tmp_path / "bad.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
