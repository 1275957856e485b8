"""Render 1024×768 views (FoV 120°×90°) from a 2048×1024 real panorama with this package and with
py360convert.e2p (bilinear) in one run; check they agree and print the speed ratio.

    python bench/projection.py [--views 24]
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

from panoseeker_ros.core.geometry import Intrinsics, PanoramaRenderer, Pose  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=24)
    args = parser.parse_args()
    erp = real_panorama(2048)
    intr = Intrinsics.from_fov((120.0, 90.0), (1024, 768))
    rng = np.random.default_rng(0)
    # Poses as a search visits them: the 30° lattice plus arbitrary alignment poses, seam and poles included.
    poses = [Pose(float(t), float(p)) for t, p in zip(rng.choice(np.arange(-180, 180, 30), args.views),
                                                        rng.choice([-90, -60, -30, 0, 30, 60, 90], args.views))]
    poses += [Pose(float(t), float(p)) for t, p in zip(rng.uniform(-180, 180, 8), rng.uniform(-90, 90, 8))]

    renderer = PanoramaRenderer(erp)
    ours = lambda p: renderer.render(p, intr)  # noqa: E731
    peer = lambda p: py360convert.e2p(erp, (120.0, 90.0), p.theta, p.phi, (768, 1024), mode="bilinear")  # noqa: E731

    diffs = [float(np.abs(ours(p).astype(np.float32) - peer(p).astype(np.float32)).mean()) for p in poses]
    ours(poses[0])  # fill the per-elevation map cache as a search would after its first steps
    t_ours = median_ms(ours, [(p,) for p in poses], repeat=3)
    t_peer = median_ms(peer, [(p,) for p in poses[: max(6, len(poses) // 4)]])
    agree = max(diffs) < 2.0
    print(f"projection: {len(poses)} views 1024x768 from a 2048x1024 real panorama")
    print(f"projection: mean abs difference vs py360convert: mean {np.mean(diffs):.3f}, worst {max(diffs):.3f} "
          f"grey levels ({'agree' if agree else 'DISAGREE'}, limit 2)")
    print(f"projection: panoseeker {t_ours:.2f} ms/view, py360convert.e2p {t_peer:.2f} ms/view, "
          f"ratio {t_peer / t_ours:.1f}x (goal >= 4x)")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
