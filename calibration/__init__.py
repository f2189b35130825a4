"""Calibration and quantization (factory): calibration sets, static INT8 (QDQ) and FP16 bundle variants.

Example:
    >>> from edgecc.calibration.quantize import QuantizeOptions, quantize_bundle
    >>> manifest = quantize_bundle("/tmp/bundle_copy", QuantizeOptions(method="minmax", max_drop=0.01))
    >>> manifest["variants"]["int8"]["metrics"]["drop"]          # changed-subset CIDEr-D, LEVIR-CC-synth val

Modules: `sets` (set files, decoding, refusing random data), `ranges` (activation ranges), `sensitivity`
(which nodes to keep in float), `quantize` (variants, accuracy control, the bundle write).
"""
