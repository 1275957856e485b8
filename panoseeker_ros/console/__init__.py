"""The operator console in the browser (``panoseeker console``).

``web`` is the web side (aiohttp: the page, its static files and one websocket; no ROS), ``static/``
the page itself (plain HTML, CSS and JavaScript: no build step, nothing from the network). The rclpy
side, which feeds it, is :mod:`panoseeker_ros.nodes.console`.
"""
