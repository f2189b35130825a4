"""The change gate taught by real imagery: a calibrated probability computed from the difference of the dates' tokens.

The gate sees only the per-token distance d = 1 - cos(ta, tb) between the two dates' trunk tokens (the frozen
ImageNet trunk + shared projection + LayerNorm), through four order statistics of that map (mean, 90th percentile,
max, mean of the top 4) and non-negative weights. So, by construction:
- (x, x) gives d = 0 and the lowest score the gate can give: sigmoid(bias / T), checked < 0.1 at export;
- (a, b) and (b, a) give the same d, hence the same score;
- a larger difference never lowers the score (monotone).
What it learns from real labelled tiles (`train/real.py`) is how much of which statistic counts, and its temperature T
is fitted on validation scenes, never on the source being tested. The 8x8 mask is a per-cell logistic of d.

Example:
    >>> feats = extract(bundle_sessions, pairs)                       # tokens of each pair -> stats [N,4], d [N,64]
    >>> head = fit_gate(train_set, val_set)                           # GateHead, calibrated on val_set
    >>> head(ta, tb)                                                  # gate_prob [B], mask [B,8,8]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STATS = ("mean", "p90", "max", "top4")


def token_distance(ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
    """[B,N,d] x2 -> [B,N] cosine distance, 0 for identical tokens, symmetric in (ta, tb)."""
    ua = ta / ta.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ub = tb / tb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return (1 - (ua * ub).sum(-1)).clamp_min(0)


def distance_stats(d: torch.Tensor) -> torch.Tensor:
    """[B,N] -> [B,4]: mean, 90th percentile (the ceil(N/10)-th largest), max, mean of the 4 largest."""
    n = d.shape[1]
    top = d.topk(max(4, math.ceil(n / 10)), dim=1).values  # [B,k] descending
    return torch.stack([d.mean(1), top[:, -1], top[:, 0], top[:, :4].mean(1)], 1)


class GateHead(nn.Module):
    """ta, tb [B,N,dc] -> gate_prob [B] (calibrated), mask [B,G,G] (per-cell change probability, <= gate_prob)."""

    def __init__(self, grid: int = 8):
        super().__init__()
        self.grid = grid
        self.log_w = nn.Parameter(torch.zeros(len(STATS)))  # weights exp(log_w) >= 0: monotone in the distance
        self.bias = nn.Parameter(torch.tensor(-4.0))
        self.register_buffer("scale", torch.ones(len(STATS)))  # per-statistic scale (train-set spread)
        self.register_buffer("temperature", torch.tensor(1.0))
        self.mask_log_a = nn.Parameter(torch.tensor(2.0))
        self.mask_c = nn.Parameter(torch.tensor(-3.0))

    def logit(self, stats: torch.Tensor) -> torch.Tensor:  # [B,4] -> [B] uncalibrated
        return (stats / self.scale * self.log_w.exp()).sum(1) + self.bias

    def mask_logit(self, d: torch.Tensor) -> torch.Tensor:  # [B,N] -> [B,N]
        return self.mask_log_a.exp() * d + self.mask_c

    def forward(self, ta, tb):
        d = token_distance(ta, tb)  # [B,N]
        gate = torch.sigmoid(self.logit(distance_stats(d)) / self.temperature)
        # a cell cannot be likelier changed than its tile: unchanged tiles keep a quiet heatmap
        mask = torch.minimum(torch.sigmoid(self.mask_logit(d)), gate[:, None]).reshape(-1, self.grid, self.grid)
        return gate, mask

    def identity_score(self) -> float:
        """The score of a pair with no difference at all, (x, x): the floor of the gate."""
        return float(torch.sigmoid(self.bias.detach() / self.temperature))


@dataclass
class GateSet:
    """Precomputed features of labelled pairs: stats [N,4], d [N,G*G], label [N], weight [N], cells [N,G*G] or NaN."""

    stats: np.ndarray
    d: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    cells: np.ndarray

    def __len__(self):
        return len(self.label)

    def subset(self, idx) -> GateSet:
        return GateSet(self.stats[idx], self.d[idx], self.label[idx], self.weight[idx], self.cells[idx])

    @staticmethod
    def concat(sets: list[GateSet]) -> GateSet:
        return GateSet(*(np.concatenate([getattr(s, f) for s in sets]) for f in ("stats", "d", "label", "weight",
                                                                               "cells")))


def features(ta: np.ndarray, tb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trunk tokens [B,N,dc] x2 -> (stats [B,4], d [B,N]) with the exact ops of the exported head."""
    with torch.no_grad():
        d = token_distance(torch.from_numpy(ta).float(), torch.from_numpy(tb).float())
        return distance_stats(d).numpy(), d.numpy()


def fit_gate(train: GateSet, val: GateSet | None = None, steps: int = 400, l2: float = 1e-3, seed: int = 0) -> GateHead:
    """Fit the gate weights on `train` (weighted, class-balanced BCE), the mask on its cell labels, then the temperature
    on `val` (NLL of the real tiles there; 1 when no val set)."""
    torch.manual_seed(seed)
    head = GateHead(grid=int(round(math.sqrt(train.d.shape[1]))))
    s = torch.from_numpy(train.stats).float()
    head.scale.copy_(s.std(0).clamp_min(1e-6))
    y = torch.from_numpy(train.label).float()
    w = torch.from_numpy(train.weight).float()
    for cls in (0, 1):  # balance the classes by total weight
        m = y == cls
        w[m] = w[m] / w[m].sum() * 0.5
    params = [head.log_w, head.bias]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(head.logit(s), y, reduction="none") * w).sum()
        loss = loss + l2 * (head.log_w.exp() ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # the mask: one logistic per cell on d, fitted where cell labels exist (cells >= 0)
    known = ~np.isnan(train.cells)
    if known.any():
        dc = torch.from_numpy(train.d[known]).float()
        yc = torch.from_numpy(train.cells[known]).float()
        wpos = float((1 - yc).sum() / yc.sum().clamp_min(1))
        mopt = torch.optim.LBFGS([head.mask_log_a, head.mask_c], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

        def mclosure():
            mopt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(head.mask_logit(dc), yc, pos_weight=torch.tensor(wpos))
            loss.backward()
            return loss

        mopt.step(mclosure)
    if val is not None and len(val):
        calibrate(head, val)
    return head.eval()


def calibrate(head: GateHead, val: GateSet) -> float:
    """Temperature scaling on `val` (weighted NLL), searched on a log grid: robust on a few dozen tiles."""
    with torch.no_grad():
        z = head.logit(torch.from_numpy(val.stats).float()).numpy().astype(np.float64)
    y, w = val.label.astype(np.float64), val.weight.astype(np.float64)
    best_t, best = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.1), np.log(20), 200)):
        p = np.clip(1 / (1 + np.exp(-z / t)), 1e-7, 1 - 1e-7)
        nll = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
        if nll < best:
            best_t, best = float(t), nll
    head.temperature.fill_(best_t)
    return best_t


def predict(head: GateHead, data: GateSet) -> tuple[np.ndarray, np.ndarray]:
    """-> gate probability [N], mask probability [N,G*G], from precomputed features (the exported head's math)."""
    with torch.no_grad():
        p = torch.sigmoid(head.logit(torch.from_numpy(data.stats).float()) / head.temperature)
        m = torch.minimum(torch.sigmoid(head.mask_logit(torch.from_numpy(data.d).float())), p[:, None])
    return p.numpy(), m.numpy()


def threshold_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float = 0.9) -> float:
    """The highest threshold whose recall on `labels` is at least `recall`."""
    pos = np.sort(scores[labels == 1])
    if not len(pos):
        return 0.5
    return float(pos[int(math.floor((1 - recall) * len(pos) + 1e-9))])


def describe(head: GateHead) -> dict:
    """The fitted head's parameters, for the manifest."""
    w = (head.log_w.exp() / head.scale).detach()
    return {"stats": list(STATS), "weights": [round(float(x), 5) for x in w],
            "bias": round(float(head.bias.detach()), 5), "temperature": round(float(head.temperature), 5),
            "mask": {"a": round(float(head.mask_log_a.detach().exp()), 5), "c": round(float(head.mask_c.detach()), 5)},
            "identity_score": round(head.identity_score(), 6)}
