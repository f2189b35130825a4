"""edgecc: two images of the same place in, one sentence of what changed out. Torch-free runtime.

Example:
    >>> import edgecc
    >>> cap = edgecc.load().caption("pre.tif", "post.tif")     # the bundled default model, ONNX Runtime on CPU
    >>> cap.text, cap.changed, cap.change_score
"""

from __future__ import annotations

from .captioner import Captioner, load
from .decoding import Caption, DecodingOptions
from .errors import BundleError, EdgeccError, ImageryError

__version__ = "0.1.0"
__all__ = ["Caption", "Captioner", "DecodingOptions", "BundleError", "EdgeccError", "ImageryError", "load"]
