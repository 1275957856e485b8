"""Real pan-tilt heads behind the core ``Camera`` interface: VISCA and ONVIF drivers, the newest-frame
video grabber, calibration profiles, settle logic and the fake camera used by the tests and for a dry run.

No rclpy here (numpy, OpenCV, sockets, pyserial; the ONVIF client only inside ``onvif_ptz``). Angles are
degrees in the core convention (θ right-positive, ϕ up-positive) unless a name says ``units``.
"""
