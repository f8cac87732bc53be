"""Start the VGGT-S node on a set of synchronised cameras.

    ros2 launch vggts_ros multicam.launch.py
    ros2 launch vggts_ros multicam.launch.py params_file:=/path/aerial_ground.yaml
    ros2 launch vggts_ros multicam.launch.py ego_topic:=/glasses/rgb exo1_topic:=/tripod/color
    ros2 launch vggts_ros multicam.launch.py topic_remaps:="ego/image_raw:=/a exo2/image_raw:=/b"
    ros2 launch vggts_ros multicam.launch.py state_dir:=/var/lib/vggts respawn:=true

Camera topics come from the parameters file (``camera.<name>.topic``); the topic
arguments remap those names, so one YAML serves several rigs. The node respawns when it
dies and its objects survive that (``objects.state_dir``, set from ``state_dir``).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

DEFAULT_TOPICS = {"ego_topic": "ego/image_raw", "exo1_topic": "exo1/image_raw", "exo2_topic": "exo2/image_raw"}


def _remappings(context):
    pairs = []
    for arg, source in DEFAULT_TOPICS.items():
        target = LaunchConfiguration(arg).perform(context).strip()
        if target and target != source:
            pairs.append((source, target))
    for item in LaunchConfiguration("topic_remaps").perform(context).split():
        source, sep, target = item.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"topic_remaps: expected 'from:=to' items, got {item!r}")
        pairs.append((source, target))
    return pairs


def _node(context):
    params_file = LaunchConfiguration("params_file").perform(context)
    if not os.path.isfile(params_file):
        raise FileNotFoundError(f"params_file {params_file} does not exist")
    overrides = {}
    device = LaunchConfiguration("device").perform(context).strip()
    if device:
        overrides["model.device"] = device
    state_dir = LaunchConfiguration("state_dir").perform(context).strip()
    if state_dir:  # objects survive the respawns below (and reboots)
        name = LaunchConfiguration("node_name").perform(context)
        namespace = LaunchConfiguration("namespace").perform(context).strip("/")
        overrides["objects.state_dir"] = os.path.join(os.path.expanduser(state_dir), namespace, name)
    respawn = LaunchConfiguration("respawn").perform(context).lower() in ("true", "1", "yes")
    return [
        Node(
            package="vggts_ros",
            executable="vggts_node",
            name=LaunchConfiguration("node_name").perform(context),
            namespace=LaunchConfiguration("namespace").perform(context),
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides] if overrides else [params_file],
            remappings=_remappings(context),
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level").perform(context)],
            respawn=respawn,
            respawn_delay=2.0,
        )
    ]


def generate_launch_description():
    default_params = [FindPackageShare("vggts_ros"), "/config/multicam.yaml"]
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params,
                                  description="ROS parameters file (config/multicam.yaml, config/aerial_ground.yaml, ...)"),
            DeclareLaunchArgument("node_name", default_value="vggts", description="node name"),
            DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
            DeclareLaunchArgument("device", default_value="", description="override model.device (auto|cuda|cuda:N|cpu)"),
            DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
            DeclareLaunchArgument("state_dir", default_value="~/.ros/vggts_state",
                                  description="objects are saved under <state_dir>/<namespace>/<node_name> and restored "
                                              "when the node (re)starts; empty: memory only"),
            DeclareLaunchArgument("respawn", default_value="true",
                                  description="restart the node if it dies (CUDA error, OOM kill); objects come back"),
            DeclareLaunchArgument("topic_remaps", default_value="",
                                  description="space-separated 'from:=to' topic remappings"),
        ]
        + [
            DeclareLaunchArgument(name, default_value=topic, description=f"remap {topic} to this topic")
            for name, topic in DEFAULT_TOPICS.items()
        ]
        + [OpaqueFunction(function=_node)]
    )
