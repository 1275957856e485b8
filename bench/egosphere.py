"""Cost of one EgoSphere step: integrating a 1024×768 view into the 1024×512 canvas, and drawing the
picture the policy reads (the official style: 2× drawing resized to 1024 wide; and the world style),
against rendering one view with py360convert.e2p, in one run.

    python bench/egosphere.py [--steps 20]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import py360convert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_ms, real_panorama  # noqa: E402

from panoseeker_ros.core.egosphere import EgoSphere  # noqa: E402
from panoseeker_ros.core.geometry import Intrinsics, PanoramaRenderer, Pose  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    erp = real_panorama(2048)
    intr = Intrinsics.from_fov((120.0, 90.0), (1024, 768))
    renderer = PanoramaRenderer(erp)
    rng = np.random.default_rng(0)
    poses = [Pose(float(t), float(p)) for t, p in zip(rng.choice(np.arange(-180, 180, 30), args.steps),
                                                        rng.choice([-60, -30, 0, 30, 60], args.steps))]
    views = [renderer.render(p, intr) for p in poses]
    sphere, world = EgoSphere(intr), EgoSphere(intr, style="world")

    t_integrate = median_ms(sphere.integrate, list(zip(views, poses)))
    for view, pose in zip(views, poses):
        world.integrate(view, pose)
    t_official = median_ms(sphere.render, [()] * args.steps)
    t_world = median_ms(world.render, [()] * args.steps)
    t_peer = median_ms(lambda p: py360convert.e2p(erp, (120.0, 90.0), p.theta, p.phi, (768, 1024)),
                       [(p,) for p in poses[:6]])
    step = t_integrate + t_official
    print(f"egosphere: {args.steps} steps, coverage after them {sphere.coverage:.2f}; official picture "
          f"{sphere.render().shape[1]}x{sphere.render().shape[0]}")
    print(f"egosphere: integrate {t_integrate:.2f} ms, draw official {t_official:.2f} ms (goal <= 10 ms: "
          f"{'met' if t_official <= 10 else 'misses'}), draw world {t_world:.2f} ms per step")
    print(f"egosphere: integrate + official drawing {step:.2f} ms/step, py360convert.e2p one view {t_peer:.2f} ms, "
          f"ratio {t_peer / step:.1f}x (goal > 1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
