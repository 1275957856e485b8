"""Multi-turn GRPO on the tiny model: group advantages, the clipped loss, the reference, resume, memory.

Whether GRPO helps the policy follow the instruction is the learning ladder's question
(test_learning_ladder.py, bench/learning.py)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from panoseeker_ros.cli import main
from panoseeker_ros.core.actions import Action, parse_action
from panoseeker_ros.core.config import load_config
from panoseeker_ros.models.qwen_policy import QwenPolicy
from panoseeker_ros.models.tiny import build_tiny_qwen
from panoseeker_ros.training.grpo import group_advantages, turn_loss
from panoseeker_ros.training.modeling import trainable_parameters, trainable_policy
from panoseeker_ros.training.settings import load_training_settings
from models_fixtures import observations
from panoseeker_ros.paths import sample_dataset
from test_training_sft import TINY_TRAINING_YAML
from training_fixtures import simple_task, small_config

torch.set_num_threads(1)  # two shared cores: one thread each is faster than two contending



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    model = build_tiny_qwen(root / "qwen-tiny", seed=0)
    (root / "training.yaml").write_text(TINY_TRAINING_YAML)
    simple_task(root / "task", 4, seed=1)
    return root, model, small_config(root / "small.yaml", max_steps=3)


def test_group_advantages_are_standardised_within_the_group():
    a = group_advantages([1.0, 2.0, 3.0, 6.0])
    assert abs(a.mean()) < 1e-9 and abs(a.std() - 1) < 1e-3 and np.argmax(a) == 3
    assert np.allclose(group_advantages([0.5] * 8), 0)  # a group that agrees teaches nothing


def test_turn_loss_clips_the_ratio_and_its_kl_vanishes_at_the_reference():
    old = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    new = torch.log(torch.tensor([0.5, 0.9, 0.2]))  # ratios 1, 1.8, 0.4
    loss, s = turn_loss(new, old, new.clone(), advantage=1.0, epsilon=0.2, beta=0.1)
    assert s["clip"] == pytest.approx(2 / 3) and s["kl"] == pytest.approx(0.0)
    assert loss.item() == pytest.approx(-(1 + 1.2 + 0.4) / 3)  # min(ρA, clip(ρ)A) per token, averaged
    _, s = turn_loss(new, old, old, advantage=1.0, epsilon=0.2, beta=0.1)
    assert s["kl"] > 0


def test_the_reference_is_the_merged_sft_model_with_the_rl_adapter_off(setup, tmp_path):
    root, model, seek = setup
    from peft import LoraConfig, get_peft_model

    lora = load_training_settings(root / "training.yaml").lora
    base = QwenPolicy.from_pretrained(model=model)
    torch.manual_seed(3)
    sft = get_peft_model(QwenPolicy.from_pretrained(model=model).model,
                         LoraConfig(r=4, lora_alpha=4, target_modules=lora.target_modules))
    for name, p in sft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    sft.save_pretrained(str(tmp_path / "sft"))
    merged = QwenPolicy.from_pretrained(model=model, adapter=tmp_path / "sft")
    rl = trainable_policy(str(model), lora, load_config(None), merged_adapter=tmp_path / "sft")
    for p in rl.model.parameters():  # a trained RL adapter: the policy moves away from the reference
        if p.requires_grad:
            p.data.normal_(0, 0.5)
    obs = observations(sample_dataset(), moves=())[0]
    ids = base.answer_ids("MOVE +60 0")
    with torch.no_grad():
        ref = [p.logprobs(p.encode(p.prompt(obs)), ids) for p in (base, merged)]
        with rl.model.disable_adapter():
            off = rl.logprobs(rl.encode(rl.prompt(obs)), ids)
        on = rl.logprobs(rl.encode(rl.prompt(obs)), ids)
    assert torch.allclose(off, ref[1], atol=1e-5)  # the SFT model ...
    assert not torch.allclose(off, ref[0], atol=1e-3)  # ... not the base model
    assert not torch.allclose(on, off, atol=1e-3)
    out = tmp_path / "rl"  # train-grpo on top of the SFT adapter: its first update is at the reference
    assert main(["train-grpo", "--dataset", str(root / "task"), "--model", str(model), "--adapter",
                 str(tmp_path / "sft"), "--out", str(out), "--max-steps", "1", "--config", str(root / "training.yaml"),
                 "--seek-config", str(seek), "--quiet"]) == 0
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["kl"] < 1e-6 and first["clip"] == 0.0
    both = QwenPolicy.from_pretrained(model=model, adapter=f"{tmp_path / 'sft'},{out / 'adapter'}")  # as eval loads it
    assert parse_action(both.act(obs).text).ok


def test_a_resumed_run_is_the_uninterrupted_run_and_checkpoints_hold_only_the_adapter(setup, tmp_path):
    root, model, seek = setup
    (tmp_path / "t.yaml").write_text(TINY_TRAINING_YAML.replace("beta: 0.04}", "beta: 0.04, temperature: 3.0, save_steps: 1, "
                                                                "save_total_limit: 2}"))
    args = ["--dataset", str(root / "task"), "--model", str(model), "--config", str(tmp_path / "t.yaml"),
            "--seek-config", str(seek), "--quiet"]
    assert main(["train-grpo", "--out", str(tmp_path / "straight"), "--max-steps", "4"] + args) == 0
    assert main(["train-grpo", "--out", str(tmp_path / "resumed"), "--max-steps", "2"] + args) == 0
    assert main(["train-grpo", "--out", str(tmp_path / "resumed"), "--max-steps", "4"] + args) == 2  # never overwritten
    assert main(["train-grpo", "--out", str(tmp_path / "resumed"), "--max-steps", "4", "--resume"] + args) == 0
    lines = {k: [json.loads(x) for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
             for k in ("straight", "resumed")}
    assert [h["step"] for h in lines["resumed"]] == [1, 2, 3, 4]
    assert lines["resumed"] == lines["straight"]  # rewards, losses, KL, clip: the same run
    assert any(h["reward"] != lines["straight"][0]["reward"] for h in lines["straight"])  # the updates differ
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / k / "adapter" / "adapter_model.safetensors")) for k in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    kept = sorted(d.name for d in (tmp_path / "straight" / "checkpoints").iterdir())
    assert kept == ["update-3", "update-4"]  # keep-last 2
    ckpt = tmp_path / "straight" / "checkpoints" / "update-4"
    assert (ckpt / "adapter_config.json").is_file() and (ckpt / "state-0.pt").is_file()
    base = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    assert not any("model.safetensors" == f.name for f in ckpt.iterdir())  # no copy of the base weights
    assert (ckpt / "state-0.pt").stat().st_size < base


def _trajectory(sampler, obs_list):
    """A rollout-like result: one sampled decision per observation, with its observation and info."""
    records = []
    for obs in obs_list:
        d = sampler.act(obs)
        records.append(SimpleNamespace(observation=obs, info=d.info))
    return SimpleNamespace(records=records, reviews=[])


def test_a_grpo_step_holds_one_turns_activations_whatever_the_number_of_turns(setup, capsys):
    """Peak autograd memory of an update at T = 2 and T = 8 turns per trajectory (G = 2), against the
    same loss backpropagated once per trajectory (the graph of every turn held at once)."""
    from accelerate import Accelerator

    from panoseeker_ros.training.grpo import grpo_step, saved_activation_peak
    from panoseeker_ros.training.settings import TrainingSettings

    root, model, seek = setup
    settings = load_training_settings(root / "training.yaml")
    g = TrainingSettings().grpo
    g.num_iterations, g.group_size = 1, 2
    policy = trainable_policy(str(model), settings.lora, load_config(seek), decoding="sample", seed=3)
    obs_list = observations(sample_dataset(), moves=[Action.move(30, 0)] * 7)[:8]
    accelerator = Accelerator()
    params = trainable_parameters(policy.model)
    optimizer = torch.optim.AdamW(params, lr=0.0)
    peaks, whole = {}, {}
    for t in (2, 8):
        group = [_trajectory(policy, obs_list[:t]) for _ in range(2)]
        _, peaks[t] = saved_activation_peak(lambda: grpo_step(policy, policy.model, policy.model, accelerator,
                                                              optimizer, params, group, [1.0, -1.0], g))

        def one_backward():
            loss = 0
            for result, a in zip(group, (1.0, -1.0)):
                for rec in result.records:
                    enc = policy.encode(policy.prompt(rec.observation))
                    new = policy.logprobs(enc, rec.info["token_ids"])
                    loss = loss + turn_loss(new, new.detach(), new.detach(), a, 0.2, 0.04)[0]
            loss.backward()
            optimizer.zero_grad()

        _, whole[t] = saved_activation_peak(one_backward)
    with capsys.disabled():
        print(f"\nGRPO step, peak autograd memory: T=2 {peaks[2] / 2**20:.1f} MiB, T=8 {peaks[8] / 2**20:.1f} MiB "
              f"(backward per turn); one backward per trajectory: T=2 {whole[2] / 2**20:.1f} MiB, "
              f"T=8 {whole[8] / 2**20:.1f} MiB")
    assert peaks[8] < 1.25 * peaks[2]  # one turn's graph, whatever T
    assert whole[8] > 3 * peaks[8]  # the control: holding every turn grows with T
