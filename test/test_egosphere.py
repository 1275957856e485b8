"""EgoSphere: back-projection, constant memory, coverage and the drawn prompts."""
import numpy as np
import pytest

from panoseeker_ros.core.egosphere import CROSSHAIR_COLOR, GRID_COLOR, PATH_COLOR, EgoSphere
from panoseeker_ros.core.geometry import Intrinsics, PanoramaRenderer, Pose, dir_to_erp_pixel

INTR = Intrinsics.from_fov((120.0, 90.0), (1024, 768))


def px(pose, w=1024, h=512):
    u, v = dir_to_erp_pixel(pose.theta, pose.phi, w, h)
    return int(round(float(v))), int(round(float(u)))


def test_integrate_reproduces_the_panorama_where_seen(bedroom_erp):
    sphere = EgoSphere(INTR)
    assert sphere.canvas.shape == (512, 1024, 3) and not sphere.canvas.any()
    view = PanoramaRenderer(bedroom_erp).render(Pose(30, 0), INTR)
    sphere.integrate(view, Pose(30, 0))
    seen = sphere.explored
    assert seen[px(Pose(30, 0))] and not seen[px(Pose(-150, 0))]
    diff = np.abs(sphere.canvas[seen].astype(np.float32) - bedroom_erp[seen].astype(np.float32)).mean()
    assert diff < 6  # two bilinear resamplings of a real photo
    assert not sphere.canvas[~seen].any()  # unexplored stays black


def test_coverage_grows_and_memory_is_constant(bedroom_erp):
    renderer = PanoramaRenderer(bedroom_erp)
    sphere = EgoSphere(INTR)
    canvas_id = id(sphere.canvas)
    coverage = [0.0]
    for k in range(12):
        pose = Pose(-180 + 30 * k, 0)
        sphere.integrate(renderer.render(pose, INTR), pose)
        coverage.append(sphere.coverage)
    assert all(b >= a for a, b in zip(coverage, coverage[1:]))
    # solid angle of a 120°×90° pinhole: 4·asin(sin 60° · sin 45°) sr, of 4π
    assert coverage[1] == pytest.approx(4 * np.arcsin(np.sin(np.radians(60)) * np.sin(np.radians(45))) / (4 * np.pi),
                                        abs=0.005)
    for k in range(40):  # a long trajectory does not grow the memory
        pose = Pose(7 * k, 30 * (k % 3 - 1))
        sphere.integrate(renderer.render(pose, INTR), pose)
    assert id(sphere.canvas) == canvas_id and sphere.canvas.shape == (512, 1024, 3)
    sphere.reset()
    assert sphere.coverage == 0.0 and not sphere.trajectory


def test_wrong_view_size_is_rejected():
    with pytest.raises(ValueError, match="does not match the camera"):
        EgoSphere(INTR).integrate(np.zeros((10, 10, 3), np.uint8), Pose(0, 0))


def test_prompts_grid_crosshair_and_path_across_the_seam():
    sphere = EgoSphere(INTR)
    view = np.full((768, 1024, 3), 50, np.uint8)
    sphere.integrate(view, Pose(150, 0))
    sphere.integrate(view, Pose(-150, 0))  # the short way crosses the ±180° seam
    before = sphere.canvas.copy()
    out = sphere.render()
    assert np.array_equal(sphere.canvas, before)  # prompts are drawn on a copy
    # grid line at θ = 0 (column 512) and at ϕ = 30° (row 171)
    assert (out[400, 512] == GRID_COLOR).all() and (out[171, 700] == GRID_COLOR).all()
    # crosshair at the current pose (θ = -150°)
    r, c = px(Pose(-150, 0))
    assert (np.abs(out[r, c - 8:c + 9].astype(int) - CROSSHAIR_COLOR).max(axis=1) < 60).any()
    # the path runs through the seam (columns 0 and 1023), not across the middle of the canvas
    row = out[256]
    is_path = (np.abs(row.astype(int) - PATH_COLOR).max(axis=1) < 60)
    assert is_path[1015:1024].any() and is_path[0:10].any()
    assert not is_path[300:700].any()
