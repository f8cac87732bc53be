"""Timing of ``vggts replay`` (geometric backend) on a bag made from a bundled scene.

    .venv/bin/python bench/bench_replay.py [--scene synthetic:0] [--frames 20] [--compressed]

Every frame gets its own noise (no feature-cache hits across frames, as with a real
camera). Prints the bag size, wall time, time per synchronised set and the mean IoU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vggts_ros import bags
from vggts_ros.geometric import GeometricSegmentor
from vggts_ros.replay import ReplayOptions, SourceMask, replay
from vggts_ros.scenes import load_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scene", default="synthetic:0")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--compressed", action="store_true")
    args = ap.parse_args()

    scene = load_scene(args.scene)
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "in.mcap"
        t0 = time.monotonic()
        bags.write_scene_bag(scene, bag, frames=args.frames, compressed=args.compressed, noise=2.0)
        t_write = time.monotonic() - t0
        options = ReplayOptions(
            source_masks=[SourceMask(scene.source, scene.mask(scene.source, oid), None, oid, f"object {oid}")
                          for oid in scene.object_ids],
            gt_topics={n: f"/scene/{n}/gt" for n in scene.targets},
            roles={n: scene.role(n) for n in scene.views}, progress=False,
        )
        seg = GeometricSegmentor()
        out = Path(tmp) / "out.mcap"
        result = replay(bag, out, seg, options)
        sets = len(result.sets)
        print(f"scene {scene.name}: {len(scene.views)} cameras x {args.frames} frames "
              f"({'PNG compressed' if args.compressed else 'raw rgb8'}), {len(scene.object_ids)} objects")
        print(f"bag {bag.stat().st_size / 1e6:.1f} MB written in {t_write:.1f} s; output {out.stat().st_size / 1e6:.1f} MB")
        print(f"replay {result.seconds:.1f} s: {sets} sets, {result.seconds / max(1, sets):.2f} s per set, "
              f"{result.messages_read / result.seconds:.1f} camera messages/s")
        print(f"mean IoU {np.mean([r.iou for r in result.scores]):.3f} over {len(result.scores)} object/frame pairs")


if __name__ == "__main__":
    main()
