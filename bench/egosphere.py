"""Cost of one EgoSphere step (integrate a 1024×768 view into the 1024×512 canvas and render the
grid, path and crosshair prompts) against rendering one view with py360convert.e2p, in one run.

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
    sphere = EgoSphere(intr)

    def step(view, pose):
        sphere.integrate(view, pose)
        return sphere.render()

    t_ours = median_ms(step, list(zip(views, poses)))
    t_peer = median_ms(lambda p: py360convert.e2p(erp, (120.0, 90.0), p.theta, p.phi, (768, 1024)),
                       [(p,) for p in poses[:6]])
    print(f"egosphere: {args.steps} steps, coverage after them {sphere.coverage:.2f}")
    print(f"egosphere: integrate + prompts {t_ours:.2f} ms/step, py360convert.e2p one view {t_peer:.2f} ms, "
          f"ratio {t_peer / t_ours:.1f}x (goal > 1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
