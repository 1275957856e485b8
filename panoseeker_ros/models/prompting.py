"""What the Qwen3-VL policy reads: the system prompt, the per-step chat messages and the memory variants.

A prompt is a list of chat messages in the Hugging Face multimodal format (``{"type": "image"}``
placeholders and ``{"type": "text", "text": ...}`` parts) plus the images, in placeholder order.
Text that stays constant within an episode (system prompt, instruction) comes first, so the policy
can reuse its key/value cache for it from one step to the next.

Memory variants (``memory=``), the ablation of METHOD.md:

* ``none``: the current view only;
* ``text``: a text log of the previous camera directions and moves;
* ``visual``: the current view and up to :data:`VISUAL_BUFFER` previous views, oldest first;
* ``hybrid``: the text log and the previous views;
* ``egosphere`` (default): the current view and the EgoSphere canvas.

Two more kinds of turn, the same for every memory variant: a review turn (``obs.review``: the STOP view
with the mask tinted and its box drawn; answer ACCEPT, REFINE [box] or MOVE, :func:`review_system_prompt`)
and a VBR question (:func:`point_prompt`: the view with one point marked; answer Yes or No).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.actions import BOX_SCALE, DPHI_VALUES, DTHETA_VALUES
from ..core.episode import Observation
from ..core.geometry import DEFAULT_FOV_DEG, Pose
from ..core.instruction import plain_text

MEMORY_VARIANTS = ("none", "text", "visual", "hybrid", "egosphere")
ANSWER_YES, ANSWER_NO = "Yes", "No"  # the two answers of a VBR question
VISUAL_BUFFER = 5  # previous views shown by the visual and hybrid variants


def _signed_list(values) -> str:
    return ", ".join(f"{v:+d}" if v else "0" for v in values)


def _fmt_pose(pose: Pose) -> str:
    return f"θ={pose.theta:+.0f}°, ϕ={pose.phi:+.0f}°"


def system_prompt(memory: str = "egosphere", fov_deg=DEFAULT_FOV_DEG, canvas_style: str = "official") -> str:
    """The task, the images of the chosen memory variant and the action grammar of core/actions.py;
    ``fov_deg`` (horizontal, vertical) is the camera's configured field of view, ``canvas_style`` how the
    EgoSphere is drawn (core.egosphere)."""
    check_memory(memory)
    fov_h, fov_v = (f"{v:g}" for v in fov_deg)
    lines = [
        f"You control a pan-tilt camera with a {fov_h}°×{fov_v}° field of view standing inside a 360° scene. "
        "Find the object described by the instruction: turn the camera step by step until the object is in "
        "the current view, then stop and mark it with a box.",
        "",
        "Directions: θ is the azimuth (positive to the right), ϕ the elevation (positive up), both in degrees.",
        "The current view is what the camera sees now, centred on the direction it points at.",
    ]
    if memory in ("text", "hybrid"):
        lines.append("A log lists the directions you looked at before and the move you made at each.")
    if memory in ("visual", "hybrid"):
        lines.append(f"You also see up to {VISUAL_BUFFER} previous views, oldest first, each labelled with its "
                     "step and direction.")
    if memory == "egosphere" and canvas_style == "official":
        lines += [
            "The EgoSphere image is an equirectangular map of everything seen so far. Its longitude is relative "
            "to your starting direction: 0° (the centre column) is where you looked first, -180° and +180° (the "
            "left and right edges) are behind that; latitude runs from +90° (top) to -90° (bottom). Degree "
            "labels are on the left and bottom edges and faint grid lines are drawn every 30°. Numbered white "
            "discs mark the directions you looked at, in order; the rose crosshair with a ring marks the "
            "current view. Dark grey areas are unexplored.",
        ]
    elif memory == "egosphere":
        lines += [
            "The EgoSphere image is an equirectangular map of everything seen so far: its left edge is "
            "θ=-180°, its right edge θ=+180°, its centre column θ=0°; its top edge is ϕ=+90°, its bottom edge "
            "ϕ=-90°. Grey grid lines are drawn every 30°. The red crosshair marks the centre of the current "
            "view. Blue arrows show the path the camera has taken so far. Black areas are unexplored.",
        ]
    lines += [
        "",
        "Answer with exactly one action and nothing else:",
        f"MOVE <dθ> <dϕ>  turn relative to the current direction; dθ is one of {_signed_list(DTHETA_VALUES)}; "
        f"dϕ is one of {_signed_list(DPHI_VALUES)}; MOVE 0 0 is not an action.",
        f"STOP [x1, y1, x2, y2]  the target is in the current view: its box on the current view in "
        f"0-{BOX_SCALE} coordinates (x to the right, y down, x1 < x2, y1 < y2).",
        "STOP  give up: the target cannot be found.",
        "Examples: MOVE +60 0 | MOVE -30 +30 | MOVE +180 0 | STOP [412, 380, 590, 720]",
    ]
    return "\n".join(lines)


def review_system_prompt() -> str:
    """The task of a review turn and its answers (core/actions.py grammar, review turn)."""
    return "\n".join([
        "You stopped a search for the object described by the instruction and marked it with a box. The image "
        "shows the view you stopped at, with the segmentation of your box tinted magenta and the box drawn in "
        "yellow. Judge whether the tinted region is exactly the object the instruction describes.",
        "",
        "Answer with exactly one of:",
        "ACCEPT  the tinted region is the object.",
        f"REFINE [x1, y1, x2, y2]  segment this box on the same view instead: the object's box in 0-{BOX_SCALE} "
        f"coordinates (x to the right, y down, x1 < x2, y1 < y2).",
        f"MOVE <dθ> <dϕ>  the object is not in this view: turn and search on; dθ is one of "
        f"{_signed_list(DTHETA_VALUES)}; dϕ is one of {_signed_list(DPHI_VALUES)}.",
        "Examples: ACCEPT | REFINE [412, 380, 590, 720] | MOVE +60 0",
    ])


def point_prompt(instruction: str, marked_view: np.ndarray) -> Prompt:
    """A VBR question: is the point marked on ``marked_view`` (a red ring, core.verification.draw_marker) on
    the object of ``instruction``? The answer is one of ANSWER_YES / ANSWER_NO (read from its first token)."""
    content = [{"type": "text", "text": f"Instruction: {instruction}\n"}, {"type": "text", "text": "View:"},
               {"type": "image"},
               {"type": "text", "text": f"\nDoes the point marked by the red ring lie on the object the instruction "
                                        f"describes? Answer {ANSWER_YES} or {ANSWER_NO}."}]
    return Prompt([{"role": "user", "content": content}], [marked_view])


def check_memory(memory: str) -> str:
    if memory not in MEMORY_VARIANTS:
        raise ValueError(f"unknown memory variant {memory!r}; choose one of {', '.join(MEMORY_VARIANTS)}")
    return memory


def log_lines(history) -> list[str]:
    """The text log of earlier decisions (``Observation.history``), one line each."""
    return [f"step {r.step}: at {_fmt_pose(r.pose)} answered {r.action.to_text()}" for r in history]


@dataclass
class Prompt:
    """Chat messages with ``{"type": "image"}`` placeholders, and the images (H, W, 3) uint8 RGB in order."""

    messages: list[dict]
    images: list[np.ndarray]

    @property
    def image_count(self) -> int:
        return len(self.images)

    def text_parts(self) -> list[str]:
        return [part["text"] for m in self.messages if isinstance(m["content"], list)
                for part in m["content"] if part["type"] == "text"]


def build_prompt(memory: str, obs: Observation, answer: str | None = None, system: str | None = None) -> Prompt:
    # one builder for inference and training: the prompt a model is trained on is the one it acts on
    """The messages for one decision, from the observation alone (its ``history`` holds the earlier
    decisions). ``answer`` appends the assistant turn (supervised training). A review turn (``obs.review``)
    shows the reviewed picture under :func:`review_system_prompt` (``system`` overrides it)."""
    check_memory(memory)
    content: list[dict] = [{"type": "text", "text": f"Instruction: {plain_text(obs.instruction)}\n"}]
    images: list[np.ndarray] = []
    if obs.review is not None:
        review = obs.review
        content += [{"type": "text", "text": f"Review {review.turn} of the view at {_fmt_pose(obs.pose)}, your box "
                                             f"{list(review.box)}:"}, {"type": "image"},
                    {"type": "text", "text": "\nYour answer:"}]
        messages = [{"role": "system", "content": system if system is not None else review_system_prompt()},
                    {"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return Prompt(messages, [review.picture(obs.view)])

    def image(label: str, img: np.ndarray) -> None:
        content.append({"type": "text", "text": label})
        content.append({"type": "image"})
        images.append(img)

    if memory == "egosphere":
        image("EgoSphere:", obs.canvas)
    if memory in ("visual", "hybrid"):
        for past in obs.history[-VISUAL_BUFFER:]:
            image(f"Step {past.step} view at {_fmt_pose(past.pose)}:", past.view)
    if memory in ("text", "hybrid"):
        log = log_lines(obs.history)
        content.append({"type": "text", "text": "Log:\n" + ("\n".join(log) if log else "(first step)") + "\n"})
    image(f"Current view, step {obs.step + 1}, at {_fmt_pose(obs.pose)}:", obs.view)
    content.append({"type": "text", "text": "\nYour action:"})
    messages = [{"role": "system", "content": system if system is not None else system_prompt(memory)},
                {"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return Prompt(messages, images)
