"""Tests for edgecc.train.synth.parser: captions -> ChangeSpec, consensus of five, coverage on LEVIR-CC."""

import json
from pathlib import Path

import pytest
from edgecc.train.synth import CLASSES, ChangeSpec, merge_specs, parse_caption

LEVIRCC = Path(__file__).resolve().parents[1].parent / "shared/data/levircc"


def p(text: str) -> ChangeSpec:
    return parse_caption(text.split())


def test_no_change_templates():
    for t in ["there is no difference", "the two scenes seem identical", "the scene is the same as before",
              "no change has occurred", "almost nothing has changed"]:
        spec = p(t)
        assert spec.changed is False and not spec.items and not spec.empty


def test_counts_actions_positions_relations():
    it = p("many houses are built along the road at the top").items[0]
    assert (it.obj, it.count, it.action, it.position, it.relation) == ("house", "many", "add", "top", "along_road")
    it = p("the trees in the lower right corner have disappeared").items[0]
    assert (it.obj, it.action, it.position) == ("tree", "remove", "bottom-right")
    it = p("two rows of houses are built on both sides of the road").items[0]
    assert (it.obj, it.count, it.relation) == ("house", "row", "both_sides")
    it = p("a villa appears in the upper left corner").items[0]
    assert (it.obj, it.count, it.action, it.position) == ("house", "one", "add", "top-left")
    it = p("three buildings are demolished in the middle of the scene").items[0]
    assert (it.obj, it.count, it.action, it.position) == ("building", "few", "remove", "center")
    assert p("the road is widened").items[0].action == "widen"
    assert p("a swimming pool is built beside the house").items[0].obj == "pool"
    assert p("a parking lot appears on the bareland").context == ("bareland",)


def test_replacement_and_shared_verbs():
    spec = p("the plants are removed and replaced by many buildings")
    objs = {(i.obj, i.action) for i in spec.items}
    assert ("tree", "remove") in objs and ("building", "add") in objs
    spec = p("the woods are replaced by houses")
    assert spec.items[0].obj == "tree" and spec.items[0].replaced_by == "house"
    spec = p("trees are removed and a road with villas built along appears")
    got = {i.obj: i.action for i in spec.items}
    assert got == {"tree": "remove", "road": "add", "house": "add"}
    spec = p("some houses and trees have appeared along the road")
    assert all(i.relation == "along_road" for i in spec.items)


def test_unparsable_is_empty():
    spec = p("some stuff has been moved")
    assert spec.changed and spec.empty


def test_merge_consensus_and_flag():
    caps = ["many houses are built along the road", "some houses appear at the top",
            "a row of villas is constructed beside the road", "the trees are removed", "a pond appears"]
    m = merge_specs([p(c) for c in caps], changeflag=1)
    assert [i.obj for i in m.items] == ["house"]  # only the house is named by >= 2 captions
    assert m.items[0].relation == "along_road"
    assert merge_specs([p(c) for c in caps], changeflag=0).changed is False
    # no item reaches two votes: the most informative caption wins
    m = merge_specs([p("a pond appears at the bottom"), p("the trees are removed")], changeflag=1)
    assert len(m.items) == 1 and m.items[0].position == "bottom"
    assert merge_specs([p("some stuff has been moved")], changeflag=1).empty


def test_classes_vocabulary():
    assert CLASSES[0] == "none" and len(set(CLASSES)) == len(CLASSES)
    for c in ["house", "building", "road", "tree", "parking_lot", "water"]:
        assert c in CLASSES


def test_coverage_on_real_captions():
    path = LEVIRCC / "LevirCCcaptions.json"
    if not path.exists():
        pytest.skip(f"LEVIR-CC captions not present at {path} (../shared/data is not part of a clone)")
    pairs = json.loads(path.read_text())["images"]
    n = ok = n_ch = ok_ch = 0
    for pair in pairs:
        for s in pair["sentences"]:
            spec = parse_caption(s["tokens"])
            n += 1
            ok += not spec.empty
            if pair["changeflag"]:
                n_ch += 1
                ok_ch += spec.changed and not spec.empty
            else:
                assert not spec.changed, s["raw"]
    assert n == 50385
    assert ok / n >= 0.90 and ok_ch / n_ch >= 0.90
