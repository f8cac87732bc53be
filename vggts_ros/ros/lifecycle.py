"""``vggts_lifecycle_node``: the vggts node as a managed (lifecycle) node.

The plain ``vggts_node`` stays the default. This one starts unconfigured (parameters
read and checked, nothing loaded) and follows ``lifecycle_msgs`` transitions:

* configure: load the backend and its weights;
* activate: subscribe to the cameras, create the outputs, services and timers, start the
  inference thread;
* deactivate: stop all of that (a set in inference finishes first); the backend and the
  objects stay, so a later activate resumes at once;
* cleanup: unload the backend; shutdown: stop and unload.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from vggts_ros.checkpoint import CheckpointError
from vggts_ros.ros.node import VGGTSNode, main as node_main


class VGGTSLifecycleNode(VGGTSNode, LifecycleNode):
    """:class:`VGGTSNode` whose loading and I/O follow the lifecycle transitions."""

    _managed = True

    def __init__(self, node_name: str = "vggts", segmentor=None, **kwargs) -> None:
        self._given = segmentor  # a ready backend (tests); None: load from the parameters
        self.segmentor = None
        super().__init__(node_name, **kwargs)

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._load(self._given)
        except (ValueError, CheckpointError, RuntimeError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._start()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.segmentor = None
        self._release_cuda_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop()
        self.segmentor = None
        return TransitionCallbackReturn.SUCCESS


def main(argv: Optional[List[str]] = None) -> int:
    """``vggts_lifecycle_node [--ros-args --params-file config.yaml ...]``."""
    return node_main(argv, VGGTSLifecycleNode)


if __name__ == "__main__":
    sys.exit(main())
