"""Bundle loading verifies every file; each fault is a one-line error naming the file."""

import json
import shutil
from pathlib import Path

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


def test_on_use_checks_each_file_when_handed_out(bundle_copy):
    import edgecc

    p = bundle_copy / "decoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    b = Bundle.open(bundle_copy, verify="on_use")  # opens: the graphs are not read yet
    assert b.path("encoder.onnx").is_file()  # an intact file passes
    with pytest.raises(BundleError, match=r"decoder\.onnx: sha256 mismatch"):
        b.path("decoder.onnx")
    with pytest.raises(BundleError, match=r"decoder\.onnx: sha256 mismatch"):  # load() checks what it loads
        edgecc.load(bundle_copy)


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


# ---------------------------------------------------------------------------------------------- untrusted bundles
# A synthetic bundle (hand-encoded ONNX protobufs, no torch): each unsafe variation is refused with one line.


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _onnx_bytes(location: str | None = None, nested: bool = False) -> bytes:
    """A ModelProto whose graph has one float initializer, stored externally at `location` when given (inside an
    If node's subgraph when `nested`)."""
    tensor = _varint(1 << 3) + _varint(2) + _varint(2 << 3) + _varint(1) + _ld(8, b"w")  # dims [2], FLOAT, "w"
    if location is None:
        tensor += _ld(9, b"\x00" * 8)  # raw_data
    else:
        tensor += _ld(13, _ld(1, b"location") + _ld(2, location.encode())) + _varint(14 << 3) + _varint(1)
    graph = _ld(2, b"g") + _ld(5, tensor)
    if nested:  # node If with attribute then_branch = graph
        attr = _ld(1, b"then_branch") + _ld(6, graph) + _varint(20 << 3) + _varint(5)  # type GRAPH
        graph = _ld(2, b"outer") + _ld(1, _ld(4, b"If") + _ld(5, attr))
    return _varint(1 << 3) + _varint(8) + _ld(7, graph)


def _synthetic_bundle(root: Path, encoder: bytes | None = None, extra: dict | None = None, **manifest) -> Path:
    from edgecc.bundle import write_manifest
    from edgecc.vocab import Vocab

    root.mkdir(parents=True, exist_ok=True)
    vocab = Vocab(("there", "is", "no", "difference"))
    vocab.save(root / "vocab.json")
    (root / "encoder.onnx").write_bytes(encoder if encoder is not None else _onnx_bytes())
    (root / "decoder.onnx").write_bytes(_onnx_bytes())
    for name, data in (extra or {}).items():
        (root / name).write_bytes(data)
    files = ["encoder.onnx", "decoder.onnx", "vocab.json", *(extra or {})]
    write_manifest(root, {"name": "synthetic", "files": files, "vocab_sha256": vocab.sha256(),
                          "input": {"size": 64}, "gate": {"threshold": 0.5}, "decoder": {"max_len": 8},
                          "variants": {"fp32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}}, **manifest})
    return root


def _edit_manifest(root: Path, fn) -> None:
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def _refused(root: Path, match: str) -> str:
    with pytest.raises(BundleError, match=match) as info:
        Bundle.open(root)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_synthetic_bundle_opens(tmp_path):
    b = Bundle.open(_synthetic_bundle(tmp_path / "b"))
    assert b.variant("fp32")["encoder"] == "encoder.onnx"


@pytest.mark.parametrize("name", ["../evil.onnx", "/etc/passwd", "sub/../../evil.onnx", "C:\\evil.onnx", "a\x00b"])
def test_manifest_path_leaving_the_bundle_is_refused(tmp_path, name):
    root = _synthetic_bundle(tmp_path / "b")
    _edit_manifest(root, lambda m: m["files"].update({name: {"sha256": "0" * 64, "bytes": 1}}))
    _refused(root, "unsafe file name")


def test_variant_naming_an_unlisted_or_outside_file_is_refused(tmp_path):
    root = _synthetic_bundle(tmp_path / "b")
    _edit_manifest(root, lambda m: m["variants"]["fp32"].update(encoder="../../outside.onnx"))
    _refused(root, "variant fp32 encoder is unsafe file name")
    root = _synthetic_bundle(tmp_path / "c")
    _edit_manifest(root, lambda m: m["variants"]["fp32"].update(encoder="other.onnx"))
    _refused(root, "variant fp32 encoder is a file not listed")


def test_bundle_path_refuses_traversal(tmp_path):
    b = Bundle.open(_synthetic_bundle(tmp_path / "b"))
    with pytest.raises(BundleError, match="unsafe file name"):
        b.path("../manifest.json")


def test_symlink_leaving_the_bundle_is_refused(tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(_onnx_bytes())
    root = _synthetic_bundle(tmp_path / "b")
    (root / "encoder.onnx").unlink()
    (root / "encoder.onnx").symlink_to(outside)  # same bytes, same sha256: only the link gives it away
    _refused(root, "symlink that leaves the bundle")


def test_manifest_symlink_leaving_the_bundle_is_refused(tmp_path):
    root = _synthetic_bundle(tmp_path / "b")
    (root / "manifest.json").rename(tmp_path / "manifest.json")
    (root / "manifest.json").symlink_to(tmp_path / "manifest.json")
    _refused(root, "manifest.json: a symlink that leaves the bundle")


def test_symlink_inside_the_bundle_is_fine(tmp_path):
    root = _synthetic_bundle(tmp_path / "b")
    (root / "real").mkdir()
    (root / "encoder.onnx").rename(root / "real" / "encoder.onnx")
    (root / "encoder.onnx").symlink_to(root / "real" / "encoder.onnx")
    Bundle.open(root)


@pytest.mark.parametrize(("location", "match"), [
    ("../weights.bin", "lies outside the bundle"),
    ("/tmp/weights.bin", "lies outside the bundle"),
    ("sub/../../weights.bin", "lies outside the bundle"),
    ("unlisted.bin", "not a file listed"),
])
def test_onnx_external_data_outside_the_bundle_is_refused(tmp_path, location, match):
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 8)
    root = _synthetic_bundle(tmp_path / "b", encoder=_onnx_bytes(location))
    msg = _refused(root, match)
    assert "encoder.onnx" in msg


def test_onnx_external_data_in_a_subgraph_is_found(tmp_path):
    root = _synthetic_bundle(tmp_path / "b", encoder=_onnx_bytes("../w.bin", nested=True))
    _refused(root, "lies outside the bundle")


def test_onnx_external_data_listed_inside_the_bundle_is_fine(tmp_path):
    root = _synthetic_bundle(tmp_path / "b", encoder=_onnx_bytes("weights.bin"), extra={"weights.bin": b"\0" * 8})
    Bundle.open(root)


def test_truncated_onnx_is_refused(tmp_path):
    root = _synthetic_bundle(tmp_path / "b", encoder=_onnx_bytes()[:-3])
    _refused(root, "encoder.onnx: not a readable ONNX file")


def test_external_data_parser_agrees_with_onnx(tmp_path):
    onnx = pytest.importorskip("onnx", reason="cross-check against the onnx package (factory extra)")
    from onnx import external_data_helper, helper

    from edgecc._onnx_refs import external_data_locations

    ours = tmp_path / "ours.onnx"
    ours.write_bytes(_onnx_bytes("../x.bin", nested=True))
    m = onnx.load_model_from_string(ours.read_bytes())  # onnx parses our hand-made protobuf
    tensors = list(external_data_helper._get_all_tensors(m))
    assert [external_data_helper.ExternalDataInfo(t).location for t in tensors] == ["../x.bin"]
    t = helper.make_tensor("w", onnx.TensorProto.FLOAT, [2], b"\x00" * 8, raw=True)
    external_data_helper.set_external_data(t, location="../../etc/weights.bin")
    t.ClearField("raw_data")
    g = helper.make_graph([], "g", [], [], initializer=[t])
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(helper.make_model(g).SerializeToString())
    assert external_data_locations(theirs) == ["../../etc/weights.bin"]


def test_oversized_manifest_is_refused(tmp_path):
    root = _synthetic_bundle(tmp_path / "b", padding="x" * (1 << 20))
    _refused(root, r"manifest is \d+ bytes, more than the 1048576 byte limit")


@pytest.mark.parametrize(("text", "match"), [
    ("[1, 2]", "not a JSON object"),
    ("[" * 100_000, "not valid JSON"),
    ('{"format": "edgecc-bundle", "manifest_version": 1, "files": [], "variants": {}}', "malformed manifest"),
    ('{"format": "edgecc-bundle", "manifest_version": 1, "files": {"vocab.json": {}}, "variants": {}}', "no sha256"),
    ('{"format": "something-else"}', "not an edgecc-bundle manifest"),
    ('{"format": "edgecc-bundle", "manifest_version": "2"}', "unknown manifest version '2'"),
    ("\xff\xfe garbage", "not valid JSON"),
])
def test_malformed_manifest_is_refused(tmp_path, text, match):
    root = _synthetic_bundle(tmp_path / "b")
    (root / "manifest.json").write_text(text, encoding="latin-1")
    _refused(root, match)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m: m["gate"].update(threshold=float("nan")), "manifest holds NaN, not a number"),
    (lambda m: m.update(params=float("inf")), "manifest holds Infinity, not a number"),
    (lambda m: m.pop("input"), "no 'input' section"),
    (lambda m: m.pop("decoder"), "no 'decoder' section"),
    (lambda m: m["input"].pop("size"), "no input size"),
    (lambda m: m["files"]["decoder.onnx"].pop("bytes"), "no size in bytes for 'decoder.onnx'"),
])
def test_a_manifest_missing_what_the_runtime_reads_is_refused_in_one_line(tmp_path, edit, match):
    root = _synthetic_bundle(tmp_path / "b")
    _edit_manifest(root, edit)  # json.dumps writes NaN / Infinity, which are not JSON
    _refused(root, match)


def test_variants_must_name_listed_files(tmp_path):
    root = _synthetic_bundle(tmp_path / "b")
    _edit_manifest(root, lambda m: m.update(variants={"fp32": "encoder.onnx"}))
    _refused(root, "'variants' must map precisions")


def test_decode_loop_and_graph_names_must_be_listed(tmp_path):
    """A graph reaches ONNX Runtime only when listed and checksummed: the decode loop's file included."""
    root = _synthetic_bundle(tmp_path / "b")
    _edit_manifest(root, lambda m: m.update(decode_loop={"graphs": {"int8": {"file": "int8/evil.onnx"}}}))
    _refused(root, r"decode_loop int8 names a file not listed in 'files' \('int8/evil.onnx'\)")
    good = _synthetic_bundle(tmp_path / "c")
    with pytest.raises(BundleError, match="'evil.onnx' is not a graph listed"):
        Bundle.open(good).path("evil.onnx")
