"""The newest-frame grabber: a thread reads a ``cv2.VideoCapture`` source as fast as it delivers, keeps only
the newest frame with the time it arrived, and reopens the source when it is lost."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np


class VideoError(RuntimeError):
    """No usable frame (the stream is down or too slow); one line naming the source."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    received: float  # time.monotonic() when it was read [s]
    index: int  # frames read since the grabber started


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact_url(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it removed (what messages show of a source)."""
    return _USERINFO.sub(r"\g<scheme>", text)


def capture_source(text: str):
    """What VideoCapture gets: a device number for ``"0"``, ``"1"``…, else the URL or path as is."""
    text = text.strip()
    return int(text) if text.isdigit() else text


class FrameGrabber:
    """Reads ``source`` in a background thread. ``on_event(kind, text)`` hears ``lost`` and ``back`` (once each
    per outage). Reconnect attempts back off from ``retry_s`` doubling to ``max_retry_s``."""

    def __init__(self, source: str, on_event: Callable[[str, str], None] | None = None, retry_s: float = 0.5,
                 max_retry_s: float = 5.0, open_capture: Callable[[object], cv2.VideoCapture] | None = None):
        if not source.strip():
            raise VideoError("no video source; set 'video_source' (rtsp://…, http://…, a device number or a file)")
        self.source = source
        self.name = redact_url(source)  # what every message shows: never the credentials
        self.on_event = on_event or (lambda kind, text: None)
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        self._open = open_capture or (lambda src: cv2.VideoCapture(src, cv2.CAP_FFMPEG)
                                      if isinstance(src, str) else cv2.VideoCapture(src))
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._index = 0
        self._up = False
        self._stop = threading.Event()
        self.outages = 0
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._up

    def newest(self) -> Frame | None:
        with self._cond:
            return self._frame

    def frame_after(self, t: float, timeout_s: float) -> Frame:
        """The first frame received at or after ``t`` (time.monotonic()), waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._frame is None or self._frame.received < t:
                left = deadline - time.monotonic()
                if left <= 0:
                    state = "connected but no new frame" if self._up else "not connected"
                    raise VideoError(f"video {self.name}: no frame within {timeout_s:g} s ({state}); "
                                     f"check the stream URL and that the camera streams")
                self._cond.wait(left)
            return self._frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        wait = self.retry_s
        source = capture_source(self.source)
        while not self._stop.is_set():
            cap = self._open(source)
            if cap is None or not cap.isOpened():
                self._lost(f"video {self.name}: cannot open; retrying every ≤{self.max_retry_s:g} s")
                self._stop.wait(wait)
                wait = min(wait * 2, self.max_retry_s)
                continue
            try:
                while not self._stop.is_set():
                    ok, bgr = cap.read()
                    if not ok or bgr is None:
                        self._lost(f"video {self.name}: stream lost; reconnecting")
                        break
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    with self._cond:
                        self._index += 1
                        self._frame = Frame(rgb, time.monotonic(), self._index)
                        came_back = not self._up
                        self._up = True
                        self._cond.notify_all()
                    if came_back:
                        wait = self.retry_s
                        self.on_event("back", f"video {self.name}: streaming ({rgb.shape[1]}x{rgb.shape[0]})")
            finally:
                cap.release()

    def _lost(self, text: str) -> None:
        with self._cond:
            was_up, self._up = self._up, False
        if was_up or self.outages == 0:
            self.outages += 1
            self.on_event("lost", text)
