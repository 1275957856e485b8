"""The learning ladder, short (bench/learning.py runs it long): on held-out scenes, SFT beats the best
instruction-blind policy by a margin, GRPO from it does not fall below it, and the same check fails for
a model trained on answers shuffled across prompts (one that cannot use the instruction)."""
from __future__ import annotations

import json

import pytest
import torch

from panoseeker_ros.cli import main
from panoseeker_ros.models.qwen_policy import QwenPolicy
from panoseeker_ros.models.tiny import build_tiny_qwen
from panoseeker_ros.training.grpo import train_grpo
from panoseeker_ros.training.ladder import (blind_ceiling, demonstration_boxes, direction_task, evaluate_policy,
                                            ladder_config, sft_data, shuffle_answers, tiny_settings)
from panoseeker_ros.training.sft import train_sft

torch.set_num_threads(1)  # two shared cores: one thread each is faster than two contending

MARGIN = 0.25  # SR above the instruction-blind ceiling that counts as following the instruction
SFT_STEPS, GRPO_UPDATES = 900, 32


LADDER_YAML = """\
/**:
  ros__parameters:
    camera: {width: 128, height: 96}
    episode: {max_steps: %d, canvas_width: 256, canvas_height: 128}
    reward: {tau_deg: %r}
    segmentation: {max_refinements: %d}
"""


def follows_instruction(sr: float, ceiling: float) -> bool:
    return sr >= ceiling + MARGIN


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    config = ladder_config()
    model = build_tiny_qwen(root / "qwen")
    settings = tiny_settings()
    train = direction_task(root / "train", 24, seed=1)
    held = direction_task(root / "heldout", 8, seed=2)
    data = sft_data(train, root / "train-data", config)
    # every target is one lattice move away, so one-move sequences reach every heading that can succeed
    ceiling = blind_ceiling(held, config, demonstration_boxes(data, most=1), max_moves=1)

    def sr(adapter) -> dict:
        return evaluate_policy(QwenPolicy.from_pretrained(model=model, adapter=adapter, fov_deg=config.camera.fov_deg),
                               held, config)

    def sr_through_eval(adapter) -> float:  # the user's path: panoseeker eval --policy qwen --adapter
        (root / "seek.yaml").write_text(LADDER_YAML % (config.episode.max_steps, config.reward.tau_deg,
                                                        config.segmentation.max_refinements))
        assert main(["eval", "--dataset", str(held), "--policy", "qwen", "--model", str(model), "--adapter",
                     str(adapter), "--config", str(root / "seek.yaml"), "--out", str(root / "eval-sft"), "--quiet"]) == 0
        return json.loads((root / "eval-sft" / "summary.json").read_text())["sr"]

    train_sft(data, model, root / "sft", settings, config, max_steps=SFT_STEPS)
    train_sft(shuffle_answers(data, root / "shuffled", seed=0), model, root / "control", settings, config,
              max_steps=SFT_STEPS)
    history = train_grpo(train, model, root / "grpo", settings, config, adapter=root / "sft" / "adapter",
                         max_steps=GRPO_UPDATES)
    rows = {"ceiling": ceiling["sr"], "sft": sr_through_eval(root / "sft" / "adapter"),
            "control": sr(root / "control" / "adapter")["sr"],
            "grpo": sr(f"{root / 'sft' / 'adapter'},{root / 'grpo' / 'adapter'}")["sr"]}
    return rows, history


def test_sft_follows_the_instruction_and_a_prompt_blind_control_does_not(ladder, capsys):
    rows, _ = ladder
    with capsys.disabled():
        print(f"\nladder (held-out SR): instruction-blind ceiling {rows['ceiling']:.3f}, SFT {rows['sft']:.3f}, "
              f"shuffled-answers control {rows['control']:.3f}, SFT+GRPO {rows['grpo']:.3f}")
    assert rows["ceiling"] <= 0.5
    assert follows_instruction(rows["sft"], rows["ceiling"])
    assert not follows_instruction(rows["control"], rows["ceiling"])


def test_grpo_from_the_sft_adapter_does_not_fall_below_it(ladder):
    rows, history = ladder
    assert len(history) == GRPO_UPDATES and all(h["kl"] >= 0 for h in history)
    assert rows["grpo"] >= rows["sft"]
