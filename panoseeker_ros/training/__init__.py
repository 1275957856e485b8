"""Training the Qwen3-VL policy: SFT data (simulation, view graphs, recorded bags), SFT and multi-turn GRPO.

Built on ``core`` (the one :class:`~panoseeker_ros.core.episode.Episode` stepper and its drivers) and
``models`` (the policy's prompt, encoder, decoders and scorer); never on rclpy.
"""
