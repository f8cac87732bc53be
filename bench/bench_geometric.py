"""Accuracy and timing of the geometric backend on the bundled scenes.

    .venv/bin/python bench/bench_geometric.py [--seeds 0 1 2] [--no-grabcut]

Prints one row per (scene, object, target) and the Ego-Exo4D summary per direction.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vggts_ros.geometric import GeometricSegmentor
from vggts_ros.metrics import CorrespondenceMetrics
from vggts_ros.scenes import motorcycle_scene, synthetic_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--no-grabcut", action="store_true")
    ap.add_argument("--no-motorcycle", action="store_true")
    args = ap.parse_args()

    seg = GeometricSegmentor(grabcut=not args.no_grabcut)
    scenes = [synthetic_scene(s) for s in args.seeds]
    if not args.no_motorcycle:
        scenes.append(motorcycle_scene())
    acc = CorrespondenceMetrics()
    stage_times: dict = {}
    print("| scene | object | target | IoU | location err. | contour acc. | visible pts | s / call |")
    print("|---|---|---|---|---|---|---|---|")
    for scene in scenes:
        src_role = scene.role(scene.source)
        for oid in scene.object_ids:
            t0 = time.perf_counter()
            results = seg.segment(scene.image(scene.source), scene.mask(scene.source, oid), scene.target_views())
            dt = time.perf_counter() - t0
            for name, res in zip(scene.targets, results):
                direction = f"{src_role}->{scene.role(name)}"
                rec = acc.add(scene.mask(name, oid), res.mask, direction, key=f"{scene.name}/{oid}/{name}")
                for k, v in res.timings.items():
                    stage_times.setdefault(k, []).append(v)
                print(
                    f"| {scene.name} | {oid} | {name} | {100 * rec['iou']:.1f} | {rec['location_error']:.4f} | "
                    f"{100 * rec['contour_accuracy']:.1f} | {int(res.visibility.sum())}/{len(res.visibility)} | {dt:.2f} |"
                )
    print()
    print(acc.table())
    print()
    print("mean seconds per target:", {k: round(float(np.mean(v)), 3) for k, v in stage_times.items()})


if __name__ == "__main__":
    main()
