"""The CLI shell: caption (text, JSON, outputs), info, doctor; bad input is one line and a non-zero exit."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgecc.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _write_pair(d: Path, size: int, rows: slice, seed: int):
    """Seeded noise `pre.png` and a `post.png` with one red block (rows x cols 60:200); -> (pre, post) arrays."""
    rng = np.random.default_rng(seed)
    pre = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    post = pre.copy()
    post[rows, 60:200] = (30, 30, 200)
    cv2.imwrite(str(d / "pre.png"), pre)
    cv2.imwrite(str(d / "post.png"), post)
    return pre, post


@pytest.fixture(scope="module")
def png_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pngs")
    _write_pair(d, 256, slice(40, 120), seed=3)
    return d / "pre.png", d / "post.png"


def test_caption_json_contract(tiny_bundle, png_pair):
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--model", str(tiny_bundle), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {"caption", "changed", "change_score", "timings_ms", "model", "tiles"} <= set(out)
    assert set(out["timings_ms"]) == {"encode", "decode", "total"} and out["timings_ms"]["total"] > 0
    assert isinstance(out["caption"], str) and out["caption"]
    assert len(out["tiles"]) == 1 and 0 <= out["change_score"] <= 1


def test_default_bundle_captions_example_pair():
    r = runner.invoke(app, ["caption", str(ROOT / "examples/data/pre.png"), str(ROOT / "examples/data/post.png")])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() and r.stdout.strip() != "there is no difference"  # the example pair has changes


def test_info_and_doctor(tiny_bundle):
    r = runner.invoke(app, ["info", str(tiny_bundle)])
    assert r.exit_code == 0 and "encoder.onnx" in r.stdout and "sha256" in r.stdout
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0 and "ort-cpu" in r.stdout and "CPUExecutionProvider" in r.stdout


@pytest.mark.parametrize("problem", ["missing", "text", "empty"])
def test_bad_input_is_one_line(tmp_path, png_pair, tiny_bundle, problem):
    bad = tmp_path / "bad.tif"
    if problem == "text":
        bad.write_text("this is not an image\n")
    elif problem == "empty":
        bad.write_bytes(b"")
    r = runner.invoke(app, ["caption", str(png_pair[0]), str(bad), "--model", str(tiny_bundle)])
    assert r.exit_code == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "bad.tif" in lines[0] and lines[0].startswith("edgecc: error:")


def test_corrupt_bundle_is_one_line(tmp_path, png_pair, tiny_bundle):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    data = bytearray((b / "encoder.onnx").read_bytes())
    data[100] ^= 0xFF
    (b / "encoder.onnx").write_bytes(bytes(data))
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--model", str(b)])
    assert r.exit_code == 2 and "encoder.onnx: sha256 mismatch" in r.stderr


def test_runtime_never_imports_torch_or_onnx(tiny_bundle, png_pair, run_without_factory):
    out = run_without_factory(f"""
import edgecc, edgecc.cli
from typer.testing import CliRunner
r = CliRunner().invoke(edgecc.cli.app, ['caption', {str(png_pair[0])!r}, {str(png_pair[1])!r},
                                        '--model', {str(tiny_bundle)!r}, '--json'])
assert r.exit_code == 0, r.output
print('ok')
""")
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_caption_geotiff_scene_writes_georeferenced_outputs(tiny_bundle, fixtures_dir, tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="GeoTIFF needs the geo extra")
    gj, hm = tmp_path / "changes.geojson", tmp_path / "heat.tif"
    r = runner.invoke(app, ["caption", str(fixtures_dir / "geo_pre.tif"), str(fixtures_dir / "geo_post_4326.tif"),
                            "--model", str(tiny_bundle), "--json", "--geojson", str(gj), "--heatmap", str(hm),
                            "--gsd", "0.5"])  # the fixture's grid is 1 m: at the model's 0.5 m it is one tile
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    with rasterio.open(fixtures_dir / "geo_pre.tif") as pre, rasterio.open(hm) as heat:
        assert heat.crs == pre.crs and heat.count == 1
        assert heat.bounds == pytest.approx(pre.bounds, abs=pre.res[0] * 4)
        assert heat.nodata is not None and 0 <= heat.read(1, masked=True).min() and heat.read(1).max() <= 1
    fc = json.loads(gj.read_text())
    assert fc["type"] == "FeatureCollection" and "EPSG" in fc["crs"]["properties"]["name"]
    assert len(fc["features"]) == sum(t["changed"] for t in out["tiles"])
    assert out["crs"] and out["tiles"][0]["height"] == 192  # a 256x192 scene: one padded tile
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary leftovers


def test_info_json_lists_every_variant_of_the_default_bundle():
    r = runner.invoke(app, ["info", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    variants = {v["precision"]: v for v in data["variants"]}
    assert {"fp32", "int8", "fp16"} <= set(variants)
    for v in variants.values():
        assert v["name"].endswith(":" + v["precision"]) and v["size_bytes"] > 0 and v["params"] > 0
        assert 0 < v["gflops_per_pair"] <= 0.3  # the student's compute budget
        assert v["decoder"] in ("transformer", "mamba", "sparse")
        assert v["state_bytes_per_sequence"]["state"] > 0
        m = v["metrics"]
        assert m["dataset"] == "LEVIR-CC-synth" and m["split"] == "test"
        assert all(isinstance(m[k], float) for k in ("CIDEr-D", "CIDEr-D-changed", "BLEU-4", "gate_accuracy"))
    assert variants["int8"]["size_bytes"] <= 5_000_000
    assert variants["int8"]["size_bytes"] < variants["fp32"]["size_bytes"]


def test_teacher_is_available_by_name():
    r = runner.invoke(app, ["info", "teacher", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["arch"] == "edgecc-teacher-v1"
    r = runner.invoke(app, ["caption", str(ROOT / "examples/data/pre.png"), str(ROOT / "examples/data/post.png"),
                            "--model", "teacher"])
    assert r.exit_code == 0 and r.stdout.strip(), r.output


def test_cpu_precision_follows_the_bundle_recommendation(tiny_bundle, png_pair):
    pair = [str(ROOT / "examples/data/pre.png"), str(ROOT / "examples/data/post.png")]
    for extra, want in (([], "int8"), (["--precision", "fp32"], "fp32")):  # the student recommends int8 on CPU
        r = runner.invoke(app, ["caption", *pair, "--json", *extra])
        assert r.exit_code == 0 and json.loads(r.stdout)["precision"] == want, r.output
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--model", str(tiny_bundle), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["precision"] == "fp32"  # no recommendation: fp32


def test_threshold_option_moves_the_call():
    pair = [str(ROOT / "examples/data/pre.png"), str(ROOT / "examples/data/post.png")]
    default = json.loads(runner.invoke(app, ["caption", *pair, "--json"]).stdout)
    strict = runner.invoke(app, ["caption", *pair, "--json", "--threshold", "1.0"])
    assert strict.exit_code == 0, strict.output
    strict = json.loads(strict.stdout)
    assert default["changed"] and not strict["changed"]
    assert strict["change_score"] == default["change_score"]  # the score is the model's; only the call moves
    bad = runner.invoke(app, ["caption", *pair, "--threshold", "2"])
    assert bad.exit_code != 0 and "threshold" in bad.output and "Traceback" not in bad.output


# ---------------------------------------------------------------------------------------------- the shell's manners


@pytest.fixture(scope="module")
def tiled_pair(tmp_path_factory):
    """320 x 320: with --overlap 240 a 256 model input gives 25 tiles, enough for the progress bar."""
    d = tmp_path_factory.mktemp("tiled")
    _, post = _write_pair(d, 320, slice(40, 160), seed=5)
    cv2.imwrite(str(d / "post_half.png"), cv2.resize(post, (160, 160)))
    return d


def test_stdout_is_the_caption_alone_for_a_tiled_scene(tiny_bundle, tiled_pair):
    args = ["caption", str(tiled_pair / "pre.png"), str(tiled_pair / "post.png"), "--model", str(tiny_bundle),
            "--overlap", "240"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n") == 1 and r.stdout.strip() and not r.stdout.startswith("\n")  # no progress bar
    assert "25 tiles" in r.stderr
    r = runner.invoke(app, [*args, "--json"])
    assert json.loads(r.stdout)["caption"] and r.stdout.count("\n") == 1


def test_warnings_are_one_line_and_debug_works_after_the_command(tiny_bundle, tiled_pair):
    import warnings

    before = warnings.showwarning
    pre, half = str(tiled_pair / "pre.png"), str(tiled_pair / "post_half.png")
    r = runner.invoke(app, ["caption", pre, half, "--model", str(tiny_bundle), "--resize"])
    assert r.exit_code == 0, r.output
    warned = [x for x in r.stderr.splitlines() if "resized" in x]
    assert warned == [f"edgecc: warning: {half}: resized from 160 x 160 to 320 x 320 to match pre"]
    assert warnings.showwarning is before  # set for the command only, not at import
    r = runner.invoke(app, ["caption", pre, half, "--model", str(tiny_bundle)])
    assert r.exit_code == 2 and "use --resize" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["caption", pre, half, "--model", str(tiny_bundle), "--debug"])  # after the subcommand
    assert r.exit_code == 1 and type(r.exception).__name__ == "ImageryError"  # raised: a traceback


def test_max_pixels_flag(tiny_bundle, png_pair):
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--model", str(tiny_bundle), "--max-pixels", "1000"])
    assert r.exit_code == 2 and "raise the limit: --max-pixels" in r.stderr and "256 x 256" in r.stderr
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--model", str(tiny_bundle), "--max-pixels", "65536"])
    assert r.exit_code == 0, r.output


def test_output_under_a_file_is_one_clear_line(tiny_bundle, png_pair, tmp_path):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("not a folder")
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--model", str(tiny_bundle),
                            "--geojson", str(blocker / "out.geojson")])
    assert r.exit_code == 2
    assert r.stderr == f"edgecc: error: {blocker / 'out.geojson'}: cannot write there, {blocker} is a file, not a " \
                       "folder\n"


def test_ctrl_c_is_interrupted_exit_130(monkeypatch, png_pair):
    import edgecc

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(edgecc, "load", interrupted)
    r = runner.invoke(app, ["caption", *map(str, png_pair)])
    assert r.exit_code == 130 and r.stderr == "edgecc: interrupted\n" and r.stdout == ""


def test_corrupt_png_is_our_line_only(tiny_bundle, png_pair, tmp_path):
    """libpng prints its own 'libpng error: IDAT: CRC error' to fd 2 unless the file is refused before decoding."""
    import subprocess
    import sys

    data = bytearray(png_pair[1].read_bytes())
    data[200:260] = b"x" * 60
    bad = tmp_path / "crc.png"
    bad.write_bytes(bytes(data))
    out = subprocess.run([sys.executable, "-m", "edgecc.cli", "caption", str(png_pair[0]), str(bad), "--model",
                          str(tiny_bundle)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [f"edgecc: error: {bad}: not a readable image (corrupt PNG: CRC error in the "
                                       "IDAT chunk at byte 33)"]


def test_info_shows_the_variant_that_runs_aligned_and_takes_model_option():
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0, r.output
    from edgecc.bundle import Bundle

    b = Bundle.open()
    assert b.cpu_precision == "int8"  # what `edgecc caption` runs by default (test_cpu_precision_follows...)
    cider = b.variant_metrics("int8")["metrics"]["CIDEr-D"]
    lines = r.stdout.splitlines()
    assert any(x.startswith("metrics     int8 (the default)") for x in lines)
    assert any(x.startswith("  all ") and f"CIDEr-D {cider:.3f}" in x for x in lines)
    assert "int8 runs by default on this CPU" in r.stdout
    files = [x for x in lines if x.startswith("file ")]
    assert len(files) == len(b.manifest["files"]) and len({x.index(" MB") for x in files}) == 1  # one column
    assert len({x.index("sha256") for x in files}) == 1
    teacher = runner.invoke(app, ["info", "teacher"]).stdout
    assert runner.invoke(app, ["info", "--model", "teacher"]).stdout == teacher
    assert runner.invoke(app, ["info", "-m", "teacher"]).stdout == teacher and "edgecc-teacher-v1" in teacher


@pytest.mark.requires_shared
def test_optical_against_sar_is_a_warning_in_json_and_on_stderr(shared_data):
    d = shared_data / "real_pairs" / "lapalma_sar"
    r = runner.invoke(app, ["caption", str(d / "pre_optical.png"), str(d / "post_sar.png"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert any("different sensors" in w for w in out["warnings"])
    assert "edgecc: warning:" in r.stderr and "different sensors" in r.stderr


def test_same_sensor_pair_has_no_warning(png_pair):
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == []


@pytest.mark.parametrize("args, says", [(["--beam", "0"], "Invalid value for '--beam'"),
                                        (["--gsd", "nan"], "Invalid value for '--gsd'")])
def test_a_bad_option_value_names_the_option(tiny_bundle, png_pair, args, says):
    r = runner.invoke(app, ["caption", *map(str, png_pair), "--model", str(tiny_bundle), *args])
    assert r.exit_code == 2 and says in r.stderr, r.output


def test_export_never_replaces_a_folder_that_is_not_a_bundle(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from edgecc.export.onnx import export_bundle

    ckpt = tmp_path / "run" / "model.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not read: the folder is refused first")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("x")
    for out, says in ((victim, "not an edgecc bundle"), (ckpt.parent, "holds the current folder or the checkpoint"),
                      (victim / "precious.txt", "is a file")):
        with pytest.raises(ValueError, match=says):
            export_bundle(ckpt, out)
    monkeypatch.chdir(victim)
    with pytest.raises(ValueError, match="holds the current folder"):
        export_bundle(ckpt, ".")
    assert (victim / "precious.txt").read_text() == "x" and ckpt.is_file()


@pytest.mark.parametrize("args, says", [
    (["quantize", "BUNDLE", "--no-int8", "--no-fp16"], "leave nothing to write"),
    (["distill", "--teacher", "t.pt", "--captions", "c.json", "--decoder", "bogus"], "choose one of"),
    (["eval", "--captions", "c.json", "--update-manifest"], "name the bundle with --model"),
    (["eval", "--captions", "c.json", "--checkpoint", "m.pt"], "--checkpoint is for the torch backends"),
    (["train", "--captions", "c.json", "--limit", "0"], "Invalid value for '--limit'"),
    (["fit-gate", "--data", "/nonexistent", "--model", "BUNDLE"], "no real_pairs/ folder"),
])
def test_factory_commands_refuse_what_cannot_be_meant_before_any_work(tiny_bundle, args, says):
    r = runner.invoke(app, [str(tiny_bundle) if a == "BUNDLE" else a for a in args])
    assert r.exit_code == 2 and says in r.stderr, r.output
