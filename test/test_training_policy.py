"""The policy side of training: grammar-constrained sampling with log-probs, scoring given answer ids."""
from __future__ import annotations

import pytest
import torch

from models_fixtures import observations, tiny_model_dirs
from panoseeker_ros.core.actions import parse_action
from panoseeker_ros.models.qwen_policy import QwenPolicy, nucleus
from panoseeker_ros.paths import sample_dataset

torch.set_num_threads(1)  # two shared cores: one thread each is faster than two contending


@pytest.fixture(scope="module")
def qwen_dir():
    return tiny_model_dirs()["qwen"]


@pytest.fixture(scope="module")
def obs_list():
    return observations(sample_dataset())[:6]


@pytest.fixture(scope="module")
def sampler(qwen_dir):
    return QwenPolicy.from_pretrained(model=qwen_dir, decoding="sample", seed=1)


def test_sampling_is_seeded_varied_and_always_an_action(qwen_dir, obs_list):
    a = QwenPolicy.from_pretrained(model=qwen_dir, decoding="sample", seed=7)
    b = QwenPolicy.from_pretrained(model=qwen_dir, decoding="sample", seed=7)
    obs = obs_list[0]
    texts_a = [a.act(obs).text for _ in range(8)]
    assert texts_a == [b.act(obs).text for _ in range(8)]  # same seed, same group
    assert len(set(texts_a)) > 2  # a GRPO group of 8 is not 8 copies
    assert all(parse_action(t).ok for t in texts_a)


def test_sampled_logprobs_are_what_the_scorer_gives_for_the_same_ids(sampler, obs_list):
    for obs in obs_list:
        d = sampler.act(obs)
        enc = sampler.encode(sampler.prompt(obs))
        assert d.info["prompt_ids"] == enc.input_ids[0].tolist()
        with torch.no_grad():
            scored = sampler.logprobs(enc, d.info["token_ids"], grammar=True)
        assert torch.allclose(scored, torch.tensor(d.info["logprobs"]), atol=1e-4)
        assert (scored <= 1e-6).all()
        with torch.no_grad():  # the grammar renormalises over fewer tokens: never less likely than unconstrained
            free = sampler.logprobs(enc, d.info["token_ids"], grammar=False)
        assert (scored >= free - 1e-5).all()


def test_with_top_p_the_stored_logprobs_are_those_after_the_nucleus_cut(qwen_dir, obs_list):
    cut = QwenPolicy.from_pretrained(model=qwen_dir, decoding="sample", seed=2, top_p=0.6)
    differ = 0
    for obs in obs_list:
        d = cut.act(obs)
        enc = cut.encode(cut.prompt(obs))
        with torch.no_grad():
            after = cut.logprobs(enc, d.info["token_ids"], top_p=0.6)
            before = cut.logprobs(enc, d.info["token_ids"])
        assert torch.allclose(after, torch.tensor(d.info["logprobs"]), atol=1e-4)
        assert (after >= before - 1e-6).all()  # renormalised over fewer tokens
        differ += int(not torch.allclose(after, before, atol=1e-4))
    assert differ > 0  # the cut removed mass somewhere


@pytest.mark.parametrize("decoding", ["constrained", "sample"])
def test_act_batch_decides_as_one_by_one(qwen_dir, obs_list, decoding):
    one, batch = (QwenPolicy.from_pretrained(model=qwen_dir, decoding=decoding, seed=5) for _ in range(2))
    singles = [one.act(obs) for obs in obs_list]
    batched = batch.act_batch(obs_list)  # left-padded prompts of different lengths (views 1 and 2 of episodes)
    assert len({len(d.info.get("prompt_ids", [])) or d.info["prompt_tokens"] for d in batched}) > 1
    assert [d.text for d in batched] == [d.text for d in singles]
    if decoding == "sample":  # the same draws, the same log-probs (to rounding)
        for a, b in zip(singles, batched):
            assert a.info["token_ids"] == b.info["token_ids"]
            assert torch.allclose(torch.tensor(a.info["logprobs"]), torch.tensor(b.info["logprobs"]), atol=1e-5)


def test_a_cold_sampler_writes_the_constrained_greedy_answer(qwen_dir, obs_list):
    cold = QwenPolicy.from_pretrained(model=qwen_dir, decoding="sample", temperature=1e-4)
    greedy = QwenPolicy.from_pretrained(model=qwen_dir)
    for obs in obs_list:
        assert cold.act(obs).action == greedy.act(obs).action


def test_scoring_runs_the_output_layer_only_at_the_answer_positions(sampler, obs_list):
    rows = []
    hook = sampler._base().lm_head.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[-2]))
    try:
        enc = sampler.encode(sampler.prompt(obs_list[1]))
        ids = sampler.answer_ids("STOP [412, 380, 590, 720]")
        with torch.no_grad():
            sampler.logprobs(enc, ids, grammar=False)
    finally:
        hook.remove()
    assert rows == [len(ids) + 1] and enc.length > 10 * rows[0]  # n + 1 rows, not the whole prompt


def test_training_inputs_keep_the_given_ids_even_for_another_split_of_the_same_text(sampler, obs_list):
    enc = sampler.encode(sampler.prompt(obs_list[2]))
    canonical = sampler.answer_ids("MOVE +60 0")
    pieces = sampler.constraint.pieces
    by_text = {p: i for i, p in enumerate(pieces) if p}
    split = [by_text[c] for c in "MOVE +60 0"] + canonical[-1:]  # one character per token
    assert split != canonical and sampler.constraint.text_of(split[:-1]) == "MOVE +60 0"
    batch = sampler.training_inputs(enc, split)
    assert batch["input_ids"][0, enc.length:].tolist() == split
    with torch.no_grad():
        a = sampler.logprobs(enc, split, grammar=True)
        b = sampler.logprobs(enc, canonical, grammar=True)
    assert a.shape[0] == len(split) and b.shape[0] == len(canonical) and not torch.isclose(a.sum(), b.sum())


def test_bad_sampling_options_are_one_line(qwen_dir):
    with pytest.raises(ValueError, match="temperature 0 must be above 0"):
        QwenPolicy.from_pretrained(model=qwen_dir, decoding="sample", temperature=0)
    with pytest.raises(ValueError, match="top_p 1.5 must be in"):
        QwenPolicy.from_pretrained(model=qwen_dir, decoding="sample", top_p=1.5)


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    p = torch.tensor([0.1, 0.5, 0.3, 0.1])
    assert torch.allclose(nucleus(p, 0.7), torch.tensor([0.0, 0.5, 0.3, 0.0]))
    assert nucleus(p, 0.5).tolist() == [0.0, 0.5, 0.0, 0.0]
    assert torch.equal(nucleus(p, 1.0), p)
