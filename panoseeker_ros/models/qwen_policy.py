"""Qwen3-VL as a PanoSeeker policy: one observation in, one action (core/actions.py grammar) out.

The model is loaded once and stays resident (bf16 on CUDA, fp32 on CPU, SDPA attention, eval mode).
Each step it reads the prompt of :mod:`.prompting` (the memory variant's images and text) and answers
one action. Two decoders:

* ``decoding="greedy"``: plain ``model.generate(do_sample=False)``, the reference.
* ``decoding="constrained"`` (default): greedy decoding restricted to the action grammar
  (:class:`.action_decoding.ActionGrammar`): at every step the next token is the argmax over the tokens that keep the
  answer a prefix of a valid action. When greedy's own argmax is allowed at every step (its answer is a
  well-formed action) both decoders pick the same tokens, so they answer the same action. It is made
  fast by (1) keeping the key/value cache of the text before the first image (system prompt and
  instruction) from one step of an episode to the next, and (2) draft tries: after each chosen token,
  the token trie of every way the grammar can go on from there (all MOVE spellings after the first
  token; the rest of a box number and its separator) is appended to the cache in ONE forward pass with
  a tree attention mask (each node sees the cache and its ancestors), which gives the next-token logits
  at every node at once. While the greedy choices stay in the trie no further pass is needed; a choice
  outside it is fed with the next draft. A MOVE answer takes two passes (prompt, one trie), a STOP box
  about six. The tokens are always chosen from the logits alone: drafts change the number of passes,
  never the answer (up to floating-point rounding between the batched and the one-token kernels,
  which could only tip an exact near-tie).
* ``decoding="sample"``: grammar-constrained sampling for reinforcement learning: at every token the
  logits of the allowed tokens, divided by ``temperature``, are renormalised (and cut to the ``top_p``
  nucleus) and one token is drawn from the policy's seeded generator. ``Decision.info`` then holds the
  sampled ``token_ids``, their ``logprobs`` (of the distribution drawn from: log-softmax over the
  allowed tokens at ``temperature``, renormalised over the ``top_p`` nucleus; what
  :meth:`QwenPolicy.logprobs` gives with the same ``temperature`` and ``top_p``) and the ``prompt_ids``.

Training reads the same objects: :meth:`QwenPolicy.training_inputs` appends answer token ids to the
inference prompt (never re-tokenized text) and :meth:`QwenPolicy.logprobs` scores given answer ids with
logits computed only at the answer positions.

Parse-failure rule: an answer that does not parse (core.actions.parse_action) is retried ONCE with the
constrained decoder; if that does not parse either, the decision is STOP without a box (the episode
fails). ``Decision.parse_failures`` counts the answers that failed, ``Decision.text`` is the raw text
of the last answer and ``Decision.info["failed_answers"]`` keeps the failed ones. In constrained mode
every answer is in the grammar, so the retry is never needed. A failed answer is never replaced by a
guessed move.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core.actions import TURNS, Action, parse_action
from ..core.episode import Decision, Observation
from ..core.verification import draw_marker
from ..core.geometry import DEFAULT_FOV_DEG
from .action_decoding import ActionGrammar, AnswerTrie, TokenConstraint, number_completions, scan_box, token_pieces
from .loading import TINY_MODELS_FIX, ModelLoadError, load_error, optional_file, placement, resolve_source
from .prompting import ANSWER_NO, ANSWER_YES, Prompt, build_prompt, check_memory, point_prompt, system_prompt

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
DECODINGS = ("constrained", "greedy", "sample")
IMAGE_PAD = "<|image_pad|>"
MAX_ANSWER_TOKENS = 64  # a hard stop for the constrained walk; the longest action is 29 characters


# ---------------------------------------------------------------------------------------------
# Inputs.


@dataclass
class EncodedPrompt:
    """Model inputs of one prompt (batch of one).

    input_ids / mm_token_type_ids: (1, L) (type 1 marks image tokens); pixel_values: (patches,
    3·2·P·P) float32 on the model's device; image_grid_thw: (images, 3) int64 (t, h, w in patches).
    """

    input_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    def generate_kwargs(self) -> dict:
        kw = {"input_ids": self.input_ids, "attention_mask": torch.ones_like(self.input_ids),
              "mm_token_type_ids": self.mm_token_type_ids}
        if self.pixel_values is not None:
            kw.update(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw)
        return kw


@dataclass
class ImageSettings:
    """Qwen-VL image preprocessing: size limits in pixels, patching, normalisation."""

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 65536
    max_pixels: int = 16777216
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    rescale: float = 1 / 255

    @classmethod
    def from_processor(cls, proc) -> "ImageSettings":
        size = proc.size
        get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
        return cls(int(proc.patch_size), int(proc.merge_size), int(proc.temporal_patch_size),
                   int(get("shortest_edge") or get("min_pixels") or cls.min_pixels),
                   int(get("longest_edge") or get("max_pixels") or cls.max_pixels),
                   tuple(float(v) for v in proc.image_mean), tuple(float(v) for v in proc.image_std),
                   float(proc.rescale_factor))

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """Qwen-VL ``smart_resize``: sides multiple of patch·merge, area within [min_pixels, max_pixels]."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        return smart_resize(height, width, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels)


def image_patches(image: np.ndarray, settings: ImageSettings, device) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(H, W, 3) uint8 RGB → (patches, 3·T·P·P) float32 on ``device`` and its (1, h, w) patch grid.

    The layout of transformers' Qwen2-VL image processors (merge blocks contiguous, each patch repeated
    over the temporal axis). Resizing, only when the image is off the size grid, is done on the host
    (area when shrinking, cubic when enlarging); scaling, normalising and patching run on ``device``.
    """
    h, w = image.shape[:2]
    th, tw = settings.target_size(h, w)
    if (th, tw) != (h, w):
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA if th * tw < h * w else cv2.INTER_CUBIC)
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device, non_blocking=True).permute(2, 0, 1).float()
    mean = torch.tensor(settings.mean, device=device).view(3, 1, 1)
    std = torch.tensor(settings.std, device=device).view(3, 1, 1)
    x = (x * settings.rescale - mean) / std
    p, m, t = settings.patch_size, settings.merge_size, settings.temporal_patch_size
    gh, gw = th // p, tw // p
    x = x.reshape(3, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
    x = x.unsqueeze(5).expand(*x.shape[:5], t, p, p)
    return x.reshape(gh * gw, 3 * t * p * p), (1, gh, gw)


# ---------------------------------------------------------------------------------------------
# Loading.


def _chat_template(source: str, tokenizer) -> str:
    """The chat template: chat_template.jinja, else chat_template.json, else the tokenizer's own."""
    for name in ("chat_template.jinja", "chat_template.json"):
        path = optional_file(source, name)
        if path:
            text = path.read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise ModelLoadError(f"{source} has no chat template (chat_template.jinja); copy the one of the base model there")


def adapter_dirs(adapter) -> list:
    """The adapter directories to apply in order: None, one directory, a list, or 'SFT_DIR,RL_DIR'."""
    if not adapter:
        return []
    if isinstance(adapter, (list, tuple)):
        return list(adapter)
    return [part for part in str(adapter).split(",") if part]


def load_adapter(model, adapter, merge: bool = True):
    """Apply a PEFT LoRA adapter directory; merged into the weights by default (no per-step LoRA cost)."""
    path = Path(str(adapter)).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"adapter directory {path} does not exist; pass the directory a training run saved "
                             f"(it holds adapter_config.json)")
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter directory {path} has no adapter_config.json; pass a LoRA adapter saved with "
                             f"PEFT save_pretrained")
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(path))
    except Exception as exc:  # a mismatched adapter raises many kinds of errors
        raise load_error("adapter", path, exc, "was it trained on this base model?") from None
    return peft_model.merge_and_unload() if merge else peft_model


# ---------------------------------------------------------------------------------------------
# The policy.


@dataclass
class Answer:
    """One decoded answer: its text, its token ids and how it was obtained."""

    text: str
    tokens: list[int]
    info: dict = field(default_factory=dict)


class QwenPolicy:
    """Qwen3-VL policy (core Policy protocol). Build with :meth:`from_pretrained`, or around a loaded
    model, tokenizer and :class:`ImageSettings`. Stateless between decisions (the observation carries the
    episode's history), so one policy serves any number of episodes; only the prompt-prefix cache is
    kept, checked token by token, and :meth:`clear_cache` drops it when the weights change."""

    name = "qwen"

    def __init__(self, model, tokenizer, image_settings: ImageSettings, chat_template: str,
                 memory: str = "egosphere", decoding: str = "constrained", max_new_tokens: int = 32,
                 prefix_cache: bool = True, fov_deg=DEFAULT_FOV_DEG, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int = 0):
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}; choose one of {', '.join(DECODINGS)}")
        check_sampling(temperature, top_p)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.generator = torch.Generator().manual_seed(int(seed))  # CPU: the same draws on every device
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.images = image_settings
        self.chat_template = chat_template
        self.memory = check_memory(memory)
        self.decoding = decoding
        self.max_new_tokens = int(max_new_tokens)
        self.prefix_cache = prefix_cache
        self.device = next(model.parameters()).device
        self.image_token_id = int(model.config.image_token_id)
        gen = model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
            eos.add(im_end)
        self.eos_ids = sorted(int(i) for i in eos if i is not None)
        pieces = token_pieces(tokenizer)
        self.constraints = {turn: TokenConstraint(ActionGrammar(turn), pieces, self.eos_ids, self.device)
                            for turn in TURNS}  # search turns and review turns (core/actions.py)
        self.grammar, self.constraint = self.constraints["search"].grammar, self.constraints["search"]
        # everything but the box numbers, per turn
        self._finite_answers = {turn: sorted(c.grammar.words) + [c.grammar.box_open]
                                for turn, c in self.constraints.items()}
        # VBR: the first token of each answer word; P(yes) is the softmax over these two logits
        self.yes_no_ids = tuple(tokenizer(word, add_special_tokens=False)["input_ids"][0]
                                for word in (ANSWER_YES, ANSWER_NO))
        if self.yes_no_ids[0] == self.yes_no_ids[1]:
            raise ModelLoadError(f"the tokenizer starts {ANSWER_YES!r} and {ANSWER_NO!r} with the same token; "
                                 f"a yes/no question cannot be read from one logit pair")
        self._tries: dict[tuple[str, str, int], AnswerTrie | None] = {}
        self.fov_deg = tuple(fov_deg)
        self._prefix: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model=DEFAULT_MODEL, adapter=None, memory: str = "egosphere", device=None, dtype=None,
                        max_new_tokens: int = 32, decoding: str = "constrained", prefix_cache: bool = True,
                        merge_adapter: bool = True, fov_deg=DEFAULT_FOV_DEG, temperature: float = 1.0,
                        top_p: float = 1.0, seed: int = 0) -> "QwenPolicy":
        """Load Qwen3-VL (local directory or hub id) and optionally LoRA adapters, once: ``adapter`` is one
        directory, or several applied in order ('SFT_DIR,RL_DIR' or a list: GRPO's adapter on its SFT one).

        device: "cuda", "cpu", ... (default: CUDA when available); dtype: default bf16 on CUDA, fp32 on CPU.
        """
        check_memory(memory)
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}; choose one of {', '.join(DECODINGS)}")
        check_sampling(temperature, top_p)
        hint = (f"download the weights, e.g. 'hf download {DEFAULT_MODEL} --local-dir DIR', "
                f"and pass --model DIR")
        source = resolve_source(model, "Qwen3-VL model", f"{TINY_MODELS_FIX} or {hint}",
                                no_config_fix=f"pass a directory saved with save_pretrained ({hint})")
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration

        dev, kwargs = placement(device, dtype)
        kwargs["attn_implementation"] = "sdpa"
        try:
            net = Qwen3VLForConditionalGeneration.from_pretrained(source, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source)
            image_processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise load_error("Qwen3-VL model", model, exc, hint) from None
        if dev.type != "cuda":
            net = net.to(dev)
        adapters = adapter_dirs(adapter)
        for i, one in enumerate(adapters):  # SFT then GRPO: the RL adapter was trained on the merged SFT weights
            net = load_adapter(net, one, merge_adapter or i < len(adapters) - 1)
        return cls(net, tokenizer, ImageSettings.from_processor(image_processor), _chat_template(source, tokenizer),
                   memory=memory, decoding=decoding, max_new_tokens=max_new_tokens, prefix_cache=prefix_cache,
                   fov_deg=fov_deg, temperature=temperature, top_p=top_p, seed=seed)

    # -- Policy protocol -----------------------------------------------------------------------

    def clear_cache(self) -> None:
        """Drop the cached prompt prefix (call after changing the weights, e.g. between RL updates)."""
        self._prefix = None

    @torch.inference_mode()
    def act(self, obs: Observation) -> Decision:
        """Decide one step (a search or a review turn, ``obs.turn``); unparseable answers follow the rule in
        the module docstring (on a review turn the fallback accepts the mask)."""
        turn = obs.turn
        encoded = self.encode(self.prompt(obs))
        return self._decision(encoded, self.answer(encoded, self.decoding, turn), turn)

    @torch.inference_mode()
    def act_batch(self, observations) -> list[Decision]:
        """Decide several observations at once (a GRPO group, ``eval --batch``): their prompts are
        left-padded into one batch and prefilled in one forward pass (the images and the long prompt,
        most of a step's work); each answer is then decoded from its own rows of the cache, in order, as
        :meth:`act` decodes it (in its own turn's grammar), so the decisions (and a sampler's draws) are
        those of one by one, up to floating-point rounding between batched and single kernels. ``greedy``
        decodes one by one."""
        observations = list(observations)
        if len(observations) < 2 or self.decoding == "greedy":
            return [self.act(obs) for obs in observations]
        encoded = [self.encode(self.prompt(obs)) for obs in observations]
        states = self._prefill_batch(encoded)
        decode = self._decode_sample if self.decoding == "sample" else self._decode_constrained
        return [self._decision(enc, decode(enc, obs.turn, state), obs.turn)
                for enc, state, obs in zip(encoded, states, observations)]

    def _decision(self, encoded: EncodedPrompt, answer: Answer, turn: str = "search") -> Decision:
        """The Decision of a decoded answer, under the parse-failure rule (module docstring)."""
        failed: list[str] = []
        parsed = parse_action(answer.text, turn)
        if not parsed.ok:
            failed.append(answer.text)
            if self.decoding == "greedy":  # one retry; a grammar-bound answer would come out the same
                answer = self.answer(encoded, "constrained", turn)
                parsed = parse_action(answer.text, turn)
                if not parsed.ok:
                    failed.append(answer.text)
        fallback = Action.stop_at(None) if turn == "search" else Action.accept_mask()
        action = parsed.action if parsed.ok else fallback
        info = dict(answer.info, failed_answers=failed, token_ids=list(answer.tokens))
        if self.decoding == "sample":
            info["prompt_ids"] = encoded.input_ids[0].tolist()
        if not parsed.ok:
            info["parse_error"] = parsed.error
        return Decision(action, answer.text, len(failed), info)

    # -- prompt and inputs ---------------------------------------------------------------------

    def prompt(self, obs: Observation) -> Prompt:
        if obs.review is not None:  # the review turn has its own system prompt (prompting.review_system_prompt)
            return build_prompt(self.memory, obs)
        return build_prompt(self.memory, obs, system=system_prompt(self.memory, self.fov_deg, obs.canvas_style))

    @torch.inference_mode()
    def verify(self, view: np.ndarray, pose, instruction: str, points) -> list[float]:
        """VBR: P(yes) for each (x, y) point of ``view``, one yes/no question per point (the view with that
        point marked, :func:`~.prompting.point_prompt`), all in ONE forward pass; the answer is constrained
        to the two answer tokens: P(yes) = softmax(logit_yes, logit_no)[0] at the answer position."""
        if not len(points):
            return []
        encoded = [self.encode(point_prompt(instruction, draw_marker(view, p))) for p in points]
        ids = torch.cat([e.input_ids for e in encoded])  # one text, one image size: every row has one length
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                         mm_token_type_ids=torch.cat([e.mm_token_type_ids for e in encoded]),
                         pixel_values=torch.cat([e.pixel_values for e in encoded]),
                         image_grid_thw=torch.cat([e.image_grid_thw for e in encoded]), use_cache=False,
                         logits_to_keep=1)
        pair = out.logits[:, -1, list(self.yes_no_ids)].float()
        return torch.softmax(pair, dim=-1)[:, 0].cpu().tolist()

    def prompt_text(self, prompt: Prompt) -> str:
        return self.tokenizer.apply_chat_template(prompt.messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=True)

    def encode(self, prompt: Prompt, device=None) -> EncodedPrompt:
        """Chat template, image tokens expanded to each image's merged patch count, pixels patched on
        ``device`` (default: the model's; a data loader asks for "cpu")."""
        device = self.device if device is None else torch.device(device)
        text = self.prompt_text(prompt)
        parts = text.split(IMAGE_PAD)
        if len(parts) - 1 != len(prompt.images):
            raise ValueError(f"the chat template produced {len(parts) - 1} image placeholders for "
                             f"{len(prompt.images)} images; check the model's chat_template")
        patches, grids = [], []
        for img in prompt.images:
            px, grid = image_patches(img, self.images, device)
            patches.append(px)
            grids.append(grid)
        merge = self.images.merge_size ** 2
        pieces = [parts[0]]
        for grid, part in zip(grids, parts[1:]):
            pieces.append(IMAGE_PAD * (grid[1] * grid[2] // merge))
            pieces.append(part)
        ids = torch.tensor([self.tokenizer("".join(pieces))["input_ids"]], dtype=torch.long, device=device)
        mm = (ids == self.image_token_id).to(torch.int32)
        pixel_values = torch.cat(patches) if patches else None
        grid_thw = torch.tensor(grids, dtype=torch.long, device=device) if grids else None
        return EncodedPrompt(ids, mm, pixel_values, grid_thw)

    def answer_ids(self, answer: str) -> list[int]:
        """The token ids of an answer text as a demonstration: the tokenizer's split of ``answer`` and the
        end-of-turn token. Tokenized once, where the text is made (SFT data); sampled answers keep the ids
        the decoder wrote."""
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [end if isinstance(end, int)
                                                                                else self.eos_ids[0]]

    def training_inputs(self, prompt: Prompt | EncodedPrompt, answer_ids) -> dict:
        """Model inputs for supervised training on one decision: the prompt exactly as :meth:`encode` makes
        it at inference, followed by ``answer_ids`` (token ids; a str is turned into ids by
        :meth:`answer_ids`). ``labels`` is -100 on the prompt. Tensors of shape (1, L + answer length) on
        the prompt's device."""
        enc = prompt if isinstance(prompt, EncodedPrompt) else self.encode(prompt)
        ids_list = self.answer_ids(answer_ids) if isinstance(answer_ids, str) else [int(t) for t in answer_ids]
        if not ids_list:
            raise ValueError("training_inputs needs at least one answer token id")
        tail = torch.tensor([ids_list], dtype=torch.long, device=enc.input_ids.device)
        ids = torch.cat([enc.input_ids, tail], dim=1)
        labels = ids.clone()
        labels[:, :enc.length] = -100
        mm = torch.cat([enc.mm_token_type_ids, torch.zeros_like(tail, dtype=enc.mm_token_type_ids.dtype)], dim=1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "mm_token_type_ids": mm,
                "pixel_values": enc.pixel_values, "image_grid_thw": enc.image_grid_thw}

    def logprobs(self, prompt: Prompt | EncodedPrompt, token_ids, grammar: bool = True, temperature: float = 1.0,
                 model=None, top_p: float = 1.0, turn: str = "search") -> torch.Tensor:
        """Log-probabilities (n,) of the given answer ``token_ids`` (n ids) after ``prompt``, differentiable.

        One forward pass over prompt + answer whose output layer runs only at the n answer positions
        (``logits_to_keep``), so no (L, vocabulary) tensor is built. ``grammar``: log-softmax over the
        tokens the action grammar allows at each position (the distribution the ``sample`` decoder draws
        from), else over the whole vocabulary (the supervised loss). ``temperature`` divides the logits;
        ``top_p`` < 1 (with ``grammar``) renormalises over the nucleus of each position, as the sampler
        draws, the given token always kept in it (a policy that moved since sampling may rank it lower).
        ``model``: the module to run (e.g. the wrapper an accelerator prepared; default the policy's).
        ``turn``: whose grammar (search or review, core/actions.py).
        """
        constraint = self.constraints[turn]
        batch = self.training_inputs(prompt, token_ids)
        n = len(token_ids)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        net = self.model if model is None else model
        logits = net(**inputs, use_cache=False, logits_to_keep=n + 1).logits[0, :-1].float() / float(temperature)
        targets = batch["input_ids"][0, -n:]
        if not grammar:
            return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
        out, text = [], ""
        for j, token in enumerate(targets.tolist()):
            allowed = constraint.allowed(text)[0]  # a fresh index: the cached one may be an inference tensor
            if token not in allowed:
                raise ValueError(f"answer token {token} at position {j} is outside the action grammar after "
                                 f"{text!r}; score it with grammar=False")
            row = logits[j].index_select(0, torch.tensor(allowed, dtype=torch.long, device=logits.device))
            at = allowed.index(token)
            if top_p < 1.0:
                with torch.no_grad():
                    keep = nucleus(torch.softmax(row.detach(), dim=0), top_p) > 0
                    keep[at] = True
                row = row.masked_fill(~keep, float("-inf"))
            out.append(row[at] - torch.logsumexp(row, dim=0))
            text += constraint.pieces[token] or ""
        return torch.stack(out)

    # -- decoding ------------------------------------------------------------------------------

    @torch.inference_mode()
    def answer(self, encoded: EncodedPrompt, decoding: str, turn: str = "search") -> Answer:
        """Decode one answer: ``constrained`` (fast), ``greedy`` (model.generate) or ``generate-constrained``
        (model.generate restricted to the grammar token by token: the slow reference of ``constrained``);
        ``turn`` chooses the grammar (search or review, core/actions.py)."""
        if decoding == "constrained":
            return self._decode_constrained(encoded, turn)
        if decoding == "sample":
            return self._decode_sample(encoded, turn)
        if decoding in ("greedy", "generate-constrained"):
            return self._generate(encoded, decoding == "generate-constrained", turn)
        raise ValueError(f"unknown decoding {decoding!r}; choose constrained, greedy, sample or generate-constrained")

    def _generate(self, encoded: EncodedPrompt, grammar: bool, turn: str = "search") -> Answer:
        from transformers import GenerationConfig

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        config = GenerationConfig(do_sample=False, num_beams=1, eos_token_id=self.eos_ids, pad_token_id=pad,
                                  max_new_tokens=MAX_ANSWER_TOKENS if grammar else self.max_new_tokens)
        start = encoded.length
        allowed = None
        if grammar:
            def allowed(_batch, ids):
                constraint = self.constraints[turn]
                return constraint.allowed(constraint.text_of(ids[start:].tolist()))[0]
        out = self.model.generate(**encoded.generate_kwargs(), generation_config=config,
                                  prefix_allowed_tokens_fn=allowed)
        tokens = [int(t) for t in out[0, start:].tolist()]
        while tokens and tokens[-1] in self.eos_ids:
            tokens.pop()
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Answer(text.strip() if not grammar else text, tokens,
                      {"decoding": "generate-constrained" if grammar else "greedy", "prompt_tokens": start,
                       "answer_tokens": len(tokens)})

    def _base(self):
        """The Qwen3VLForConditionalGeneration inside (also when an unmerged PEFT wrapper sits around it)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _vl_model(self):
        return self._base().model

    def _positions(self, encoded: EncodedPrompt) -> tuple[torch.Tensor, int]:
        """(4, 1, L) position ids (text row + the three M-RoPE rows) and the M-RoPE offset of later tokens."""
        ids = encoded.input_ids
        text = torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1)
        if encoded.image_grid_thw is None:
            return text.expand(4, 1, -1), 0
        mrope, delta = self._vl_model().get_rope_index(ids, mm_token_type_ids=encoded.mm_token_type_ids,
                                                       image_grid_thw=encoded.image_grid_thw)
        return torch.cat([text, mrope.to(text.dtype)], dim=0), int(delta.reshape(-1)[0])

    def _prefill(self, encoded: EncodedPrompt):
        """Run the prompt, reusing the cached text prefix of the previous prompt of the episode.

        Returns (cache, logits (V,) of the last prompt token, M-RoPE delta, prefix tokens reused)."""
        from transformers import DynamicCache

        ids = encoded.input_ids
        positions, delta = self._positions(encoded)
        image_at = torch.nonzero(encoded.mm_token_type_ids[0])
        text_end = int(image_at[0]) if len(image_at) else ids.shape[1] - 1  # the cacheable text before any image
        reuse = 0
        if self.prefix_cache and self._prefix is not None:
            cached_ids, kv = self._prefix
            row = ids[0, :min(len(cached_ids), text_end)].tolist()
            while reuse < len(row) and row[reuse] == cached_ids[reuse]:
                reuse += 1
        cache = DynamicCache(ddp_cache_data=[(k[..., :reuse, :], v[..., :reuse, :]) for k, v in self._prefix[1]]) \
            if reuse else DynamicCache()
        kwargs = {}
        if encoded.pixel_values is not None:
            kwargs.update(pixel_values=encoded.pixel_values, image_grid_thw=encoded.image_grid_thw)
        out = self.model(input_ids=ids[:, reuse:], position_ids=positions[..., reuse:], past_key_values=cache,
                         use_cache=True, logits_to_keep=1, **kwargs)
        if self.prefix_cache and text_end > reuse:
            self._prefix = (ids[0, :text_end].tolist(), [(layer.keys[..., :text_end, :].clone(),
                                                          layer.values[..., :text_end, :].clone())
                                                         for layer in cache.layers])
        return cache, out.logits[0, -1], delta, reuse

    def _forward_token(self, cache, token: int, text_position: int, delta: int) -> torch.Tensor:
        """Append one token at ``text_position`` (M-RoPE rows shifted by ``delta``); its next-token logits (V,)."""
        pos = torch.full((4, 1, 1), text_position, dtype=torch.long, device=self.device)
        pos[1:] += delta
        ids = torch.tensor([[token]], dtype=torch.long, device=self.device)
        return self.model(input_ids=ids, position_ids=pos, past_key_values=cache, use_cache=True).logits[0, -1]

    def _continuations(self, text: str, turn: str = "search") -> list[str]:
        """What a draft trie proposes after ``text``: every way to finish a MOVE / STOP answer, or inside a
        box every way to finish the number begun (with its separator). Nothing at the start of a box number,
        where all of 0..999 would make the draft bigger than the steps it saves."""
        box_open = self.constraints[turn].grammar.box_open
        if text.startswith(box_open):
            field = scan_box(text[len(box_open):]).open_field
            if field is None or not field[0]:
                return []
            digits, lo, hi, sep = field
            return [tail + sep for tail in number_completions(digits, lo, hi)]
        return [w[len(text):] for w in self._finite_answers[turn] if w.startswith(text) and len(w) > len(text)]

    def _draft_trie(self, text: str, token: int, turn: str = "search") -> AnswerTrie | None:
        """The trie rooted at ``token`` (just written; ``text`` includes it) of the continuations of ``text``,
        each tokenized from there; None when there is none to propose."""
        key = (turn, text, token)
        if key not in self._tries:
            rest = self._continuations(text, turn)
            seqs = [[token] + ids for ids in self.tokenizer(rest, add_special_tokens=False)["input_ids"]] if rest else []
            if len(self._tries) > 4096:
                self._tries.clear()
            self._tries[key] = AnswerTrie.build(seqs, self.device) if seqs else None
        return self._tries[key]

    def _score_trie(self, cache, base: int, delta: int, trie: AnswerTrie) -> torch.Tensor:
        """Final hidden states (N, D) of every node of ``trie`` appended after the ``base`` cached tokens, in
        one pass with a tree attention mask (a node sees the cache and its own ancestors). The output layer
        runs later, only on the nodes the walk visits, one row at a time as in step-by-step decoding."""
        n = len(trie.tokens)
        mask = torch.ones(1, 1, n, base + n, dtype=torch.bool, device=self.device)
        mask[0, 0, :, base:] = trie.visible
        pos = (base - 1 + torch.tensor(trie.depth, device=self.device)).view(1, 1, n).expand(4, 1, n).clone()
        pos[1:] += delta
        ids = torch.tensor([trie.tokens], dtype=torch.long, device=self.device)
        out = self._vl_model()(input_ids=ids, position_ids=pos, attention_mask=mask, past_key_values=cache,
                               use_cache=True)
        return out.last_hidden_state[0]

    def _node_logits(self, hidden: torch.Tensor, node: int) -> torch.Tensor:
        return self._base().lm_head(hidden[node:node + 1])[0]

    @staticmethod
    def _keep_path(cache, base: int, path: list[int]):
        """The cache of the first ``base`` tokens plus the trie nodes on ``path`` (the other branches dropped)."""
        from transformers import DynamicCache

        index = torch.tensor([base + i for i in path], dtype=torch.long, device=cache.layers[0].keys.device)
        return DynamicCache(ddp_cache_data=[
            (torch.cat([layer.keys[..., :base, :], layer.keys.index_select(-2, index)], dim=-2),
             torch.cat([layer.values[..., :base, :], layer.values.index_select(-2, index)], dim=-2))
            for layer in cache.layers])

    def _prefill_batch(self, encoded: list[EncodedPrompt]) -> list[tuple]:
        """Prefill several prompts in one left-padded forward pass; per prompt the state :meth:`_prefill`
        returns (its own cache rows without the padding, last-token logits, M-RoPE delta, 0 reused)."""
        from transformers import DynamicCache

        width = max(e.length for e in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        ids = torch.full((len(encoded), width), int(pad), dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        mm = torch.zeros_like(ids, dtype=encoded[0].mm_token_type_ids.dtype)
        for i, e in enumerate(encoded):
            ids[i, width - e.length:] = e.input_ids[0]
            mask[i, width - e.length:] = 1
            mm[i, width - e.length:] = e.mm_token_type_ids[0]
        pixels = [e.pixel_values for e in encoded if e.pixel_values is not None]
        grids = [e.image_grid_thw for e in encoded if e.image_grid_thw is not None]
        text = (mask.cumsum(-1) - 1).clamp(min=0).unsqueeze(0)
        kwargs = {}
        if grids:
            mrope, _ = self._vl_model().get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=torch.cat(grids),
                                                       attention_mask=mask)
            positions = torch.cat([text, mrope.to(text.dtype)], dim=0)
            kwargs.update(pixel_values=torch.cat(pixels), image_grid_thw=torch.cat(grids))
        else:
            positions = text.expand(4, -1, -1)
        cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1, **kwargs)
        states = []
        for i, e in enumerate(encoded):
            start = width - e.length
            delta = int(positions[1:, i, start:].max()) + 1 - e.length
            rows = DynamicCache(ddp_cache_data=[(layer.keys[i:i + 1, :, start:, :].clone(),
                                                 layer.values[i:i + 1, :, start:, :].clone())
                                                for layer in cache.layers])
            states.append((rows, out.logits[i, -1], delta, 0))
        return states

    def _decode_constrained(self, encoded: EncodedPrompt, turn: str = "search", state=None) -> Answer:
        """Grammar-constrained greedy decoding. Each chosen token that does not end the answer is scored
        together with a draft trie of the grammar's continuations in one pass; while the greedy choices stay
        in that trie no further pass is needed. Choices are made from the logits alone, so the drafts change
        the number of passes, never the tokens."""
        constraint = self.constraints[turn]
        grammar = constraint.grammar
        length = encoded.length
        cache, logits, delta, reused = self._prefill(encoded) if state is None else state
        passes, in_cache, drafted = 1, 0, 0  # forward passes; answer tokens in the cache; tokens read off tries
        trie, hidden, node, path = None, None, -1, []
        text, tokens = "", []
        eos = set(self.eos_ids)
        while len(tokens) < MAX_ANSWER_TOKENS:
            if grammar.complete(text) and not grammar.extendable(text):
                break
            allowed, allowed_t = constraint.allowed(text)
            token = allowed[int(torch.argmax(logits.index_select(0, allowed_t)))]
            if token in eos:
                break
            tokens.append(token)
            text += constraint.pieces[token]
            if trie is not None:
                child = trie.child(node, token)
                if child is not None:  # the draft predicted it: its hidden state is already there
                    node, logits = child, self._node_logits(hidden, child)
                    path.append(child)
                    drafted += 1
                    continue
                cache = self._keep_path(cache, length + in_cache, path)  # left the draft: keep its path only
                in_cache += len(path)
                trie = None
            if grammar.complete(text) and not grammar.extendable(text):
                break  # the answer is whole: no logits needed after it
            trie = self._draft_trie(text, token, turn)
            if trie is not None:
                hidden = self._score_trie(cache, length + in_cache, delta, trie)
                node = trie.child(-1, token)
                path, logits = [node], self._node_logits(hidden, node)
            else:
                logits = self._forward_token(cache, token, length + in_cache, delta)
                in_cache += 1
            passes += 1
        return Answer(text, tokens, {"decoding": "constrained", "prompt_tokens": length, "answer_tokens": len(tokens),
                                     "reused_prefix_tokens": reused, "forward_passes": passes,
                                     "drafted_tokens": drafted})

    def _decode_sample(self, encoded: EncodedPrompt, turn: str = "search", state=None) -> Answer:
        """Grammar-constrained sampling (module docstring), one token per forward pass after the prompt.
        An end token that is drawn is part of ``tokens`` (and of the scored answer); an answer the grammar
        cannot extend ends without one, as in the constrained decoder."""
        constraint = self.constraints[turn]
        grammar = constraint.grammar
        cache, logits, delta, reused = self._prefill(encoded) if state is None else state
        text, tokens, logps = "", [], []
        eos = set(self.eos_ids)
        while len(tokens) < MAX_ANSWER_TOKENS:
            if grammar.complete(text) and not grammar.extendable(text):
                break
            allowed, allowed_t = constraint.allowed(text)
            logp = torch.log_softmax(logits.index_select(0, allowed_t).float() / self.temperature, dim=0).cpu()
            kept = nucleus(logp.exp(), self.top_p)
            k = int(torch.multinomial(kept, 1, generator=self.generator))
            token = allowed[k]
            tokens.append(token)
            logps.append(float(logp[k]) if self.top_p >= 1.0 else float(torch.log(kept[k] / kept.sum())))
            if token in eos:
                break
            text += constraint.pieces[token]
            if grammar.complete(text) and not grammar.extendable(text):
                break
            logits = self._forward_token(cache, token, encoded.length + len(tokens) - 1, delta)
        return Answer(text, tokens, {"decoding": "sample", "prompt_tokens": encoded.length, "answer_tokens": len(tokens),
                                     "reused_prefix_tokens": reused, "logprobs": logps,
                                     "temperature": self.temperature, "top_p": self.top_p})


def check_sampling(temperature: float, top_p: float) -> None:
    if not float(temperature) > 0:
        raise ValueError(f"temperature {temperature} must be above 0 (1.0 samples the model's distribution)")
    if not 0 < float(top_p) <= 1:
        raise ValueError(f"top_p {top_p} must be in (0, 1] (1.0 keeps every allowed token)")


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(n,) probabilities → the same with everything outside the smallest set of mass >= ``top_p`` zeroed."""
    if top_p >= 1.0:
        return probs
    order = torch.argsort(probs, descending=True)
    before = torch.cumsum(probs[order], 0) - probs[order]  # mass of the more likely tokens
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[before < top_p]] = True
    return torch.where(keep, probs, torch.zeros_like(probs))
