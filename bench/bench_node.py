"""What the ROS node adds over the bare pipeline, per synchronised set of 3 cameras.

A real ``vggts_node`` process runs on a bundled three-camera scene; a player publishes the
views at a fixed rate and a collector receives the masks. For every processed set:

* external latency: publication of the set's images -> arrival of its mask, measured
  outside the node (includes DDS both ways, decoding, queueing, inference, publishing);
* node latency: last image of the set received -> outputs published, measured inside;
* pipeline: time inside the backend for that set (from the node's diagnostics);
* queued: time the set waited for the inference thread (the previous set still running);
* overhead = latency - queued - pipeline: what the node itself adds (sync, decode,
  composing masks and points, publishing).

    python bench/bench_node.py [--backend geometric|vggts] [--sets 12] [--rate 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rclpy  # noqa: E402

from vggts_ros.config import CameraConfig, InferenceConfig, ModelConfig, NodeConfig, PublishConfig, SyncConfig  # noqa: E402
from vggts_ros.ros.player import CameraPlayer, NodeProcess, OutputCollector, PlayedCamera, Spinner, wait_until  # noqa: E402
from vggts_ros.scenes import synthetic_scene  # noqa: E402


def run(backend: str, config: str, n_sets: int, rate: float) -> dict:
    scene = synthetic_scene(seed=0)
    cams = [CameraConfig(c, f"/bench/{c}/image_raw", scene.role(c)) for c in scene.views]
    cfg = NodeConfig(cameras=cams, sync=SyncConfig(slop=0.02, queue_size=5, stale_after=5.0),
                     model=ModelConfig(backend=backend, config=config, device="cpu"),
                     inference=InferenceConfig(refine_iterations=1),
                     publish=PublishConfig(overlay=False, diagnostics_period=0.05))
    node = NodeProcess(cfg, node_name="vggts_bench").start()
    player = CameraPlayer([PlayedCamera(c.name, c.topic, scene.image(c.name)) for c in cams], rate_hz=rate)
    collector = OutputCollector("vggts_bench", list(scene.views))
    spinner = Spinner(player, collector)
    try:
        assert wait_until(lambda: collector._set.service_is_ready(), 120), node.log()
        assert collector.wait_for_frames(list(scene.views), 30), node.log()
        assert collector.set_source_mask("ego", scene.mask("ego", 1), object_id=1).success
        assert wait_until(lambda: collector.count("masks", "exo2") >= n_sets + 1, 60 + 30 * n_sets), node.log()[-2000:]
        time.sleep(0.3)
        with collector._lock:
            masks = list(collector.masks["exo2"])[1:]  # the first set includes warm-up
            diags = list(collector.diagnostics)
        per_stamp = {}
        for array in diags:
            for status in array.status:
                if status.name.endswith(": pipeline"):
                    kv = {k.key: k.value for k in status.values}
                    if "last_set_stamp" in kv:
                        per_stamp[round(float(kv["last_set_stamp"]), 6)] = kv
        rows = []
        for received in masks:
            key = round(received.stamp, 6)
            published = player.publish_times.get(key)
            kv = per_stamp.get(key)
            if published is None or kv is None:
                continue
            rows.append(dict(external=received.arrival - published, latency=float(kv["latency_ms"]) / 1000,
                             pipeline=float(kv["pipeline_ms"]) / 1000, queued=float(kv["queued_ms"]) / 1000,
                             overhead=float(kv["node_overhead_ms"]) / 1000))
        return dict(backend=f"{backend}/{config}" if backend == "vggts" else backend, rows=rows)
    finally:
        spinner.close()
        node.stop()
        player.destroy_node()
        collector.destroy_node()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=("geometric", "vggts"))
    parser.add_argument("--config", default="test-tiny")
    parser.add_argument("--sets", type=int, default=12)
    parser.add_argument("--rate", type=float, default=2.0)
    args = parser.parse_args()
    rclpy.init()
    try:
        results = [run(b, args.config, args.sets, args.rate) for b in (args.backend or ["geometric", "vggts"])]
    finally:
        rclpy.shutdown()
    print(f"3 cameras (ego 480x480, exo 640x360 x2), 1 object, {args.rate} Hz, medians over sets (ms)")
    print(f"{'backend':<18} {'sets':>4} {'external':>9} {'node lat':>9} {'queued':>9} {'pipeline':>9} "
          f"{'overhead':>9} {'ext-q-pipe':>10} {'overhead/pipeline':>18}")
    for res in results:
        rows = res["rows"]
        if not rows:
            print(f"{res['backend']:<18} no matched sets")
            continue
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        ext_minus = statistics.median(r["external"] - r["queued"] - r["pipeline"] for r in rows)
        print(f"{res['backend']:<18} {len(rows):>4} {1000 * med['external']:>9.1f} {1000 * med['latency']:>9.1f} "
              f"{1000 * med['queued']:>9.1f} {1000 * med['pipeline']:>9.1f} {1000 * med['overhead']:>9.1f} "
              f"{1000 * ext_minus:>10.1f} {med['overhead'] / med['pipeline']:>18.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
