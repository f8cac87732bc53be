"""Soak run: the node process on 3 cameras at 5 Hz with objects set, its memory sampled.

    python bench/soak.py                     # 30 minutes (the acceptance run)
    python bench/soak.py --minutes 5         # shortened
    python bench/soak.py --backend vggts     # test-tiny learned model instead of geometric

Prints one line per sample (resident memory of the node process, outputs so far) and a
summary: RSS after warm-up, at the end, its largest value and the slope of a least-squares
line through the post-warm-up samples (MB per minute; flat means ~0). The summary is
also written as JSON (--out). Runs over real DDS on ROS_DOMAIN_ID (set one of your own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5.0, help="camera rate (Hz)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from the slope")
    parser.add_argument("--every", type=float, default=10.0, help="sampling period (s)")
    parser.add_argument("--backend", default="geometric", choices=("geometric", "vggts"))
    parser.add_argument("--out", default="out/soak.json")
    args = parser.parse_args()

    import rclpy

    from vggts_ros.config import CameraConfig, InferenceConfig, ModelConfig, NodeConfig, PublishConfig, SyncConfig
    from vggts_ros.ros import transport
    from vggts_ros.ros.player import CameraPlayer, NodeProcess, OutputCollector, PlayedCamera, Spinner, wait_until
    from vggts_ros.scenes import synthetic_scene

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    transport.configure()
    scene = synthetic_scene(seed=0)
    name = f"vggts_soak_{os.getpid()}"
    cfg = NodeConfig(
        cameras=[CameraConfig(c, f"/{name}/{c}/image_raw", scene.role(c)) for c in scene.views],
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=2.0),
        model=ModelConfig(backend=args.backend, config="test-tiny", device="cpu"),
        inference=InferenceConfig(source_mode="keyframe"),
        publish=PublishConfig(overlay=True, diagnostics_period=1.0),
    )
    rclpy.init()
    node = NodeProcess(cfg, node_name=name).start()
    player = CameraPlayer([PlayedCamera(c.name, c.topic, scene.image(c.name)) for c in cfg.cameras],
                          rate_hz=args.rate, name=f"{name}_cameras")
    collector = OutputCollector(name, list(scene.views), name=f"{name}_client")
    spinner = Spinner(player, collector)
    samples = []
    try:
        if not wait_until(lambda: collector._set.service_is_ready() or not node.alive(), 120) or not node.alive():
            raise RuntimeError(node.log()[-3000:])
        if not collector.wait_for_frames(list(scene.views), 60):
            raise RuntimeError("no frames: " + node.log()[-3000:])
        for oid in scene.object_ids:
            resp = collector.set_source_mask(scene.source, scene.mask(scene.source, oid), object_id=oid)
            if not resp.success:
                raise RuntimeError(resp.message)
        t0 = time.monotonic()
        end = t0 + 60.0 * args.minutes
        while time.monotonic() < end and node.alive():
            with collector._lock:  # keep the collector itself from growing
                for table in (collector.masks, collector.points, collector.overlays):
                    for items in table.values():
                        del items[:-1]
                del collector.diagnostics[:-5]
            t = time.monotonic() - t0
            status = collector.pipeline_status() or {}
            sample = dict(t=t, rss_mb=rss_mb(node.proc.pid), sets_processed=int(status.get("sets_processed", 0)),
                          rate_hz=float(status.get("rate_hz", 0.0)), level=collector.pipeline_level())
            samples.append(sample)
            print(f"{t:7.0f} s  rss {sample['rss_mb']:7.1f} MB  sets {sample['sets_processed']:6d}  "
                  f"rate {sample['rate_hz']:5.2f} Hz  level {sample['level']}", flush=True)
            time.sleep(args.every)
        if not node.alive():
            raise RuntimeError("the node died: " + node.log()[-3000:])
    finally:
        spinner.close()
        code = node.stop()
        player.destroy_node()
        collector.destroy_node()
        rclpy.shutdown()
    after = [s for s in samples if s["t"] >= args.warmup]
    slope = float(np.polyfit([s["t"] / 60 for s in after], [s["rss_mb"] for s in after], 1)[0]) if len(after) >= 3 else None
    summary = dict(
        minutes=args.minutes, rate_hz=args.rate, cameras=len(scene.views), objects=len(scene.object_ids),
        backend=args.backend, exit_code=code,
        rss_after_warmup_mb=after[0]["rss_mb"] if after else None, rss_end_mb=samples[-1]["rss_mb"],
        rss_max_mb=max(s["rss_mb"] for s in samples), rss_slope_mb_per_min=slope,
        sets_processed=samples[-1]["sets_processed"], samples=samples,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=2))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
