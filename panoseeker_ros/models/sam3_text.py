"""SAM-3 concept segmentation from a text phrase (``Sam3Model``): the ``sam3-text`` detector.

``Sam3TrackerModel`` (the segmenter) takes boxes and points only; ``Sam3Model`` is SAM-3's open-vocabulary
detector: given a noun phrase it returns up to N object queries, each with a box, a mask and a score.
The detector keeps the best-scoring query of a view. It reads only the pixels and the phrase, so it
serves on a robot as well as in simulation.

The steps are those of transformers' ``Sam3Processor`` and its ``post_process_instance_segmentation``,
done here because that processor imports torchvision (which this package does not require):

* text: the model directory's CLIP tokenizer, padded to 32 tokens (``padding="max_length"``);
* image: :class:`.sam3_segmenter.ViewInput` with the directory's processor settings;
* score of query i = sigmoid(pred_logits[i]) · sigmoid(presence_logit) (presence: "the concept is in
  the image at all"); its mask = pred_masks[i] bilinearly resized to the view, > 0 (probability 0.5);
  its box = pred_boxes[i] (normalised x1, y1, x2, y2) in the 0–1000 grammar.

Text features are cached per phrase and vision features per view content.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.geometry import Pose
from .detection import Detection
from .loading import TINY_MODELS_FIX, ModelLoadError, load_error, load_pretrained
from .sam3_segmenter import ViewInput, view_key

DEFAULT_MODEL = "facebook/sam3"
TEXT_LENGTH = 32  # Sam3Processor pads every phrase to 32 tokens


class DetectorLoadError(ModelLoadError):
    """A SAM-3 detector directory or hub id that cannot be loaded; the one-line message names it and the fix."""


class Sam3TextDetector:
    """Phrase → best box, mask and score on one view (the Detector interface). Build with :meth:`from_pretrained`."""

    name = "sam3-text"

    def __init__(self, model, tokenizer, image_input: ViewInput):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pixel_values = image_input  # (H, W, 3) uint8 view → (1, 3, S, S) model input
        self.device, self.dtype, self.image_size = image_input.device, image_input.dtype, image_input.image_size
        self._text: dict[str, object] = {}
        self._vision_key: str | None = None
        self._vision = None
        self.last: dict = {}  # what the last call saw: the phrase, all query scores, the chosen query

    @classmethod
    def from_pretrained(cls, model=DEFAULT_MODEL, device=None, dtype=None) -> "Sam3TextDetector":
        """Load ``Sam3Model`` and its tokenizer (local directory or hub id) once; bf16 on CUDA, fp32 on CPU."""
        fix = (f"{TINY_MODELS_FIX} (then --detector-model DIR/sam3-tiny) or download the weights "
               f"(e.g. 'hf download {DEFAULT_MODEL} --local-dir DIR') and pass --detector-model DIR")
        from transformers import AutoTokenizer, Sam3Model

        net, source = load_pretrained(Sam3Model, model, "SAM-3 detector", fix, "--detector-model", DetectorLoadError,
                                      device, dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise load_error("SAM-3 detector tokenizer", model, exc, "use a directory that holds the tokenizer files "
                             "of the model (tokenizer.json)", DetectorLoadError) from None
        return cls(net, tokenizer, ViewInput.of(net, source, int(net.config.vision_config.backbone_config.image_size)))

    def text_features(self, phrase: str):
        if phrase not in self._text:
            tokens = self.tokenizer([phrase], padding="max_length", max_length=TEXT_LENGTH, truncation=True,
                                    return_tensors="pt")
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            self._text[phrase] = (self.model.get_text_features(input_ids=ids, attention_mask=mask), mask)
        return self._text[phrase]

    def vision_features(self, view: np.ndarray):
        key = view_key(view)
        if key != self._vision_key:
            self._vision = self.model.get_vision_features(pixel_values=self.pixel_values(view))
            self._vision_key = key
        return self._vision

    @torch.inference_mode()
    def find(self, view: np.ndarray, pose: Pose | None, phrase: str) -> Detection | None:
        """The best-scoring query for ``phrase`` on ``view`` (H, W, 3) uint8 RGB: 0–1000 box, score in
        [0, 1] and (H, W) bool view mask (may be empty); None only when ``phrase`` is empty."""
        if not phrase.strip():
            return None
        height, width = view.shape[:2]
        text, text_mask = self.text_features(phrase)
        out = self.model(vision_embeds=self.vision_features(view), text_embeds=text, attention_mask=text_mask)
        scores = out.pred_logits[0].float().sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits[0].float().sigmoid()
        best = int(torch.argmax(scores))
        logits = out.pred_masks[0, best].float()
        mask = F.interpolate(logits[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0] > 0
        self.last = {"phrase": phrase, "scores": scores.cpu().tolist(), "query": best}
        return Detection(grammar_box(out.pred_boxes[0, best].tolist()), float(scores[best]), mask.cpu().numpy())


def grammar_box(xyxy) -> tuple[int, int, int, int]:
    """A normalised (x1, y1, x2, y2) box in [0, 1] → the 0–1000 integer box of the action grammar, at
    least one unit wide and high (a STOP box must not be empty)."""
    x1, x2 = sorted(min(1000.0, max(0.0, 1000.0 * float(v))) for v in (xyxy[0], xyxy[2]))
    y1, y2 = sorted(min(1000.0, max(0.0, 1000.0 * float(v))) for v in (xyxy[1], xyxy[3]))
    left, top = min(int(np.floor(x1)), 999), min(int(np.floor(y1)), 999)
    return left, top, max(int(np.ceil(x2)), left + 1), max(int(np.ceil(y2)), top + 1)
