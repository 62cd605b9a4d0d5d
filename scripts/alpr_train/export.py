"""Export to TFLite: fp32 through litert-torch, then fp16 and full-int8 through ai-edge-quantizer.

(litert-torch's own PT2E int8 path clips a detector heatmap and crashed on recurrent layers here, so
quantisation runs on the fp32 .tflite instead, with a calibration set.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def export_fp32(module: torch.nn.Module, sample: torch.Tensor, path: Path) -> Path:
    import litert_torch

    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    litert_torch.convert(module, (sample,)).export(str(path))
    return path


def _input_name(fp32: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(fp32))
    runner = it.get_signature_runner()
    return next(iter(runner.get_input_details()))


def calibration_sample(images: np.ndarray, seed: int, n: int = 400) -> list[np.ndarray]:
    """``n`` of the training ``images`` (N x H x W uint8), each as a 1 x H x W x 1 float input, drawn with ``seed``."""
    idx = np.random.default_rng(seed).choice(len(images), n, replace=False)
    return [images[i][None, :, :, None].astype(np.float32) / 255.0 for i in idx]


def quantize_int8(fp32: Path, calibration: Sequence[np.ndarray], out: Path) -> Path:
    """Static int8 weights and activations, calibrated on ``calibration`` (each a full input tensor)."""
    from ai_edge_quantizer import quantizer, recipe

    name = _input_name(fp32)
    q = quantizer.Quantizer(str(fp32), recipe.static_wi8_ai8())
    calib = {"serving_default": [{name: np.asarray(x, np.float32)} for x in calibration]}
    result = q.calibrate(calib, num_threads=2)
    q.quantize(result).export_model(str(out), overwrite=True)
    return out


def quantize_fp16(fp32: Path, out: Path) -> Path:
    """Weights stored as float16 (computation stays float32 on CPUs without fp16 arithmetic)."""
    from ai_edge_quantizer import quantizer

    fp16_recipe = [
        {
            "regex": ".*",
            "operation": "*",
            "algorithm_key": "float_casting",
            "op_config": {
                "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                "compute_precision": "FLOAT",
                "explicit_dequantize": True,
            },
        }
    ]
    q = quantizer.Quantizer(str(fp32), fp16_recipe)  # type: ignore[arg-type]
    q.quantize().export_model(str(out), overwrite=True)
    return out
