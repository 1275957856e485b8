"""The SAM-3 segmenter at STOP: box → mask on a 1024×768 view, the official active-alignment loop
(segment, move, track with the video tracker), and entropy point prompts (second pass on the kept image
embedding, against re-encoding the view), in one run.

    python bench/segment_step.py --tiny models_tiny/sam3-tracker-tiny        # CPU, tiny random model
    python bench/segment_step.py                                              # CUDA, SAM-3 tracker size
    python bench/segment_step.py --with-policy [--qwen-tiny DIR]              # + the Qwen3-VL policy resident

The real-size run builds the SAM-3 tracker architecture (Sam3TrackerConfig defaults: ViT 1024×32 layers,
1008-pixel input; the video tracker's on first use) with random bf16 weights on the GPU; nothing is
downloaded. Random weights give meaningless masks; the timings and memory are those of the real
architecture.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from policy_step import episode_observations, peak_memory, real_size_policy, sync  # noqa: E402

from panoseeker_ros.core.actions import box_to_pixels  # noqa: E402
from panoseeker_ros.core.dataset import load_dataset  # noqa: E402
from panoseeker_ros.core.actions import Action  # noqa: E402
from panoseeker_ros.core.environment import SimScene, answer  # noqa: E402
from panoseeker_ros.core.episode import Decision, Done  # noqa: E402
from panoseeker_ros.models.sam3_segmenter import Sam3Segmenter, ViewInput  # noqa: E402
from panoseeker_ros.paths import sample_dataset  # noqa: E402

BOX = (300, 250, 650, 700)  # 0–1000 view units, off centre so that alignment moves the camera


class ReencodingSegmenter(Sam3Segmenter):
    """The peer: the same segmenter without the kept embedding (the view is encoded for every pass)."""

    def embeddings(self, view):
        self._embedding_key = None
        return super().embeddings(view)


def real_size_segmenter(point_prompts: bool, cls=Sam3Segmenter, seed: int = 0):
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = Sam3TrackerModel._from_config(Sam3TrackerConfig(), dtype=torch.bfloat16).eval()

    def video_tracker():  # the official alignment tracks with the video model, built on first use
        from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

        with torch.device("cuda"):
            return Sam3TrackerVideoModel._from_config(Sam3TrackerVideoConfig(), dtype=torch.bfloat16).eval()

    return cls(model, ViewInput(model, int(model.config.prompt_encoder_config.image_size)), point_prompts=point_prompts,
               load_tracker=video_tracker)


def timed(fn, items, device) -> float:
    """Median wall time of ``fn(item)`` in ms."""
    times = []
    for item in items:
        sync(device)
        t0 = time.perf_counter()
        fn(item)
        sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", help="tiny SAM-3 tracker directory (panoseeker make-tiny-models); runs on CPU")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--with-policy", action="store_true", help="load the Qwen3-VL policy too (resident together)")
    parser.add_argument("--qwen-tiny", help="tiny Qwen3-VL directory for --with-policy on CPU")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for --tiny runs (tiny models gain nothing from more; one keeps timings "
                             "steady on a shared machine)")
    args = parser.parse_args()
    if args.tiny:
        torch.set_num_threads(args.threads)
    if not args.tiny and not torch.cuda.is_available():
        print("segment_step: the real-size run needs CUDA; on a CPU machine pass --tiny DIR "
              "(build one with 'panoseeker make-tiny-models --out DIR')", file=sys.stderr)
        return 2
    if args.with_policy and args.tiny and not args.qwen_tiny:
        print("segment_step: --with-policy on CPU needs --qwen-tiny DIR as well", file=sys.stderr)
        return 2

    def make(point_prompts=False, cls=Sam3Segmenter):
        if args.tiny:
            return cls.from_pretrained(model=args.tiny, device="cpu", point_prompts=point_prompts)
        return real_size_segmenter(point_prompts, cls)

    segmenter = make()
    device = segmenter.device
    what = (f"tiny SAM-3 tracker ({args.tiny}), CPU fp32" if args.tiny else
            f"SAM-3 tracker architecture, random weights, {torch.cuda.get_device_name()} bf16")
    policy = None
    if args.with_policy:
        if args.tiny:
            from panoseeker_ros.models.qwen_policy import QwenPolicy

            policy = QwenPolicy.from_pretrained(model=args.qwen_tiny, device="cpu")
        else:
            policy = real_size_policy("egosphere")
    observations = episode_observations(args.steps + 1)
    scene = SimScene(load_dataset(sample_dataset()).episodes[0])
    intr = scene.intrinsics
    box_px = box_to_pixels(BOX, intr.width, intr.height)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    segmenter.segment(observations[0].view, box_px, observations[0].pose)  # warm-up
    views = observations[1:]
    t_box = timed(lambda o: segmenter.segment(o.view, box_px, o.pose), views, device)
    aligned = []

    stop = Decision(Action.stop_at(BOX))

    def align(o):
        """The STOP phase of the episode stepper from view ``o``: segment, look, track (up to 5 centring moves)."""
        episode = scene.episode()
        req = episode.observe(answer(episode.start(o.instruction, o.pose), scene.camera, None, None))
        req = episode.observe(stop)
        while not isinstance(req, Done):
            req = episode.observe(answer(req, scene.camera, None, segmenter))
        aligned.append(req.result.looks > 0)

    t_align = timed(align, views, device)
    pointed, peer = make(point_prompts=True), make(point_prompts=True, cls=ReencodingSegmenter)
    pointed.segment(views[0].view, box_px, views[0].pose)
    peer.segment(views[0].view, box_px, views[0].pose)
    used = []

    def with_points(o):
        pointed.segment(o.view, box_px, o.pose)
        used.append(pointed.last["points"] is not None)

    t_points = timed(with_points, views, device)
    used_points = sum(used)
    t_peer = timed(lambda o: peer.segment(o.view, box_px, o.pose), views, device)
    print(f"segment_step: {what}, {len(views)} views of 1024x768")
    print(f"segment_step: box->mask {t_box:.1f} ms, alignment loop (segment, moves, tracking) {t_align:.1f} ms "
          f"({sum(aligned)}/{len(aligned)} moved), point prompts {t_points:.1f} ms vs re-encoding {t_peer:.1f} ms, "
          f"ratio {t_peer / t_points:.2f}x (points used on {used_points}/{len(views)} views), "
          f"peak {peak_memory(device)}")
    if policy is not None:
        t_act = timed(policy.act, views, device)
        print(f"segment_step: policy + SAM-3 resident together: policy act {t_act:.1f} ms/step, "
              f"box->mask {timed(lambda o: segmenter.segment(o.view, box_px, o.pose), views, device):.1f} ms, "
              f"peak {peak_memory(device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
