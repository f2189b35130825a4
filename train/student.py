"""The edge student: a truncated Lite0 trunk at half resolution, a difference-attention change block, and a caption
decoder with a fixed-size state (registered: `transformer` (KV cache, the baseline), `mamba`, `sparse`).

Every decoder has two forms checked equal in the tests: a parallel one for training (`forward`, [B,T] tokens at
once) and a one-token `step` for inference whose state goes in and comes out as explicit tensors, each laid out
[L,B,...] so the runtime can reorder beams on axis 1.

Example:
    >>> cfg = StudentConfig(vocab_size=436, decoder="mamba")
    >>> m = Student(cfg).eval()
    >>> pre = post = torch.zeros(1, 256, 256, 3, dtype=torch.uint8)
    >>> ta, tb = m.tokens_pair(pre, post)               # [1,64,128] x2 (8x8 grid)
    >>> out = m.fuse(ta, tb)                            # memory [1,64,192] (top-k for sparse), gate [1], mask [1,8,8]
    >>> mem = m.decoder.memory(out.memory)              # {"cross_k", "cross_v"} [L,1,h,N,dh]
    >>> state = m.decoder.initial_state(1)              # {"ssm": [L,1,H,P,S], "conv": [L,1,E,K-1]}
    >>> logits, state = m.decoder.step(torch.tensor([1]), torch.tensor([0]), mem, state)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .model import Lite0Trunk, TrunkGeometry, _Attention, _ResBlock
from .ops import diff_attention


@dataclass(frozen=True)
class StudentConfig(TrunkGeometry):
    """Hyperparameters; they travel in the bundle manifest."""

    vocab_size: int
    decoder: str = "mamba"  # a key of DECODERS
    trunk_blocks: int = 8  # Lite0 blocks kept: 8 -> stride 16, 80 channels
    input_pool: int = 2  # the 256x256 input is average-pooled in the graph: 2 -> the trunk sees 128x128
    image_size: int = 256
    dc: int = 128  # change-token width
    attn_heads: int = 4  # difference attention heads (d = 32)
    attn_topk: int = 0  # difference attention keys: 0 = all tokens, k = the k most-changed tokens of each date
    change_blocks: int = 1
    d_model: int = 192
    dec_layers: int = 2
    dec_heads: int = 6
    dec_ff: int = 512
    max_len: int = 40
    window: int = 8  # sparse: self-attention window (tokens)
    cross_topk: int = 16  # sparse: memory tokens read (the most-changed)
    d_state: int = 16  # mamba: SSM state size per channel
    expand: int = 2  # mamba: inner width = expand * d_model
    head_dim: int = 32  # mamba: channels per SSM head
    conv: int = 4  # mamba: causal conv width
    dropout: float = 0.1

    @property
    def n_memory(self) -> int:
        n = self.grid**2
        return min(self.cross_topk, n) if self.decoder == "sparse" else n

    def to_dict(self) -> dict:
        return asdict(self)


class Fused(NamedTuple):
    memory: torch.Tensor  # [B,N,d] decoder memory (N = top-k for the sparse decoder)
    gate: torch.Tensor  # [B] change logit
    mask: torch.Tensor  # [B,G,G] change-mask logits
    feat: torch.Tensor  # [B,dc,G,G] change features (distillation target side)
    tokens: torch.Tensor  # [B,G*G,d] all memory tokens before top-k (distillation)


class StudentTrunk(nn.Module):
    """uint8 NHWC [B,S,S,3] -> tokens [B,G*G,dc]: pooled input, Lite0 prefix (frozen), shared projection + LN."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.pool = cfg.input_pool
        self.lite = Lite0Trunk(cfg.trunk_blocks)
        self.proj = nn.Sequential(nn.Conv2d(cfg.trunk_channels, cfg.dc, 1, bias=False), nn.BatchNorm2d(cfg.dc),
                                  nn.ReLU())
        self.ln = nn.LayerNorm(cfg.dc)

    def features(self, img_u8, taps: tuple[int, ...] = ()):
        """uint8 [B,S,S,3] -> frozen Lite0 features [B,C,G,G]; with `taps`, the features after each of those depths."""
        x = img_u8.permute(0, 3, 1, 2).float()
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        lite = self.lite
        x = F.relu6(lite._bn0(lite._conv_stem(lite._pad((x - lite.mean) / lite.std))))
        outs = []
        for i, blk in enumerate(lite._blocks):
            x = blk(x)
            if i + 1 in taps:
                outs.append(x)
        return tuple(outs) if taps else x

    def project(self, f):  # [B,C,G,G] -> [B,G*G,dc]
        return self.ln(self.proj(f).flatten(2).transpose(1, 2))

    def forward(self, img_u8):
        return self.project(self.features(img_u8))


class StudentChange(nn.Module):
    """Fusion of the two dates' tokens: difference attention (queries b - a, keys/values both dates), cosine,
    [a, b, b-a, attn, cos] mix, residual convs -> gate, mask and decoder memory."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        dc, d, g = cfg.dc, cfg.d_model, cfg.grid
        self.cfg = cfg
        self.attn_out = nn.Linear(dc, dc)
        self.mix = nn.Sequential(nn.Conv2d(4 * dc + 1, dc, 1, bias=False), nn.BatchNorm2d(dc), nn.ReLU())
        self.blocks = nn.Sequential(*[_ResBlock(dc) for _ in range(cfg.change_blocks)])
        self.mask = nn.Conv2d(dc, 1, 1)
        self.gate = nn.Sequential(nn.Linear(2 * dc, dc), nn.ReLU(), nn.Linear(dc, 1))
        self.mem = nn.Conv2d(dc, d, 1)
        self.pos = nn.Parameter(torch.randn(1, d, g, g) * 0.02)

    def forward(self, ta, tb, att=None) -> Fused:  # ta, tb [B,N,dc]; att [B,N,dc] (None: computed here)
        cfg = self.cfg
        if att is None:
            att = diff_attention(ta, tb, cfg.attn_heads, cfg.attn_topk)
        B, N, dc = ta.shape
        g = cfg.grid

        def grid(t):  # [B,N,dc] -> [B,dc,G,G]
            return t.transpose(1, 2).reshape(B, dc, g, g)

        pa, pb, at = grid(ta), grid(tb), grid(self.attn_out(att))
        norms = (pa.norm(dim=1, keepdim=True) * pb.norm(dim=1, keepdim=True)).clamp_min(1e-6)
        cos = (pa * pb).sum(1, keepdim=True) / norms  # [B,1,G,G]
        x = self.blocks(self.mix(torch.cat([pa, pb, pb - pa, at, cos], 1)))  # [B,dc,G,G]
        gate = self.gate(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)).squeeze(1)
        tokens = (self.mem(x) + self.pos).flatten(2).transpose(1, 2)  # [B,N,d]
        memory = tokens
        if cfg.decoder == "sparse" and cfg.n_memory < N:
            mag = (tb - ta).norm(dim=2)  # [B,N] difference magnitude ranks the memory tokens
            idx = mag.topk(cfg.n_memory, dim=1).indices  # [B,k]
            memory = tokens.gather(1, idx.unsqueeze(2).expand(-1, -1, tokens.shape[2]))
        return Fused(memory, gate, self.mask(x).squeeze(1), x, tokens)


# ----------------------------------------------------------------------------------------------- decoders
class _Base(nn.Module):
    """Shared parts: embedding, cross-attention to the memory, feed-forward, output head."""

    uses_position = True

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Embedding(cfg.max_len, d) if self.uses_position else None
        self.mem_ln = nn.LayerNorm(d)
        self.cross = nn.ModuleList(_Attention(d, cfg.dec_heads) for _ in range(cfg.dec_layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.dec_layers))
        self.ln3 = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.dec_layers))
        self.ff = nn.ModuleList(
            nn.Sequential(nn.Linear(d, cfg.dec_ff), nn.GELU(), nn.Linear(cfg.dec_ff, d)) for _ in range(cfg.dec_layers)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size)

    def memory(self, memory):  # [B,N,d] -> {"cross_k", "cross_v"} [L,B,h,N,dh]
        m = self.mem_ln(memory)
        return {"cross_k": torch.stack([a.split(a.k(m)) for a in self.cross]),
                "cross_v": torch.stack([a.split(a.v(m)) for a in self.cross])}

    def _embed(self, tokens, positions):  # [B,T], [T] -> [B,T,d]
        x = self.embed(tokens)
        return x + self.pos(positions) if self.pos is not None else x

    def _cross_ff(self, i, x, mem):
        a = self.cross[i]
        x = x + self.drop(a.attend(a.split(a.q(self.ln2[i](x))), mem["cross_k"][i], mem["cross_v"][i]))
        return x + self.drop(self.ff[i](self.ln3[i](x)))

    def forward(self, tokens, mem):  # tokens [B,T] -> logits [B,T,V]
        T = tokens.shape[1]
        x = self._embed(tokens, torch.arange(T, device=tokens.device))
        for i in range(self.cfg.dec_layers):
            x = self._mix_parallel(i, x)
            x = self._cross_ff(i, x, mem)
        return self.head(self.ln_f(x))

    def step(self, token, position, mem, state):  # token [B], position [1] -> logits [B,V], new state
        x = self._embed(token.unsqueeze(1), position)  # [B,1,d]
        new = {k: [] for k in state}
        for i in range(self.cfg.dec_layers):
            x, layer_state = self._mix_step(i, x, position, {k: v[i] for k, v in state.items()})
            for k, v in layer_state.items():
                new[k].append(v)
            x = self._cross_ff(i, x, mem)
        return self.head(self.ln_f(x))[:, 0], {k: torch.stack(v) for k, v in new.items()}

    def state_shapes(self) -> dict[str, list]:  # per-sequence state, "B" = batch axis, 0 = grows per step
        raise NotImplementedError

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {k: torch.zeros([batch if s == "B" else s for s in shape]) for k, shape in self.state_shapes().items()}


class TransformerDecoder(_Base):
    """Causal self-attention with a KV cache that grows by one token a step (the teacher's decoder, smaller)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        d, h = cfg.d_model, cfg.dec_heads
        self.self_attn = nn.ModuleList(_Attention(d, h) for _ in range(cfg.dec_layers))
        self.ln1 = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.dec_layers))

    def _band(self, T, device):  # True = masked
        return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)

    def _mix_parallel(self, i, x):
        a, h = self.self_attn[i], self.ln1[i](x)
        mask = self._band(x.shape[1], x.device)
        return x + self.drop(a.attend(a.split(a.q(h)), a.split(a.k(h)), a.split(a.v(h)), mask))

    def _mix_step(self, i, x, position, st):
        a, h = self.self_attn[i], self.ln1[i](x)
        k = torch.cat([st["self_k"], a.split(a.k(h))], 2)
        v = torch.cat([st["self_v"], a.split(a.v(h))], 2)
        return x + a.attend(a.split(a.q(h)), k, v), {"self_k": k, "self_v": v}

    def state_shapes(self):
        c = self.cfg
        shape = [c.dec_layers, "B", c.dec_heads, 0, c.d_model // c.dec_heads]
        return {"self_k": shape, "self_v": shape}


class SparseDecoder(TransformerDecoder):
    """Self-attention over a fixed window of the last `window` tokens (a shift register, fixed size) and
    cross-attention over only the top-k most-changed memory tokens (chosen in the change block)."""

    def _band(self, T, device):
        i = torch.arange(T, device=device)
        d = i.unsqueeze(1) - i.unsqueeze(0)  # t - s
        return (d < 0) | (d >= self.cfg.window)

    def _mix_step(self, i, x, position, st):
        a, h = self.self_attn[i], self.ln1[i](x)
        k = torch.cat([st["self_k"][:, :, 1:], a.split(a.k(h))], 2)  # [B,h,W,dh], oldest slot dropped
        v = torch.cat([st["self_v"][:, :, 1:], a.split(a.v(h))], 2)
        W = self.cfg.window
        empty = torch.arange(W, device=x.device) < (W - 1 - position)  # slots not yet written [W]
        return x + a.attend(a.split(a.q(h)), k, v, empty.view(1, 1, 1, W)), {"self_k": k, "self_v": v}

    def state_shapes(self):
        c = self.cfg
        shape = [c.dec_layers, "B", c.dec_heads, c.window, c.d_model // c.dec_heads]
        return {"self_k": shape, "self_v": shape}


class _SSM(nn.Module):
    """A selective state-space mixer (Mamba-2 form: input-dependent step dt, B and C; one scalar decay per head).

    State per sequence: ssm [H,P,S] and the causal conv's last K-1 inputs [E,K-1]; both fixed-size.
    Parallel form (training): y_t = sum_{s<=t} exp(sum_{r=s+1..t} dt_r A) (C_t . B_s) dt_s x_s + D x_t.
    Recurrent form (inference): h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,  y_t = h_t C_t + D x_t.
    """

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        d, E, S = cfg.d_model, cfg.expand * cfg.d_model, cfg.d_state
        self.E, self.S, self.P, self.K = E, S, cfg.head_dim, cfg.conv
        self.H = E // cfg.head_dim
        self.in_proj = nn.Linear(d, 2 * E + 2 * S + self.H)
        self.conv = nn.Conv1d(E, E, cfg.conv, groups=E)
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.linspace(1e-2, 1e-1, self.H))))
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 8.0, self.H)))
        self.D = nn.Parameter(torch.ones(self.H))
        self.out_proj = nn.Linear(E, d)

    def _split(self, h):
        E, S = self.E, self.S
        z, xs, Bm, Cm, dt = h.split([E, E, S, S, self.H], -1)
        return z, xs, Bm, Cm, F.softplus(dt + self.dt_bias)  # dt [..,H] > 0

    def parallel(self, h):  # [B,T,d] -> [B,T,d]
        Bsz, T, _ = h.shape
        z, xs, Bm, Cm, dt = self._split(self.in_proj(h))
        xs = F.silu(self.conv(F.pad(xs.transpose(1, 2), (self.K - 1, 0))).transpose(1, 2))  # causal conv [B,T,E]
        la = dt * -torch.exp(self.A_log)  # log decay [B,T,H] (<= 0)
        cs = la.cumsum(1)  # [B,T,H]
        seg = cs.unsqueeze(2) - cs.unsqueeze(1)  # [B,t,s,H] = sum_{r=s+1..t} la_r
        causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        decay = torch.exp(seg.masked_fill(~causal.view(1, T, T, 1), float("-inf")))  # [B,t,s,H]
        cb = Cm @ Bm.transpose(1, 2)  # [B,t,s]
        xh = xs.view(Bsz, T, self.H, self.P)  # [B,T,H,P]
        w = decay * cb.unsqueeze(3) * dt.unsqueeze(1)  # [B,t,s,H]
        y = torch.einsum("btsh,bshp->bthp", w, xh) + self.D.view(1, 1, -1, 1) * xh
        return self.out_proj(y.reshape(Bsz, T, self.E) * F.silu(z))

    def step(self, h, ssm, conv):  # h [B,1,d], ssm [B,H,P,S], conv [B,E,K-1] -> y [B,1,d], ssm, conv
        z, xs, Bm, Cm, dt = self._split(self.in_proj(h[:, 0]))  # [B,*]
        window = torch.cat([conv, xs.unsqueeze(2)], 2)  # [B,E,K]
        xc = F.silu((window * self.conv.weight[:, 0]).sum(2) + self.conv.bias)  # [B,E]
        xh = xc.view(-1, self.H, self.P)  # [B,H,P]
        a = torch.exp(dt * -torch.exp(self.A_log))  # [B,H]
        ssm = a.view(-1, self.H, 1, 1) * ssm + (dt.unsqueeze(2) * xh).unsqueeze(3) * Bm.view(-1, 1, 1, self.S)
        y = (ssm * Cm.view(-1, 1, 1, self.S)).sum(3) + self.D.view(1, -1, 1) * xh  # [B,H,P]
        return self.out_proj(y.reshape(-1, self.E) * F.silu(z)).unsqueeze(1), ssm, window[:, :, 1:]


class MambaDecoder(_Base):
    """Selective state-space self-mixing (no attention over past tokens) + cross-attention to the memory."""

    uses_position = False  # the recurrence carries order

    def __init__(self, cfg):
        super().__init__(cfg)
        self.ssm = nn.ModuleList(_SSM(cfg) for _ in range(cfg.dec_layers))
        self.ln1 = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(cfg.dec_layers))

    def _mix_parallel(self, i, x):
        return x + self.drop(self.ssm[i].parallel(self.ln1[i](x)))

    def _mix_step(self, i, x, position, st):
        y, ssm, conv = self.ssm[i].step(self.ln1[i](x), st["ssm"], st["conv"])
        return x + y, {"ssm": ssm, "conv": conv}

    def state_shapes(self):
        c, s = self.cfg, self.ssm[0]
        return {"ssm": [c.dec_layers, "B", s.H, s.P, s.S], "conv": [c.dec_layers, "B", s.E, s.K - 1]}


DECODERS: dict[str, type[_Base]] = {"transformer": TransformerDecoder, "mamba": MambaDecoder, "sparse": SparseDecoder}


def state_bytes_per_sequence(cfg: StudentConfig, dec: _Base, length: int | None = None) -> dict:
    """fp32 bytes one sequence carries between steps at `length` tokens: the recurrent state (growing or fixed)
    and the per-pair cross-attention memory (fixed)."""
    length = length or cfg.max_len - 1
    state = sum(math.prod(length if s == 0 else 1 if s == "B" else s for s in shp)
                for shp in dec.state_shapes().values())
    h, dh = cfg.dec_heads, cfg.d_model // cfg.dec_heads
    memory = 2 * cfg.dec_layers * h * cfg.n_memory * dh
    return {"state": 4 * state, "memory": 4 * memory, "total": 4 * (state + memory), "at_tokens": length}


class Student(nn.Module):
    """Trunk (Lite0 prefix frozen, projection trained) + difference-attention change block + decoder.
    Implements checkpoint.CaptionModel."""

    ARCH = "edgecc-student-v1"
    SPLIT = True  # also exported as trunk.onnx -> the fused difference-attention kernel -> fusion.onnx

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = StudentTrunk(cfg)
        self.change = StudentChange(cfg)
        self.decoder = DECODERS[cfg.decoder](cfg)

    def tokens_pair(self, pre, post):  # uint8 [B,S,S,3] x2 -> [B,N,dc] x2
        t = self.trunk(torch.cat([pre, post], 0))
        return t[: pre.shape[0]], t[pre.shape[0]:]

    def fuse(self, ta, tb, att=None) -> Fused:
        return self.change(ta, tb, att)

    # the seam shared with the teacher (export, the torch engine): named memory and state dicts
    def encode_pair(self, pre, post):  # -> gate logit [B], mask logit [B,G,G], {"cross_k", "cross_v"}
        out = self.fuse(*self.tokens_pair(pre, post))
        return out.gate, out.mask, self.decoder.memory(out.memory)

    def initial_state(self, batch: int) -> dict:
        return self.decoder.initial_state(batch)

    def state_axes(self) -> dict:  # state name -> {axis: name} of its dynamic axes
        return {k: {1: "B", **({3: "T"} if 0 in shape else {})} for k, shape in self.decoder.state_shapes().items()}

    def step_dict(self, token, position, mem: dict, state: dict):
        return self.decoder.step(token, position, mem, state)

    def decoder_manifest(self) -> dict:
        """The manifest's "decoder" entry: kind, sizes, state shapes (fixed for Mamba) and bytes per sequence."""
        c = self.cfg
        return {"kind": c.decoder, "layers": c.dec_layers, "heads": c.dec_heads, "head_dim": c.d_model // c.dec_heads,
                "state": self.decoder.state_shapes(),
                "state_bytes_per_sequence": state_bytes_per_sequence(c, self.decoder)}

    def fusion_manifest(self) -> dict:
        """The manifest's "fusion" entry: what the runtime's fused kernel computes between trunk and fusion."""
        c = self.cfg
        return {"op": "diff_attention", "heads": c.attn_heads, "topk": c.attn_topk, "tokens": c.grid**2,
                "dim": c.dc, "split": ["trunk", "diff_attention", "fusion"]}
