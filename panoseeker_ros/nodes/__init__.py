"""The ROS 2 graph: thin rclpy nodes around the core and models objects.

* ``camera_node``: a core Camera (simulated panorama driver) → view, camera info, pan/tilt pose.
* ``policy_node``: a core Episode per instruction, driven over topics: the policy backend decides,
  the camera answers moves and looks, the segmentation node answers boxes; publishes the EgoSphere
  canvas, feedback, status and the result.
* ``segmentation_node``: a segmenter backend, box on a view → mask.

``interface`` names every topic, service and QoS; ``conversions`` is the only place messages become
arrays and poses. ``launcher``, ``operator`` and ``recorder`` are the pip-install stand-ins for
``ros2 launch``, an operator's text client and ``ros2 bag record``; ``commands`` adds them to the CLI.
``console`` is the node behind ``panoseeker console``, the operator console in a web browser.
The full table is in ``doc/ros_interface.md``. This module imports nothing, so ``setup.py`` and the
launch file read :data:`NODES` from it.
"""

# The graph's processes, in start order; each is ``panoseeker_ros.nodes.<name>:main``.
NODES = ("camera_node", "policy_node", "segmentation_node")
