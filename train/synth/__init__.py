"""LEVIR-CC-synth: caption parser and caption-conditioned scene renderer.

Example:
    >>> from edgecc.train.synth import parse_caption, merge_specs, render_pair
    >>> spec = merge_specs([parse_caption(c.split()) for c in ["many houses are built along the road"] * 2], 1)
    >>> pre, post, mask = render_pair("train_000016", spec)  # uint8 [256,256,3], [256,256,3], [256,256]
"""

from .parser import CLASSES, ChangeItem, ChangeSpec, merge_specs, parse_caption
from .render import render_pair

__all__ = ["CLASSES", "ChangeItem", "ChangeSpec", "merge_specs", "parse_caption", "render_pair"]
