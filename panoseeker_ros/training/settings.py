"""Training settings: dataclasses with the method's defaults (METHOD.md), loadable from one YAML.

``config/training.yaml`` holds three sections, ``lora``, ``sft`` and ``grpo``; any key left out keeps
the default below. The environment (camera, episode length, rewards) comes from the ROS parameter YAML
of :mod:`panoseeker_ros.core.config`, as for ``panoseeker eval``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.config import ConfigError
from ..core.config import _fill as fill_section  # the one checker of YAML sections

# The language model's linear layers of Qwen3-VL (the vision tower and the output layer stay frozen).
LANGUAGE_LINEAR = r"^model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$"


@dataclass
class LoraSettings:
    r: int = 64
    alpha: int = 64
    dropout: float = 0.05
    target_modules: str = LANGUAGE_LINEAR  # a regular expression over module names (PEFT full match)


@dataclass
class SFTSettings:
    """Supervised fine-tuning: METHOD.md (AdamW 2e-4, wd 0.1, cosine, 3% warm-up, 3 epochs, effective
    batch 16 = 1 per device × accumulation 4 × 4 GPUs, 4,096 tokens)."""

    learning_rate: float = 2e-4
    weight_decay: float = 0.1
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    epochs: float = 3.0
    per_device_batch: int = 1  # one decision (its images are variable-sized) per forward pass
    gradient_accumulation: int = 4
    max_sequence: int = 4096  # tokens, prompt and answer
    max_steps: int = -1  # optimizer steps; -1: the epochs decide
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int = 2
    memory: str = "egosphere"
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp16 | bf16 | fp32
    seed: int = 0


@dataclass
class GRPOSettings:
    """Multi-turn GRPO (METHOD.md: G = 8, ε = 0.2, 6,000 steps, KL weight β to the SFT reference)."""

    group_size: int = 8  # G rollouts of one (scene, instruction) per update
    epsilon: float = 0.2  # ratio clip
    beta: float = 0.04  # KL weight to the reference (the SFT model with the RL adapter off)
    num_iterations: int = 2  # μ: optimizer steps on each update's rollouts (from the 2nd on, the clip acts)
    loss_normalisation: str = "turn"  # turn: each turn's token mean, turns averaged | token: mean over all tokens
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0  # updates
    max_steps: int = 6000  # updates
    temperature: float = 1.0
    top_p: float = 1.0
    max_grad_norm: float = 1.0
    save_steps: int = 500  # 0: no checkpoints
    save_total_limit: int = 2  # checkpoints kept (the newest); each holds the adapter and the training state
    memory: str = "egosphere"
    precision: str = "auto"
    seed: int = 0


@dataclass
class TrainingSettings:
    lora: LoraSettings = field(default_factory=LoraSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)


def _section(cls, values, where: str):
    return cls() if values is None else fill_section(cls, values, where)


def load_training_settings(path=None) -> TrainingSettings:
    """Settings from a training YAML (sections ``lora``, ``sft``, ``grpo``), or the defaults for None."""
    if path is None:
        return TrainingSettings()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist; pass a YAML like config/training.yaml")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"{path} is not valid YAML; fix the syntax there") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must map the sections lora, sft and grpo to settings")
    sections = {f.name: f.default_factory for f in dataclasses.fields(TrainingSettings)}
    for key in doc:
        if key not in sections:
            raise ConfigError(f"{path}: unknown section {key!r}; the sections are {', '.join(sections)}")
    return TrainingSettings(**{name: _section(cls, doc.get(name), f"{path.name}:{name}")
                               for name, cls in sections.items()})
