"""`edgecc watch` through the API: watch a video (or image folder, camera, stream) for changes against a map.

    python examples/watch.py flight.avi area.tif [BUNDLE]      # same as:
    edgecc watch flight.avi --reference area.tif --events events.jsonl --replay --min-overlap 0.5 --stats

The reference is a map of any size (a GeoTIFF is read by windows; events then carry map and WGS84 polygons).

Try it on a simulated flight: `python tests/data/make_flight.py /tmp/flight` writes /tmp/flight/flight.avi and
/tmp/flight/reference.png.
"""

from __future__ import annotations

import json
import sys

import edgecc
from edgecc.stream import ReferenceMap, RegisterOptions, WatchOptions, format_stats, watch


def main(source: str, reference: str, bundle: str | None = None) -> None:
    captioner = edgecc.load(bundle)
    area = ReferenceMap.open(reference)  # windows, overview, LRU: never the whole map in memory (GeoTIFF)
    print(f"map {area.width} x {area.height} px, CRS {area.crs}")
    # replay=True: process every frame of a file; for a live camera leave it False (latest frame wins, never behind)
    opts = WatchOptions(replay=True, register=RegisterOptions(method="ecc", min_overlap=0.5), reference_cache=True)
    with open("events.jsonl", "a") as f:  # the log is appended to: show only this run's events
        start = f.tell()
    stats = watch(captioner, source, area, "events.jsonl", opts)
    area.close()
    print(format_stats(stats))
    with open("events.jsonl") as f:
        f.seek(start)
        for line in f:
            e = json.loads(line)
            where = e["polygon_wgs84"][0] if e["polygon_wgs84"] else e["bbox"]
            print(f"frame {e['frame']}: {e['caption']} (score {e['change_score']:.2f}, at {where})")


if __name__ == "__main__":
    main(*sys.argv[1:4])
