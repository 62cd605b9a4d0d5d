#!/usr/bin/env python3
"""Export several trained OCR networks (train_ocr.py's .pt files) as one averaged model: models/plate_ocr.tflite.

    python scripts/combine_ocr.py runs/ocr/seed1/plate_ocr_ema.pt runs/ocr/seed2/plate_ocr_ema.pt

(train_ocr.py does this itself after training its --members networks; this script is for combining others.)

The networks' per-step probabilities are averaged inside the model (alpr_train.models.EnsembleOCR), so the
runtime reads it as it would one network. The int8 export is calibrated on 400 training images from the first
network's dataset cache, as train_ocr.py does. Needs the training extra: pip install -e '.[train]'.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the edge package, when not installed

from alpr_train import export, ocr_data
from alpr_train.models import EnsembleOCR, PlateOCR, count_macs, step_probabilities
from edge.vision.ocr import NUM_CLASSES, ctc_beam_search

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("combine_ocr")


MAX_LOSS = 0.05  # the average may read this much worse than the worst network before it is refused


class MisalignedError(RuntimeError):
    """The networks' average reads much worse than they do: they place characters on different steps."""


def _exact(probs: torch.Tensor, texts: list[str]) -> float:
    """Exact-read rate of N x T x C probabilities decoded as the runtime decodes them (CTC prefix beam search)."""
    ok = 0
    for p, text in zip(probs.numpy(), texts):
        found = ctc_beam_search(p.astype(np.float64))
        ok += bool(found) and found[0][0] == text
    return ok / max(len(texts), 1)


def check_alignment(members: list[PlateOCR], model: EnsembleOCR, x: np.ndarray, texts: list[str]) -> dict[str, object]:
    """Per-step averaging is only sound when the networks emit each character on nearby steps (the beam search sums
    over alignments, so a one-step shift costs little; greedy decoding would lose it). CTC does not promise that:
    two narrower networks (width 0.75) each read 85-87 % of the BR validation crops and their average 0.5 %.
    Measured on training images (no validation image is used to decide); raises MisalignedError."""
    xb = torch.from_numpy(x[:, None].astype(np.float32) / 255.0)
    with torch.no_grad():
        each = [_exact(step_probabilities(net, xb), texts) for net in members]
        both = _exact(model(xb.permute(0, 2, 3, 1)), texts)
    result: dict[str, object] = {"images": len(texts), "each": each, "average": both}
    log.info("exact reads (beam search) of %d training images: each network %s, their average %.3f", len(texts),
             [round(v, 3) for v in each], both)
    if both < min(each) - MAX_LOSS:
        raise MisalignedError(f"the average reads {both:.1%} of {len(texts)} training images against {min(each):.1%} "
                              "for the worst network: the networks place characters on different steps")
    return result


def combine(nets: list[Path], calibration: Path, seed: int, width: float, work: Path, out: Path,
            precision: str = "int8") -> Path:
    """Export the average of the networks ``nets`` to ``out`` (int8 calibrated on ``calibration``, or fp32)."""
    torch.manual_seed(seed)
    t0 = time.time()
    members = []
    for path in nets:
        net = PlateOCR(NUM_CLASSES, width)
        net.load_state_dict(torch.load(path, map_location="cpu"))
        members.append(net.eval())
    model = EnsembleOCR(members).eval()
    params, macs = count_macs(model, torch.zeros(1, ocr_data.H, ocr_data.W, 1))
    log.info("EnsembleOCR of %d networks: %d parameters, %.1f M MACs", len(members), params, macs / 1e6)
    z = np.load(calibration)
    x_all = z["x"]
    pick = np.random.default_rng(seed + 1).choice(len(x_all), 2000, replace=False)
    alignment = check_alignment(members, model, x_all[pick], [str(t) for t in z["texts"][pick]])
    calib = export.calibration_sample(x_all, seed)
    work.mkdir(parents=True, exist_ok=True)
    fp32 = export.export_fp32(model, torch.zeros(1, ocr_data.H, ocr_data.W, 1), work / "plate_ocr_fp32.tflite")
    int8 = export.quantize_int8(fp32, calib, work / "plate_ocr_int8.tflite")
    chosen = int8 if precision == "int8" else fp32
    shutil.copyfile(chosen, out)
    report = {"nets": [str(p) for p in nets], "params": params, "macs": macs, "calibration": str(calibration),
              "alignment": alignment,
              "bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}}
    (work / "report.json").write_text(json.dumps(report, indent=1))
    log.info("wrote %s (%s, %d bytes) in %.0f s", out, precision, chosen.stat().st_size, time.time() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("nets", nargs="+", type=Path, help="state dicts written by train_ocr.py")
    ap.add_argument("--width", type=float, default=1.0, help="the networks' channel multiplier (as trained)")
    ap.add_argument("--calibration", type=Path, default=None,
                    help="a train_ocr.py dataset cache (.npz) for int8 calibration (default: the one beside the first "
                         "network)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the calibration sample")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "plate_ocr.tflite")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "ocr-ensemble")
    ap.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="which export becomes --out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cache = args.calibration
    if cache is None:
        found = sorted(args.nets[0].parent.glob("dataset-seed*-n*.npz"))
        if not found:
            ap.error(f"no dataset cache beside {args.nets[0]}: give --calibration")
        cache = found[0]
    try:
        combine(args.nets, cache, args.seed, args.width, args.work, args.out, args.precision)
    except MisalignedError as e:
        log.error("not exported: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
