"""How many best-effort camera images reach a subscriber, with Fast DDS's default
transports and with the buffers vggts_ros.ros.transport sets.

    ROS_DOMAIN_ID=77 python bench/dds_delivery.py [--seconds 12]

Three cameras (480x480, 640x360, 640x360 RGB, as in the demo) at 5 Hz, sensor-data QoS;
publisher and subscriber are separate processes. Prints messages received per camera
against ticks published, for each setting of the publisher's transport.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SHAPES = [(480, 480), (360, 640), (360, 640)]


def child(role: str, seconds: float) -> None:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from vggts_ros.ros.conversions import fill_image

    rclpy.init()
    node = Node(f"dds_delivery_{role}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    got = [0] * len(SHAPES)
    ticks = [0]
    if role == "pub":
        pubs = [node.create_publisher(Image, f"/dds_delivery/cam{i}", qos_profile_sensor_data) for i in range(3)]
        msgs = []
        rng = np.random.default_rng(0)
        for h, w in SHAPES:
            msg = Image()
            fill_image(msg, rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "rgb8")
            msgs.append(msg)
        time.sleep(2.0)  # discovery

        def tick():
            for pub, msg in zip(pubs, msgs):
                pub.publish(msg)
            ticks[0] += 1

        node.create_timer(0.2, tick)
    else:
        for i in range(3):
            node.create_subscription(Image, f"/dds_delivery/cam{i}", lambda m, i=i: got.__setitem__(i, got[i] + 1),
                                     qos_profile_sensor_data)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    print(ticks[0] if role == "pub" else " ".join(map(str, got)), flush=True)
    rclpy.shutdown()


def run(seconds: float, pub_env: dict) -> str:
    env = dict(os.environ)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    sub = subprocess.Popen([sys.executable, __file__, "--child", "sub", "--seconds", str(seconds + 3)], env=env,
                           stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    pub = subprocess.run([sys.executable, __file__, "--child", "pub", "--seconds", str(seconds)],
                         env={**env, **pub_env}, capture_output=True, text=True)
    received = sub.communicate()[0].strip()
    return f"published {pub.stdout.strip()} ticks, received per camera {received}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--child", choices=("pub", "sub"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds)
        return 0
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from vggts_ros.ros import transport

    configured = {}
    transport.configure(configured)
    for label, env in (("Fast DDS defaults", {}), (f"publisher with {configured}", configured)):
        print(f"{label}: {run(args.seconds, env)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
