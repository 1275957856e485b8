"""The policy as a training run holds it: Qwen3-VL, an optional merged SFT adapter, a fresh LoRA adapter."""
from __future__ import annotations

from ..core.config import SeekConfig
from .settings import LoraSettings


def precision_dtype(precision: str):
    """The torch dtype of a ``precision`` setting (auto: bf16 on CUDA, fp32 on CPU)."""
    import torch

    choices = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if precision not in choices:
        raise ValueError(f"precision {precision!r} is unknown; choose auto, fp16, bf16 or fp32")
    return choices[precision]


def trainable_policy(model: str, lora: LoraSettings, config: SeekConfig, memory: str = "egosphere",
                     merged_adapter=None, precision: str = "auto", device=None, **policy_options):
    """A :class:`~panoseeker_ros.models.qwen_policy.QwenPolicy` whose model is a PEFT model with a new
    LoRA adapter on the language model's linear layers (everything else frozen).

    ``merged_adapter``: an SFT adapter merged into the weights first; with the new adapter switched off
    (``policy.model.disable_adapter()``) the model is then exactly the SFT model, GRPO's reference.
    """
    from peft import LoraConfig, get_peft_model

    from ..models.qwen_policy import QwenPolicy

    policy = QwenPolicy.from_pretrained(model=model, adapter=merged_adapter, memory=memory, device=device,
                                        dtype=precision_dtype(precision), fov_deg=config.camera.fov_deg,
                                        **policy_options)
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        policy.model = get_peft_model(policy.model, peft_config)
    except ValueError as exc:
        raise ValueError(f"lora.target_modules {lora.target_modules!r} matches no layer of {model} "
                         f"({str(exc).splitlines()[0]}); give a regular expression over its module names") from None
    policy.model.eval()
    return policy


def trainable_parameters(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]
