"""Emotion classification with ONNX Runtime on aligned face crops."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from emolens.classify.modelfile import DescribedByMeta, InputSpec, ModelMeta, offset_vector
from emolens.core.errors import ModelError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def scale_probabilities(
    y: np.ndarray, output: str = "logits", temperature: float | None = None, offsets: list[float] | None = None
) -> np.ndarray:
    """A model's raw output (logits or probabilities) as probabilities, softened or sharpened by
    ``temperature`` (probabilities are taken back to log space first; T=1 or None changes nothing),
    then shifted by per-class ``offsets`` added to the log-probabilities (a change of class priors)."""
    if output == "probabilities":
        if (not temperature or temperature == 1.0) and not offsets:
            return y
        y = np.log(np.clip(y, 1e-12, None))
    z = y / (temperature or 1.0)
    return softmax(z + np.asarray(offsets, dtype=z.dtype) if offsets else z)


def to_input(crops: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 crops (N, S, S) or (N, S, S, C) → the float input tensor that ``spec`` describes."""
    if crops.ndim == 3:
        crops = crops[..., None]
    # (x / range - mean) / std as one multiply-add: this runs for every face of every frame.
    std = np.asarray(spec.std, dtype=np.float32)
    scale = 1.0 / (spec.range * std)
    shift = -np.asarray(spec.mean, dtype=np.float32) / std
    if spec.layout == "NCHW":
        crops = crops.transpose(0, 3, 1, 2)
        scale, shift = scale.reshape(-1, 1, 1), shift.reshape(-1, 1, 1)
    x = crops.astype(np.float32)
    x *= scale
    x += shift
    return np.ascontiguousarray(x)


class EmotionModel(DescribedByMeta):
    """A self-describing ONNX emotion model. The session is created on first use and reused."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        self.threads = threads
        self._session = None
        self._meta: ModelMeta | None = None
        self._digest: str | None = None
        self._lock = threading.Lock()

    @property
    def meta(self) -> ModelMeta:
        self._load()
        assert self._meta is not None
        return self._meta

    @property
    def digest(self) -> str:
        """The first 12 hex digits of the model file's SHA-256: which weights gave a result."""
        if self._digest is None:
            import hashlib

            self._digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        return self._digest

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort

            if not self.path.is_file():
                raise ModelError(f"model file not found: {self.path}")
            from emolens.core.runtime import session_options

            opts = session_options(self.threads)
            try:
                session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT raises its own exception types for corrupt files
                raise ModelError(f"cannot load model {self.path}: it is corrupt or not ONNX ({exc})") from None
            meta = ModelMeta.from_props(session.get_modelmeta().custom_metadata_map, str(self.path))
            n_out = session.get_outputs()[0].shape[-1]
            if isinstance(n_out, int) and n_out != len(meta.labels):
                raise ModelError(f"{self.path}: model has {n_out} outputs but {len(meta.labels)} labels")
            self._input_name = session.get_inputs()[0].name
            self._meta, self._session = meta, session

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, S, S) or (N, S, S, C) → the float tensor the model expects."""
        return to_input(crops, self.meta.input)

    def predict(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities (N, n_labels) for a batch of aligned crops; all in as few calls as possible."""
        self._load()
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = []
        for i in range(0, len(crops), batch_size):
            y = self._session.run(None, {self._input_name: self.preprocess(crops[i : i + batch_size])})[0]
            out.append(scale_probabilities(y, self.meta.output, self.meta.temperature, offset_vector(self.meta)))
        return np.concatenate(out).astype(np.float32)
