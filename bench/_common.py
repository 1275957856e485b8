"""Shared pieces of the benchmarks: a real panorama at 2048×1024 and a median timer."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import cv2
import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "sim" / "bedroom" / "bedroom_1024x512.png"


def real_panorama(width: int = 2048) -> np.ndarray:
    """The real bedroom panorama, resized (bicubic) to width × width/2, RGB uint8."""
    path = SAMPLE
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read the panorama {path}")
    return cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (width, width // 2), interpolation=cv2.INTER_CUBIC)


def median_ms(fn, args_list, repeat: int = 1) -> float:
    """Median wall time of ``fn(*args)`` over ``args_list`` (each repeated ``repeat`` times), in ms."""
    times = []
    for args in args_list:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(*args)
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)
