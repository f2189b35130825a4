"""Evaluation: pycocoevalcap metrics on their own scale, subsets, baselines, and the report schema."""

from pathlib import Path

import pytest

pytest.importorskip("pycocoevalcap", reason="evaluation needs the eval extra (pycocoevalcap)")

from edgecc.train.evaluate import EvalOptions, caption_metrics, evaluate, format_report  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "levircc"


def test_metrics_scale_and_perfect_match():
    refs = {"a": ["many houses are built", "some houses appear"], "b": ["a road is built", "a new road appears"]}
    perfect = caption_metrics({"a": "many houses are built", "b": "a road is built"}, refs, meteor=False)
    wrong = caption_metrics({"a": "trees are removed", "b": "trees are removed"}, refs, meteor=False)
    assert perfect["BLEU-1"] == pytest.approx(1.0) and perfect["BLEU-4"] > 0.9
    assert wrong["BLEU-1"] < perfect["BLEU-1"] and wrong["CIDEr-D"] < perfect["CIDEr-D"]
    assert perfect["CIDEr-D"] < 20  # pycocoevalcap's scale, not x100


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")
def test_evaluate_tiny_bundle_schema(tiny_bundle):
    import edgecc

    rep = evaluate(edgecc.load(tiny_bundle), str(SHARED / "LevirCCcaptions.json"),
                   EvalOptions(split="test", limit=8, meteor=False))
    assert rep["dataset"] == "levircc-synth" and rep["split"] == "test" and rep["n"] == 8
    assert {"BLEU-4", "ROUGE-L", "CIDEr-D"} <= set(rep["metrics"])
    assert rep["changed"]["n"] + rep["unchanged"]["n"] == 8
    assert 0 <= rep["gate_accuracy"] <= 1
    assert set(rep["baselines"]) == {"most_frequent_caption", "oracle_changeflag_most_frequent"}
    assert "LEVIR-CC-synth test split" in format_report(rep)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")
def test_bundle_evaluation_runs_without_torch(tiny_bundle, run_without_factory):
    out = run_without_factory(f"""
from edgecc.train.evaluate import EvalOptions, evaluate_bundle
rep = evaluate_bundle({str(tiny_bundle)!r}, {str(SHARED / "LevirCCcaptions.json")!r},
                      EvalOptions(limit=4, meteor=False))
print(rep["n"])
""")
    assert out.stdout.strip() == "4", out.stderr[-2000:]
