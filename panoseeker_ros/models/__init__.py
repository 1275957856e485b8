"""Policies and segmenters behind the core's Policy and Segmenter interfaces (no rclpy here)."""
