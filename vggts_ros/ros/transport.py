"""DDS transport settings for processes that move camera images.

Why: with Fast DDS's default transports, a writer keeps every outgoing sample in its own
512 KiB shared-memory segment (and, over UDP, in a socket buffer of the system default
size). A 640x360 RGB image is 691 KB, so each image is sent in 64 KB fragments that
overwrite each other before a busy reader has copied them; with best-effort QoS (the
camera convention, ``qos_profile_sensor_data``) a sample missing one fragment is lost
whole. Measured on this machine: 3 cameras at 5 Hz, 25-50 % of the images arrived to an
idle reader and 3-8 % to the node while it started, which made ``vggts demo`` wait 30 s
for a first frame and fail under load. A larger segment/socket buffer on the *writer*
side removes the loss (100 % in the same measurement).

``configure()`` sets that for this process through Fast DDS's documented
``FASTDDS_BUILTIN_TRANSPORTS`` variable, before the first ROS context is created, unless
the user already configured Fast DDS (their variable or XML profile wins) or runs another
RMW. Camera drivers that publish large images best-effort need the same on their side.
"""

from __future__ import annotations

import os
from typing import MutableMapping, Optional

from vggts_ros.ros import compat

SEGMENT_SIZE = "16MB"
USER_SETTINGS = (
    "FASTDDS_BUILTIN_TRANSPORTS",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "FASTDDS_DEFAULT_PROFILES_FILE",
)


def configure(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Give this process large DDS transport buffers; return what was set ('' if nothing).

    Must run before ``rclpy.init``; child processes inherit the setting.
    """
    env = os.environ if environ is None else environ
    rmw = env.get("RMW_IMPLEMENTATION", "") or "rmw_fastrtps_cpp"
    if not rmw.startswith("rmw_fastrtps"):
        return ""
    if any(env.get(name) for name in USER_SETTINGS):
        return ""
    if not compat.fastdds_accepts_transport_options():  # Humble: Fast DDS 2.6 would log "Wrong value"
        return ""
    value = f"DEFAULT?sockets_size={SEGMENT_SIZE}"
    env["FASTDDS_BUILTIN_TRANSPORTS"] = value
    return value
