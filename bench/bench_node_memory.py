"""Resident memory of the node process on the weight-free backend: idle (cameras streaming,
no object) and with objects, plus what importing each layer costs.

    python bench/bench_node_memory.py [--seconds 15] [--objects 1] [--repo PATH]

The node runs as its own process (``python -m vggts_ros.ros.node``) on the bundled scene's
three cameras at 5 Hz; RSS is read from ``/proc/<pid>/status`` (VmRSS, and VmHWM, the peak).
``--repo`` runs the node of another checkout (e.g. an older commit in a git worktree) with the
same player and client, to compare side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def import_costs(repo: Path) -> str:
    """RSS after each import layer, in a fresh interpreter of ``repo``."""
    code = (
        "import sys\n"
        "def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024\n"
        "rows = [('interpreter', rss())]\n"
        "import numpy, cv2; rows.append(('numpy + OpenCV', rss()))\n"
        "import rclpy; rows.append(('rclpy', rss()))\n"
        "import vggts_ros.ros.node; rows.append(('vggts_ros.ros.node', rss()))\n"
        "from vggts_ros.geometric import GeometricSegmentor; GeometricSegmentor()\n"
        "rows.append(('geometric backend', rss()))\n"
        "import sklearn.cluster; rows.append(('scikit-learn (K-means, first mask)', rss()))\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
        "for name, mb in rows: print(f'  {name:<38} {mb:7.1f} MB')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(repo))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=str(repo)).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="seconds in each phase")
    ap.add_argument("--objects", type=int, default=1, help="objects set in the second phase (scene ids 1..)")
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose node runs (default: this one)")
    args = ap.parse_args()
    repo = Path(args.repo).resolve()

    import rclpy

    from vggts_ros.config import CameraConfig, ModelConfig, NodeConfig, PublishConfig, SyncConfig
    from vggts_ros.ros import transport
    from vggts_ros.ros.player import CameraPlayer, NodeProcess, OutputCollector, PlayedCamera, Spinner, wait_until
    from vggts_ros.scenes import synthetic_scene

    print(f"import costs ({repo}):\n{import_costs(repo)}")
    scene = synthetic_scene(0)
    name = f"vggts_memory_{os.getpid()}"
    cfg = NodeConfig(cameras=[CameraConfig(c, f"/{name}_cams/{c}/image_raw", scene.role(c)) for c in scene.views],
                     sync=SyncConfig(slop=0.02, queue_size=5, stale_after=2.0),
                     model=ModelConfig(backend="geometric", device="cpu"),
                     publish=PublishConfig(overlay=False, diagnostics_period=1.0))
    transport.configure()
    rclpy.init()
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    node = NodeProcess(cfg, node_name=name, env=env).start()
    player = CameraPlayer([PlayedCamera(c.name, c.topic, scene.image(c.name)) for c in cfg.cameras], rate_hz=5.0,
                          name=f"{name}_player")
    collector = OutputCollector(name, list(scene.views), name=f"{name}_collector")
    spinner = Spinner(player, collector)
    try:
        if not wait_until(lambda: collector._set.service_is_ready() or not node.alive(), 120) or not node.alive():
            print(node.log()[-3000:])
            return 1
        collector.wait_for_frames(list(scene.views), 30)
        time.sleep(args.seconds)
        idle = status(node.proc.pid)
        for oid in range(1, args.objects + 1):
            resp = collector.set_source_mask("ego", scene.mask("ego", oid), object_id=oid)
            assert resp.success, resp.message
        wait_until(lambda: collector.count("masks", "exo1") >= 1, 120)
        time.sleep(args.seconds)
        busy = status(node.proc.pid)
        outputs = collector.count("masks", "exo1")
    finally:
        spinner.close()
        node.stop()
        player.destroy_node()
        collector.destroy_node()
        rclpy.shutdown()
    print(f"node RSS idle (3 cameras at 5 Hz, no object): {idle['VmRSS']:.0f} MB")
    print(f"node RSS with {args.objects} object(s) ({outputs} masks on exo1): {busy['VmRSS']:.0f} MB "
          f"(peak {busy['VmHWM']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
