"""Objects in 3D on the default demo scenes: accuracy against the scenes' exact geometry,
what each step of the estimator buys, and its cost.

    .venv/bin/python bench/bench_objects3d.py [--scenes synthetic:0,tall:0] [--depth exact|sensor|both]
                                             [--ablation] [--cost]

The weight-free backend (``GeometricSegmentor``) predicts each object's mask in every
target camera from the source camera's exact mask; every camera's exact depth map is its
depth topic (``--depth sensor``: a noisy 16UC1 copy, see
``vggts_ros.geometry.accuracy.sensor_like_depth``); poses are the scenes' true ones.
Prints the table per scene/object and the summary against the acceptance thresholds
(centroid median <= 1 %, p95 <= 3 % of the distance; fused box size within 20 %, centre
within 5 % of the distance). ``--ablation`` reruns the estimator with steps switched off
on the same masks; ``--cost`` times the estimator (CPU time, medians) on 640x480 views.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from vggts_ros.demo import DEFAULT_SCENES
from vggts_ros.geometric import GeometricSegmentor
from vggts_ros.geometry.accuracy import THRESHOLDS, passes, predicted_masks, score_scene, summarize, table
from vggts_ros.geometry.depth import Intrinsics
from vggts_ros.geometry.objects3d import Object3DConfig, estimate_object, objects_in_3d
from vggts_ros.scenes import load_scene, synthetic_scene

# Steps switched off one after another (each row keeps the ones above it off).
ABLATION = [
    ("all steps (default)", {}),
    ("erosion 1 px on", {"erode_px": 1}),
    ("erosion 2 px on", {"erode_px": 2}),
    ("box not upright on the support plane (axes from normals, no contact)", {"upright_on_support": False}),
    ("no multi-view consistency", {"consistency": False}),
    ("no completion on the support plane", {"consistency": False, "complete": False}),
    ("no completion, no edge filter", {"consistency": False, "complete": False, "edge_jump": 0.0}),
    ("no completion, no edge filter, no MAD outliers", {"consistency": False, "complete": False, "edge_jump": 0.0,
                                                        "outlier_k": float("inf")}),
]


def fmt(summary) -> str:
    ok = passes(summary)
    mark = lambda k: "ok" if ok[k] else "FAIL"  # noqa: E731
    return (f"centroid median {100 * summary['centroid_median']:.2f} % ({mark('centroid_median')}), "
            f"p95 {100 * summary['centroid_p95']:.2f} % ({mark('centroid_p95')}), "
            f"max {100 * summary['centroid_max']:.2f} % over {summary['pairs']} pairs; "
            f"fused box size worst {100 * summary['box_size']:.1f} % ({mark('box_size')}, "
            f"median {100 * summary['box_size_median']:.1f} %), centre worst {100 * summary['box_centre']:.2f} % "
            f"({mark('box_centre')}) over {summary['boxes']} boxes")


def cpu_ms(f, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        f()
        times.append(time.process_time() - t)
    return 1e3 * float(np.median(times))


def cost(seg: GeometricSegmentor) -> None:
    scene = synthetic_scene(0, ego_size=(640, 480), exo_size=(640, 480))
    print("\n## Cost (CPU time, median of 7, 640x480 views of synthetic:0, exact depth)\n")
    print("| camera | object | mask px | estimate_object ms | without completion ms |")
    print("|---|---|---|---|---|")
    per = []
    for name, cam in scene.cameras.items():
        intr = Intrinsics.from_K(cam.K, cam.size)
        depth = scene.depth(name).astype(np.float32)
        for oid in scene.object_ids:
            m = scene.mask(name, oid)
            a = cpu_ms(lambda: estimate_object(m, depth, intr))
            b = cpu_ms(lambda: estimate_object(m, depth, intr, config=Object3DConfig(complete=False)))
            per.append(a)
            print(f"| {name} | {oid} | {int(m.sum())} | {a:.1f} | {b:.1f} |")
    full = np.zeros((480, 640), bool)
    full[:, :] = True
    intr = Intrinsics.from_K(scene.cameras["ego"].K, (640, 480))
    depth = scene.depth("ego").astype(np.float32)
    print(f"| ego | whole frame | {full.size} | {cpu_ms(lambda: estimate_object(full, depth, intr)):.1f} | "
          f"{cpu_ms(lambda: estimate_object(full, depth, intr, config=Object3DConfig(complete=False))):.1f} |")
    masks = predicted_masks(scene, seg)
    from vggts_ros.geometry.accuracy import scene_geometry

    cams = scene_geometry(scene, masks)
    whole = cpu_ms(lambda: objects_in_3d(cams), repeat=3)
    t = time.process_time()
    predicted_masks(scene, seg)
    seg_ms = 1e3 * (time.process_time() - t)
    print(f"\nobjects_in_3d for the whole set (3 cameras x 3 objects, fusion with consistency): {whole:.0f} ms; "
          f"the geometric backend's masks for the same set: {seg_ms:.0f} ms (3D = {100 * whole / seg_ms:.0f} % of it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", default=DEFAULT_SCENES)
    ap.add_argument("--depth", default="exact", choices=("exact", "sensor", "both"))
    ap.add_argument("--ablation", action="store_true", help="rerun with steps switched off")
    ap.add_argument("--cost", action="store_true", help="time the estimator")
    args = ap.parse_args()

    seg = GeometricSegmentor()
    scenes = [load_scene(s) for s in args.scenes.split(",") if s.strip()]
    t0 = time.perf_counter()
    masks = {sc.name: predicted_masks(sc, seg) for sc in scenes}
    print(f"masks from the geometric backend: {time.perf_counter() - t0:.1f} s for {len(scenes)} scenes")
    print(f"thresholds: {THRESHOLDS}")
    modes = ("exact", "sensor") if args.depth == "both" else (args.depth,)
    for mode in modes:
        results = [score_scene(sc, masks[sc.name], depth=mode) for sc in scenes]
        print(f"\n## Depth: {mode}\n")
        print(table(results))
        print("\n" + fmt(summarize(results)))
        if args.ablation:
            print(f"\n### What each step buys (depth: {mode}, same masks)\n")
            print("| configuration | centroid median | p95 | max | box size worst | box centre worst |")
            print("|---|---|---|---|---|---|")
            for label, overrides in ABLATION:
                cfg = dataclasses.replace(Object3DConfig(), **overrides)
                s = summarize([score_scene(sc, masks[sc.name], depth=mode, config=cfg) for sc in scenes])
                cells = [f"{100 * s[k]:.2f} %" for k in ("centroid_median", "centroid_p95", "centroid_max")]
                cells += [f"{100 * s['box_size']:.1f} %", f"{100 * s['box_centre']:.2f} %"]
                print(f"| {label} | " + " | ".join(cells) + " |")
    if args.cost:
        cost(seg)


if __name__ == "__main__":
    main()
