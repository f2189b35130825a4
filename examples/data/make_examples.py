"""Render the README's example pair with the project's own data engine, from five LEVIR-CC-style captions.

    python examples/data/make_examples.py        # writes examples/data/{pre,post}.png (+ a GeoTIFF pair with --geo)
"""

import sys
from pathlib import Path

import cv2
from edgecc.train.synth import merge_specs, parse_caption, render_pair

OUT = Path(__file__).resolve().parent
CAPTIONS = [  # what the rendered change should show
    "many houses are built along the road",
    "a row of houses appears beside the road",
    "several houses are constructed along the road",
    "some houses are built on both sides of the road",
    "many houses with a road appear on the bareland",
]


def main(geo: bool = False) -> None:
    spec = merge_specs([parse_caption(c.split()) for c in CAPTIONS], 1)
    pre, post, _ = render_pair("example_0", spec, 256)
    for name, img in (("pre", pre), ("post", post)):
        cv2.imwrite(str(OUT / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if geo:  # the same pair as georeferenced GeoTIFFs (EPSG:32615, 0.5 m/px), for --geojson / --heatmap demos
        import rasterio
        from rasterio.transform import from_origin

        for name, img in (("pre", pre), ("post", post)):
            profile = dict(driver="GTiff", width=256, height=256, count=3, dtype="uint8", compress="deflate",
                           crs="EPSG:32615", transform=from_origin(363000, 4105000, 0.5, 0.5))
            with rasterio.open(OUT / f"{name}.tif", "w", **profile) as d:
                d.write(img.transpose(2, 0, 1))


if __name__ == "__main__":
    main("--geo" in sys.argv)
