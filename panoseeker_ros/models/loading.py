"""Loading a pretrained model once: where its files come from, on which device, in which dtype.

Shared by the Qwen3-VL policy and the SAM-3 segmenter. A model is a local directory (saved with
``save_pretrained``, so it holds config.json) or a hub id; every failure is a one-line
:class:`ModelLoadError` (a ValueError, which the CLI prints as one line) that names the path and the fix.
"""
from __future__ import annotations

from pathlib import Path

import torch

TINY_MODELS_FIX = "build tiny test models with 'panoseeker make-tiny-models --out DIR'"
DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}


class ModelLoadError(ValueError):
    """A model, processor or adapter that cannot be loaded; the one-line message names it and the fix."""


def resolve_source(model, what: str, fix: str, no_config_fix: str | None = None,
                   error: type[ModelLoadError] = ModelLoadError) -> str:
    """``model`` as a local directory (it must hold config.json) or a hub id ("owner/name").

    Anything else raises ``error``: "<what> directory PATH does not exist; <fix>" or "... has no
    config.json; <no_config_fix>" (``fix`` when not given)."""
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise error(f"{what} directory {path} has no config.json; {no_config_fix or fix}")
        return str(path)
    if text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise error(f"{what} directory {path} does not exist; {fix}")
    return text


def load_error(what: str, model, exc: Exception, fix: str,
               error: type[ModelLoadError] = ModelLoadError) -> ModelLoadError:
    """The one-line error for a model that failed to load: its name, the first line of ``exc``, the fix."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return error(f"cannot load {what} {model!s} ({first}); {fix}")


def torch_device(device=None) -> torch.device:
    """``device`` ("cuda", "cpu", ...), or CUDA when available."""
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_dtype(dtype, device: torch.device) -> torch.dtype:
    """None: bf16 on CUDA, fp32 elsewhere; else a torch dtype or its name (bfloat16/bf16, float16/fp16,
    float32/fp32)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def placement(device=None, dtype=None) -> tuple[torch.device, dict]:
    """The device and the ``from_pretrained`` keyword arguments that load the weights onto it in the
    dtype of :func:`torch_dtype` (on CUDA straight to the GPU, without a host copy)."""
    dev = torch_device(device)
    kwargs = {"dtype": torch_dtype(dtype, dev)}
    if dev.type == "cuda":
        kwargs["device_map"] = {"": str(dev)}
    return dev, kwargs


def optional_file(source: str, name: str) -> Path | None:
    """The file ``name`` of a model directory or hub id, or None when it has none or cannot be fetched."""
    from transformers.utils import cached_file

    try:
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except OSError:
        path = None
    return Path(path) if path else None


def load_pretrained(model_class, model, what: str, fix: str, option: str, error: type[ModelLoadError],
                    device=None, dtype=None):
    """``model_class.from_pretrained`` of ``model`` (a directory or hub id) on ``device`` in ``dtype``
    (see :func:`placement`): (model in eval mode, its source). Every failure is one ``error`` line; ``fix``
    says where a model comes from, ``option`` is the command-line option that names one."""
    source = resolve_source(model, what, fix, error=error)
    dev, kwargs = placement(device, dtype)
    try:
        net = model_class.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise load_error(what, model, exc, f"download the weights and pass {option} DIR", error) from None
    return net.to(dev).eval(), source
