"""Tiny random-weight Qwen3-VL, SAM-3 tracker and SAM-3 detector models for tests, benchmarks and offline runs.

They have the real architectures (so every code path runs) at a few hundred kilobytes, with a
byte-level BPE tokenizer trained here on the prompt and action vocabulary, the Qwen special tokens
and a Qwen-style chat template. Their outputs are real and meaningless: the weights are random.

    build_tiny_models("models_tiny")  ->  {"qwen": ".../qwen3vl-tiny", "sam3": ".../sam3-tracker-tiny",
                                           "sam3_text": ".../sam3-tiny"}
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ..core.actions import Action, format_action, lattice_moves
from .prompting import MEMORY_VARIANTS, system_prompt

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                       "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                       "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

# The same layout as the Qwen3-VL chat template for system, user and assistant turns with images.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

TINY_MAX_PIXELS = 256 * 192  # a 1024×768 view becomes 256×192 pixels: 48 image tokens
TINY_MIN_PIXELS = 32 * 32
TINY_SAM_IMAGE_SIZE = 224
TINY_INIT_STD = 0.2  # the tiny policy's random weights: wide enough to learn from the prompt (tiny_qwen_config)

_WORDS = ("the a an of to on in at by with next behind under above opposite left right front back near far "
          "turn around find look chair bed sofa table lamp door window plant picture mirror shelf desk tv "
          "cabinet wardrobe rug floor wall ceiling red green blue yellow white black brown grey small large "
          "face label cube step view answered instruction log action your current first")


def _corpus(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    moves = [format_action(a) for a in lattice_moves()]
    boxes = []
    for _ in range(200):
        x1, y1 = rng.integers(0, 900, size=2)
        x2, y2 = x1 + rng.integers(1, 1000 - x1 + 1), y1 + rng.integers(1, 1000 - y1 + 1)
        boxes.append(format_action(Action.stop_at((x1, y1, x2, y2))))
    texts = [system_prompt(m) for m in MEMORY_VARIANTS] + moves * 4 + boxes + ["STOP"] * 20 + [_WORDS] * 4
    texts += [f"step {i}: at θ={t:+d}°, ϕ={p:+d}° answered {m}" for i, (t, p, m) in
              enumerate(zip(rng.choice(range(-180, 180, 30), 60), rng.choice(range(-90, 91, 30), 60),
                            rng.choice(moves, 60)))]
    return texts


def build_tiny_tokenizer(out_dir, seed: int = 0, vocab_size: int = 640):
    """A Qwen2 byte-level BPE tokenizer (Qwen's pre-tokenizer: digits split one by one) with the Qwen
    special tokens, trained on the prompt and action vocabulary. Returns the loaded tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(QWEN_SPECIAL_TOKENS))
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                                            for m in model["merges"]],
                               clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in QWEN_SPECIAL_TOKENS
                                                                if t != "<|endoftext|>"]})
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def tiny_qwen_config(tokenizer, vocab_size: int | None = None, init_std: float | None = None):
    """A Qwen3-VL config of the real architecture at toy size: 2 text layers of width 64, 2 vision layers
    of width 32, vision patch 16 with 2×2 merging, interleaved M-RoPE, deepstack on both vision layers.

    ``init_std``: the standard deviation of the random weights (``TINY_INIT_STD``, 0.2). At the usual
    0.02 the attention of a 2-layer model of width 64 is nearly uniform, so its last hidden state is
    almost the same for every prompt (cosine > 0.998 on a two-target task) and no adapter learns from
    the instruction in a CPU budget; at 0.2 the attention is sharp enough that a LoRA adapter learns
    to follow the instruction in a few hundred CPU steps (``bench/learning.py``)."""
    from transformers import Qwen3VLConfig
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig, Qwen3VLVisionConfig

    init_std = TINY_INIT_STD if init_std is None else float(init_std)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab = vocab_size or 64 * ((len(tokenizer) + 63) // 64)
    text = Qwen3VLTextConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                             rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                                              "mrope_section": [4, 2, 2], "mrope_interleaved": True},
                             pad_token_id=ids["<|endoftext|>"], initializer_range=init_std)
    vision = Qwen3VLVisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                                 spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                                 num_position_embeddings=256, deepstack_visual_indexes=[0, 1])
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
                         initializer_range=init_std)


def qwen_image_processor(max_pixels: int = TINY_MAX_PIXELS, min_pixels: int = TINY_MIN_PIXELS):
    """Qwen3-VL image preprocessing: patch 16, 2×2 merge, images scaled into [min_pixels, max_pixels],
    mean = std = 0.5 (the Qwen3-VL values). The torchvision backend when installed, the PIL one otherwise."""
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    if importlib.util.find_spec("torchvision") is not None:
        from transformers import Qwen2VLImageProcessor as ImageProcessor
    else:
        from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil

        ImageProcessor = pil.Qwen2VLImageProcessorPil
    return ImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=size,
                          image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def save_qwen_processor_files(out_dir, tokenizer, image_processor) -> None:
    """The processor files in the layout of the Qwen3-VL hub repositories (tokenizer files,
    chat_template.jinja, preprocessor_config.json, video_preprocessor_config.json), so both
    ``AutoProcessor`` and the policy's own loader read them. Saved part by part: the combined
    processor object needs torchvision, which this package does not require."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    (Path(out_dir) / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    image_processor.save_pretrained(str(out_dir))
    Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2).save_pretrained(str(out_dir))


def build_tiny_qwen(out_dir, seed: int = 0, init_std: float | None = None) -> Path:
    """Tokenizer, processor, random-init Qwen3VLForConditionalGeneration and generation config in ``out_dir``
    (``init_std``: see :func:`tiny_qwen_config`)."""
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(out, seed)
    save_qwen_processor_files(out, tokenizer, qwen_image_processor())
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(tiny_qwen_config(tokenizer, init_std=init_std)).eval()
    model.save_pretrained(str(out))
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    GenerationConfig(eos_token_id=eos, pad_token_id=eos[1], do_sample=False).save_pretrained(str(out))
    return out


def tiny_sam3_config(image_size: int = TINY_SAM_IMAGE_SIZE):
    """A Sam3TrackerConfig of the real architecture at toy size: a 2-layer ViT of width 32 (patch 14),
    a 3-level FPN of width 32 and a 2-layer mask decoder."""
    from transformers import Sam3TrackerConfig
    from transformers.models.sam3.configuration_sam3 import Sam3ViTConfig, Sam3VisionConfig
    from transformers.models.sam3_tracker.configuration_sam3_tracker import (Sam3TrackerMaskDecoderConfig,
                                                                             Sam3TrackerPromptEncoderConfig)

    grid = image_size // 14
    backbone = Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=image_size, patch_size=14, window_size=grid // 2, global_attn_indexes=[1],
                             pretrain_image_size=image_size)
    vision = Sam3VisionConfig(backbone_config=backbone, fpn_hidden_size=32, scale_factors=[4.0, 2.0, 1.0, 0.5],
                              backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]])
    prompt = Sam3TrackerPromptEncoderConfig(hidden_size=32, image_size=image_size, patch_size=14, mask_input_channels=4)
    decoder = Sam3TrackerMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                           iou_head_hidden_dim=32)
    return Sam3TrackerConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def sam3_processor_config(image_size: int, mask_size: int) -> dict:
    """The processor settings of a SAM-3 tracker directory, in the layout Sam3TrackerProcessor saves."""
    return {"processor_class": "Sam3TrackerProcessor", "target_size": image_size, "point_pad_value": -10,
            "image_processor": {"image_processor_type": "Sam3ImageProcessor", "do_resize": True, "resample": 2,
                                "size": {"height": image_size, "width": image_size},
                                "mask_size": {"height": mask_size, "width": mask_size},
                                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                                "do_convert_rgb": True}}


def tiny_sam3_video_config(image_size: int = TINY_SAM_IMAGE_SIZE):
    """A Sam3TrackerVideoConfig (the tracker with its memory, for the official alignment) at toy size: the
    ViT of :func:`tiny_sam3_config`, an FPN, prompt encoder and mask decoder of width 128 (the video model
    cuts its object pointers into 64-wide memory tokens, so it needs a width above 64), one memory layer."""
    from transformers import Sam3TrackerVideoConfig
    from transformers.models.sam3_tracker_video.configuration_sam3_tracker_video import (
        Sam3TrackerVideoMaskDecoderConfig, Sam3TrackerVideoPromptEncoderConfig)

    grid, width = image_size // 14, 128
    vision = tiny_sam3_config(image_size).vision_config
    vision.fpn_hidden_size = width
    prompt = Sam3TrackerVideoPromptEncoderConfig(hidden_size=width, image_size=image_size, patch_size=14,
                                                 mask_input_channels=4)
    decoder = Sam3TrackerVideoMaskDecoderConfig(hidden_size=width, mlp_dim=64, num_hidden_layers=2,
                                                num_attention_heads=2, iou_head_hidden_dim=32)
    return Sam3TrackerVideoConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder,
                                  image_size=image_size, memory_attention_hidden_size=width,
                                  memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
                                  memory_attention_rope_feat_sizes=[grid, grid], memory_encoder_hidden_size=width,
                                  mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width,
                                  memory_fuser_intermediate_dim=64, memory_fuser_num_layers=1)


def build_tiny_sam3(out_dir, seed: int = 0) -> Path:
    """A random-init SAM-3 tracker and its processor settings in ``out_dir``: saved as a
    Sam3TrackerVideoModel, so the one directory serves Sam3TrackerModel (box → mask) and
    Sam3TrackerVideoModel (tracking), as facebook/sam3 does."""
    import torch
    from transformers import Sam3TrackerVideoModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Sam3TrackerVideoModel(tiny_sam3_video_config()).eval().save_pretrained(str(out))
    grid = TINY_SAM_IMAGE_SIZE // 14
    # written directly: transformers' Sam3ImageProcessor needs torchvision, which this package does not require
    (out / "processor_config.json").write_text(json.dumps(sam3_processor_config(TINY_SAM_IMAGE_SIZE, 4 * grid),
                                                          indent=2) + "\n")
    return out


def build_tiny_clip_tokenizer(out_dir):
    """A CLIP byte-level BPE tokenizer with no merges (one token per character, '</w>' marking a word's
    last one), saved to ``out_dir`` in the layout of the SAM-3 hub repository and loaded back."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer, CLIPTokenizer

    special = ["<|startoftext|>", "<|endoftext|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(alphabet + [c + "</w>" for c in alphabet] + special)}
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(str(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))


def tiny_sam3_detector_config(vocab_size: int, bos: int, eos: int, image_size: int = TINY_SAM_IMAGE_SIZE):
    """A Sam3Config (the open-vocabulary detector) of the real architecture at toy size: the tracker's
    2-layer ViT and FPN of width 32, a 2-layer CLIP text encoder of width 32 (32 positions, as
    Sam3Processor pads), one-layer geometry encoder, DETR encoder and decoder with 8 queries."""
    from transformers import CLIPTextConfig, Sam3Config
    from transformers.models.sam3.configuration_sam3 import (Sam3DETRDecoderConfig, Sam3DETREncoderConfig,
                                                             Sam3GeometryEncoderConfig, Sam3MaskDecoderConfig)

    vision = tiny_sam3_config(image_size).vision_config
    text = CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, projection_dim=32,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32, hidden_act="gelu",
                          pad_token_id=eos, bos_token_id=bos, eos_token_id=eos)
    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    return Sam3Config(vision_config=vision, text_config=text,
                      geometry_encoder_config=Sam3GeometryEncoderConfig(num_layers=1, **small),
                      detr_encoder_config=Sam3DETREncoderConfig(num_layers=1, **small),
                      detr_decoder_config=Sam3DETRDecoderConfig(num_layers=1, num_queries=8, **small),
                      mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=32, num_attention_heads=2))


def build_tiny_sam3_detector(out_dir, seed: int = 0) -> Path:
    """A random-init Sam3Model (text-prompted concept segmentation), its CLIP tokenizer and processor
    settings in ``out_dir``."""
    import torch
    from transformers import Sam3Model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_clip_tokenizer(out)
    bos, eos = tokenizer.convert_tokens_to_ids("<|startoftext|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(seed)
    Sam3Model(tiny_sam3_detector_config(len(tokenizer), bos, eos)).eval().save_pretrained(str(out))
    grid = TINY_SAM_IMAGE_SIZE // 14
    doc = {**sam3_processor_config(TINY_SAM_IMAGE_SIZE, 4 * grid), "processor_class": "Sam3Processor"}
    (out / "processor_config.json").write_text(json.dumps(doc, indent=2) + "\n")
    return out


def build_tiny_models(out_dir, seed: int = 0) -> dict:
    """Build the tiny models under ``out_dir`` (deterministic for a seed); returns
    ``{"qwen": Path, "sam3": Path, "sam3_text": Path}``."""
    from transformers.utils import logging

    out = Path(out_dir)
    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # two tiny files: no progress bars
    try:
        return {"qwen": build_tiny_qwen(out / "qwen3vl-tiny", seed),
                "sam3": build_tiny_sam3(out / "sam3-tracker-tiny", seed),
                "sam3_text": build_tiny_sam3_detector(out / "sam3-tiny", seed)}
    finally:
        if shown:
            logging.enable_progress_bar()
