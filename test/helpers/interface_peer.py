"""Two peers exchanging the project's interfaces over DDS (run as separate processes).

``server``: serves ``SetSourceMask`` and, for every accepted request, publishes a
``ProjectedPoints`` message whose content is derived from the request.
``client``: calls the service with a 640x480 mask, waits for the message and prints a
JSON report of what it received next to what it expected.
"""

import hashlib
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
from sensor_msgs.msg import Image

from vggts_ros.msg import ObjectPoints, ProjectedPoints
from vggts_ros.srv import SetSourceMask

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def expected_objects(digest: str, object_id: int):
    """Three objects of five points, values derived from the mask digest."""
    seed = int(digest[:8], 16)
    rng = np.random.default_rng(seed)
    objects = []
    for k in range(3):
        n = 5
        objects.append(
            dict(
                object_id=(object_id + k) % 256,
                source_xy=rng.uniform(0, 640, 2 * n).astype(np.float32).tolist(),
                target_xy=rng.uniform(0, 480, 2 * n).astype(np.float32).tolist(),
                visibility=rng.uniform(0, 1, n).astype(np.float32).tolist(),
                confidence=rng.uniform(0, 1, n).astype(np.float32).tolist(),
                score=float(np.float32(rng.uniform())),
                label=f"object-{k}",
                area=0 if k == 2 else int(rng.integers(1, 10**6)),
                path="object_features" if k < 2 else "geometric",
                reason="" if k < 2 else "3 feature matches on the object (need 8)",
            )
        )
    return objects


def make_mask():
    yy, xx = np.mgrid[0:480, 0:640]
    return (((xx - 300) ** 2 + (yy - 200) ** 2) < 90**2).astype(np.uint8) * 255


def server():
    rclpy.init()
    node = rclpy.create_node("interface_server")
    pub = node.create_publisher(ProjectedPoints, "projected_points", QOS)

    def handle(req, resp):
        data = bytes(req.mask.data)
        digest = hashlib.sha256(data).hexdigest()
        msg = ProjectedPoints()
        msg.header.stamp = req.stamp
        msg.header.frame_id = f"{req.camera}_optical"
        msg.source_camera = req.camera
        msg.target_camera = "exo1"
        for obj in expected_objects(digest, req.object_id):
            msg.objects.append(ObjectPoints(**obj))
        pub.publish(msg)
        resp.success = True
        resp.object_id = req.object_id
        resp.message = json.dumps(
            dict(width=req.mask.width, height=req.mask.height, encoding=req.mask.encoding,
                 step=req.mask.step, sha256=digest, label=req.label,
                 stamp=[req.stamp.sec, req.stamp.nanosec], frame_id=req.mask.header.frame_id)
        )
        return resp

    node.create_service(SetSourceMask, "set_source_mask", handle)
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while rclpy.ok() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    rclpy.shutdown()


def client():
    rclpy.init()
    node = rclpy.create_node("interface_client")
    received = []
    node.create_subscription(ProjectedPoints, "projected_points", received.append, QOS)
    cli = node.create_client(SetSourceMask, "set_source_mask")
    if not cli.wait_for_service(timeout_sec=30):
        print(json.dumps({"error": "service not available"}))
        return 1
    mask = make_mask()
    req = SetSourceMask.Request()
    req.camera = "ego"
    req.mask = Image(height=480, width=640, encoding="mono8", is_bigendian=0, step=640, data=mask.tobytes())
    req.mask.header.frame_id = "ego_optical"
    req.object_id = 7
    req.stamp.sec, req.stamp.nanosec = 1234, 567
    req.label = "mug"
    future = cli.call_async(req)
    rclpy.spin_until_future_complete(node, future, timeout_sec=30)
    resp = future.result()
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    digest = hashlib.sha256(mask.tobytes()).hexdigest()
    report = {
        "response": None if resp is None else dict(success=resp.success, object_id=resp.object_id, message=json.loads(resp.message)),
        "expected_digest": digest,
        "expected_objects": expected_objects(digest, 7),
        "messages": [
            dict(
                stamp=[m.header.stamp.sec, m.header.stamp.nanosec], frame_id=m.header.frame_id,
                source_camera=m.source_camera, target_camera=m.target_camera,
                objects=[
                    dict(object_id=o.object_id, source_xy=list(map(float, o.source_xy)),
                         target_xy=list(map(float, o.target_xy)), visibility=list(map(float, o.visibility)),
                         confidence=list(map(float, o.confidence)), score=float(o.score), label=o.label, area=o.area,
                         path=o.path, reason=o.reason)
                    for o in m.objects
                ],
            )
            for m in received
        ],
    }
    print(json.dumps(report))
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(server() if sys.argv[1] == "server" else client())
