"""OCR engines behind one small interface: `read(image) -> [(text, confidence), ...]`.

A backend is built once (it loads its models then) and reads uint8 RGB arrays [H, W, 3], returning
every text line it recognised with its confidence in [0, 1], unfiltered: `OCRReward` applies the
confidence threshold, so the rule is the same for every engine. `max_side` caps the long side that
text detection runs at; recognition reads the crops at full resolution.

- RapidOCR (default): PP-OCR detection/recognition ONNX models shipped inside the `rapidocr` wheel,
  so it runs offline with no download.
- PaddleOCR 3.x (`paddleocr`, or `paddle`): optional (`pip install "xomni-rl[paddle]"`); offline it needs
  local model folders, as it downloads its models at first use otherwise.
- GOT-OCR2.0 (`got_ocr2`, `rewards.got_ocr2`): a 560M-parameter transformers model reading the whole image;
  it runs on the reward's `device` and `dtype` and reads a batch of images per call (`read_batch`).

X-Omni's OCR reward is GOT-OCR2.0 with PaddleOCR (`backends: [got_ocr2, paddle]`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from core.components import resolve_component
from core.paths import LocalPath, resolve_local_path

Line = tuple[str, float]


class OCRBackend(Protocol):
    def read(self, image: np.ndarray) -> list[Line]:
        """Text lines with confidences read from a uint8 RGB image [H, W, 3]."""
        ...


def read_batch(backend: OCRBackend, images: Sequence[np.ndarray]) -> list[list[Line]]:
    """`backend.read` of each image, through its own `read_batch` when it has one (a model that batches)."""
    batched = getattr(backend, "read_batch", None)
    return batched(images) if batched is not None else [backend.read(image) for image in images]


def check_rgb(image: np.ndarray) -> None:
    """ValueError unless `image` is what every backend reads: a uint8 RGB array [H, W, 3]."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"OCR backends read uint8 RGB arrays [H, W, 3], got {image.dtype} {image.shape}")


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """Both PP-OCR engines take arrays in OpenCV's BGR order."""
    check_rgb(image)
    return np.ascontiguousarray(image[..., ::-1])


class RapidOCRBackend:
    """RapidOCR 3.x with its shipped PP-OCR models.

    Args:
        max_side: detection runs with the long side limited to this (`Det.limit_type: max`); the
            library's default instead scales the short side up to 736 px, 4-5x slower on wide images.
        threads: onnxruntime threads per model (None: its default, one per core). Idle threads spin, so on
            small images one thread reads as fast as several for a fraction of the CPU time
            (`scripts/bench_rewards.py` measures both); a reward actor given one CPU
            (`reward_workers.num_cpus: 1`) wants 1, and more replicas for throughput.
        params: extra RapidOCR parameters in its dotted form (e.g. `{"Det.box_thresh": 0.6}`), applied over
            ours.
    """

    def __init__(self, max_side: int = 960, threads: int | None = None, params: Mapping[str, Any] | None = None):
        from rapidocr import RapidOCR

        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 (or null), got {threads}")
        defaults = {
            "Det.limit_type": "max",
            "Det.limit_side_len": max_side,
            "Global.use_cls": False,  # the 180-degree classifier only helps upside-down text
            "Global.text_score": 0.0,  # OCRReward applies min_confidence
            "Global.log_level": "error",  # "no text detected" is a normal outcome here
            **({"EngineConfig.onnxruntime.intra_op_num_threads": threads} if threads else {}),
        }
        self.engine = RapidOCR(params={**defaults, **dict(params or {})})

    def read(self, image: np.ndarray) -> list[Line]:
        result = self.engine(_to_bgr(image))
        texts, scores = getattr(result, "txts", None), getattr(result, "scores", None)
        if not texts:
            return []
        return [(str(text), float(score)) for text, score in zip(texts, scores, strict=True)]


class PaddleOCRBackend:
    """PaddleOCR 3.x's OCR pipeline on local model folders (document preprocessing off).

    Args:
        text_detection_model_dir, text_recognition_model_dir: exported PP-OCR inference folders.
            Required: without them PaddleOCR downloads models, which fails offline.
        max_side: detection long-side limit (`text_det_limit_type="max"`).
        device: "cpu", "gpu" or "gpu:0" (PaddleOCR 3.x naming).
        options: further `paddleocr.PaddleOCR` arguments, e.g. `text_detection_model_name` and
            `text_recognition_model_name` when the folders hold models other than the default ones.
    """

    def __init__(
        self,
        text_detection_model_dir: LocalPath,
        text_recognition_model_dir: LocalPath,
        max_side: int = 960,
        device: str = "cpu",
        **options: Any,
    ):
        given = {"text_detection_model_dir": text_detection_model_dir,
                 "text_recognition_model_dir": text_recognition_model_dir}
        model_dirs = {key: resolve_local_path(str(path), key) for key, path in given.items()}
        try:
            from paddleocr import PaddleOCR
        except ImportError as e:
            raise ImportError(
                "the paddleocr backend needs PaddleOCR 3.x: pip install 'xomni-rl[paddle]' "
                "(paddleocr>=3.0 and paddlepaddle>=3.0)"
            ) from e
        settings = {
            "use_doc_orientation_classify": False,
            "use_doc_unwarping": False,
            "use_textline_orientation": False,
            "text_det_limit_side_len": max_side,
            "text_det_limit_type": "max",
            "text_rec_score_thresh": 0.0,  # OCRReward applies min_confidence
            "device": device,
        }
        self.engine = PaddleOCR(**model_dirs, **{**settings, **options})

    def read(self, image: np.ndarray) -> list[Line]:
        lines: list[Line] = []
        for result in self.engine.predict(_to_bgr(image)):
            pairs = zip(result["rec_texts"], result["rec_scores"], strict=True)
            lines += [(str(text), float(score)) for text, score in pairs]
        return lines


# GOT-OCR2 by import path: rewards.got_ocr2 imports this module (check_rgb, Line).
BACKENDS: dict[str, type | str] = {"rapidocr": RapidOCRBackend, "paddleocr": PaddleOCRBackend,
                                   "paddle": PaddleOCRBackend, "got_ocr2": "rewards.got_ocr2.GotOcr2Backend"}


def backend_class(name: Any) -> type:
    """The class a backend name stands for: one of `BACKENDS`, or a class import path."""
    if not isinstance(name, str):
        raise ValueError(f"an OCR backend needs a name ({sorted(BACKENDS)} or an import path), got {name!r}")
    if name not in BACKENDS and "." not in name:
        raise ValueError(f"unknown OCR backend {name!r}; use one of {sorted(BACKENDS)} or an import path")
    target = BACKENDS.get(name, name)
    return resolve_component(target) if isinstance(target, str) else target


def build_backend(spec: str | Mapping[str, Any], max_side: int = 960, device: str | None = None,
                  dtype: str = "float32") -> OCRBackend:
    """A backend from a name or `{"name": ..., **kwargs}`; `max_side` (to backends that take it) and, for those
    on a torch model (class attribute `torch_model = True`), `device` and `dtype`, unless the spec sets them
    (PaddleOCR's own `device` is Paddle's naming, so it gets none).

    Names are those of `BACKENDS`, or the import path of a class of your own (`my_module.MyOCR`)
    that has `read` (and optionally `read_batch`) and may take `max_side`.
    """
    kwargs = dict(spec) if isinstance(spec, Mapping) else {"name": spec}
    cls = backend_class(kwargs.pop("name", None))
    if "max_side" in inspect.signature(cls).parameters:
        kwargs.setdefault("max_side", max_side)
    if getattr(cls, "torch_model", False):
        kwargs.setdefault("device", device)
        kwargs.setdefault("dtype", dtype)
    return cls(**kwargs)
