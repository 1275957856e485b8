"""Model subcommands of ``panoseeker`` (added by the CLI through :func:`register`)."""
from __future__ import annotations

import argparse


def cmd_make_tiny_models(args) -> int:
    from .tiny import build_tiny_models

    paths = build_tiny_models(args.out, seed=args.seed)
    print(f"qwen: {paths['qwen']}")
    print(f"sam3: {paths['sam3']}")
    print(f"sam3-text: {paths['sam3_text']}")
    return 0


def register(subparsers) -> None:
    """Add ``make-tiny-models`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "make-tiny-models", help="build tiny random-weight Qwen3-VL and SAM-3 models (tests, offline runs)",
        description="Build tiny random-weight Qwen3-VL, SAM-3 tracker and SAM-3 detector models with the real "
                    "architectures. "
                    "Their answers are meaningless; they exercise every code path without downloads. Use them "
                    "with: panoseeker eval --policy qwen --model OUT/qwen3vl-tiny --segmenter sam3 "
                    "--sam-model OUT/sam3-tracker-tiny, or panoseeker eval --policy scan --detector sam3-text "
                    "--detector-model OUT/sam3-tiny",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (two model directories are written inside)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and the tokenizer corpus")
    p.set_defaults(func=cmd_make_tiny_models)
