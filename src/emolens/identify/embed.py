"""Face embeddings behind one interface: a face in an image becomes a unit-length vector.

Two embedders:
- ``dlib`` (built in): dlib's 128-d ResNet from ``face_recognition_models``. The face is aligned
  the way the network was trained: dlib's own 5-point shape predictor runs inside the detected
  box, then ``get_face_chip`` cuts a 150 px chip with 25% padding.
- an ONNX file (ArcFace-style, brought by the user): the detector's 5 landmarks are mapped onto
  the standard ArcFace template; input size and normalisation come from the model's
  ``emolens.input`` metadata when it has some, else from the settings
  (``EMOLENS_EMBEDDER_SIZE``, ``_MEAN``, ``_STD``).

Vectors are L2-normalised, so cosine similarity is a dot product. Each embedder has a ``name``
stored beside every embedding: vectors of different embedders are never compared.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emolens.core.errors import EmoLensError, ModelError, require

if TYPE_CHECKING:
    from emolens.core.settings import Settings
from emolens.detect import Face

# ArcFace's 5-point template for 112x112 crops (insightface), in the detector's landmark order:
# image-left eye, image-right eye, nose tip, mouth left, mouth right.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class Embedder(ABC):
    """Turns faces into unit vectors: ``align`` cuts the crop, ``embed_chips`` runs the network."""

    name: str = ""
    dim: int = 0
    # Cosine similarity below which a face is not taken for the person of its nearest enrolled
    # face, whatever the classifier says: the open-set safety net (see recognize.Recognizer).
    default_min_similarity: float = 0.5
    # (scale, offset): P(same person) = sigmoid(scale * (cosine - offset)), the confidence of the
    # similarity-based classifiers; None reports the raw cosine similarity.
    calibration: tuple[float, float] | None = None

    @abstractmethod
    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The aligned RGB uint8 crop the network expects, for one face of an RGB uint8 image."""

    @abstractmethod
    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32 unit vectors for n aligned crops."""

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """(len(faces), dim) unit vectors for faces found in ``image``."""
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_chips([self.align(image, f) for f in faces])


class DlibEmbedder(Embedder):
    """dlib's ResNet (99.38% on LFW pairs, as published by dlib): 128-d, 150 px chips."""

    name = "dlib-resnet-v1"
    dim = 128
    chip_size = 150
    chip_padding = 0.25
    # From 3,000 different-person LFW pairs (benchmarks/identity.py): 99.9% have a cosine below
    # 0.929, so a match below 0.93 is refused whatever the classifier says. (dlib's own 0.6 is a
    # Euclidean distance on the raw vectors: about 0.906 here, the equal-error point.)
    default_min_similarity = 0.93
    # Logistic fit of P(same person | cosine) on the same pairs: the confidence prior of the
    # similarity classifiers when a training set is too small to fit its own.
    calibration = (119.1, 0.9026)

    def __init__(self, num_jitters: int = 0):
        self.num_jitters = num_jitters  # >0 averages over jittered copies: slower, slightly better
        self._lock = threading.Lock()  # dlib's models are not documented as thread-safe
        self._dlib = self._predictor = self._net = None

    def _load(self) -> None:
        if self._net is not None:
            return
        dlib = require("dlib", "identity")
        from emolens.detect.dlib_backend import _model_path

        try:
            predictor = dlib.shape_predictor(str(_model_path("shape_predictor_5_face_landmarks.dat")))
            net = dlib.face_recognition_model_v1(str(_model_path("dlib_face_recognition_resnet_model_v1.dat")))
        except RuntimeError as exc:  # dlib's deserialisation errors
            raise ModelError(f"a dlib model file could not be read (corrupt download?): {exc}") from exc
        self._dlib, self._predictor, self._net = dlib, predictor, net

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        self._load()
        dlib = self._dlib
        image = np.ascontiguousarray(image, dtype=np.uint8)
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in face.box)
        if not all(np.isfinite([x1, y1, x2, y2])) or x2 - x1 < 2 or y2 - y1 < 2:
            raise EmoLensError(f"face box {[x1, y1, x2, y2]} is empty or not finite")
        # The shape predictor was trained on boxes of dlib's detectors; measured on LFW, running it
        # inside RetinaFace's box is as good (see benchmarks/results/identity.md).
        rect = dlib.rectangle(
            int(round(max(x1, 0))), int(round(max(y1, 0))), int(round(min(x2, w - 1))), int(round(min(y2, h - 1)))
        )
        with self._lock:
            shape = self._predictor(image, rect)
            return dlib.get_face_chip(image, shape, size=self.chip_size, padding=self.chip_padding)

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._load()
        batch = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
        for c in batch:
            if c.shape != (self.chip_size, self.chip_size, 3):
                raise EmoLensError(f"dlib embedder needs {self.chip_size}x{self.chip_size} RGB chips, got {c.shape}")
        with self._lock:
            vectors = self._net.compute_face_descriptor(batch, self.num_jitters)
        return l2_normalize(np.array([np.asarray(v) for v in vectors], dtype=np.float32))


class OnnxEmbedder(Embedder):
    """An ArcFace-style ONNX model: aligned RGB crop in, one embedding vector out."""

    # ArcFace models usually separate people at a cosine of about 0.3-0.4; measure yours and set
    # EMOLENS_IDENTITY_MIN_SIMILARITY.
    default_min_similarity = 0.35

    def __init__(
        self,
        path: str | Path,
        size: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        layout: str | None = None,
        threads: int | None = None,
        *,
        default_size: int = 112,
        default_mean: float = 127.5,
        default_std: float = 127.5,
    ):
        """``size``, ``mean``, ``std``, ``layout``: the model's input, over what its metadata says;
        ``default_*``: when neither says (``create_embedder`` passes the ``embedder_*`` settings);
        ``threads``: 0 = ONNX Runtime's default."""
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"embedding model {self.path} not found; give the path of an .onnx file")
        meta = self._metadata()
        # emolens.input normalises as (x / range - mean) / std, settings as (x - mean) / std in
        # pixel units: the same thing with mean and std multiplied by range.
        rng = float(meta.get("range", 255.0))
        meta_mean = [float(v) * rng for v in meta["mean"]] if "mean" in meta else None
        meta_std = [float(v) * rng for v in meta["std"]] if "std" in meta else None
        self.size = int(size or meta.get("size") or default_size)
        self.mean = np.asarray(mean if mean is not None else meta_mean or [default_mean], np.float32).reshape(-1)
        self.std = np.asarray(std if std is not None else meta_std or [default_std], np.float32).reshape(-1)
        self.layout = (layout or meta.get("layout") or "NCHW").upper()
        if self.layout not in ("NCHW", "NHWC"):
            raise ModelError(f"embedding model layout must be NCHW or NHWC, not {self.layout!r}")
        if self.size < 16 or np.any(self.std == 0):
            raise ModelError(f"bad embedding model input: size {self.size}, std {self.std.tolist()}")
        self.threads = threads or 0
        self.name = "onnx-" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self._session = None
        self._lock = threading.Lock()
        self.dim = 0

    def _metadata(self) -> dict:
        """The ``emolens.input`` JSON of the model, if it carries one."""
        import onnxruntime as ort

        try:
            props = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"]).get_modelmeta()
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"{self.path} is not a readable ONNX model: {exc}") from exc
        raw = props.custom_metadata_map.get("emolens.input")
        try:
            return json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            raise ModelError(f"{self.path}: emolens.input metadata is not JSON ({exc})") from exc

    def _load(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            out = self._session.get_outputs()[0].shape
            self.dim = int(out[-1]) if isinstance(out[-1], int) else 0
        return self._session

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        import cv2

        from emolens.image.align import box_matrix, similarity_matrix

        try:
            if face.landmarks is None:
                raise ValueError("no landmarks")
            matrix = similarity_matrix(face.landmarks, self.size, ARCFACE_TEMPLATE_112 / 112.0)
        except ValueError:  # no or degenerate landmarks: a padded box crop is the best we can do
            matrix = box_matrix(face.box, self.size, scale=1.1)
        return cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR)

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        session = self._load()
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = (np.stack(chips).astype(np.float32) - self.mean) / self.std
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        inp = session.get_inputs()[0]
        with self._lock:
            if isinstance(inp.shape[0], int) and inp.shape[0] == 1:  # a fixed batch of 1: one at a time
                out = np.concatenate([session.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))])
            else:
                out = session.run(None, {inp.name: np.ascontiguousarray(x)})[0]
        out = np.asarray(out, dtype=np.float32).reshape(len(chips), -1)
        self.dim = out.shape[1]
        return l2_normalize(out)


def settings_embedder(settings: Settings, name: str | None = None) -> Embedder:
    """The embedder ``name`` (default: the ``embedder`` setting) with the ``embedder_*`` settings
    and threads of ``settings`` (a workspace's)."""
    s = settings
    return create_embedder(
        name or s.embedder, threads=s.threads, size=s.embedder_size, mean=s.embedder_mean, std=s.embedder_std
    )


def create_embedder(
    name: str = "dlib", *, threads: int = 0, size: int = 112, mean: float = 127.5, std: float = 127.5
) -> Embedder:
    """``"dlib"`` or the path of an ArcFace-style ONNX model; ``size``, ``mean`` and ``std`` are its
    input when the model's metadata does not say (``Workspace.embedder`` passes the ``embedder_*``
    settings)."""
    if name == "dlib":
        return DlibEmbedder()
    if name.lower().endswith(".onnx") or Path(name).is_file():
        return OnnxEmbedder(name, threads=threads, default_size=size, default_mean=mean, default_std=std)
    raise EmoLensError(f"unknown embedder {name!r}: use 'dlib' or the path of an ArcFace-style .onnx model")
