"""``vggts_lifecycle_node``: the vggts node as a managed (lifecycle) node.

The same class as ``vggts_node`` (:class:`vggts_ros.ros.node.VGGTSNode`) with
``managed=True``: it starts unconfigured and follows ``lifecycle_msgs`` transitions
(configure loads the backend, activate starts processing, deactivate pauses, cleanup
unloads and forgets the objects); see that module's docstring.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from vggts_ros.ros.node import VGGTSNode, main as node_main


def VGGTSLifecycleNode(node_name: str = "vggts", segmentor=None, **kwargs) -> VGGTSNode:  # noqa: N802
    """The managed node (``VGGTSNode(..., managed=True)``)."""
    return VGGTSNode(node_name, segmentor, managed=True, **kwargs)


def main(argv: Optional[List[str]] = None) -> int:
    """``vggts_lifecycle_node [--ros-args --params-file config.yaml ...]``."""
    return node_main(argv, managed=True)


if __name__ == "__main__":
    sys.exit(main())
