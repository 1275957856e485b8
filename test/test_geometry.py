"""Projection conventions, seam and poles, round trips and agreement with py360convert."""
import numpy as np
import py360convert
import pytest

from panoseeker_ros.core.geometry import (Intrinsics, PanoramaRenderer, Pose, dir_to_erp_pixel, dir_to_view_pixel,
                                          erp_pixel_to_dir, great_circle_deg, joint_delta_from_move,
                                          pan_tilt_to_pose, pose_to_pan_tilt, spherical_centroid,
                                          view_mask_to_erp, view_pixel_to_dir, wrap_deg, project_erp_mask)

INTR = Intrinsics.from_fov((120.0, 90.0), (1024, 768))
RED, GREEN, YELLOW, BLUE, MAGENTA, CYAN = (255, 0, 0), (115, 245, 25), (255, 255, 0), (30, 40, 250), (220, 60, 250), (30, 255, 255)


def dominant(view, y0, y1, x0, x1):
    return np.median(view[y0:y1, x0:x1].reshape(-1, 3), axis=0)


def close(c, ref, tol=40):
    return np.abs(np.asarray(c, float) - ref).max() < tol


def test_intrinsics_of_the_default_camera():
    assert INTR.width == 1024 and INTR.height == 768
    assert INTR.fx == pytest.approx(512 / np.tan(np.radians(60)))
    assert INTR.fy == pytest.approx(384.0)
    assert (INTR.cx, INTR.cy) == (511.5, 383.5)


@pytest.mark.parametrize("pose, color", [
    (Pose(0, 0), RED),        # straight ahead: +Z
    (Pose(90, 0), GREEN),     # positive θ turns right: +X
    (Pose(-90, 0), YELLOW),   # left: -X
    (Pose(180, 0), BLUE),     # behind: -Z
    (Pose(0, 90), MAGENTA),   # positive ϕ looks up: top face
    (Pose(0, -90), CYAN),     # bottom face
])
def test_cube_faces_pin_the_convention(cube_erp, pose, color):
    view = PanoramaRenderer(cube_erp).render(pose, INTR)
    # sample off-centre to avoid the white face labels
    assert close(dominant(view, 100, 200, 420, 600), color)


def test_right_of_the_image_is_positive_theta_and_up_is_positive_phi():
    theta, phi = view_pixel_to_dir(np.array([900.0, 511.5]), np.array([383.5, 50.0]), Pose(10, 0), INTR)
    assert theta[0] > 10 and abs(phi[0]) < 1e-9
    assert phi[1] > 0 and theta[1] == pytest.approx(10)
    # the view edges are the half fields of view
    t_edge, _ = view_pixel_to_dir(np.array([INTR.cx + INTR.fx * np.tan(np.radians(60))]), np.array([INTR.cy]), Pose(0, 0), INTR)
    assert t_edge[0] == pytest.approx(60)


def test_erp_pixel_convention():
    assert erp_pixel_to_dir(-0.5, -0.5, 1024, 512) == (pytest.approx(-180), pytest.approx(90))
    u, v = dir_to_erp_pixel(0.0, 0.0, 1024, 512)
    assert (u, v) == (pytest.approx(511.5), pytest.approx(255.5))
    rng = np.random.default_rng(1)
    us, vs = rng.uniform(-0.5, 1023.4, 200), rng.uniform(-0.5, 511.5, 200)
    u2, v2 = dir_to_erp_pixel(*erp_pixel_to_dir(us, vs, 1024, 512), 1024, 512)
    np.testing.assert_allclose(u2, us, atol=1e-6)
    np.testing.assert_allclose(v2, vs, atol=1e-6)


def test_view_pixel_round_trip():
    rng = np.random.default_rng(2)
    xs, ys = rng.uniform(0, 1023, 300), rng.uniform(0, 767, 300)
    for pose in (Pose(0, 0), Pose(170, 80), Pose(-120, -45), Pose(33, 90)):
        t, p = view_pixel_to_dir(xs, ys, pose, INTR)
        x2, y2, front = dir_to_view_pixel(t, p, pose, INTR)
        assert front.all()
        np.testing.assert_allclose(x2, xs, atol=1e-6)
        np.testing.assert_allclose(y2, ys, atol=1e-6)


def test_great_circle_distance_hand_cases():
    assert great_circle_deg(0, 0, 90, 0) == pytest.approx(90)
    assert great_circle_deg(170, 0, -170, 0) == pytest.approx(20)  # across the seam
    assert great_circle_deg(0, 90, 123, 90) == pytest.approx(0, abs=1e-6)  # at the pole θ is irrelevant
    assert great_circle_deg(0, 45, 0, -45) == pytest.approx(90)
    assert great_circle_deg(0, 0, 180, 0) == pytest.approx(180)
    assert great_circle_deg(0, 0, 90, 90) == pytest.approx(90)
    assert wrap_deg(180.0) == -180.0 and wrap_deg(-190.0) == 170.0


def test_seam_is_continuous(bedroom_erp):
    r = PanoramaRenderer(bedroom_erp)
    a, b = r.render(Pose(180, 0), INTR), r.render(Pose(-180, 0), INTR)
    assert np.array_equal(a, b)
    # the seam column sits in the middle of this view: no jump across it
    mid = a[:, 505:519].astype(np.float32)
    assert np.abs(np.diff(mid, axis=1)).mean() < 6
    peer = py360convert.e2p(bedroom_erp, (120, 90), 180, 0, (768, 1024))
    assert np.abs(a.astype(np.float32) - peer).mean() < 2


@pytest.mark.parametrize("phi", [90.0, -90.0, 75.0])
def test_poles_agree_with_py360convert(bedroom_erp, phi):
    view = PanoramaRenderer(bedroom_erp).render(Pose(40, phi), INTR)
    peer = py360convert.e2p(bedroom_erp, (120, 90), 40, phi, (768, 1024))
    assert np.abs(view.astype(np.float32) - peer).mean() < 2


def test_elevation_saturates_at_the_poles():
    assert Pose(0, 60).moved(0, 90) == Pose(0, 90)
    assert Pose(170, 0).moved(30, 0) == Pose(-160, 0)


def test_mask_projection_round_trip(cube_erp):
    from conftest import green_face_mask

    truth = green_face_mask(cube_erp)
    pose = Pose(90, 0)
    seen = project_erp_mask(truth, pose, INTR)
    back = view_mask_to_erp(seen, pose, INTR, truth.shape[1], truth.shape[0])
    iou = (back & truth).sum() / (back | truth).sum()
    assert iou > 0.97
    c = spherical_centroid(truth)
    assert great_circle_deg(c.theta, c.phi, 90, 0) < 1.0
    assert spherical_centroid(np.zeros_like(truth)) is None


def test_rep103_joint_conversions():
    pan, tilt = pose_to_pan_tilt(Pose(30, 20))
    assert pan == pytest.approx(-np.radians(30)) and tilt == pytest.approx(-np.radians(20))  # right/up are negative
    assert pan_tilt_to_pose(pan, tilt) == Pose(pytest.approx(30), pytest.approx(20))
    assert joint_delta_from_move(-60, 0) == (pytest.approx(np.radians(60)), 0.0)


def test_view_centroid_agrees_with_the_erp_centroid(cube_erp):
    from conftest import label_mask
    from panoseeker_ros.core.geometry import view_mask_centroid_dir

    truth = label_mask(cube_erp)
    c = spherical_centroid(truth)
    for pose in (Pose(90, 0), Pose(50, 20), Pose(110, -20)):  # centred and far off-centre, wholly in view
        seen = project_erp_mask(truth, pose, INTR)
        v = view_mask_centroid_dir(seen, pose, INTR)
        assert great_circle_deg(v.theta, v.phi, c.theta, c.phi) < 0.5
