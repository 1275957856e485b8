"""SFT on the tiny model: make-sft-data → train-sft, its loss, accuracy, log and resume.

The task is test/training_fixtures.py's simple task (the instruction decides between a turn to the
right and one to the left, then a STOP box); held-out scenes come from another seed. Whether the
policy follows the instruction in eval is the learning ladder's question (test_learning_ladder.py).
"""
from __future__ import annotations

import json

import pytest
import torch

from panoseeker_ros.cli import main
from panoseeker_ros.core.config import ConfigError, load_config
from panoseeker_ros.models.tiny import build_tiny_qwen
from panoseeker_ros.training.demonstrations import load_records, record_action
from panoseeker_ros.training.modeling import trainable_policy
from panoseeker_ros.training.settings import TrainingSettings, load_training_settings
from panoseeker_ros.training.sft import answer_metrics
from training_fixtures import simple_task, small_config

torch.set_num_threads(1)  # two shared cores: one thread each is faster than two contending

TINY_TRAINING_YAML = """\
lora:   # the tiny model's random output layer needs adapting too (a real model's does not)
  r: 32
  alpha: 32
  dropout: 0.0
  target_modules: '^model\\.language_model\\.layers\\.\\d+\\.(self_attn\\.(q|k|v|o)_proj|mlp\\.(gate|up|down)_proj)$|^lm_head$'
sft: {learning_rate: 1.0e-2, gradient_accumulation: 1, warmup_ratio: 0.0, logging_steps: 10, save_steps: 100}
grpo: {group_size: 4, learning_rate: 1.0e-3, beta: 0.04}
"""
STEPS = 400


def _sft_run(root, name: str, steps: int, reviews: bool = True):
    """Build the task's train and held-out data with make-sft-data and train on it with train-sft
    (``reviews=False``: searches without the review turn after STOP, so the data are search decisions only)."""
    model = root / "qwen-tiny"
    if not model.exists():
        build_tiny_qwen(model, seed=0)
        (root / "training.yaml").write_text(TINY_TRAINING_YAML)
    seek = small_config(root / f"small-{name}.yaml", reviews=reviews)
    for part, scenes, seed in (("train", 8, 1), ("heldout", 4, 2)):
        simple_task(root / f"{name}-{part}", scenes, seed)
        assert main(["make-sft-data", "--dataset", str(root / f"{name}-{part}"), "--out",
                     str(root / f"{name}-{part}-data"), "--config", str(seek)]) == 0
    assert main(["train-sft", "--data", str(root / f"{name}-train-data"), "--model", str(model), "--out",
                 str(root / f"{name}-run"), "--max-steps", str(steps), "--config", str(root / "training.yaml"),
                 "--seek-config", str(seek), "--quiet"]) == 0
    return model, seek


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("sft")


@pytest.fixture(scope="module")
def trained(root):
    model, seek = _sft_run(root, "turn", STEPS, reviews=False)
    return root, model, seek


def _metrics(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_lowers_heldout_loss_and_raises_exact_action_accuracy(trained, capsys):
    root, model, seek = trained
    config = load_config(seek)
    settings = load_training_settings(root / "training.yaml")
    held = load_records(root / "turn-heldout-data")
    assert not any(rec.get("turn") == "review" for rec in held)  # search decisions only (reviews=False)
    untrained = answer_metrics(trainable_policy(model, settings.lora, config), held, root / "turn-heldout-data")
    from panoseeker_ros.models.qwen_policy import QwenPolicy

    tuned = QwenPolicy.from_pretrained(model=model, adapter=root / "turn-run" / "adapter",
                                       fov_deg=config.camera.fov_deg)
    after = answer_metrics(tuned, held, root / "turn-heldout-data")
    moves = [i for i, rec in enumerate(held) if rec["answer"].startswith("MOVE")]

    def side(metrics):  # MOVE decisions that turn to the instructed side
        return sum(not a.stop and a.dtheta * record_action(held[i]).dtheta > 0
                   for i, a in ((i, metrics["actions"][i]) for i in moves)) / len(moves)

    with capsys.disabled():
        print(f"\nSFT held-out ({after['n']} decisions): answer loss {untrained['loss']:.3f} -> {after['loss']:.3f} "
              f"nats/token, exact-action accuracy {untrained['accuracy']:.2f} -> {after['accuracy']:.2f}, "
              f"first moves to the instructed side {side(untrained):.2f} -> {side(after):.2f}")
    assert after["loss"] < 0.2 * untrained["loss"]
    assert after["accuracy"] >= untrained["accuracy"] + 0.3


def test_train_sft_logs_steps_and_resumes_from_its_checkpoint(trained):
    root, model, seek = trained
    lines = _metrics(root / "turn-run" / "metrics.jsonl")
    assert [m["step"] for m in lines] == list(range(10, STEPS + 1, 10))
    assert all({"step", "loss", "lr"} <= set(m) for m in lines)
    assert lines[0]["lr"] > lines[-1]["lr"]  # cosine decay
    assert (root / "turn-run" / "adapter" / "adapter_config.json").is_file()
    assert main(["train-sft", "--data", str(root / "turn-train-data"), "--model", str(model), "--out",
                 str(root / "turn-run"),
                 "--max-steps", str(STEPS + 20), "--config", str(root / "training.yaml"), "--seek-config", str(seek),
                 "--resume", "--quiet"]) == 0
    assert [m["step"] for m in _metrics(root / "turn-run" / "metrics.jsonl")][-3:] == [STEPS, STEPS + 10, STEPS + 20]


def test_a_bad_training_yaml_is_one_line(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("sft: {learning_rat: 1}\n")
    with pytest.raises(ConfigError, match="unknown setting t.yaml:sft.learning_rat"):
        load_training_settings(bad)
    bad.write_text("sft: {epochs: many}\n")
    with pytest.raises(ConfigError, match="sft.epochs must be a number"):
        load_training_settings(bad)


def test_the_shipped_training_yaml_holds_the_method_defaults():
    from panoseeker_ros.paths import share_dir

    assert load_training_settings(share_dir() / "config" / "training.yaml") == TrainingSettings()
