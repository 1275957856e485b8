"""Multi-turn GRPO on the simulator, through the same Episode stepper and lockstep driver as ``eval``.

One update:

1. rollouts: G copies of one dataset episode run in lockstep (``core.environment.run_lockstep``) with
   one shared sampling policy (grammar-constrained, ``decoding="sample"``), so each round's G
   observations are decided together; every decision keeps its prompt ids, answer ids and their
   log-probabilities (``Decision.info``), and its observation (the images);
2. returns: each trajectory's r = Σ R_eff + R_term from core (``EpisodeResult.reward``), advantage
   A_i = (r_i − mean) / (std + 1e-4) within the group, the same for every turn of trajectory i;
3. loss per turn, averaged over its answer tokens: −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) + β·KL, with
   ρ = exp(log π − log π_old) (π_old: the sampling log-probs) and the k3 estimator
   KL = exp(log π_ref − log π) − (log π_ref − log π) − 1; the reference π_ref is the model with the RL
   adapter switched off (the merged SFT model, or the base model without ``--adapter``); turns are
   averaged over the group. Each turn is scored by :meth:`QwenPolicy.logprobs` on exactly the sampled
   token ids after the re-encoded prompt, which is checked against the stored prompt ids. The review
   turns after STOP (ACCEPT | REFINE | MOVE, ``EpisodeResult.reviews``) are turns like the others, scored
   in the review grammar: the return they share charges each refinement and pays the final IoU.

Gradients accumulate per trajectory (G backward passes, one optimizer step per update), with
``accelerate`` handling devices, precision, DDP, DeepSpeed ZeRO-2 or FSDP from its launch config; each
process rolls out its own episodes. Logs per update in ``RUN/metrics.jsonl``: ``step``, ``reward``
(mean return of the group), ``sr``, ``steps``, ``kl``, ``clip``, ``loss``, ``lr``. The adapter is saved
to ``RUN/adapter`` (and ``RUN/checkpoints/update-N`` every ``save_steps``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..core.config import SeekConfig
from ..core.dataset import Dataset, load_dataset
from ..core.environment import SimScene, run_lockstep
from .demonstrations import DataError
from .modeling import trainable_parameters, trainable_policy
from .settings import TrainingSettings


def group_advantages(rewards) -> np.ndarray:
    """(G,) returns → (G,) advantages (r − mean) / (std + 1e-4); all zero when the group agrees."""
    r = np.asarray(rewards, dtype=np.float64)
    return (r - r.mean()) / (r.std() + 1e-4)


def turn_loss(new: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, advantage: float, epsilon: float,
              beta: float) -> tuple[torch.Tensor, dict]:
    """One turn's loss (a scalar) from per-token log-probs (n,) of the policy, the sampler and the reference."""
    ratio = torch.exp(new - old)
    surrogate = torch.minimum(ratio * advantage, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * advantage)
    delta = ref - new
    kl = torch.exp(delta) - delta - 1
    loss = (-surrogate + beta * kl).mean()
    clipped = ((ratio < 1 - epsilon) | (ratio > 1 + epsilon)).float().mean()
    return loss, {"kl": float(kl.detach().mean()), "clip": float(clipped)}


def _segmenter(name: str, config: SeekConfig, truth, shared):
    from ..models.registry import make_segmenter

    return shared if shared is not None else make_segmenter(name, config, truth)


def train_grpo(dataset_path, model: str, out, settings: TrainingSettings | None = None,
               config: SeekConfig | None = None, adapter=None, max_steps: int | None = None,
               segmenter: str = "oracle", sam_model=None, on_update=None, resume: bool = False):
    """Train an RL LoRA adapter with GRPO on the episodes of ``dataset_path``; returns the metrics list.

    ``resume``: continue from the newest ``RUN/checkpoints/update-N`` (adapter, optimizer, scheduler and
    random states); the episode order after it is drawn afresh from the seed and N."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    settings = settings or TrainingSettings()
    config = config or SeekConfig()
    g = settings.grpo
    if g.group_size < 2:
        raise ValueError(f"grpo.group_size={g.group_size}: a group needs at least 2 rollouts to compare")
    dataset = dataset_path if isinstance(dataset_path, Dataset) else load_dataset(dataset_path)  # or a loaded one
    out = Path(out)
    if (out / "metrics.jsonl").exists() and not resume:
        raise DataError(f"{out} holds a training run already; pass --resume to continue it or choose another --out")
    steps = g.max_steps if max_steps is None else int(max_steps)
    accelerator = Accelerator(gradient_accumulation_steps=g.group_size)
    set_seed(g.seed)
    policy = trainable_policy(model, settings.lora, config, memory=g.memory, merged_adapter=adapter,
                              precision=g.precision, device=str(accelerator.device), decoding="sample",
                              temperature=g.temperature, top_p=g.top_p, seed=g.seed + accelerator.process_index)
    params = trainable_parameters(policy.model)
    optimizer = torch.optim.AdamW(params, lr=g.learning_rate, weight_decay=g.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, g.warmup_steps)))
    wrapped, optimizer, scheduler = accelerator.prepare(policy.model, optimizer, scheduler)
    peft_model = accelerator.unwrap_model(wrapped)
    shared_segmenter = None
    if segmenter != "oracle":
        from ..models.registry import make_segmenter

        shared_segmenter = make_segmenter(segmenter, config, **({"model": sam_model} if sam_model else {}))
    episodes = dataset.episodes[accelerator.process_index::accelerator.num_processes] or dataset.episodes
    done = 0
    if resume:
        saved = sorted((out / "checkpoints").glob("update-*/state"), key=lambda d: int(d.parent.name[7:]))
        if saved:
            accelerator.load_state(str(saved[-1]))
            done = int(saved[-1].parent.name[7:])
    order = np.random.default_rng([g.seed, accelerator.process_index, done])
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    history = []
    for update in range(done + 1, steps + 1):
        spec = episodes[int(order.integers(len(episodes)))]
        scenes = [SimScene(spec, config) for _ in range(g.group_size)]
        policy.model = peft_model
        peft_model.eval()
        policy.clear_cache()
        results = run_lockstep(scenes, [policy] * g.group_size,
                               [_segmenter(segmenter, config, s.truth, shared_segmenter) for s in scenes])
        rewards = [r.reward for r in results]
        advantages = group_advantages(rewards)
        turns = sum(len(r.records) + len(r.reviews) for r in results)  # review turns are optimised too
        peft_model.train()
        stats = {"kl": [], "clip": [], "loss": 0.0}
        for result, advantage in zip(results, advantages):
            with accelerator.accumulate(wrapped):
                loss = torch.zeros((), device=accelerator.device)
                for rec in result.records + result.reviews:
                    loss = loss + _turn(policy, wrapped, peft_model, rec, float(advantage), g, stats) / turns
                # accelerate divides by the accumulation steps (G); the update is the mean over turns
                accelerator.backward(loss * g.group_size)
                stats["loss"] += float(loss.detach())
                if accelerator.sync_gradients and g.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, g.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        metrics = _gather(accelerator, update, results, rewards, stats, scheduler.get_last_lr()[0])
        history.append(metrics)
        if accelerator.is_main_process:
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
            if on_update is not None:
                on_update(metrics)
        if g.save_steps and update % g.save_steps == 0:
            accelerator.save_state(str(out / "checkpoints" / f"update-{update}" / "state"))
            if accelerator.is_main_process:
                peft_model.save_pretrained(str(out / "checkpoints" / f"update-{update}"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        peft_model.save_pretrained(str(out / "adapter"))
    peft_model.eval()
    policy.clear_cache()
    return history


def _turn(policy, wrapped, peft_model, rec, advantage: float, g, stats) -> torch.Tensor:
    """The loss of one decision of a rollout (its sampled tokens scored again, with gradients)."""
    info = rec.info
    enc = policy.encode(policy.prompt(rec.observation))
    if enc.input_ids[0].tolist() != info["prompt_ids"]:
        raise RuntimeError("the prompt re-encoded for training differs from the one sampled on; "
                           "the prompt builder or encoder is not deterministic")
    tokens = info["token_ids"]
    old = torch.tensor(info["logprobs"], dtype=torch.float32, device=enc.input_ids.device)
    turn = rec.observation.turn  # a search or a review turn: scored in its own grammar
    new = policy.logprobs(enc, tokens, grammar=True, temperature=g.temperature, model=wrapped, turn=turn)
    with torch.no_grad(), peft_model.disable_adapter():
        ref = policy.logprobs(enc, tokens, grammar=True, temperature=g.temperature, model=peft_model, turn=turn)
    loss, s = turn_loss(new, old, ref, advantage, g.epsilon, g.beta)
    stats["kl"].append(s["kl"])
    stats["clip"].append(s["clip"])
    return loss


def _gather(accelerator, update: int, results, rewards, stats, lr: float) -> dict:
    """The update's log line, over every process's groups."""
    local = torch.tensor([[float(np.mean(rewards)), float(np.mean([bool(r.success) for r in results])),
                           float(np.mean([r.steps for r in results])),
                           float(np.mean(stats["kl"])) if stats["kl"] else 0.0,
                           float(np.mean(stats["clip"])) if stats["clip"] else 0.0, stats["loss"]]],
                         device=accelerator.device)
    m = accelerator.gather(local).mean(0).tolist()
    return {"step": update, "reward": m[0], "sr": m[1], "steps": m[2], "kl": m[3], "clip": m[4], "loss": m[5],
            "lr": float(lr), "groups": accelerator.num_processes}


def mean_reward(history: list[dict], first: int, last: int) -> float:
    """Mean group reward over updates [first, last) of a history (1-based steps)."""
    values = [h["reward"] for h in history if first <= h["step"] < last]
    return float(np.mean(values)) if values else math.nan
