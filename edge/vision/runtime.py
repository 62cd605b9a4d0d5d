"""TFLite model runtime.

One small interface (:class:`Model`) so that another accelerator (Coral, Hailo) can be added as one file
that implements it. The CPU backend uses ``ai_edge_litert`` (LiteRT, with XNNPACK) and falls back to
``tflite_runtime`` where LiteRT has no wheel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model file is missing, unreadable or does not have the expected inputs and outputs."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


class Model(Protocol):
    """A loaded model: float32 arrays in, float32 arrays out (quantisation handled inside)."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on one input tensor; returns the outputs in the order of :attr:`outputs`."""
        ...


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ModelError("no TFLite runtime: install ai-edge-litert (or tflite-runtime on Python <= 3.11)") from e
    return Interpreter


class LiteRTModel:
    """A ``.tflite`` model on the CPU (XNNPACK), with int8/uint8 input and output quantisation handled."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        try:
            self._interp = _interpreter_class()(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load model {path}: {e}") from e
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        if len(self._in) != 1:
            raise ModelError(f"{path}: expected one input tensor, found {len(self._in)}")
        self.path = path

    @staticmethod
    def _spec(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(str(d["name"]), tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._spec(d) for d in self._in)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._spec(d) for d in self._out)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        d = self._in[0]
        if tuple(x.shape) != tuple(d["shape"]):
            raise ModelError(f"input shape {x.shape} != model input {tuple(d['shape'])}")
        dtype = np.dtype(d["dtype"])
        if dtype != np.float32:
            scale, zero = d["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self._interp.set_tensor(d["index"], x.astype(dtype, copy=False))
        self._interp.invoke()
        outs: list[np.ndarray] = []
        for o in self._out:
            y = self._interp.get_tensor(o["index"])
            if np.dtype(o["dtype"]) != np.float32:
                scale, zero = o["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            outs.append(np.asarray(y, dtype=np.float32))
        return outs


def load_model(path: Path, threads: int = 2, backend: str = "cpu") -> Model:
    """Load a model on the named backend (only ``cpu`` so far)."""
    if backend != "cpu":
        raise ModelError(f"unknown inference backend {backend!r} (available: cpu)")
    return LiteRTModel(path, threads=threads)
