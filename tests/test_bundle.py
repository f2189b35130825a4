"""Bundle loading verifies every file; each fault is a one-line error naming the file."""

import json
import shutil

import pytest

from edgecc.bundle import Bundle
from edgecc.errors import BundleError


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_verified_bundle_opens(bundle_copy):
    b = Bundle.open(bundle_copy)
    assert set(b.manifest["files"]) == {"encoder.onnx", "decoder.onnx", "vocab.json"}
    assert b.manifest["vocab_sha256"] == b.vocab().sha256()
    assert b.manifest["validation"]["greedy_tokens_identical"] > 0


def test_one_byte_changed_is_caught(bundle_copy):
    p = bundle_copy / "decoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decoder\.onnx: sha256 mismatch"):
        Bundle.open(bundle_copy)


def test_missing_file(bundle_copy):
    (bundle_copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder\.onnx: file listed in the manifest is missing"):
        Bundle.open(bundle_copy)


def test_unknown_manifest_version(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["manifest_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="unknown manifest version 99"):
        Bundle.open(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="manifest not found"):
        Bundle.open(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        Bundle.open(tmp_path / "nope")


def test_missing_precision_variant(bundle_copy):
    with pytest.raises(BundleError, match="no int8 variant"):
        Bundle.open(bundle_copy).variant("int8")
