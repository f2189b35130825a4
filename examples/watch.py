"""`edgecc watch` through the API: watch a video (or image folder, camera, stream) for changes against a reference.

    python examples/watch.py flight.avi reference.png [BUNDLE]      # same as:
    edgecc watch flight.avi --reference reference.png --events events.jsonl --replay --stats

Try it on a simulated flight: `python tests/data/make_flight.py /tmp/flight` writes /tmp/flight/flight.avi and
/tmp/flight/reference.png.
"""

from __future__ import annotations

import json
import sys

import edgecc
from edgecc.stream import WatchOptions, format_stats, watch


def main(source: str, reference: str, bundle: str | None = None) -> None:
    captioner = edgecc.load(bundle)
    # replay=True: process every frame of a file; for a live camera leave it False (latest frame wins, never behind)
    stats = watch(captioner, source, reference, "events.jsonl", WatchOptions(replay=True, every=1))
    print(format_stats(stats))
    with open("events.jsonl") as f:
        for line in f:
            e = json.loads(line)
            print(f"frame {e['frame']}: {e['caption']} (score {e['change_score']:.2f}, bbox {e['bbox']})")


if __name__ == "__main__":
    main(*sys.argv[1:4])
