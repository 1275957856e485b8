"""The ROS 2 graph: thin rclpy nodes around the core and models objects.

* ``camera_node``: a core Camera (simulated panorama driver) → view, camera info, pan/tilt pose.
* ``egosphere_node``: a core EgoSphere → the canvas the policy reads.
* ``policy_node``: a core SearchSession / SeekAgent with a policy backend → moves, STOP box.
* ``segmentation_node``: core ActiveAlignment with a segmenter backend → mask, overlay, result.

``interface`` names every topic, service and QoS; ``conversions`` is the only place messages become
arrays and poses. ``launcher``, ``operator`` and ``recorder`` are the pip-install stand-ins for
``ros2 launch``, an operator console and ``ros2 bag record``; ``commands`` adds them to the CLI.
The full table is in ``doc/ros_interface.md``.
"""
