"""The one episode stepper: requests and answers, the T limit, alignment, scoring, rewards, lockstep."""
import dataclasses

import numpy as np
import pytest

from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.config import AlignmentConfig, SeekConfig
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, answer, run_episode, run_lockstep, shoot
from panoseeker_ros.core.episode import (Capture, Decide, Decision, Done, Episode, Frame, Look, Move, Segment,
                                         Track, decode_rle, encode_rle, rotate_view_mask)
from panoseeker_ros.core.geometry import Intrinsics, Pose, great_circle_deg, project_erp_mask
from panoseeker_ros.core.rewards import terminal_reward
from panoseeker_ros.models.oracle import OracleDetector, OracleSegmenter
from panoseeker_ros.models.registry import make_policy, make_segmenter
from panoseeker_ros.paths import sample_dataset

INTR = Intrinsics.from_fov()


class Scripted:
    """Answers the given actions in order, then the last one forever."""

    name = "scripted"

    def __init__(self, *actions):
        self.actions = actions

    def act(self, obs):
        a = self.actions[min(obs.step, len(self.actions) - 1)]
        return Decision(a, a.to_text())


def scene_of(dataset, i=0, config=None):
    return SimScene(load_dataset(dataset).episodes[i], config)


def oracle(scene):
    return make_segmenter("oracle", scene.config, scene.truth)


def test_requests_of_an_expert_episode_in_order(cube_dataset):
    scene = scene_of(cube_dataset)
    policy, seg = make_policy("expert", scene.config, scene.truth), oracle(scene)
    ep = scene.episode()
    req = scene.start(ep)
    kinds = [type(req).__name__]
    assert isinstance(req, Look) and req.purpose == "start" and req.pose == scene.spec.initial_pose
    while not isinstance(req, Done):
        req = ep.observe(answer(req, scene.camera, policy, seg))
        kinds.append(type(req).__name__)
    # look at the start, then decide/move until STOP, segment, review it (the expert accepts its own box),
    # then (look to align, track it there) up to 6 times
    stop = kinds.index("Segment")
    assert kinds[:2] == ["Look", "Decide"] and set(kinds[2:stop]) <= {"Move", "Decide"} and kinds[-1] == "Done"
    assert kinds[stop + 1] == "Decide"
    aligning = kinds[stop + 2:-1]
    assert 2 <= len(aligning) <= 12 and aligning == ["Look", "Track"] * (len(aligning) // 2)
    result = req.result
    assert [r.action.to_text() for r in result.reviews] == ["ACCEPT"] and result.refinements == 0
    assert result.success and result.looks == len(aligning) // 2 and ep.done and ep.pending is req
    assert result.path[-1] == result.final_pose != result.stop_pose
    assert result.found and result.mask.shape == (INTR.height, INTR.width)


def test_wrong_answers_are_refused_with_the_expected_kind(cube_dataset):
    scene = scene_of(cube_dataset)
    ep = scene.episode()
    req = scene.start(ep)
    with pytest.raises(TypeError, match="answered with a Frame"):
        ep.observe(Decision(Action.move(30, 0)))
    req = ep.observe(shoot(scene.camera, req))
    with pytest.raises(TypeError, match="answered with a Decision"):
        ep.observe(Frame(req.observation.view, req.observation.pose))
    req = ep.observe(Decision(Action.stop_at((0, 0, 1000, 1000))))
    assert isinstance(req, Segment) and req.box_px == (0, 0, 1024, 768) and req.look == 0
    with pytest.raises(ValueError, match="one bool per view pixel"):
        ep.observe(np.zeros((10, 10), bool))
    with pytest.raises(RuntimeError, match="runs once"):
        ep.start("again")


def test_empty_instruction_is_refused():
    with pytest.raises(ValueError, match="instruction is empty"):
        Episode().start("  ", Pose(0, 0))


def test_without_a_start_pose_the_episode_captures_where_the_camera_is(cube_dataset):
    scene = scene_of(cube_dataset)
    scene.camera.look(45, 30)
    ep = scene.episode()
    req = ep.start("the green face")
    assert isinstance(req, Capture)
    obs = ep.observe(shoot(scene.camera, req)).observation
    assert obs.pose == Pose(45, 30) == obs.initial_pose and obs.step == 0


def test_truncation_at_max_steps(cube_dataset):
    config = SeekConfig()
    config.episode.max_steps = 5
    scene = scene_of(cube_dataset, config=config)
    result = run_episode(scene, Scripted(Action.move(30, 0)), oracle(scene))
    assert result.steps == 5 and result.truncated and not result.success and result.box is None
    assert len(result.path) == 5  # start + 4 moves; the 5th answer ended the episode
    assert result.outcome.iou == 0.0 and not result.found
    # a truncated episode earns the miss penalty, whatever its path
    assert result.reward == pytest.approx(sum(r.reward for r in result.records) - config.reward.r_pen)


def test_observations_carry_the_episode_history(cube_dataset):
    scene = scene_of(cube_dataset)
    seen = []

    class Watch(Scripted):
        def act(self, obs):
            seen.append(obs)
            return super().act(obs)

    run_episode(scene, Watch(Action.move(60, 0), Action.move(-30, 30), Action.stop_at(None)), oracle(scene))
    assert [o.step for o in seen] == [0, 1, 2]
    last = seen[-1]
    assert [r.action.to_text() for r in last.history] == ["MOVE +60 0", "MOVE -30 +30"]
    assert last.history[0].view is seen[0].view and last.trajectory[-1] == last.pose
    assert len(last.trajectory) == 3 and last.canvas.shape == (526, 1024, 3)  # the official picture, 1024 wide
    assert last.canvas_style == "official"


def test_rewards_per_move_and_terminal_at_the_final_pose(cube_dataset):
    scene = scene_of(cube_dataset)  # start θ=-90, target θ≈+90
    result = run_episode(scene, Scripted(Action.move(120, 0), Action.stop_at(None)), oracle(scene))
    t = scene.truth.centroid
    progress = great_circle_deg(-90, 0, t.theta, t.phi) - great_circle_deg(30, 0, t.theta, t.phi)
    assert progress > 100 and result.records[0].reward == pytest.approx(progress / 30 - 0.05)
    assert result.records[1].reward == 0.0  # STOP moves nothing


def test_scan_successes_earn_the_terminal_bonus_judged_after_alignment(cube_dataset, tmp_path):
    """Reward and SR judge one pose: the final (aligned) one, not the STOP pose."""
    from panoseeker_ros.core.scenes import generate_benchmark

    path = generate_benchmark(tmp_path / "b", n_scenes=3, episodes_per_scene=3, seed=1, erp_width=1024)
    far_stops = 0
    for spec in load_dataset(path).episodes:
        scene = SimScene(spec)
        r = run_episode(scene, make_policy("scan", scene.config, scene.truth), oracle(scene))
        if not r.success:
            continue
        far_stops += great_circle_deg(r.stop_pose.theta, r.stop_pose.phi, spec.target_centroid.theta,
                                      spec.target_centroid.phi) >= scene.config.reward.tau_deg
        r_term = terminal_reward(r.final_pose, scene.truth.centroid, r.outcome.iou, scene.config.reward)
        assert r_term > 0
        assert r.reward == pytest.approx(sum(rec.reward for rec in r.records) + r_term)
    assert far_stops > 0  # the case that used to earn the miss penalty occurs here


@pytest.mark.parametrize("name", ["expert", "scan"])
def test_oracle_baselines_succeed_on_the_cube(cube_dataset, name):
    config = SeekConfig()
    for spec in load_dataset(cube_dataset).episodes:
        scene = SimScene(spec, config)
        result = run_episode(scene, make_policy(name, config, scene.truth), oracle(scene))
        assert result.success, (name, spec.id, result.outcome)
        # alignment centres a fully seen target; scan may stop on a partly seen one at the view's edge
        assert result.outcome.final_distance_deg < (2.0 if name == "expert" else config.reward.tau_deg)
        assert result.records[-1].action.to_text().startswith("STOP [")
        if name == "expert":
            assert result.outcome.path_deg / result.outcome.shortest_deg < 1.05
        if name == "scan":
            assert result.steps <= 9


def test_random_policy_is_reproducible(cube_dataset):
    runs = []
    for _ in range(2):
        scene = scene_of(cube_dataset, 1)
        runs.append([r.action.to_text() for r in run_episode(scene, make_policy("random", seed=3),
                                                             oracle(scene)).records])
    assert runs[0] == runs[1]


def test_alignment_centres_the_mask(cube_dataset):
    scene = scene_of(cube_dataset)
    start = Pose(70, 10)  # the whole target (θ≈90) is in the right part of this view
    ep = scene.episode()
    policy, seg = Scripted(Action.stop_at(OracleDetector(scene.truth, INTR).detect(start))), oracle(scene)
    req = ep.start("the label", start)
    while not isinstance(req, Done):
        if isinstance(req, Look) and req.purpose == "align":
            assert great_circle_deg(req.pose.theta, req.pose.phi, 90, 0) < 15
        req = ep.observe(answer(req, scene.camera, policy, seg))
    ys, xs = np.nonzero(req.result.mask)
    assert abs(xs.mean() - INTR.cx) < 40 and abs(ys.mean() - INTR.cy) < 40
    assert 1 <= req.result.looks <= 6 and req.result.message.startswith("aligned in")
    assert max(map(abs, req.result.final_offset_deg)) < 2.0


def test_alignment_can_be_switched_off(cube_dataset):
    config = dataclasses.replace(SeekConfig(), alignment=AlignmentConfig(enabled=False))
    scene = scene_of(cube_dataset, config=config)
    result = run_episode(scene, make_policy("expert", config, scene.truth), oracle(scene))
    assert result.looks == 0 and result.final_pose == result.stop_pose
    assert result.message == "segmented without alignment" and result.found


def test_an_empty_first_mask_ends_without_a_look(cube_dataset):
    scene = scene_of(cube_dataset)

    class Nothing:  # a segmenter that finds nothing in the box
        name = "nothing"

        def segment(self, view, box_px, pose):
            return np.zeros(view.shape[:2], bool)

    result = run_episode(scene, Scripted(Action.stop_at((0, 0, 1000, 1000))), Nothing())
    assert result.looks == 0 and not result.found and result.message == "empty mask: nothing to align"


def test_carried_box_mode_a_target_cut_by_the_border_gets_further_looks_until_centred():
    config = dataclasses.replace(SeekConfig(), alignment=AlignmentConfig(mode="carried-box"))
    scene = SimScene(load_dataset(sample_dataset()).by_id("bedroom-001"), config)  # the wardrobe: 82° tall
    start = Pose(120, -30)  # its top is cut off here
    box = OracleDetector(scene.truth, INTR).detect(start)
    ep = scene.episode()
    req = ep.start("the wardrobe", start)
    policy, seg = Scripted(Action.stop_at(box)), oracle(scene)
    while not isinstance(req, Done):
        req = ep.observe(answer(req, scene.camera, policy, seg))
    r = req.result
    assert 2 <= r.looks <= 3 and r.final_pose == r.path[-1]
    c = scene.truth.centroid
    assert great_circle_deg(r.final_pose.theta, r.final_pose.phi, c.theta, c.phi) < 2.0


class CountingBatch:
    """Wraps a policy; decides a list of observations in one call and counts the calls."""

    name = "batched"

    def __init__(self, inner):
        self.inner, self.calls, self.sizes = inner, 0, []

    def act(self, obs):
        return self.inner.act(obs)

    def act_batch(self, observations):
        self.calls += 1
        self.sizes.append(len(observations))
        return [self.inner.act(o) for o in observations]


def _trace(result):
    return ([r.action.to_text() for r in result.records], [p.as_dict() for p in result.path],
            int(result.mask.sum()), result.reward, [r.action.to_text() for r in result.reviews])


def test_lockstep_gives_what_one_at_a_time_gives_and_batches_decisions(cube_dataset):
    specs = load_dataset(sample_dataset()).episodes[:4] + load_dataset(cube_dataset).episodes
    alone = []
    for spec in specs:
        scene = SimScene(spec)
        alone.append(_trace(run_episode(scene, make_policy("random", seed=5), oracle(scene))))
    shared = CountingBatch(make_policy("random", seed=5))
    scenes = [SimScene(s) for s in specs]
    together = run_lockstep(scenes, [shared] * len(scenes), [oracle(s) for s in scenes])
    assert [_trace(r) for r in together] == alone
    # review turns are decisions too, batched in the same rounds
    assert shared.sizes[0] == len(specs) and shared.calls == max(len(t[0]) + len(t[4]) for t in alone)
    assert sum(shared.sizes) == sum(len(t[0]) + len(t[4]) for t in alone)


def test_lockstep_expert_matches_run_episode(cube_dataset):
    specs = load_dataset(sample_dataset()).episodes[:3]
    alone = [_trace(run_episode(s, make_policy("expert", s.config, s.truth), oracle(s)))
             for s in (SimScene(x) for x in specs)]
    scenes = [SimScene(x) for x in specs]
    together = run_lockstep(scenes, [make_policy("expert", s.config, s.truth) for s in scenes],
                            [oracle(s) for s in scenes])
    assert [_trace(r) for r in together] == alone


def test_oracle_backends_need_the_ground_truth():
    from panoseeker_ros.core.config import ConfigError

    with pytest.raises(ConfigError, match="reads the simulated scene's ground truth"):
        make_policy("expert")
    with pytest.raises(ConfigError, match="segmenter oracle reads"):
        make_segmenter("oracle")


def test_rotate_view_mask_matches_reprojection(cube_dataset):
    scene = scene_of(cube_dataset)
    a, b = Pose(60, 0), Pose(90, 15)
    in_a = project_erp_mask(scene.truth.mask, a, INTR)
    moved = rotate_view_mask(in_a, a, b, INTR)
    in_b = project_erp_mask(scene.truth.mask, b, INTR)
    both = in_b & (rotate_view_mask(np.ones_like(in_a), a, b, INTR))  # only what view a could see
    assert (moved & both).sum() / (moved | both).sum() > 0.95


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for mask in (rng.random((17, 34)) > 0.5, np.ones((4, 8), bool), np.zeros((4, 8), bool)):
        assert np.array_equal(decode_rle(encode_rle(mask)), mask)


def test_move_request_is_relative_and_saturates_at_the_official_pitch_limit(cube_dataset):
    scene = scene_of(cube_dataset)
    scene.camera.look(170, 80)
    frame = shoot(scene.camera, Move(30, 30))
    assert frame.pose == Pose(-160, 89.9)  # the simulator clamps elevation to ±89.9°, as the official environment
    assert shoot(scene.camera, Look(Pose(0, -90))).pose == Pose(0, -89.9)


def test_official_alignment_converges_within_5_centring_moves_on_every_sample_episode():
    """Move to the STOP mask's centroid, then centre while the tracked centroid is >= 2° off on either axis."""
    config = SeekConfig()
    assert (config.alignment.mode, config.alignment.centering_moves, config.alignment.tolerance_deg) == ("track", 5, 2.0)
    for spec in load_dataset(sample_dataset()).episodes:
        scene = SimScene(spec, config)
        r = run_episode(scene, make_policy("expert", config, scene.truth), oracle(scene))
        assert r.box is not None and 1 <= r.looks <= 6, spec.id
        assert all(abs(v) < 2.0 for v in r.final_offset_deg), (spec.id, r.final_offset_deg)
        # every move is recorded with the offset that made it, and counts in the path P
        assert [m["move"] for m in r.alignment] == list(range(1, r.looks + 1))
        assert all(max(map(abs, m["offset_deg"])) >= 2.0 for m in r.alignment[1:]), spec.id
        assert r.path[-r.looks:] == [Pose(**m["to"]) for m in r.alignment]
        before = r.path[:-r.looks]
        assert r.outcome.path_deg > sum(great_circle_deg(a.theta, a.phi, b.theta, b.phi)
                                        for a, b in zip(before, before[1:]))


class LosesTheObject:
    """An oracle segmenter whose tracker loses the object after ``keep`` tracked views."""

    name = "losing"

    def __init__(self, inner, keep: int):
        self.inner, self.keep, self.tracked = inner, keep, 0

    def segment(self, view, box_px, pose):
        return self.inner.segment(view, box_px, pose)

    def track(self, view, pose):
        self.tracked += 1
        mask = self.inner.track(view, pose)
        return mask if self.tracked <= self.keep else np.zeros_like(mask)


@pytest.mark.parametrize("keep", [0, 1])
def test_official_alignment_stops_when_the_object_is_lost_and_keeps_the_last_good_mask(keep):
    scene = SimScene(load_dataset(sample_dataset()).by_id("bedroom-001"))
    start = Pose(120, -30)  # the wardrobe's top is cut off: it takes more than one move to centre
    seg = LosesTheObject(oracle(scene), keep)
    ep = scene.episode()
    req = ep.start("the wardrobe", start)
    policy = Scripted(Action.stop_at(OracleDetector(scene.truth, INTR).detect(start)))
    masks = []
    while not isinstance(req, Done):
        got = answer(req, scene.camera, policy, seg)
        if isinstance(req, (Segment, Track)):
            masks.append((got, req.frame))
        req = ep.observe(got)
    r = req.result
    assert r.looks == keep + 1 and seg.tracked == keep + 1  # no move after the object was lost
    good_mask, good_frame = masks[-2]
    assert good_mask.any() and np.array_equal(r.mask, good_mask) and r.frame is good_frame
    assert "lost after alignment move" in r.message and r.found
    assert r.final_pose == r.path[-1] != good_frame.pose  # the camera made the move on which the object was lost
    assert len(r.alignment) == keep + 1 and r.score.outcome.iou > 0.5


def test_a_segmenter_that_cannot_track_is_refused_with_one_line(cube_dataset):
    scene = scene_of(cube_dataset)

    class BoxOnly:
        name = "box-only"

        def segment(self, view, box_px, pose):
            return oracle(scene).segment(view, box_px, pose)

    with pytest.raises(ValueError, match="cannot track an object; set alignment.mode: carried-box"):
        run_episode(scene, make_policy("expert", scene.config, scene.truth), BoxOnly())
