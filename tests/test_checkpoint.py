"""The checkpoint table and the model protocol: every architecture saves, loads and decodes through one seam."""

import pytest

torch = pytest.importorskip("torch", reason="the factory needs torch (pip install 'edgecc[train]')")

from edgecc.train.checkpoint import ARCHS, CheckpointError, greedy, load_checkpoint, save_checkpoint  # noqa: E402
from edgecc.train.model import ChangeCaptioner, ModelConfig  # noqa: E402
from edgecc.train.student import Student, StudentConfig  # noqa: E402

from edgecc.vocab import END, Vocab  # noqa: E402

VOCAB = Vocab(tuple(f"w{i}" for i in range(12)))
TINY = {
    ChangeCaptioner.ARCH: lambda: ChangeCaptioner(ModelConfig(
        vocab_size=len(VOCAB), trunk_blocks=6, d_model=32, change_dim=16, change_blocks=1, dec_layers=1, dec_heads=2,
        dec_ff=64, max_len=12)),
    Student.ARCH: lambda: Student(StudentConfig(
        vocab_size=len(VOCAB), decoder="mamba", d_model=32, dec_heads=2, dec_ff=64, dc=16, attn_heads=2,
        trunk_blocks=6, max_len=12, window=4, cross_topk=5, d_state=4, head_dim=8, dropout=0.0)),
}


def test_every_architecture_is_in_the_table():
    assert set(TINY) == set(ARCHS)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_round_trip_and_reference_greedy(tmp_path, arch):
    torch.manual_seed(0)
    model = TINY[arch]().eval()
    path = save_checkpoint(model, VOCAB, tmp_path / "model.pt", {"dataset": "none (tests)"})
    loaded, vocab, ck = load_checkpoint(path)
    assert type(loaded) is type(model) and ck["arch"] == arch and vocab == VOCAB
    g = torch.Generator().manual_seed(1)
    pre, post = (torch.randint(0, 255, (2, 256, 256, 3), dtype=torch.uint8, generator=g) for _ in range(2))
    a, b = greedy(model, pre, post, max_len=6), greedy(loaded, pre, post, max_len=6)
    assert a.shape[0] == 2 and 1 <= a.shape[1] <= 6 and torch.equal(a, b)
    for row in a.tolist():  # once <end> is out, the row stays <end>
        tail = row[row.index(END):] if END in row else []
        assert tail == [END] * len(tail)
    entry = model.decoder_manifest()
    assert entry["state_bytes_per_sequence"]["total"] > 0 and set(entry["state"]) == set(model.initial_state(1))


def test_unknown_architecture_names_the_known_ones(tmp_path):
    torch.save({"arch": "resnet50", "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: checkpoint architecture 'resnet50' is not one of"):
        load_checkpoint(tmp_path / "other.pt")


def test_config_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(TINY[Student.ARCH]().eval(), VOCAB, tmp_path / "model.pt")
    ck = torch.load(path, weights_only=True)
    ck["config"]["no_such_option"] = 1
    torch.save(ck, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd.pt: does not fit edgecc-student-v1"):
        load_checkpoint(tmp_path / "odd.pt")
    torch.save({"arch": ["not", "a", "name"]}, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="is not one of"):
        load_checkpoint(tmp_path / "list.pt")
