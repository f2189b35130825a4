"""`edgecc caption` through the API: one pair, then a large georeferenced scene with GeoJSON and heatmap outputs.

    python examples/caption.py examples/data/pre.png examples/data/post.png
    python examples/caption.py pre.tif post.tif --geojson changes.geojson --heatmap heat.tif
"""

import argparse

import edgecc
from edgecc.decoding import DecodingOptions

ap = argparse.ArgumentParser()
ap.add_argument("pre")
ap.add_argument("post")
ap.add_argument("--geojson")
ap.add_argument("--heatmap")
a = ap.parse_args()

captioner = edgecc.load(options=DecodingOptions(beam_size=1))  # the bundled default model on ONNX Runtime CPU
scene = captioner.caption(a.pre, a.post, geojson=a.geojson, heatmap=a.heatmap)
print(scene.caption)
print(f"changed={scene.changed} score={scene.change_score:.3f} tiles={len(scene.tiles)}")
if len(scene.tiles) > 1:
    print(scene.summary)
