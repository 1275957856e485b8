"""Supervised fine-tuning on demonstration records (``make-sft-data``), with ``transformers.Trainer``.

The loss is −Σ log p(a_t | V_t, M_t, I) over the answer tokens only (the action and its end token),
summed over the tokens of a decision and averaged over decisions: :meth:`QwenPolicy.logprobs` scores the answer ids after the prompt of
:meth:`QwenPolicy.encode` (the inference prompt, one builder), with the output layer run only at the
answer positions. LoRA (:func:`.modeling.trainable_policy`) on the language model; AdamW, cosine schedule
with warm-up, gradient accumulation, checkpoints and resume, precision and multi-GPU (``accelerate
launch`` with DeepSpeed ZeRO-2 or FSDP) are the Trainer's.

Why Trainer and not TRL's SFTTrainer: what SFTTrainer adds is dataset preparation (the chat template
and the processor tokenizing text and images, assistant-only masks) and its loss and metrics on the full
logits; here the inputs must be the policy's own encoding and token ids, and logits only at the answer
positions, so all of that would be replaced and Trainer is what remains.

Files in the run directory: ``metrics.jsonl`` (one JSON object per logged step: ``step``, ``loss``,
``lr``, ``epoch``), ``checkpoints/checkpoint-N`` (resumable) and ``adapter/`` (PEFT, for ``eval
--policy qwen --adapter RUN/adapter`` and the policy node's ``adapter`` parameter).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..core.config import SeekConfig
from .demonstrations import DataError, load_records, record_action, record_observation
from .modeling import precision_dtype, trainable_policy
from .settings import TrainingSettings


class DecisionDataset(torch.utils.data.Dataset):
    """Records of a data directory; an item is one decision's encoded prompt and answer ids (CPU)."""

    def __init__(self, records: list[dict], root, policy, max_sequence: int):
        self.records, self.root, self.policy, self.max_sequence = records, Path(root), policy, max_sequence
        self._answers: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def answer_ids(self, rec: dict) -> list[int]:
        text = rec["answer"]
        if text not in self._answers:  # the demonstration's text, tokenized once
            self._answers[text] = self.policy.answer_ids(text)
        return self._answers[text]

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        enc = self.policy.encode(self.policy.prompt(record_observation(rec, self.root)), device="cpu")
        answer = self.answer_ids(rec)
        if enc.length + len(answer) > self.max_sequence:
            raise DataError(f"record {rec['id']} needs {enc.length + len(answer)} tokens, more than "
                            f"sft.max_sequence={self.max_sequence}; raise it or lower the images' max_pixels")
        item = {"input_ids": enc.input_ids, "mm_token_type_ids": enc.mm_token_type_ids,
                "answer_ids": torch.tensor([answer], dtype=torch.long)}
        if enc.pixel_values is not None:
            item.update(pixel_values=enc.pixel_values, image_grid_thw=enc.image_grid_thw)
        return item


def one_decision(features: list[dict]) -> dict:
    """The data collator: one decision per forward pass (its images set the sequence layout)."""
    if len(features) != 1:
        raise ValueError(f"sft.per_device_batch is {len(features)}; it must be 1 (use gradient_accumulation "
                         f"for larger effective batches)")
    return features[0]


def answer_nll(policy, batch: dict, model=None) -> torch.Tensor:
    """−Σ log p(answer tokens) of one encoded decision (a scalar tensor): summed over its tokens as in
    the method's loss, so a long STOP box and a short MOVE weigh each of their tokens alike."""
    from ..models.qwen_policy import EncodedPrompt

    enc = EncodedPrompt(batch["input_ids"], batch["mm_token_type_ids"], batch.get("pixel_values"),
                        batch.get("image_grid_thw"))
    return -policy.logprobs(enc, batch["answer_ids"][0].tolist(), grammar=False, model=model).sum()


def _trainer_class():
    from transformers import Trainer, TrainerCallback

    class AnswerTrainer(Trainer):
        def __init__(self, *args, policy=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.policy = policy
            self.model_accepts_loss_kwargs = False  # the loss is per decision; Trainer averages over accumulation

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = answer_nll(self.policy, inputs, model=model)
            return (loss, None) if return_outputs else loss

    class MetricsLog(TrainerCallback):
        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                line = {"step": state.global_step, "loss": float(logs["loss"]),
                        "lr": float(logs.get("learning_rate", 0.0)), "epoch": float(logs.get("epoch", 0.0))}
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")

    return AnswerTrainer, MetricsLog


def train_sft(data_dir, model: str, out, settings: TrainingSettings | None = None, config: SeekConfig | None = None,
              max_steps: int | None = None, resume: bool = False, progress: bool = False):
    """Fine-tune a LoRA adapter on the records of ``data_dir``; returns the trained policy (eval mode)."""
    from transformers import TrainingArguments

    settings = settings or TrainingSettings()
    config = config or SeekConfig()
    s = settings.sft
    records = load_records(data_dir)
    out = Path(out)
    if (out / "metrics.jsonl").exists() and not resume:
        raise DataError(f"{out} holds a training run already; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    from accelerate import PartialState

    device = PartialState().device  # this process's device under accelerate launch (not every process on GPU 0)
    from transformers import set_seed

    set_seed(s.seed)  # before the LoRA weights are drawn: a seed gives one run
    policy = trainable_policy(model, settings.lora, config, memory=s.memory, precision=s.precision,
                              device=str(device))
    dtype = precision_dtype(s.precision)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=s.per_device_batch,
        gradient_accumulation_steps=s.gradient_accumulation, learning_rate=s.learning_rate,
        weight_decay=s.weight_decay, lr_scheduler_type=s.lr_scheduler, warmup_steps=s.warmup_ratio,
        num_train_epochs=s.epochs, max_steps=s.max_steps if max_steps is None else int(max_steps),
        logging_steps=s.logging_steps, save_steps=s.save_steps, save_total_limit=s.save_total_limit,
        seed=s.seed, data_seed=s.seed, report_to=[], remove_unused_columns=False, dataloader_num_workers=0,
        disable_tqdm=not progress, use_cpu=not torch.cuda.is_available(),
        bf16=dtype == torch.bfloat16 and torch.cuda.is_available(), fp16=dtype == torch.float16)
    AnswerTrainer, MetricsLog = _trainer_class()
    dataset = DecisionDataset(records, data_dir, policy, s.max_sequence)
    trainer = AnswerTrainer(model=policy.model, args=args, train_dataset=dataset, data_collator=one_decision,
                            callbacks=[MetricsLog(out / "metrics.jsonl")], policy=policy)
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*")) if resume else []
    trainer.train(resume_from_checkpoint=True if checkpoints else None)
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(out / "adapter"))
    policy.model = trainer.model
    policy.model.eval()
    policy.clear_cache()
    return policy


@torch.no_grad()
def answer_metrics(policy, records: list[dict], root) -> dict:
    """Held-out evaluation: ``loss`` (mean answer NLL per token, teacher-forced) and ``accuracy`` (the
    share of decisions where the policy's own decoder answers exactly the demonstrated action), and the
    ``actions`` it answered, in record order."""
    losses, actions = [], []
    for rec in records:
        obs = record_observation(rec, root)
        enc = policy.encode(policy.prompt(obs))
        ids = policy.answer_ids(rec["answer"])
        losses.append(float(-policy.logprobs(enc, ids, grammar=False).mean()))
        actions.append(policy.act(obs).action)
    n = max(len(records), 1)
    hits = sum(a == record_action(rec) for a, rec in zip(actions, records))
    return {"loss": sum(losses) / n if losses else math.nan, "accuracy": hits / n, "n": len(records),
            "actions": actions}
