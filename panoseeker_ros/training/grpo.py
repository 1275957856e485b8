"""Multi-turn GRPO on the simulator, through the same Episode stepper and lockstep driver as ``eval``.

One update:

1. rollouts: G copies of one dataset episode run in lockstep (``core.environment.run_lockstep``) with
   one shared sampling policy (grammar-constrained, ``decoding="sample"``), so each round's G
   observations are decided together; every decision keeps its prompt ids, answer ids and their
   log-probabilities after the top-p cut (``Decision.info``), and its observation (the images);
2. returns: each trajectory's r = Σ R_eff + R_term from core (``EpisodeResult.reward``), advantage
   A_i = (r_i − mean) / (std + 1e-4) within the group, the same for every turn of trajectory i;
3. loss per turn: −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) + β·KL per answer token, with
   ρ = exp(log π − log π_old) (π_old: the sampling log-probs) and the k3 estimator
   KL = exp(log π_ref − log π) − (log π_ref − log π) − 1; the reference π_ref is the model with the RL
   adapter switched off (the merged SFT model, or the base model without ``--adapter``), scored once
   per turn. ``loss_normalisation``: ``turn`` (default) averages each turn over its tokens and the turns
   of the group with equal weight; ``token`` averages over every answer token of the group (a long STOP
   box then weighs more than a short MOVE). Each turn is scored by :meth:`QwenPolicy.logprobs` on
   exactly the sampled token ids after the re-encoded prompt, which is checked against the stored ids.
   The review turns after STOP (ACCEPT | REFINE | MOVE, ``EpisodeResult.reviews``) are turns like the
   others, scored in the review grammar: the return they share charges each refinement and pays the
   final IoU.
4. ``num_iterations`` (μ) optimizer steps on those rollouts: the first starts at ρ = 1, the later ones
   from moved weights, where the ε-clip acts (``clip`` in the log: the share of clipped tokens).

Memory: the loss is a sum over turns, so each turn is backpropagated as soon as it is scored
(gradients accumulate in the adapter's ``.grad``); a step holds one turn's graph, not a trajectory's
(:func:`saved_activation_peak` measures it). Dropout is off in every pass (rollouts, ratios, KL), so ρ
is exactly 1 at unchanged weights.

``accelerate`` handles devices, precision and DDP from its launch config (gradients are synchronised
on the last turn of each optimizer step only); each process rolls out its own episodes. Logs per
update in ``RUN/metrics.jsonl``: ``step``, ``reward`` (mean return of the group), ``sr``, ``steps``,
``kl``, ``clip``, ``loss``, ``lr``. The adapter is saved to ``RUN/adapter``; every ``save_steps``
updates ``RUN/checkpoints/update-N`` holds the adapter (only: never the base weights) and the state
that makes a resumed run the same as an uninterrupted one (optimizer, scheduler, the sampler's
generator, the episode-order generator, global RNGs), of which the newest ``save_total_limit`` are kept.
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
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

    ``resume``: continue from the newest ``RUN/checkpoints/update-N`` exactly as the run would have gone
    on (its metrics lines after N are dropped and written again)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    settings = settings or TrainingSettings()
    config = config or SeekConfig()
    g = settings.grpo
    if g.group_size < 2:
        raise ValueError(f"grpo.group_size={g.group_size}: a group needs at least 2 rollouts to compare")
    if g.num_iterations < 1:
        raise ValueError(f"grpo.num_iterations={g.num_iterations}: give 1 or more optimizer steps per update")
    if g.loss_normalisation not in LOSS_NORMALISATIONS:
        raise ValueError(f"grpo.loss_normalisation={g.loss_normalisation!r}; choose one of "
                         f"{', '.join(LOSS_NORMALISATIONS)}")
    dataset = dataset_path if isinstance(dataset_path, Dataset) else load_dataset(dataset_path)  # or a loaded one
    out = Path(out)
    if (out / "metrics.jsonl").exists() and not resume:
        raise DataError(f"{out} holds a training run already; pass --resume to continue it or choose another --out")
    steps = g.max_steps if max_steps is None else int(max_steps)
    accelerator = Accelerator()
    set_seed(g.seed)
    policy = trainable_policy(model, settings.lora, config, memory=g.memory, merged_adapter=adapter,
                              precision=g.precision, device=str(accelerator.device), decoding="sample",
                              temperature=g.temperature, top_p=g.top_p, seed=g.seed + accelerator.process_index)
    params = trainable_parameters(policy.model)
    optimizer = torch.optim.AdamW(params, lr=g.learning_rate, weight_decay=g.weight_decay)
    wrapped, optimizer = accelerator.prepare(policy.model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, g.warmup_steps)))
    peft_model = accelerator.unwrap_model(wrapped)
    shared_segmenter = None
    if segmenter != "oracle":
        from ..models.registry import make_segmenter

        shared_segmenter = make_segmenter(segmenter, config, **({"model": sam_model} if sam_model else {}))
    episodes = dataset.episodes[accelerator.process_index::accelerator.num_processes] or dataset.episodes
    order = np.random.default_rng([g.seed, accelerator.process_index])
    done = 0
    if resume:
        saved = checkpoints(out)
        if saved:
            done = load_checkpoint(saved[-1], peft_model, optimizer, scheduler, policy, order,
                                   accelerator.process_index)
        if accelerator.is_main_process and (out / "metrics.jsonl").exists():
            kept = [line for line in (out / "metrics.jsonl").read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= done]
            (out / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
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
        stats = grpo_step(policy, wrapped, peft_model, accelerator, optimizer, params, results,
                          group_advantages(rewards), g)
        scheduler.step()
        metrics = _gather(accelerator, update, results, rewards, stats, scheduler.get_last_lr()[0])
        history.append(metrics)
        if accelerator.is_main_process:
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
            if on_update is not None:
                on_update(metrics)
        if g.save_steps and update % g.save_steps == 0:
            save_checkpoint(out / "checkpoints" / f"update-{update}", peft_model, optimizer, scheduler, policy, order,
                            accelerator, g.save_total_limit)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        peft_model.save_pretrained(str(out / "adapter"))
    peft_model.eval()
    policy.clear_cache()
    return history


LOSS_NORMALISATIONS = ("turn", "token")


def grpo_step(policy, wrapped, peft_model, accelerator, optimizer, params, results, advantages, g) -> dict:
    """The optimisation of one update: ``g.num_iterations`` optimizer steps on the group's turns, each
    turn backpropagated as soon as it is scored (module docstring). Returns the update's statistics."""
    turns = [(rec, float(a)) for result, a in zip(results, advantages)
             for rec in result.records + result.reviews]  # review turns are optimised too
    peft_model.eval()  # dropout off: ratio and KL compare the sampler's function with itself
    total_tokens = sum(len(rec.info["token_ids"]) for rec, _ in turns)
    scored = []
    for rec, advantage in turns:
        enc = policy.encode(policy.prompt(rec.observation))
        if enc.input_ids[0].tolist() != rec.info["prompt_ids"]:
            raise RuntimeError("the prompt re-encoded for training differs from the one sampled on; "
                               "the prompt builder or encoder is not deterministic")
        tokens = rec.info["token_ids"]
        old = torch.tensor(rec.info["logprobs"], dtype=torch.float32, device=enc.input_ids.device)
        with torch.no_grad(), peft_model.disable_adapter():
            ref = policy.logprobs(enc, tokens, grammar=True, temperature=g.temperature, model=peft_model, top_p=g.top_p,
                                  turn=rec.observation.turn)  # a search or a review turn: its own grammar
        weight = 1.0 / len(turns) if g.loss_normalisation == "turn" else len(tokens) / total_tokens
        scored.append((enc, tokens, old, ref, advantage, weight, rec.observation.turn))
    stats = {"kl": [], "clip": [], "loss": 0.0}
    for _ in range(g.num_iterations):
        for k, (enc, tokens, old, ref, advantage, weight, turn) in enumerate(scored):
            sync = contextlib.nullcontext() if k == len(scored) - 1 else accelerator.no_sync(wrapped)
            with sync:
                new = policy.logprobs(enc, tokens, grammar=True, temperature=g.temperature, model=wrapped, top_p=g.top_p,
                                      turn=turn)
                loss, s = turn_loss(new, old, ref, advantage, g.epsilon, g.beta)
                accelerator.backward(loss * weight)
            stats["kl"].append(s["kl"])
            stats["clip"].append(s["clip"])
            stats["loss"] += float(loss.detach()) * weight / g.num_iterations
        if g.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, g.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    return stats


# ---------------------------------------------------------------------------------------------
# Checkpoints: the adapter and the training state, never the base weights.


def checkpoints(out) -> list[Path]:
    """A run's checkpoint directories, oldest first."""
    return sorted((Path(out) / "checkpoints").glob("update-*"), key=lambda d: int(d.name[7:]))


def save_checkpoint(path: Path, peft_model, optimizer, scheduler, policy, order, accelerator, keep: int) -> None:
    """The adapter (main process) and each process's training state; then only the newest ``keep``."""
    path.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        peft_model.save_pretrained(str(path))
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "sampler": policy.generator.get_state(), "order": order.bit_generator.state,
             "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save(state, path / f"state-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and keep > 0:
        for old in checkpoints(path.parent.parent)[:-keep]:
            shutil.rmtree(old)


def load_checkpoint(path: Path, peft_model, optimizer, scheduler, policy, order, process: int) -> int:
    """Restore a checkpoint into the run's objects; returns its update number."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(str(path / "adapter_model.safetensors")))
    state = torch.load(path / f"state-{process}.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    policy.generator.set_state(state["sampler"])
    order.bit_generator.state = state["order"]
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    return int(path.name[7:])


def saved_activation_peak(fn) -> tuple[object, int]:
    """Run ``fn()`` and return (its result, the most bytes of tensors autograd held for backward at
    once): the activation memory of a training step, measured the same way on any device."""
    live, peak = [0], [0]

    def pack(t):
        size = t.untyped_storage().nbytes() if t.device.type != "meta" else 0
        live[0] += size
        peak[0] = max(peak[0], live[0])
        return _Held(t, size, live)

    def unpack(held):
        return held.tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        result = fn()
    return result, peak[0]


class _Held:
    """A tensor autograd saved, counted in ``live`` until the graph that holds it is freed."""

    def __init__(self, tensor, size: int, live: list):
        self.tensor, self.size, self.live = tensor, size, live

    def __del__(self):
        self.live[0] -= self.size


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
