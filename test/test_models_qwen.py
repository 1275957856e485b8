"""QwenPolicy on the tiny random-weight Qwen3-VL: loading, prompts, decisions, and the constrained decoder
against plain greedy generation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models_fixtures import observations, tiny_model_dirs
from panoseeker_ros.core.actions import Action, format_action, lattice_moves, parse_action
from panoseeker_ros.core.episode import Decision, StepRecord
from panoseeker_ros.models.prompting import MEMORY_VARIANTS, VISUAL_BUFFER, build_prompt, system_prompt
from panoseeker_ros.models.action_decoding import ActionGrammar, number_completions, scan_box
from panoseeker_ros.models.qwen_policy import ModelLoadError, QwenPolicy, image_patches
from panoseeker_ros.models.registry import make_policy


@pytest.fixture(scope="module")
def qwen_dir():
    return tiny_model_dirs()["qwen"]


@pytest.fixture(scope="module")
def policy(qwen_dir):
    return QwenPolicy.from_pretrained(model=qwen_dir)


@pytest.fixture(scope="module")
def obs_list(cube_dataset):
    return observations(cube_dataset)


# -- loading -----------------------------------------------------------------------------------


def test_loads_resident_in_eval_mode_on_cpu(policy):
    assert policy.device.type == "cpu"
    assert next(policy.model.parameters()).dtype == torch.float32
    assert not policy.model.training
    assert policy.model.config._attn_implementation == "sdpa"
    assert policy.memory == "egosphere" and policy.decoding == "constrained"


def test_make_tiny_models_command_is_deterministic(tmp_path, capsys, qwen_dir):
    import argparse

    from panoseeker_ros.models import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-tiny-models", "--out", str(tmp_path)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == ["qwen:", str(tmp_path / "qwen3vl-tiny"), "sam3:", str(tmp_path / "sam3-tracker-tiny"),
                       "sam3-text:", str(tmp_path / "sam3-tiny")]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "preprocessor_config.json"):
        assert (tmp_path / "qwen3vl-tiny" / name).read_bytes() == (qwen_dir / name).read_bytes(), name
    assert (tmp_path / "sam3-tracker-tiny" / "model.safetensors").stat().st_size < 8_000_000  # with the video memory
    text_dir = qwen_dir.parent / "sam3-tiny"  # built by the session's tiny models with the same seed
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (tmp_path / "sam3-tiny" / name).read_bytes() == (text_dir / name).read_bytes(), name


@pytest.mark.parametrize("make", ["missing", "no_config"])
def test_missing_model_directory_is_one_line_naming_path_and_fix(tmp_path, make):
    target = tmp_path / "qwen-missing"
    if make == "no_config":
        target.mkdir()
    with pytest.raises(ModelLoadError) as err:
        QwenPolicy.from_pretrained(model=target)
    msg = str(err.value)
    assert "\n" not in msg and str(target) in msg
    assert ("make-tiny-models" in msg) if make == "missing" else ("config.json" in msg)
    with pytest.raises(ValueError):  # the CLI prints ValueErrors as one line
        make_policy("qwen", model=str(target))


def test_bad_adapter_path_is_one_line(qwen_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="adapter directory .*does not exist"):
        QwenPolicy.from_pretrained(model=qwen_dir, adapter=tmp_path / "none")
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        QwenPolicy.from_pretrained(model=qwen_dir, adapter=tmp_path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft on transformers 5 deprecation notices
def test_lora_adapter_is_applied(qwen_dir, tmp_path, policy, obs_list):
    from peft import LoraConfig, get_peft_model

    base = QwenPolicy.from_pretrained(model=qwen_dir).model
    torch.manual_seed(1)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "adapter"))
    adapted = QwenPolicy.from_pretrained(model=qwen_dir, adapter=tmp_path / "adapter")
    assert not any("lora" in name for name, _ in adapted.model.named_parameters())  # merged
    enc = policy.encode(policy.prompt(obs_list[0]))
    with torch.inference_mode():
        a = policy.model(**enc.generate_kwargs()).logits[0, -1]
        b = adapted.model(**enc.generate_kwargs()).logits[0, -1]
    assert (a - b).abs().max() > 1e-4


def test_bad_options_are_rejected(qwen_dir):
    with pytest.raises(ValueError, match="memory"):
        QwenPolicy.from_pretrained(model=qwen_dir, memory="everything")
    with pytest.raises(ValueError, match="decoding"):
        QwenPolicy.from_pretrained(model=qwen_dir, decoding="beam")


# -- prompts -----------------------------------------------------------------------------------


def test_system_prompt_states_canvas_layout_and_the_action_grammar():
    text = system_prompt("egosphere")  # the official canvas: longitude relative to the start
    for needle in ("relative to your starting direction", "0° (the centre column) is where you looked first",
                   "every 30°", "Numbered white discs", "rose crosshair with a ring", "Dark grey areas are unexplored",
                   "MOVE <dθ> <dϕ>", "STOP [x1, y1, x2, y2]", "+180", "-90", "0-1000"):
        assert needle in text
    world = system_prompt("egosphere", canvas_style="world")
    for needle in ("θ=-180°", "ϕ=+90°", "every 30°", "red crosshair", "Black areas are unexplored"):
        assert needle in world
    assert "EgoSphere" not in system_prompt("none")
    assert "60°×45° field of view" in system_prompt("egosphere", (60.0, 45.0))  # the configured camera


def _with_history(obs, past, steps):
    """``obs`` with ``steps`` earlier decisions (cycling through the observations ``past``)."""
    records = tuple(StepRecord(i + 1, past[i % len(past)].pose, Action.move(30 * (1 + i % 2), 0), "", 0, 0.0,
                               observation=past[i % len(past)]) for i in range(steps))
    return dataclasses.replace(obs, history=records, instruction="the green face")


@pytest.mark.parametrize("memory", MEMORY_VARIANTS)
def test_prompt_images_and_log_per_memory_variant(obs_list, memory):
    current = _with_history(obs_list[3], obs_list[:4], 7)  # more past views than the visual buffer holds
    history = current.history
    prompt = build_prompt(memory, current)
    expected_images = {"none": 1, "text": 1, "egosphere": 2, "visual": 1 + VISUAL_BUFFER, "hybrid": 1 + VISUAL_BUFFER}
    assert prompt.image_count == expected_images[memory]
    assert prompt.images[-1] is current.view  # the current view is always last
    if memory == "egosphere":
        assert prompt.images[0] is current.canvas
    if memory in ("visual", "hybrid"):  # the most recent past views, oldest first
        recent = history[-VISUAL_BUFFER:]
        assert all(img is past.view for img, past in zip(prompt.images, recent))
    text = "\n".join(prompt.text_parts())
    assert "Instruction: the green face" in text
    has_log = memory in ("text", "hybrid")
    assert ("Log:" in text) == has_log
    if has_log:
        for s in history:
            assert (f"step {s.step}: at θ={s.pose.theta:+.0f}°, ϕ={s.pose.phi:+.0f}° answered "
                    f"{s.action.to_text()}") in text
    placeholders = sum(part["type"] == "image" for m in prompt.messages if isinstance(m["content"], list)
                       for part in m["content"])
    assert placeholders == prompt.image_count


def test_encode_expands_image_tokens_to_each_images_grid(policy, obs_list):
    enc = policy.encode(policy.prompt(obs_list[0]))
    grid = enc.image_grid_thw.tolist()
    assert len(grid) == 2
    n_image_tokens = int((enc.input_ids == policy.image_token_id).sum())
    assert n_image_tokens == sum(t * h * w for t, h, w in grid) // 4 == int(enc.mm_token_type_ids.sum())
    assert enc.pixel_values.shape == (sum(t * h * w for t, h, w in grid), 3 * 2 * 16 * 16)
    assert n_image_tokens < 200  # the tiny processor keeps images small


def test_image_patches_match_transformers_processor(policy):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)  # on the 32-pixel grid: no resize
    settings = policy.images
    ref = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                                   size={"shortest_edge": settings.min_pixels, "longest_edge": settings.max_pixels},
                                   image_mean=list(settings.mean), image_std=list(settings.std))(images=[img],
                                                                                                 return_tensors="pt")
    ours, grid = image_patches(img, settings, "cpu")
    assert list(grid) == ref["image_grid_thw"][0].tolist()
    torch.testing.assert_close(ours, ref["pixel_values"].float(), atol=1e-5, rtol=0)
    big = rng.integers(0, 256, size=(768, 1024, 3), dtype=np.uint8)  # resized: same grid as the processor
    ref_big = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                                       size={"shortest_edge": settings.min_pixels,
                                             "longest_edge": settings.max_pixels})(images=[big])
    assert list(image_patches(big, settings, "cpu")[1]) == list(ref_big["image_grid_thw"][0])


def test_training_inputs_are_the_inference_prompt_plus_the_answer(policy, obs_list):
    prompt = policy.prompt(obs_list[0])
    enc = policy.encode(prompt)
    batch = policy.training_inputs(prompt, "MOVE +60 0")
    assert torch.equal(batch["input_ids"][:, :enc.length], enc.input_ids)
    answer = batch["input_ids"][0, enc.length:].tolist()
    assert policy.tokenizer.decode(answer) == "MOVE +60 0<|im_end|>"
    assert (batch["labels"][0, :enc.length] == -100).all() and batch["labels"][0, enc.length:].tolist() == answer
    loss = policy.model(**batch).loss
    assert torch.isfinite(loss)


# -- the grammar -------------------------------------------------------------------------------


def test_every_grammar_answer_parses_to_what_it_spells():
    g = ActionGrammar()
    for move in lattice_moves():
        assert g.complete(format_action(move)) and not g.extendable(format_action(move))
    for word in g.words:
        assert parse_action(word).ok, word
    assert g.complete("STOP") and g.extendable("STOP")
    for text in ("STOP [0, 0, 1, 1]", "STOP [412, 380, 590, 720]", "STOP [999, 0, 1000, 1000]"):
        assert g.complete(text) and parse_action(text).action == Action.stop_at(eval(text[5:]))
    for bad in ("MOVE 0 0", "MOVE +90 0", "MOVE +30 +120", "STOP [5, 5, 5, 9]", "STOP [05, 1, 9, 9]",
                "STOP [1000, 0, 1000, 5]", "STOP [1, 2, 3, 1001]", "MOVE +30 0 ", "move +30 0"):
        assert not g.complete(bad), bad
    assert g.viable("STOP [41") and g.viable("STOP [412, 3") and g.viable("STOP [412,")
    assert not g.viable("STOP [412, 380, 400") and g.viable("STOP [412, 380, 41")  # x2 must exceed x1


def test_box_number_drafts_cover_exactly_the_valid_numbers():
    assert scan_box("4").open_field == ("4", 0, 999, ", ")
    assert scan_box("412, 380, 41").open_field == ("41", 413, 1000, ", ")  # x2 > x1
    assert scan_box("412, 380, 590, 7").open_field == ("7", 381, 1000, "]")
    assert scan_box("412,").open_field is None and scan_box("412,").viable
    assert not scan_box("412, 380, 400").viable and scan_box("412, 380, 400").open_field is None
    tails = number_completions("4", 0, 999)
    assert len(tails) == 111 and "" in tails and "99" in tails and "000" not in tails
    assert number_completions("1", 413, 1000) == ["000"]
    assert number_completions("0", 0, 999) == [""]


# -- decisions ---------------------------------------------------------------------------------


def test_act_returns_a_parsed_decision_from_the_observation_alone(policy, obs_list):
    policy.clear_cache()
    decisions = [policy.act(obs) for obs in obs_list[:3]]
    for d in decisions:
        assert isinstance(d, Decision) and isinstance(d.action, Action)
        assert d.parse_failures == 0 and d.info["failed_answers"] == []
        assert parse_action(d.text).action == d.action
    assert decisions[0].info["reused_prefix_tokens"] == 0  # after clear_cache nothing is reused
    assert decisions[1].info["reused_prefix_tokens"] > 100  # system prompt and instruction reused
    # stateless: deciding other observations in between changes nothing
    again = policy.act(obs_list[1])
    assert again.text == decisions[1].text


def test_greedy_mode_counts_the_failed_answer_and_retries_constrained(qwen_dir, obs_list):
    greedy = QwenPolicy.from_pretrained(model=qwen_dir, decoding="greedy")
    raw = greedy.answer(greedy.encode(greedy.prompt(obs_list[0])), "greedy").text
    d = greedy.act(obs_list[0])
    if parse_action(raw).ok:
        assert d.parse_failures == 0 and d.action == parse_action(raw).action
    else:  # the random model's usual case: one failed answer, then the constrained retry
        assert d.parse_failures == 1 and d.info["failed_answers"] == [raw]
        assert parse_action(d.text).ok and d.action == parse_action(d.text).action


@pytest.mark.parametrize("decoding", ["greedy", "constrained"])
def test_unparseable_answers_end_in_stop_without_box(policy, obs_list, monkeypatch, decoding):
    from panoseeker_ros.models.qwen_policy import Answer

    calls = []

    def garbage(encoded, how, turn="search"):
        calls.append(how)
        return Answer(f"I am not sure ({len(calls)})", [], {"decoding": how})

    monkeypatch.setattr(policy, "answer", garbage)
    monkeypatch.setattr(policy, "decoding", decoding)
    d = policy.act(obs_list[0])
    assert d.action == Action.stop_at(None)
    if decoding == "greedy":
        assert calls == ["greedy", "constrained"] and d.parse_failures == 2
        assert d.text == "I am not sure (2)" and d.info["failed_answers"] == ["I am not sure (1)", "I am not sure (2)"]
    else:
        assert calls == ["constrained"] and d.parse_failures == 1
    assert "parse_error" in d.info


# -- the constrained decoder -------------------------------------------------------------------


def test_constrained_decoder_equals_grammar_restricted_generate(policy, obs_list):
    """The one-pass trie decoder picks exactly the tokens of model.generate with the grammar applied token
    by token, over many observations and every memory variant."""
    for i, obs in enumerate(obs_list):
        policy.memory = MEMORY_VARIANTS[i % len(MEMORY_VARIANTS)]
        policy.clear_cache()
        enc = policy.encode(policy.prompt(obs))
        fast = policy.answer(enc, "constrained")
        slow = policy.answer(enc, "generate-constrained")
        assert fast.tokens == slow.tokens, (i, fast.text, slow.text)
        assert parse_action(fast.text).ok
        again = policy.answer(enc, "constrained")  # with the prefix cache
        assert again.tokens == fast.tokens and again.info["reused_prefix_tokens"] > 0
    policy.memory = "egosphere"


def _teach(policy, examples, steps=1000, lr=3e-2):
    """Fit the output layer (the body stays random and frozen) so that greedy decoding writes the target
    actions: hidden states of the teacher-forced answers are computed once, then the head is trained on them."""
    feats, labels = [], []
    with torch.no_grad():
        for obs, target in examples:
            batch = policy.training_inputs(policy.prompt(obs), target)
            hidden = policy.model.model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state[0]
            keep = batch["labels"][0, 1:] != -100  # the hidden state at t predicts the token at t + 1
            feats.append(hidden[:-1][keep])
            labels.append(batch["labels"][0, 1:][keep])
    x, y = torch.cat(feats), torch.cat(labels)
    head = policy.model.lm_head
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        torch.nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
        opt.zero_grad()


def test_constrained_equals_naive_greedy_whenever_greedy_writes_an_action(qwen_dir, obs_list):
    """On the random model and on a briefly trained one (whose greedy answers are actions, boxes included),
    the constrained decoder answers the same action as plain greedy generate whenever greedy's answer is a
    well-formed action."""
    random_policy = QwenPolicy.from_pretrained(model=qwen_dir)
    trained = QwenPolicy.from_pretrained(model=qwen_dir)
    targets = ["MOVE +60 0", "STOP [412, 380, 590, 720]", "MOVE -30 +30", "STOP [100, 200, 300, 400]"]
    _teach(trained, [(obs, targets[i % 4]) for i, obs in enumerate(obs_list[:8])])
    compared = boxes = 0
    for pol in (random_policy, trained):
        for obs in obs_list:
            enc = pol.encode(pol.prompt(obs))
            naive = pol.answer(enc, "greedy")
            fast = pol.answer(enc, "constrained")
            if pol.grammar.complete(naive.text):
                compared += 1
                assert parse_action(fast.text).action == parse_action(naive.text).action, (naive.text, fast.text)
                assert fast.tokens == naive.tokens
                if parse_action(fast.text).action.box is not None:
                    boxes += 1
                    assert fast.info["forward_passes"] <= len(fast.tokens) // 2  # box numbers come from drafts
                else:
                    assert fast.info["forward_passes"] == 2  # prompt, then one draft holding the whole MOVE
    assert compared >= 8 and boxes >= 2  # the comparison is not vacuous, and covers box answers
