"""Segmentation as an agent: VBR (verify point prompts by looking) and review turns (ACCEPT | REFINE | MOVE)."""
import dataclasses

import numpy as np
import pytest

from panoseeker_ros.core.actions import Action, format_action, lattice_moves, parse_action
from panoseeker_ros.core.config import ConfigError, SeekConfig, config_from_dict
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, answer, run_episode
from panoseeker_ros.core.episode import Decide, Decision, Done, Segment, Verify
from panoseeker_ros.core.geometry import project_erp_mask
from panoseeker_ros.core.verification import PointVotes, candidate_points, draw_marker
from panoseeker_ros.models.action_decoding import ActionGrammar
from panoseeker_ros.models.baselines import BOX_NOISE, PerturbedStops, perturb_box
from panoseeker_ros.models.registry import make_policy, make_segmenter
from panoseeker_ros.paths import sample_dataset


def config(**segmentation) -> SeekConfig:
    cfg = SeekConfig()
    cfg.segmentation = dataclasses.replace(cfg.segmentation, **segmentation)
    return cfg


def drive(scene, policy, segmenter):
    """Run one episode; returns (result, the requests in order)."""
    episode = scene.episode()
    req, seen = scene.start(episode), []
    while not isinstance(req, Done):
        seen.append(req)
        req = episode.observe(answer(req, scene.camera, policy, segmenter))
    return req.result, seen


class Recording:
    """Wraps a segmenter; keeps the point prompts of every call."""

    name = "recording"

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def segment(self, view, box_px, pose, points=None, labels=None):
        self.calls.append((points, labels))
        return self.inner.segment(view, box_px, pose)

    def track(self, view, pose):
        return self.inner.track(view, pose)


# -- the one grammar, two turns ------------------------------------------------------------------


def test_review_answers_parse_on_a_review_turn_and_are_refused_on_a_search_turn():
    assert parse_action("ACCEPT", "review").action == Action.accept_mask()
    assert parse_action("I think REFINE [10, 20, 300, 400] fits", "review").action == Action.refine_to((10, 20, 300, 400))
    assert parse_action("MOVE +60 0", "review").action == Action.move(60, 0)
    for text, turn, words in (("ACCEPT", "search", "answers a review turn"), ("STOP [1, 2, 3, 4]", "review",
                                                                             "answers a search turn"),
                              ("REFINE", "review", "needs a box"), ("REFINE [5, 5, 5, 9]", "review", "is empty"),
                              ("REFINE [0, 0, 10, 1200]", "review", "within 0..1000"), ("nothing", "review", "ACCEPT")):
        result = parse_action(text, turn)
        assert not result.ok and words in result.error and "\n" not in result.error
    assert not parse_action(None, "review").ok and not parse_action("ACCEPT", "verify").ok  # never raises
    for action in (Action.accept_mask(), Action.refine_to((1, 2, 30, 40))):
        assert parse_action(format_action(action), "review").action == action


def test_review_grammar_writes_only_review_answers():
    g = ActionGrammar("review")
    assert g.complete("ACCEPT") and g.complete("REFINE [1, 2, 3, 4]") and g.extendable("REFINE [1, 2")
    assert not g.viable("STOP") and not ActionGrammar("search").viable("ACCEPT")
    for word in g.words:
        assert parse_action(word, "review").ok, word
    assert all(g.complete(format_action(m)) for m in lattice_moves())


# -- VBR: candidates, the 2+1 early stop, aggregation -------------------------------------------------


def test_candidates_alternate_certain_foreground_and_background_inside_the_box():
    mask = np.zeros((200, 300), bool)
    mask[50:150, 100:200] = True
    box = (60.0, 20.0, 260.0, 180.0)
    points = candidate_points(mask, box, 6)
    assert len(points) == 6
    on = [bool(mask[int(y), int(x)]) for x, y in points]
    assert on == [True, False] * 3  # foreground first, alternating
    assert all(box[0] <= x < box[2] and box[1] <= y < box[3] for x, y in points)
    first = np.array(points[0])
    assert np.hypot(*(first - (150, 100))) < 20  # the most certain foreground point: deep inside the mask
    gaps = [np.hypot(*(np.array(a) - b)) for i, a in enumerate(points) for b in points[i + 1:]]
    assert min(gaps) >= np.hypot(200, 160) / 6 - 1  # spread out
    # an empty mask: a grid over the box stands in for the missing side
    grid = candidate_points(np.zeros((200, 300), bool), box, 6)
    assert len(grid) == 6 and all(box[0] <= x < box[2] and box[1] <= y < box[3] for x, y in grid)


def test_votes_stop_at_two_positives_and_one_negative_and_choose_the_best_combination():
    votes = PointVotes(0.7)
    votes.add([(1, 1), (2, 2), (3, 3)], [0.9, 0.5, 0.95])
    assert not votes.enough  # two positives, no negative yet
    votes.add([(4, 4), (5, 5)], [0.1, 0.8])
    assert votes.enough
    points, labels = votes.chosen()
    assert points == [(3.0, 3.0), (1.0, 1.0), (4.0, 4.0)] and labels == [1, 1, 0]
    assert votes.agreement() == pytest.approx((0.95 + 0.9 + 0.9) / 3)
    unsure = PointVotes(0.7)
    unsure.add([(1, 1)], [0.05])
    assert unsure.chosen() == ([], []) and unsure.agreement() is None  # a negative alone says nothing
    with pytest.raises(ValueError, match="P\\(yes\\)"):
        unsure.add([(1, 1)], [1.5])


def test_draw_marker_changes_pixels_only_near_the_point():
    view = np.zeros((100, 120, 3), np.uint8)
    marked = draw_marker(view, (60, 50))
    changed = np.argwhere(marked.any(axis=2))
    assert len(changed) and np.abs(changed - (50, 60)).max() <= 8 and not view.any()


def test_vbr_asks_in_rounds_and_prompts_the_segmenter_with_the_points_the_oracle_confirms():
    cfg = config(point_prompts="vbr", max_refinements=0, vbr_batch=2)
    scene = SimScene(load_dataset(sample_dataset()).episodes[0], cfg)
    seg = Recording(make_segmenter("oracle", cfg, scene.truth))
    result, seen = drive(scene, make_policy("expert", cfg, scene.truth), seg)
    rounds = [r for r in seen if isinstance(r, Verify)]
    assert rounds and all(len(r.points) <= 2 for r in rounds)
    (record,) = result.verification
    assert len(record["points"]) == len(record["confidences"]) == sum(len(r.points) for r in rounds)
    assert len(record["points"]) < cfg.segmentation.vbr_candidates  # the 2+1 early stop ended the questions
    visible = project_erp_mask(scene.truth.mask, rounds[0].frame.pose, scene.intrinsics)
    on = [bool(visible[int(y), int(x)]) for x, y in record["chosen"]]
    assert record["labels"] == [1, 1, 0] and on == [True, True, False]  # the oracle's truth: on the mask or not
    points, labels = seg.calls[-1]  # the STOP view's last segmentation: the box and the chosen points
    assert np.allclose(points, record["chosen"], atol=0.01) and labels == [1, 1, 0]
    assert result.as_dict()["verification"] == result.verification
    # the control that ignores the view: no opinion (0.5) on every point, so nothing is chosen
    plain = make_policy("expert", cfg, scene.truth)
    blind_seg = Recording(make_segmenter("oracle", cfg, scene.truth))
    blind, _ = drive(SimScene(scene.spec, cfg), NoVerify(plain), blind_seg)
    assert blind.verification[0]["chosen"] == [] and all(c == 0.5 for c in blind.verification[0]["confidences"])
    assert all(points is None for points, _ in blind_seg.calls)  # the box alone
    assert len(blind.verification[0]["points"]) == cfg.segmentation.vbr_candidates  # no early stop without answers


class NoVerify:
    """A policy that cannot answer VBR questions (the control)."""

    name = "no-verify"

    def __init__(self, inner):
        self.inner = inner

    def act(self, obs):
        return self.inner.act(obs)


# -- review turns: ACCEPT | REFINE | MOVE ----------------------------------------------------------------


def _first_and_final(result):
    first = result.reviews[0].info["mask_iou"] if result.reviews else None
    return first, result.outcome.iou


def test_the_expert_refines_wrong_first_boxes_and_the_cost_is_charged_per_refinement():
    specs = load_dataset(sample_dataset()).episodes[:6]
    on, off, free, blind = [], [], [], []
    for spec in specs:
        for cfg, out in ((config(), on), (config(max_refinements=0), off), (config(refinement_cost=0.0), free)):
            scene = SimScene(spec, cfg)
            out.append(run_episode(scene, PerturbedStops(make_policy("expert", cfg, scene.truth), seed=1),
                                   make_segmenter("oracle", cfg, scene.truth)))
        scene = SimScene(spec, config())
        blind.append(run_episode(scene, PerturbedStops(AlwaysAccept(make_policy("expert", scene.config, scene.truth)),
                                                       seed=1), make_segmenter("oracle", scene.config, scene.truth)))
    wrong = [r for r in on if r.reviews and r.reviews[0].info["mask_iou"] < 0.5]
    assert len(wrong) >= 2  # the noise made wrong first masks
    assert all(r.refinements >= 1 and r.outcome.iou >= 0.5 and r.success for r in wrong)
    assert all(r.reviews[-1].action.accept for r in on)
    assert sum(r.success for r in on) > sum(r.success for r in off)  # refinement beats no refinement ...
    assert sum(r.success for r in blind) == sum(r.success for r in off)  # ... and a reviewer that always accepts
    for a, b in zip(on, free):
        assert a.refinements == b.refinements and a.reward == pytest.approx(b.reward - 0.05 * a.refinements)
    line = wrong[0].as_dict()
    assert line["refinements"] >= 1 and line["reviews"][0]["action"].startswith("REFINE")
    assert line["reviews"][0]["mask_pixels"] >= 0 and "mask_iou" in line["reviews"][0]


class AlwaysAccept:
    name = "always-accept"

    def __init__(self, inner):
        self.inner = inner

    def act(self, obs):
        if obs.review is not None:
            return Decision(Action.accept_mask(), "ACCEPT")
        return self.inner.act(obs)


class Reviewer:
    """Searches like the expert, answers every review turn with ``answer``."""

    name = "reviewer"

    def __init__(self, inner, answer: Action):
        self.inner, self.answer = inner, answer

    def act(self, obs):
        if obs.review is not None:
            return Decision(self.answer, self.answer.to_text())
        return self.inner.act(obs)


def test_refinements_stop_at_the_limit_and_the_last_mask_is_final():
    cfg = config(max_refinements=2)
    scene = SimScene(load_dataset(sample_dataset()).episodes[0], cfg)
    result, seen = drive(scene, Reviewer(make_policy("expert", cfg, scene.truth), Action.refine_to((100, 100, 900, 900))),
                         make_segmenter("oracle", cfg, scene.truth))
    assert result.refinements == 2 and len(result.reviews) == 2 and [r.step for r in result.reviews] == [1, 2]
    segments = [r for r in seen if isinstance(r, Segment) and r.look == 0]
    assert len(segments) == 3 and result.box == (100, 100, 900, 900)
    none = config(max_refinements=0)
    scene = SimScene(scene.spec, none)
    result, seen = drive(scene, make_policy("expert", none, scene.truth), make_segmenter("oracle", none, scene.truth))
    assert not result.reviews and not any(isinstance(r, Decide) and r.observation.review for r in seen)


def test_a_review_move_sends_the_search_on():
    cfg = config(max_refinements=1)
    scene = SimScene(load_dataset(sample_dataset()).episodes[0], cfg)
    result, seen = drive(scene, Reviewer(make_policy("expert", cfg, scene.truth), Action.move(180, 0)),
                         make_segmenter("oracle", cfg, scene.truth))
    assert result.reviews[0].action == Action.move(180, 0) and result.refinements == 1
    at = next(i for i, r in enumerate(seen) if isinstance(r, Decide) and r.observation.review)
    assert type(seen[at + 1]).__name__ == "Move"
    assert result.records[-1].action.stop and result.steps > 1  # the expert found its way back and stopped again
    assert len(result.path) > len(result.records)


def test_baselines_answer_review_turns_and_questions():
    cfg = config(point_prompts="vbr")
    scene = SimScene(load_dataset(sample_dataset()).episodes[1], cfg)
    for name in ("scan", "random"):
        policy = make_policy(name, cfg, scene.truth, seed=3)
        result, _ = drive(SimScene(scene.spec, cfg), policy, make_segmenter("oracle", cfg, scene.truth))
        assert all(r.action.accept or r.action.refine or r.action.is_move for r in result.reviews)
        assert all(0.0 <= c <= 1.0 for v in result.verification for c in v["confidences"])


def test_box_noise_kinds_make_wrong_boxes():
    rng = np.random.default_rng(0)
    box = (400, 300, 600, 700)
    for kind in BOX_NOISE:
        wrong = perturb_box(box, kind, rng)
        assert wrong != box and 0 <= wrong[0] < wrong[2] <= 1000 and 0 <= wrong[1] < wrong[3] <= 1000
    with pytest.raises(ValueError, match="unknown box noise"):
        perturb_box(box, "rotated", rng)


@pytest.mark.parametrize("section, fix", [({"point_prompts": "maybe"}, "none, entropy, vbr"),
                                          ({"max_refinements": -1}, "0 or more"),
                                          ({"vbr_threshold": 0.2}, "[0.5, 1]")])
def test_bad_segmentation_settings_are_one_line_errors(section, fix):
    with pytest.raises(ConfigError, match=fix.replace("[", "\\[").replace("]", "\\]")) as info:
        config_from_dict({"segmentation": section})
    assert "\n" not in str(info.value) and "segmentation." in str(info.value)


# -- the Qwen policy: the same weights answer review turns and VBR questions ------------------------------


@pytest.fixture(scope="module")
def qwen():
    from models_fixtures import tiny_model_dirs
    from panoseeker_ros.models.qwen_policy import QwenPolicy

    return QwenPolicy.from_pretrained(model=tiny_model_dirs()["qwen"])


def review_observations(n=3):
    """Review-turn observations: the expert's perturbed first boxes on the sample's first episodes."""
    out = []
    for spec in load_dataset(sample_dataset()).episodes[:n]:
        scene = SimScene(spec, config())
        policy = PerturbedStops(make_policy("expert", scene.config, scene.truth), seed=1)
        seg = make_segmenter("oracle", scene.config, scene.truth)
        episode = scene.episode()
        req = scene.start(episode)
        while not (isinstance(req, Decide) and req.observation.review is not None):
            req = episode.observe(answer(req, scene.camera, policy, seg))
        out.append(req.observation)
    return out


def test_qwen_answers_review_turns_in_the_review_grammar(qwen):
    from panoseeker_ros.core.visualize import review_picture

    for obs in review_observations():
        prompt = qwen.prompt(obs)
        assert np.array_equal(prompt.images[0], review_picture(obs.view, obs.review.mask, obs.review.box))
        assert "ACCEPT" in prompt.messages[0]["content"] and not np.array_equal(prompt.images[0], obs.view)
        decision = qwen.act(obs)
        assert parse_action(decision.text, "review").action == decision.action and not decision.action.stop
        enc = qwen.encode(prompt)
        fast, slow = qwen.answer(enc, "constrained", "review"), qwen.answer(enc, "generate-constrained", "review")
        assert fast.tokens == slow.tokens  # the draft-trie decoder, review grammar included
        scored = qwen.logprobs(enc, fast.tokens, turn="review")
        assert scored.shape == (len(fast.tokens),) and bool((scored <= 0).all())


def test_an_unparseable_review_answer_accepts_the_mask(qwen, monkeypatch):
    from panoseeker_ros.models.qwen_policy import Answer

    obs = review_observations(1)[0]
    monkeypatch.setattr(qwen, "answer", lambda encoded, how, turn="search": Answer("STOP [1, 2, 3, 4]", [], {}))
    decision = qwen.act(obs)  # a search answer on a review turn does not parse there
    assert decision.action == Action.accept_mask() and decision.parse_failures == 1
    assert "answers a search turn" in decision.info["parse_error"]


def test_qwen_verifies_points_in_one_batched_pass(qwen):
    obs = review_observations(1)[0]
    points = [(100.0, 100.0), (512.0, 384.0), (900.0, 700.0)]
    together = qwen.verify(obs.view, obs.pose, obs.instruction, points)
    alone = [qwen.verify(obs.view, obs.pose, obs.instruction, [p])[0] for p in points]
    assert np.allclose(together, alone, atol=1e-5) and all(0.0 < c < 1.0 for c in together)
    assert len(set(np.round(together, 7))) == 3  # the marker reaches the model: each point has its own answer
    assert qwen.verify(obs.view, obs.pose, obs.instruction, []) == []
