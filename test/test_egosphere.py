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
    sphere = EgoSphere(INTR, style="world")
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
    sphere = EgoSphere(INTR, style="world")
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
    sphere = EgoSphere(INTR, style="world")
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


# ---------------------------------------------------------------------------------------------
# The official canvas style.

from panoseeker_ros.core.config import ConfigError, config_from_dict  # noqa: E402
from panoseeker_ros.core.egosphere import INK, NODE_FILL, ROSE, UNEXPLORED, _frame  # noqa: E402


def _map_px(sphere, theta_rel, phi):
    """Where a canvas-frame direction lands on the official picture (row, column)."""
    f = _frame(sphere.width, sphere.height)
    x = f.left + ((theta_rel + 180) / 360 * f.map_w) % f.map_w
    y = f.top + (90 - phi) / 180 * f.map_h
    k = f.out_size[0] / f.size[0]
    return int(y * k), int(x * k)


@pytest.mark.parametrize("start", [-170.0, -60.0, 0.0, 95.0, 180.0])
def test_official_canvas_puts_the_first_view_at_the_centre_whatever_the_start(bedroom_erp, start):
    renderer = PanoramaRenderer(bedroom_erp)
    sphere = EgoSphere(INTR)  # the official style is the default
    first = Pose(start, 0)
    sphere.integrate(renderer.render(first, INTR), first)
    assert sphere.anchor_deg == Pose(start, 0).normalized().theta
    # the canvas holds the first view around its centre column, and the world direction behind it at the edge
    assert sphere.explored[256, 512] and not sphere.explored[256, 0] and not sphere.explored[256, 1023]
    centre = bedroom_erp[256, int(round((Pose(start, 0).normalized().theta + 180) / 360 * 1024 - 0.5)) % 1024]
    assert np.abs(sphere.canvas[256, 511:513].astype(int) - centre.astype(int)).max() < 40
    picture = sphere.render()
    assert picture.shape == (526, 1024, 3)
    # the crosshair (rose) on the first view, at the picture's centre column
    r, c = _map_px(sphere, 0.0, 0.0)
    rose = np.abs(picture[r - 12:r + 13, c - 12:c + 13].astype(int) - ROSE).max(axis=2) < 60
    assert rose.any()
    # a second view 90° right of the start lands 90° right of the centre, whatever the start
    second = Pose(start + 90, 0).normalized()
    sphere.integrate(renderer.render(second, INTR), second)
    assert sphere.canvas_pose(second).theta == pytest.approx(90.0)
    assert sphere.trajectory == [first.normalized(), second]  # world poses are kept


def test_official_canvas_unexplored_grey_grid_and_numbered_discs():
    sphere = EgoSphere(INTR)
    view = np.full((768, 1024, 3), 200, np.uint8)
    poses = [Pose(30, 0), Pose(90, 0), Pose(90, 60)]
    for p in poses:
        sphere.integrate(view, p)
    out = sphere.render()
    # unexplored: dark grey (28, 30, 35) far from every view, e.g. 150° left of the start at the equator
    r, c = _map_px(sphere, -150 + 15, -15)
    assert np.abs(out[r, c].astype(int) - UNEXPLORED).max() <= 6
    # a faint grid line (white at 35/255) at -120° relative: brighter than the unexplored grey beside it
    r, c = _map_px(sphere, -120, -45)
    line = out[r, c - 1:c + 2].astype(int).sum(axis=1).max()
    assert line > sum(UNEXPLORED) + 30 and out[r, c + 8].astype(int).sum() == pytest.approx(sum(UNEXPLORED), abs=10)
    # a numbered white disc on every viewpoint: white around a dark number
    for k, p in enumerate(poses, 1):
        r, c = _map_px(sphere, sphere.canvas_pose(p).theta, p.phi)
        patch = out[r - 8:r + 9, c - 8:c + 9].astype(int)
        assert (np.abs(patch - NODE_FILL).max(axis=2) < 30).mean() > 0.3, k
        assert (np.abs(patch - INK).max(axis=2) < 90).any(), k
    # margins are white and carry the labels; the map is framed in ink
    assert (out[2:6, 300:700] == 255).all()


def test_discs_are_numbered_in_visit_order():
    """Two discs: '1' and '2' differ in their ink, and swapping the visit order swaps them."""
    view = np.full((768, 1024, 3), 200, np.uint8)
    a, b = Pose(0, 0), Pose(120, 0)
    one, two = EgoSphere(INTR), EgoSphere(INTR)
    for p in (a, b):
        one.integrate(view, p)
    for p in (a, Pose(-120, 0), b):  # b is visited third here
        two.integrate(view, p)

    def disc(sphere, p):
        r, c = _map_px(sphere, sphere.canvas_pose(p).theta, p.phi)
        return sphere.render(crosshair=False)[r - 10:r + 11, c - 10:c + 11]

    assert not np.array_equal(disc(one, b), disc(two, b))  # '2' against '3'
    assert np.array_equal(disc(one, a), disc(two, a))  # both '1'


def test_canvas_style_is_checked_and_world_stays_available():
    assert config_from_dict({}).episode.canvas_style == "official"
    assert config_from_dict({"episode": {"canvas_style": "world"}}).episode.canvas_style == "world"
    with pytest.raises(ConfigError, match="episode.canvas_style = 'egocentric'; use one of official, world"):
        config_from_dict({"episode": {"canvas_style": "egocentric"}})
    world = EgoSphere(INTR, style="world")
    world.integrate(np.full((768, 1024, 3), 50, np.uint8), Pose(60, 0))
    assert world.render().shape == (512, 1024, 3) and world.anchor_deg == 0.0
