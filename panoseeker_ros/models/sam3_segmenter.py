"""SAM-3 (tracker, image mode) as the PanoSeeker segmenter: a box on a view in, a view mask out.

The model is loaded once and stays resident (bf16 on CUDA, fp32 on CPU). Preprocessing runs in torch
on the model's device with the settings of the model directory's processor files (resize to the
model's square input, rescale, normalise), the same steps as transformers' Sam3ImageProcessor, which
would need torchvision. The last image embedding is kept, keyed by the view's content, so a second
prompt on the same view (point prompts, a repeated call) skips the vision encoder.

Box prompt: of SAM's three candidate masks the one with the highest predicted IoU is kept, upsampled
to the view and thresholded at ``mask_threshold`` (logits). An empty mask is a valid answer.

``point_prompts=True`` adds entropy-based point prompts (METHOD.md, related ideas): after the box pass,
the Bernoulli entropy of the mask probabilities ranks the pixels inside the box; the two most confident
foreground pixels (the second at least a quarter of the box diagonal from the first, when possible) and
the most confident background pixel become point prompts for a second pass with box + points.

Given point prompts (VBR: the points the policy confirmed by looking, view pixels with labels 1 / 0),
one pass decodes the box with those points and the entropy points are not added.

Tracking (the official alignment, :meth:`Sam3Segmenter.track`): the object of the last ``segment`` call
is followed into later views by transformers' ``Sam3TrackerVideoModel`` in a streaming inference
session: its first frame is the STOP view with the STOP box, every later view is one more frame, and
its memory of the object comes from those frames alone. The video model loads from the same directory
or hub id on the first ``track`` and stays resident beside the image model.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
import torch.nn.functional as F

from ..core.geometry import Pose
from .loading import TINY_MODELS_FIX, ModelLoadError, load_pretrained, optional_file

DEFAULT_MODEL = "facebook/sam3"


class SegmenterLoadError(ModelLoadError):
    """A SAM-3 model directory or hub id that cannot be loaded; the one-line message names it and the fix."""


def _image_settings(source: str, image_size: int) -> dict:
    """Resize target, rescale factor, mean and std from processor_config.json / preprocessor_config.json."""
    settings = {"size": image_size, "rescale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = optional_file(source, name)
        if not path:
            continue
        doc = json.loads(path.read_text())
        doc = doc.get("image_processor", doc)
        size = doc.get("size") or {}
        settings.update(size=int(size.get("height", image_size)), rescale=float(doc.get("rescale_factor", 1 / 255)),
                        mean=list(doc.get("image_mean", settings["mean"])),
                        std=list(doc.get("image_std", settings["std"])))
        break
    return settings


class ViewInput:
    """A SAM-3 model's image input: its device and dtype, and Sam3ImageProcessor's steps without torchvision
    (bilinear, antialiased resize to ``image_size`` squared, times ``rescale``, minus ``mean``, over ``std``)."""

    def __init__(self, model, image_size: int, rescale: float = 1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.image_size = int(image_size)
        self.rescale = float(rescale)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def of(cls, model, source: str, image_size: int) -> "ViewInput":
        """With the settings of the model directory's processor files (``image_size`` when they have none)."""
        settings = _image_settings(source, image_size)
        return cls(model, settings["size"], settings["rescale"], settings["mean"], settings["std"])

    def __call__(self, view: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB → (1, 3, S, S) normalised model input on the model's device, in its dtype."""
        x = torch.from_numpy(np.ascontiguousarray(view)).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1).unsqueeze(0).float()
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return ((x * self.rescale - self.mean) / self.std).to(self.dtype)


def view_key(view: np.ndarray) -> str:
    """A key of a view's content and shape (to reuse an image embedding for the same pixels)."""
    return hashlib.blake2b(np.ascontiguousarray(view).data, digest_size=16).hexdigest() + str(view.shape)


def bernoulli_entropy(prob: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of independent Bernoulli pixels with probabilities ``prob`` (any shape)."""
    p = prob.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class Sam3Segmenter:
    """Box → mask on one view (core Segmenter protocol). Build with :meth:`from_pretrained`."""

    name = "sam3"

    def __init__(self, model, image_input: ViewInput, point_prompts: bool = False, mask_threshold: float = 0.0,
                 load_tracker=None):
        self.model = model.eval()
        self.load_tracker = load_tracker  # () -> Sam3TrackerVideoModel, called on the first track()
        self.tracker = None
        self._object = None  # (view, box in model input pixels) of the last segment(): what track() follows
        self._session = None  # the streaming inference session of that object
        self.pixel_values = image_input  # (H, W, 3) uint8 view → (1, 3, S, S) model input
        self.device, self.dtype, self.image_size = image_input.device, image_input.dtype, image_input.image_size
        self.point_prompts = point_prompts
        self.mask_threshold = float(mask_threshold)
        self._embedding_key: str | None = None
        self._embeddings = None
        self.last: dict = {}  # what the last call did: scores, points, whether the embedding was reused

    @classmethod
    def from_pretrained(cls, model=DEFAULT_MODEL, device=None, dtype=None, point_prompts: bool = False,
                        mask_threshold: float = 0.0) -> "Sam3Segmenter":
        """Load a SAM-3 tracker (local directory or hub id) once; bf16 on CUDA, fp32 on CPU by default."""
        fix = (f"{TINY_MODELS_FIX} or download the weights (e.g. 'hf download {DEFAULT_MODEL} --local-dir DIR') "
               f"and pass --sam-model DIR")
        from transformers import Sam3TrackerModel

        net, source = load_pretrained(Sam3TrackerModel, model, "SAM-3", fix, "--sam-model", SegmenterLoadError,
                                      device, dtype)
        image_input = ViewInput.of(net, source, int(net.config.prompt_encoder_config.image_size))

        def load_tracker():
            from transformers import Sam3TrackerVideoModel

            return load_pretrained(Sam3TrackerVideoModel, source, "SAM-3 video tracker", fix, "--sam-model",
                                   SegmenterLoadError, device, dtype)[0]

        return cls(net, image_input, point_prompts=point_prompts, mask_threshold=mask_threshold,
                   load_tracker=load_tracker)

    # -- pieces --------------------------------------------------------------------------------

    def embeddings(self, view: np.ndarray):
        """The image embeddings of ``view`` (the vision encoder runs once per distinct view content)."""
        key = view_key(view)
        self.last["embedding_reused"] = key == self._embedding_key
        if key != self._embedding_key:
            self._embeddings = self.model.get_image_embeddings(self.pixel_values(view))
            self._embedding_key = key
        return self._embeddings

    def _decode(self, embeddings, box, points=None, labels=None):
        """Mask logits (h, w) on the model's low-resolution grid of the best of the multimask outputs, and its IoU."""
        # coordinates stay float32: the prompt encoder normalises them before its own cast (bf16 would round
        # a 1008-pixel coordinate to a multiple of 4)
        kwargs = {"input_boxes": torch.tensor([[box]], dtype=torch.float32, device=self.device)}
        if points is not None:
            kwargs["input_points"] = torch.tensor([[points]], dtype=torch.float32, device=self.device)
            kwargs["input_labels"] = torch.tensor([[labels]], dtype=torch.int32, device=self.device)
        out = self.model(image_embeddings=embeddings, multimask_output=True, **kwargs)
        scores = out.iou_scores[0, 0].float()
        best = int(torch.argmax(scores))
        return out.pred_masks[0, 0, best].float(), float(scores[best]), float(out.object_score_logits.reshape(-1)[0])

    def _entropy_points(self, logits: torch.Tensor, box_grid) -> tuple[list, list] | None:
        """Two confident foreground points and one confident background point inside the box, in model
        input pixels, from the mask logits on the low-res grid; None when the box holds no foreground."""
        h, w = logits.shape
        x1, y1, x2, y2 = box_grid
        # grid cells whose centres lie inside the box
        c0, c1 = max(0, int(np.ceil(x1 - 0.5))), min(w, int(np.floor(x2 - 0.5)) + 1)
        r0, r1 = max(0, int(np.ceil(y1 - 0.5))), min(h, int(np.floor(y2 - 0.5)) + 1)
        if c1 <= c0 or r1 <= r0:
            return None
        prob = torch.sigmoid(logits[r0:r1, c0:c1])
        entropy = bernoulli_entropy(prob)
        fg = prob > 0.5
        if not bool(fg.any()):
            return None
        big = torch.finfo(entropy.dtype).max
        dev = logits.device
        ys, xs = torch.meshgrid(torch.arange(r1 - r0, device=dev), torch.arange(c1 - c0, device=dev), indexing="ij")

        def pick(score: torch.Tensor):
            flat = int(torch.argmin(score))
            return flat // score.shape[1], flat % score.shape[1]

        fg_entropy = torch.where(fg, entropy, big)
        p1 = pick(fg_entropy)
        far = ((ys - p1[0]) ** 2 + (xs - p1[1]) ** 2).float().sqrt() >= 0.25 * float(np.hypot(r1 - r0, c1 - c0))
        second = torch.where(far, fg_entropy, big)
        if bool((second < big).any()):
            p2 = pick(second)
        else:
            p2 = pick(torch.where((ys == p1[0]) & (xs == p1[1]), big, fg_entropy)) if int(fg.sum()) > 1 else p1
        chosen, labels = [p1, p2], [1, 1]
        if bool((~fg).any()):
            chosen.append(pick(torch.where(fg, big, entropy)))
            labels.append(0)
        scale = self.image_size / h  # low-res grid → model input pixels
        points = [[(c0 + c + 0.5) * scale - 0.5, (r0 + r + 0.5) * scale - 0.5] for r, c in chosen]
        return points, labels

    # -- Segmenter protocol --------------------------------------------------------------------

    @torch.inference_mode()
    def segment(self, view: np.ndarray, box_px, pose: Pose | None = None, points=None, labels=None) -> np.ndarray:
        """(H, W) bool mask of the object in ``box_px`` = (x1, y1, x2, y2) view pixels; may be empty.
        ``points`` ((x, y) view pixels) with ``labels`` (1 on the object, 0 off it) prompt beside the box."""
        height, width = view.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box_px)
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"box {tuple(box_px)} is empty: need x1 < x2 and y1 < y2 (view pixels)")
        self.last = {}
        embeddings = self.embeddings(view)
        sx, sy = self.image_size / width, self.image_size / height
        box = [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
        if points:
            if len(points) != len(labels or ()):
                raise ValueError(f"{len(points)} points came with {len(labels or ())} labels; give one label "
                                 f"(1 on the object, 0 off it) per point")
            given = [[(float(x) + 0.5) * sx - 0.5, (float(y) + 0.5) * sy - 0.5] for x, y in points]
            logits, iou, objectness = self._decode(embeddings, box, given, [int(v) for v in labels])
            self.last.update(iou=iou, object_score=objectness, points=given, labels=[int(v) for v in labels])
        else:
            logits, iou, objectness = self._decode(embeddings, box)
            self.last.update(iou=iou, object_score=objectness, points=None, labels=None)
        if self.point_prompts and not points:
            grid = logits.shape[0] / self.image_size
            picked = self._entropy_points(logits, [v * grid for v in box])
            if picked is not None:
                points, labels = picked
                logits, iou, objectness = self._decode(embeddings, box, points, labels)
                self.last.update(iou=iou, object_score=objectness, points=points, labels=labels)
        self._object, self._session = (view, box), None  # a new object for track() to follow
        return self._to_view(logits, height, width)

    def _to_view(self, logits: torch.Tensor, height: int, width: int) -> np.ndarray:
        up = F.interpolate(logits[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        return (up > self.mask_threshold).cpu().numpy()

    @torch.inference_mode()
    def track(self, view: np.ndarray, pose: Pose | None = None) -> np.ndarray:
        """(H, W) bool mask of the object of the last :meth:`segment` call on ``view``, a later frame of a
        streaming Sam3TrackerVideoModel session that began with that call's view and box; empty when lost."""
        if self._object is None:
            raise ValueError("track() follows an object segmented before: call segment() with its box first")
        if self.tracker is None:
            if self.load_tracker is None:
                raise ValueError("this Sam3Segmenter has no video tracker; build it with from_pretrained")
            self.tracker = self.load_tracker()
        height, width = view.shape[:2]
        if self._session is None:
            from transformers import Sam3TrackerVideoInferenceSession

            first, box = self._object
            session = Sam3TrackerVideoInferenceSession(video_height=first.shape[0], video_width=first.shape[1],
                                                       inference_device=self.device, dtype=self.dtype)
            corners = torch.tensor([[[box[:2], box[2:]]]], dtype=torch.float32)  # a box is two labelled corners
            session.add_point_inputs(session.obj_id_to_idx(1), 0, {
                "point_coords": corners, "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)})
            session.obj_with_new_inputs = [1]
            self.tracker(inference_session=session, frame=self.pixel_values(first)[0])
            self._session = session
        out = self.tracker(inference_session=self._session, frame=self.pixel_values(view)[0])
        return self._to_view(out.pred_masks[0, 0], height, width)
