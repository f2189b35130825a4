import pytest

from edgecc.vocab import END, START, UNK, Vocab


def test_roundtrip_and_specials(tmp_path):
    v = Vocab(("there", "is", "no", "difference"))
    ids = v.encode(["there", "is", "zebra"])
    assert ids[0] == START and ids[-1] == END and ids[3] == UNK
    assert v.decode(v.encode(["there", "is", "no", "difference"])) == "there is no difference"
    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w == v and w.sha256() == v.sha256()


def test_empty_vocabulary_is_refused():
    with pytest.raises(ValueError, match="empty vocabulary"):
        Vocab(())


def test_truncation_keeps_frame():
    ids = Vocab(("a",)).encode(["a"] * 50, max_len=10)
    assert len(ids) == 10 and ids[-1] == END
