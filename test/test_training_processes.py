"""More than one process (two CPU processes, gloo): train-sft and train-grpo run; two processes follow
one process's SFT loss curve at the same global batch; the accelerate launch configs load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from panoseeker_ros.cli import main
from panoseeker_ros.models.tiny import build_tiny_qwen
from test_training_sft import TINY_TRAINING_YAML
from training_fixtures import simple_task, small_config

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"
STEPS = 12
TOLERANCE = 1e-3  # relative: gradient all-reduce and local accumulation sum in another order


def _launch(processes: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``processes`` CPU processes. accelerate's own launcher starts one process for ``--cpu`` (several
    only through mpirun), so the processes come from torchrun, whose environment accelerate reads."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "true"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes), "-m", "panoseeker_ros.cli"] + args
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("procs")
    model = build_tiny_qwen(root / "qwen")
    seek = small_config(root / "small.yaml")
    simple_task(root / "task", 4, seed=1)
    assert main(["make-sft-data", "--dataset", str(root / "task"), "--out", str(root / "data"),
                 "--config", str(seek)]) == 0
    # two decisions (a MOVE and a STOP): a global batch of 2 is the whole set, whatever order each process
    # draws, so one process and two see the same decisions at every step
    (root / "pair").mkdir()
    lines = (root / "data" / "records.jsonl").read_text().splitlines()
    (root / "pair" / "records.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (root / "pair" / "images").symlink_to(root / "data" / "images", target_is_directory=True)
    return root, model, seek


def _yaml(root: Path, accumulation: int) -> Path:
    path = root / f"t{accumulation}.yaml"
    path.write_text(TINY_TRAINING_YAML.replace("gradient_accumulation: 1", f"gradient_accumulation: {accumulation}")
                    .replace("logging_steps: 10", "logging_steps: 1")
                    .replace("beta: 0.04}", "beta: 0.04, save_steps: 0}"))
    return path


def test_two_processes_follow_one_process_sft_loss_curve_at_the_same_global_batch(task, capsys):
    root, model, seek = task
    curves = {}
    for processes, accumulation in ((1, 2), (2, 1)):  # global batch 2 decisions per optimizer step
        out = root / f"sft-{processes}"
        run = _launch(processes, ["train-sft", "--data", str(root / "pair"), "--model", str(model), "--out", str(out),
                                  "--max-steps", str(STEPS), "--config", str(_yaml(root, accumulation)),
                                  "--seek-config", str(seek), "--quiet"], root)
        assert run.returncode == 0, run.stderr[-2000:]
        curves[processes] = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    with capsys.disabled():
        print(f"\nSFT loss, 1 process × accumulation 2: {[round(v, 4) for v in curves[1]]}"
              f"\nSFT loss, 2 processes × accumulation 1: {[round(v, 4) for v in curves[2]]}")
    assert len(curves[1]) == len(curves[2]) == STEPS
    assert curves[1][0] != curves[1][-1]  # it trains
    for a, b in zip(curves[1], curves[2]):
        assert abs(a - b) <= TOLERANCE * max(1.0, abs(a))


def test_train_grpo_runs_in_two_processes_with_one_log_line_per_update(task):
    root, model, seek = task
    out = root / "grpo-2"
    run = _launch(2, ["train-grpo", "--dataset", str(root / "task"), "--model", str(model), "--out", str(out),
                      "--max-steps", "2", "--config", str(_yaml(root, 1)), "--seek-config", str(seek), "--quiet"], root)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in lines] == [1, 2] and all(h["groups"] == 2 for h in lines)
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_the_launch_configs_load_and_name_layers_of_the_model():
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    for name in ("deepspeed_zero2", "fsdp", "single_gpu"):
        cfg = load_config_from_file(str(ROOT / "config" / "accelerate" / f"{name}.yaml"))
        assert cfg.num_processes >= 1
        if name == "fsdp":
            for cls in cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
                assert hasattr(modeling_qwen3_vl, cls), cls  # FSDP wraps layers that exist
        if name == "deepspeed_zero2":
            assert cfg.deepspeed_config["zero_stage"] == 2
