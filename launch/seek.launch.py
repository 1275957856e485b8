"""The panoseeker graph on a ROS 2 install: camera, policy and segmentation nodes.

    ros2 launch panoseeker_ros seek.launch.py [params_file:=/path/seek.yaml] [namespace:=/panoseeker]
                                              [respawn:=true]

Every node reads the one params file (shared ``/**`` section + its own section). The policy and
segmentation nodes are lifecycle nodes that configure and activate themselves (parameter
``autostart``), so no lifecycle manager is needed; with ``autostart: false`` drive them with
``ros2 lifecycle set``. Without ros2 launch (pip install) the same graph is ``panoseeker launch``.
Like it, the nodes discover peers on this machine only unless the environment chooses
(``ROS_AUTOMATIC_DISCOVERY_RANGE``, ``ROS_STATIC_PEERS``; README "Securing the graph").
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from panoseeker_ros.nodes import NODES
from panoseeker_ros.nodes.launcher import ENCLAVES, default_discovery, default_transport


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("panoseeker_ros"), "config", "seek.yaml")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    log_level = LaunchConfiguration("log_level")
    env = dict(os.environ)
    default_discovery(env)
    default_transport(env)
    return LaunchDescription([
        *[SetEnvironmentVariable(k, v) for k, v in env.items() if os.environ.get(k) != v],
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS params YAML for all nodes (config/seek.yaml form)"),
        DeclareLaunchArgument("namespace", default_value="panoseeker",
                              description="namespace of every topic and service"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart a node that exits"),
        *[Node(package="panoseeker_ros", executable=name, name=name, namespace=namespace,
               parameters=[params_file], arguments=["--ros-args", "--log-level", log_level],
               ros_arguments=["--enclave", f"{ENCLAVES}/{name}"],  # SROS2, when ROS_SECURITY_ENABLE=true
               respawn=LaunchConfiguration("respawn"), output="screen", emulate_tty=True)
          for name in NODES],
    ])
