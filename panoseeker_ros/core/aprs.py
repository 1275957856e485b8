"""The official APRS benchmark files (the layout of FudanCVL/APRS ``aprs/dataset.py``): read them as a
:class:`~.dataset.Dataset`, and write a dataset of ours in that layout.

A benchmark root holds one annotation file per split, found in this order (the official loader's)::

    ROOT/data/benchmark/SPLIT.parquet   ROOT/data/SPLIT.parquet   ROOT/SPLIT.jsonl
    ROOT/metadata/SPLIT.jsonl           ROOT/SPLIT.csv

Fields, in either spelling (CSV columns or the JSONL / parquet names; a row may use both)::

    Filename     image | filename   the panorama's file name           (CSV: ROOT/SPLIT/<Filename>)
    Description  instruction        the referring expression
                 instruction_zh     its Chinese version (kept, not used)
    Category     category           EGO | UNIQ | ALLO | MULTIHOP
    Img_W, Img_H width, height      the panorama's size as annotated (kept, not checked)
    Pt_Theta     init_theta         start pose, degrees: θ in [-180, 180], ϕ in [-90, 90]
    Pt_Phi       init_phi
    Box_Theta    target_theta       the target's centre (success is judged against it), degrees
    Box_Phi      target_phi
    Box_X_Norm   box_x              the target's ERP box, normalised: top-left corner x, y and size w, h
    Box_Y_Norm   box_y              in [0, 1]; y + h <= 1; x + w > 1 is a box crossing the ±180° seam
    Box_W_Norm   box_w
    Box_H_Norm   box_h
                 id                 optional (default SPLIT_<row>, as the official loader)
                 image_path         a panorama path relative to ROOT

The panorama of a row is, in this order: the encoded image in an ``image`` column (the Hugging Face
Image struct ``{bytes, path}``, or plain bytes), the file ``image_path`` relative to ROOT, or
``ROOT/SPLIT/<basename of image | filename | Filename>``.

Loading is strict and quick: every row is checked (fields, ranges, the panorama exists, its header
decodes and says 2:1) before any episode runs, and a problem is one :class:`DatasetError` line naming
the file, the row and the field. Pixels are decoded only when an episode needs its panorama, so 7,420
rows load in seconds. These files carry no masks: an episode's ground truth is its ERP box, and its
IoU is box-level (see :func:`~.metrics.box_iou` and the README).
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .dataset import CATEGORIES, Dataset, DatasetError, EpisodeSpec
from .geometry import Pose, mask_bbox

SPLITS = ("test", "train")
LAYOUTS = ("data/benchmark/{split}.parquet", "data/{split}.parquet", "{split}.jsonl", "metadata/{split}.jsonl",
           "{split}.csv")
FORMATS = ("jsonl", "csv", "parquet")
EXPORT_LAYOUT = {"jsonl": "{split}.jsonl", "csv": "{split}.csv", "parquet": "data/{split}.parquet"}

# canonical (JSONL / parquet) name → CSV name
CSV_NAMES = {"filename": "Filename", "instruction": "Description", "category": "Category", "width": "Img_W",
             "height": "Img_H", "init_theta": "Pt_Theta", "init_phi": "Pt_Phi", "target_theta": "Box_Theta",
             "target_phi": "Box_Phi", "box_x": "Box_X_Norm", "box_y": "Box_Y_Norm", "box_w": "Box_W_Norm",
             "box_h": "Box_H_Norm"}
JSON_FIELDS = ("id", "image", "instruction", "instruction_zh", "category", "width", "height", "init_theta",
               "init_phi", "target_theta", "target_phi", "box_x", "box_y", "box_w", "box_h")
BOX_SEAM_SLACK = 1e-6  # a normalised box edge may pass 1 by rounding only


def find_annotations(root, split: str) -> Path:
    """The annotation file of ``split`` under ``root``, by the official loader's order of layouts."""
    root = Path(root)
    if split not in SPLITS:
        raise DatasetError(f"--split {split!r}: the APRS benchmark has the splits {' and '.join(SPLITS)}")
    if not root.is_dir():
        raise DatasetError(f"APRS root {root} is not a directory; pass the folder of the downloaded benchmark "
                           f"(e.g. APRS_dataset)")
    for layout in LAYOUTS:
        path = root / layout.format(split=split)
        if path.is_file():
            return path
    tried = ", ".join(layout.format(split=split) for layout in LAYOUTS)
    raise DatasetError(f"{root} has no {split} annotations; expected one of {tried}")


def is_aprs_root(path) -> bool:
    """Whether ``path`` is a folder holding the official layout of some split."""
    path = Path(path)
    return path.is_dir() and any((path / layout.format(split=s)).is_file() for layout in LAYOUTS for s in SPLITS)


# ---------------------------------------------------------------------------------------------
# Image headers: the size of a panorama without decoding its pixels.


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG or JPEG file; None when they are not one."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24 and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:2] != b"\xff\xd8":
        return None
    k = 2
    while k + 4 <= len(head):
        if head[k] != 0xFF:
            return None
        marker = head[k + 1]
        if marker == 0xFF:  # fill byte
            k += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            k += 2
            continue
        length = struct.unpack(">H", head[k + 2:k + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            if k + 9 > len(head):
                return None
            h, w = struct.unpack(">HH", head[k + 5:k + 9])
            return w, h
        k += 2 + length
    return None


def _size_of_bytes(data: bytes) -> tuple[int, int] | None:
    size = image_size(data[:1 << 16]) or image_size(data)
    if size is None:  # another format: decode it once to know
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        size = None if img is None else (img.shape[1], img.shape[0])
    return size


def _size_of_file(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return image_size(head) or _size_of_bytes(path.read_bytes())


def decode_rgb(data: bytes, what: str) -> np.ndarray:
    """Encoded image bytes → RGB uint8 (H, W, 3), read-only; DatasetError naming ``what`` when they do not decode."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{what} cannot be decoded; re-encode it as PNG or JPEG")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    rgb.setflags(write=False)
    return rgb


# ---------------------------------------------------------------------------------------------
# Episodes of the official files.


@dataclass
class AprsEpisode(EpisodeSpec):
    """A benchmark row as an episode: its ground truth is the ERP box (``mask['polygons']`` holds it in
    ERP pixels), so its IoU is box-level. ``encoded`` reads the panorama's bytes when the image is
    embedded in the annotation file (None: ``scene`` is the image file)."""

    encoded: Callable[[], bytes] | None = None
    box_level = True

    def load_scene(self) -> np.ndarray:
        if self.encoded is None:
            return super().load_scene()
        return decode_rgb(self.encoded(), f"the panorama of episode {self.id} ({self.scene})")


class _ParquetImages:
    """Embedded images of a parquet file, read one row group at a time when an episode needs one."""

    def __init__(self, path: Path, column: str):
        import pyarrow.parquet as pq

        self.path, self.column = path, column
        self.file = pq.ParquetFile(path)
        starts = np.cumsum([0] + [self.file.metadata.row_group(g).num_rows
                                  for g in range(self.file.metadata.num_row_groups)])
        self.starts = starts
        self._group: tuple[int, list] | None = None

    def bytes_of(self, row: int) -> bytes:
        g = int(np.searchsorted(self.starts, row, side="right")) - 1
        if self._group is None or self._group[0] != g:
            values = self.file.read_row_group(g, columns=[self.column]).column(0).to_pylist()
            self._group = (g, values)
        return _image_bytes(self._group[1][row - int(self.starts[g])])

    def headers(self):
        """Every row's (whether it holds an image, its (width, height) from the header or None, the
        struct's file name or None), streaming the column once and keeping no pixels."""
        for batch in self.file.iter_batches(columns=[self.column], batch_size=64):
            for value in batch.column(0).to_pylist():
                data = _image_bytes(value)
                yield (data is not None, _size_of_bytes(data) if data is not None else None,
                       value.get("path") if isinstance(value, dict) else None)


def _image_bytes(value) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def _read_rows(path: Path) -> tuple[list[tuple[str, dict]], _ParquetImages | None]:
    """(where, row) pairs of an annotation file ('row N' / 'line N' for messages) and its embedded images."""
    if path.suffix == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = [(f"row {k + 1} (line {reader.line_num})", dict(r)) for k, r in enumerate(reader)]
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except csv.Error as exc:
            raise DatasetError(f"{path} is not a valid CSV file ({exc}); fix it there") from None
        return rows, None
    if path.suffix == ".jsonl":
        rows = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {k + 1} is not a JSON object ({exc.msg}, column {exc.colno}); "
                                   f"fix that line") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}: line {k + 1} must be a JSON object with the APRS fields")
            row.setdefault("_index", k)  # the official default id counts lines
            rows.append((f"line {k + 1}", row))
        return rows, None
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
        raise DatasetError(f"{path} is not a readable parquet file ({type(exc).__name__}: {exc}); "
                           f"download it again") from None
    names = pf.schema_arrow.names
    table = pf.read(columns=[n for n in names if n != "image"])
    rows = [(f"row {k + 1}", r) for k, r in enumerate(table.to_pylist())]
    images = None
    if "image" in names:
        kind = pf.schema_arrow.field("image").type
        import pyarrow as pa

        if pa.types.is_struct(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            images = _ParquetImages(path, "image")
        else:  # a string column: file names
            for (_, r), name in zip(rows, pf.read(columns=["image"]).column(0).to_pylist()):
                r["image"] = name
    return rows, images


class _Row:
    """One annotation row with its place for error messages."""

    def __init__(self, path: Path, where: str, raw: dict):
        self.path, self.where, self.raw = path, where, raw
        self.id = None

    def fail(self, field: str, problem: str):
        ident = f" (id {self.id!r})" if self.id is not None else ""
        raise DatasetError(f"{self.path}: {self.where}{ident}, field {field}: {problem}")

    def get(self, name: str):
        """The value under the canonical or the CSV name (None when absent or empty), and the name found."""
        for key in (name, CSV_NAMES.get(name)):
            if key and key in self.raw and self.raw[key] is not None and self.raw[key] != "":
                return self.raw[key], key
        return None, CSV_NAMES.get(name, name) if self.path.suffix == ".csv" else name

    def number(self, name: str, lo: float, hi: float, unit: str) -> float:
        value, key = self.get(name)
        if value is None:
            self.fail(key, "is missing; every row needs it")
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(key, f"{value!r} is not a number")
        if isinstance(value, bool) or not math.isfinite(x):
            self.fail(key, f"{value!r} is not a finite number")
        if not lo <= x <= hi:
            self.fail(key, f"{x:g} is outside [{lo:g}, {hi:g}]; use {unit}")
        return x

    def text(self, name: str) -> str:
        value, key = self.get(name)
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "is missing or empty; every row needs it")
        return value.strip()


def _box(row: _Row) -> tuple[float, float, float, float]:
    x, y, w, h = (row.number(n, 0.0, 1.0, "normalised ERP coordinates in [0, 1]")
                  for n in ("box_x", "box_y", "box_w", "box_h"))
    for name, size in (("box_w", w), ("box_h", h)):
        if size <= 0:
            row.fail(row.get(name)[1], f"{size:g}: the box must have a positive size")
    if y + h > 1 + BOX_SEAM_SLACK:
        row.fail(row.get("box_h")[1], f"y + h = {y + h:g} passes the bottom of the panorama (must be <= 1)")
    return x, y, w, h


def box_polygon(box, width: int, height: int) -> list:
    """A normalised ERP box (x, y, w, h) as one ERP pixel polygon (our seam rule: it may pass the right edge)."""
    x, y, w, h = box
    x1, y1, x2, y2 = x * width, y * height, min(x + w, x + 1.0) * width, min(y + h, 1.0) * height
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def _pose(theta: float, phi: float) -> Pose:
    return Pose(-180.0 if theta == 180.0 else theta, phi)  # 180 and -180 are one heading; others stay exact


def _panorama_file(row: _Row, root: Path, split: str) -> tuple[Path, str]:
    """The panorama file of a row without an embedded image, and the field that named it."""
    if row.raw.get("image_path"):
        return root / str(row.raw["image_path"]), "image_path"
    for field in ("image", "filename", "Filename"):
        name = row.raw.get(field)
        if isinstance(name, str) and name.strip():
            return root / split / Path(name.strip()).name, field
    row.fail("image", "no panorama: give image (embedded, or a file name), filename, Filename or image_path")


def load_aprs(root, split: str) -> Dataset:
    """The ``split`` of the benchmark at ``root`` as a Dataset of :class:`AprsEpisode` (module docstring)."""
    root = Path(root)
    path = find_annotations(root, split)
    rows, images = _read_rows(path)
    if not rows:
        raise DatasetError(f"{path} holds no rows; is the download complete?")
    embedded = list(images.headers()) if images is not None else [(False, None, None)] * len(rows)
    sizes: dict[Path, tuple[int, int] | None] = {}
    episodes, seen = [], {}
    for k, ((where, raw), (held, size, struct_name)) in enumerate(zip(rows, embedded)):
        row = _Row(path, where, raw)
        ident = raw.get("id")
        row.id = str(ident) if ident not in (None, "") else f"{split}_{raw.get('_index', k)}"
        if row.id in seen:
            row.fail("id", f"is used by {seen[row.id]} too; ids must be unique")
        seen[row.id] = where
        instruction = row.text("instruction")
        category = row.text("category").upper()
        if category not in CATEGORIES:
            row.fail(row.get("category")[1], f"{category!r} is not a category; use one of {', '.join(CATEGORIES)}")
        start = _pose(row.number("init_theta", -180, 180, "degrees in [-180, 180]"),
                      row.number("init_phi", -90, 90, "degrees in [-90, 90]"))
        centre = _pose(row.number("target_theta", -180, 180, "degrees in [-180, 180]"),
                       row.number("target_phi", -90, 90, "degrees in [-90, 90]"))
        box = _box(row)
        encoded = None
        if held:  # the image is in the annotation file
            field = "image"
            scene = path.with_name(f"{path.name}::{struct_name or row.id}")
            if size is None:
                row.fail(field, "the embedded image cannot be decoded; re-encode it as PNG or JPEG")
            encoded = (lambda r=k: images.bytes_of(r))
        else:
            scene, field = _panorama_file(row, root, split)
            if scene not in sizes:
                if not scene.is_file():
                    row.fail(field, f"panorama {scene} does not exist; "
                                    + (f"image_path is relative to {root}" if field == "image_path"
                                       else f"file names are looked up in {root / split}"))
                sizes[scene] = _size_of_file(scene)
            size = sizes[scene]
            if size is None:
                row.fail(field, f"panorama {scene} cannot be decoded; re-encode it as PNG or JPEG")
        w, h = size
        if w != 2 * h:
            row.fail(field, f"the panorama is {w}x{h}; an ERP panorama is exactly twice as "
                                                    f"wide as it is high")
        extra = {"box": list(box), "split": split, "row": where}
        zh = raw.get("instruction_zh")
        if isinstance(zh, str) and zh.strip():
            extra["instruction_zh"] = zh.strip()
        episodes.append(AprsEpisode(row.id, scene, instruction, category, start, "", centre,
                                    {"polygons": [box_polygon(box, w, h)]}, extra, encoded=encoded))
    return Dataset(root, episodes, split)


# ---------------------------------------------------------------------------------------------
# Export: a dataset of ours in the official layout.


def erp_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The normalised (x, y, w, h) box of an ERP mask; a mask across the ±180° seam gets the box that
    passes the right edge (x + w > 1) when that one is narrower."""
    height, width = mask.shape
    x1, y1, x2, y2 = mask_bbox(mask)
    cols = np.flatnonzero(mask.any(axis=0))
    gaps = np.diff(np.concatenate([cols, [cols[0] + width]]))
    widest = int(np.argmax(gaps))  # the widest empty run of columns, the seam one included
    if gaps[widest] > 1 and widest < len(cols) - 1:  # the widest gap is inside: the box wraps
        x1, x2 = int(cols[widest + 1]), int(cols[widest]) + 1 + width
    return x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height


def export_aprs(dataset: Dataset, out, fmt: str = "jsonl", split: str = "test") -> Path:
    """Write ``dataset`` under ``out`` in the official layout (``fmt``: jsonl, csv or parquet); returns the
    annotation file. Panoramas are copied to ``out/SPLIT/`` (parquet: embedded as Image structs); the
    target centre is the mask's centroid and the box the mask's ERP box (:func:`erp_box`)."""
    if fmt not in FORMATS:
        raise DatasetError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if split not in SPLITS:
        raise DatasetError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    out = Path(out)
    names: dict[Path, str] = {}
    rows = []
    for ep in dataset.episodes:
        if ep.scene not in names:
            name = ep.scene.name
            if name in names.values():
                name = f"{len(names):04d}_{name}"
            names[ep.scene] = name
        erp = ep.load_scene()
        h, w = erp.shape[:2]
        box = erp_box(ep.load_mask(w, h))
        rows.append({"id": ep.id, "image": names[ep.scene], "instruction": ep.instruction,
                     "instruction_zh": ep.extra.get("instruction_zh", ""), "category": ep.category,
                     "width": w, "height": h, "init_theta": ep.initial_pose.theta, "init_phi": ep.initial_pose.phi,
                     "target_theta": ep.target_centroid.theta, "target_phi": ep.target_centroid.phi,
                     "box_x": box[0], "box_y": box[1], "box_w": box[2], "box_h": box[3]})
    target = out / EXPORT_LAYOUT[fmt].format(split=split)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        _write_parquet(target, rows, {names[s]: s for s in names})
        return target
    images = out / split
    images.mkdir(parents=True, exist_ok=True)
    for scene, name in names.items():
        shutil.copyfile(scene, images / name)
    if fmt == "jsonl":
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(target, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_NAMES.values()))
            writer.writeheader()
            for r in rows:
                writer.writerow({CSV_NAMES[k]: r[k if k != "filename" else "image"] for k in CSV_NAMES})
    return target


def _write_parquet(target: Path, rows: list[dict], files: dict[str, Path]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = [{"bytes": files[r["image"]].read_bytes(), "path": r["image"]} for r in rows]
    columns = {k: [r[k] for r in rows] for k in JSON_FIELDS if k != "image"}
    table = pa.table({"image": pa.array(image, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      **columns})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=16)
    target.write_bytes(buf.getvalue())
