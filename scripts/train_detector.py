#!/usr/bin/env python3
"""Train the plate detector (stride-8 centre heatmap + box) and export models/plate_detector.tflite.

One command, seeded and reproducible on the CPU:  python scripts/train_detector.py
Needs the training extra: pip install -e '.[train]'.

Data: the training split of ../shared/data/plates-dev/scenes (US, EU, BR) and of scenes-ro-dashcam, plus
synthetic plates pasted into those scenes. Training runs on random 256x256 patches of the letterboxed
384x640 frame at random scales (the network is fully convolutional), which is ~4x cheaper per step.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpr_train import data, export, synth
from alpr_train.models import ExportDetector, PlateDetectorNet, count_macs, seed_everything
from edge.vision.detector import STRIDE, decode, iou, letterbox

REPO = Path(__file__).resolve().parents[1]
IN_H, IN_W = 384, 640
PATCH = 256
log = logging.getLogger("train_detector")


def load_scenes(scenes: list[data.Scene]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each scene letterbox-scaled (not padded) to fit IN_H x IN_W, with its boxes (x, y, w, h) scaled too."""
    out = []
    for s in tqdm(scenes, desc="load scenes"):
        img = cv2.imread(str(s.path))
        if img is None:
            continue
        h, w = img.shape[:2]
        sc = min(IN_W / w, IN_H / h)
        img = cv2.resize(img, (round(w * sc), round(h * sc)), interpolation=cv2.INTER_AREA)
        boxes = np.array([[b.x * sc, b.y * sc, b.w * sc, b.h * sc] for b in s.boxes], np.float32).reshape(-1, 4)
        out.append((img, boxes))
    return out


def paste_synthetic(img: np.ndarray, boxes: list[list[float]], rng: np.random.Generator) -> None:
    kind = str(rng.choice(["us", "us", "eu", "br", "eu2"]))
    plate, _ = synth.RENDERERS[kind](rng)
    plate = synth.perspective(plate, rng, 0.05)
    pw = int(rng.uniform(18, 140))
    ph = max(5, int(plate.shape[0] * pw / plate.shape[1]))
    plate = cv2.resize(plate, (pw, ph), interpolation=cv2.INTER_AREA)
    plate = synth.degrade(plate, rng) if rng.random() < 0.5 else plate
    H, W = img.shape[:2]
    if pw >= W - 2 or ph >= H - 2:
        return
    x, y = int(rng.integers(0, W - pw)), int(rng.integers(0, H - ph))
    if any(iou((x, y, pw, ph), tuple(b)) > 0 for b in boxes):  # type: ignore[arg-type]
        return
    img[y : y + ph, x : x + pw] = plate
    boxes.append([x, y, pw, ph])


MIN_SCALE, MAX_SCALE = 0.5, 1.6  # scale jitter on the letterboxed frame; very close plates: see zoom_out


def make_patch(scene: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img, boxes = scene
    s = float(np.exp(rng.uniform(np.log(MIN_SCALE), np.log(MAX_SCALE))))
    img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    boxes = boxes * s
    H, W = img.shape[:2]
    if len(boxes) and rng.random() < 0.85:  # a patch around a plate
        b = boxes[int(rng.integers(len(boxes)))]
        cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
        x0 = int(cx - rng.uniform(0.1, 0.9) * PATCH)
        y0 = int(cy - rng.uniform(0.1, 0.9) * PATCH)
    else:
        x0 = int(rng.integers(-32, max(-31, W - PATCH + 32)))
        y0 = int(rng.integers(-32, max(-31, H - PATCH + 32)))
    patch = np.full((PATCH, PATCH, 3), 114, np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(W, x0 + PATCH), min(H, y0 + PATCH)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    out_boxes = []
    for b in boxes:
        bx, by = b[0] - x0, b[1] - y0
        cx, cy = bx + b[2] / 2, by + b[3] / 2
        if 0 <= cx < PATCH and 0 <= cy < PATCH:
            out_boxes.append([bx, by, b[2], b[3]])
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            paste_synthetic(patch, out_boxes, rng)
    # photometric jitter
    if rng.random() < 0.5:
        patch = flip = patch[:, ::-1].copy()
        out_boxes = [[PATCH - b[0] - b[2], b[1], b[2], b[3]] for b in out_boxes]
        del flip
    f = patch.astype(np.float32)
    f = f * rng.uniform(0.6, 1.4) + rng.uniform(-40, 40)
    f += rng.normal(0, rng.uniform(0, 8), f.shape)
    if rng.random() < 0.3:
        f = f.mean(axis=2, keepdims=True).repeat(3, axis=2)
    patch = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.5, 1.5))
    return patch, np.array(out_boxes, np.float32).reshape(-1, 4)


def targets(boxes: np.ndarray, gh: int, gw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian centre heatmap, box regression map and its mask (3x3 cells around each centre)."""
    heat = np.zeros((gh, gw), np.float32)
    reg = np.zeros((4, gh, gw), np.float32)
    mask = np.zeros((gh, gw), np.float32)
    yy, xx = np.mgrid[0:gh, 0:gw]
    for x, y, w, h in boxes:
        cx, cy = (x + w / 2) / STRIDE, (y + h / 2) / STRIDE
        sx, sy = max(0.5, w / STRIDE / 6), max(0.5, h / STRIDE / 6)
        g = np.exp(-(((xx + 0.5 - cx) / sx) ** 2 + ((yy + 0.5 - cy) / sy) ** 2) / 2)
        heat = np.maximum(heat, g)
        ix, iy = int(cx), int(cy)
        heat[min(iy, gh - 1), min(ix, gw - 1)] = 1.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                j, i = iy + dy, ix + dx
                if 0 <= j < gh and 0 <= i < gw:
                    reg[:, j, i] = (cx - (i + 0.5), cy - (j + 0.5), np.log(w / STRIDE), np.log(h / STRIDE))
                    mask[j, i] = 1.0 if (dx == 0 and dy == 0) else 0.5
    return heat, reg, mask


def focal_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - gt) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def detect_torch(net: PlateDetectorNet, img: np.ndarray, threshold: float) -> list[tuple[float, list[float]]]:
    x, lb = letterbox(img, IN_H, IN_W)
    with torch.no_grad():
        h, b = net(torch.from_numpy(x).permute(2, 0, 1)[None])
    heat = torch.sigmoid(h)[0, 0].numpy()
    boxes = b[0].permute(1, 2, 0).numpy()
    out = []
    for score, cx, cy, bw, bh in decode(heat, boxes, threshold):
        out.append((score, [(cx - bw / 2 - lb.pad_x) / lb.scale, (cy - bh / 2 - lb.pad_y) / lb.scale,
                            bw / lb.scale, bh / lb.scale]))
    return out


def recall(det_fn, scenes: list[data.Scene]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    hit = total = fp = 0
    for s in scenes:
        img = cv2.imread(str(s.path))
        dets = det_fn(img)
        for b in s.boxes:
            total += 1
            hit += any(iou(tuple(d[1]), (b.x, b.y, b.w, b.h)) > 0.4 for d in dets)  # type: ignore[arg-type]
        fp += sum(all(iou(tuple(d[1]), (b.x, b.y, b.w, b.h)) <= 0.4 for b in s.boxes) for d in dets)  # type: ignore[arg-type]
    return hit / max(total, 1), fp / max(len(scenes), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=REPO / "models" / "plate_detector.tflite")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "detector")
    ap.add_argument("--precision", choices=["int8", "fp16", "fp32"], default="int8")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    seed_everything(args.seed, args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    pd_train, pd_val = data.plates_dev_split()
    ro_train, ro_val = data.split(data.dashcam_scenes())
    train = load_scenes(pd_train) * 2 + load_scenes(ro_train)  # plates-dev weighted x2: more varied
    log.info("training scenes: %d plates-dev, %d dash-cam; validation %d + %d",
             len(pd_train), len(ro_train), len(pd_val), len(ro_val))
    net = PlateDetectorNet()
    params, macs = count_macs(net, torch.zeros(1, 3, IN_H, IN_W))
    log.info("PlateDetectorNet: %d parameters, %.0f M MACs at %dx%d", params, macs / 1e6, IN_W, IN_H)
    net = net.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    rng = np.random.default_rng(args.seed)
    g = PATCH // STRIDE
    history = []
    ema = None
    for step in (bar := tqdm(range(1, args.steps + 1), desc="detector", mininterval=5)):
        xs, hs, rs, ms = [], [], [], []
        for _ in range(args.batch):
            patch, boxes = make_patch(train[int(rng.integers(len(train)))], rng)
            h, r, m = targets(boxes, g, g)
            xs.append(cv2.cvtColor(patch, cv2.COLOR_BGR2RGB))
            hs.append(h)
            rs.append(r)
            ms.append(m)
        xb = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div(255)
        xb = xb.contiguous(memory_format=torch.channels_last)
        heat_gt = torch.from_numpy(np.stack(hs))[:, None]
        reg_gt = torch.from_numpy(np.stack(rs))
        mask = torch.from_numpy(np.stack(ms))[:, None]
        heat, reg = net(xb)
        l_heat = focal_loss(heat, heat_gt)
        l_reg = (torch.nn.functional.smooth_l1_loss(reg, reg_gt, reduction="none", beta=0.1) * mask).sum()
        l_reg = l_reg / mask.sum().clamp(min=1)
        loss = l_heat + l_reg
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        ema = float(loss) if ema is None else 0.98 * ema + 0.02 * float(loss)
        bar.set_postfix(loss=f"{ema:.3f}")
        if step % 500 == 0 or step == args.steps:
            net.eval()
            r_pd = recall(lambda im: detect_torch(net, im, args.threshold), pd_val)
            r_ro = recall(lambda im: detect_torch(net, im, args.threshold), ro_val)
            net.train()
            history.append({"step": step, "loss": ema, "recall_plates_dev": r_pd[0], "fp_per_image_plates_dev": r_pd[1],
                            "recall_dashcam": r_ro[0], "fp_per_image_dashcam": r_ro[1]})
            log.info("step %d loss %.3f val recall plates-dev %.3f (fp/img %.2f) dash-cam %.3f (fp/img %.2f)",
                     step, ema, r_pd[0], r_pd[1], r_ro[0], r_ro[1])
    torch.save(net.state_dict(), args.work / "plate_detector.pt")

    net = net.to(memory_format=torch.contiguous_format).eval()
    fp32 = export.export_fp32(ExportDetector(net), torch.zeros(1, IN_H, IN_W, 3),
                              args.work / "plate_detector_fp32.tflite")
    variants = {"fp32": fp32}
    try:
        variants["fp16"] = export.quantize_fp16(fp32, args.work / "plate_detector_fp16.tflite")
    except Exception as e:
        log.warning("fp16 export failed: %s", e)
    calib_scenes = [s for s in pd_train + ro_train][:: max(1, (len(pd_train) + len(ro_train)) // 150)]
    calib = [letterbox(cv2.imread(str(s.path)), IN_H, IN_W)[0][None] for s in calib_scenes]
    variants["int8"] = export.quantize_int8(fp32, calib, args.work / "plate_detector_int8.tflite")
    from edge.vision.detector import PlateDetector
    from edge.vision.runtime import load_model

    report = {"params": params, "macs": macs, "history": history, "variants": {}}
    for name, path in variants.items():
        det = PlateDetector(load_model(path, threads=1), threshold=args.threshold)

        def fn(im: np.ndarray) -> list[tuple[float, list[float]]]:
            return [(d.score, list(d.box)) for d in det.detect(im)]  # noqa: B023 - used at once

        r_pd, r_ro = recall(fn, pd_val), recall(fn, ro_val)
        report["variants"][name] = {"bytes": path.stat().st_size, "recall_plates_dev": r_pd, "recall_dashcam": r_ro}
        log.info("%s: %d bytes, recall plates-dev %.3f (fp/img %.2f), dash-cam %.3f (fp/img %.2f)",
                 name, path.stat().st_size, r_pd[0], r_pd[1], r_ro[0], r_ro[1])
    shutil.copyfile(variants[args.precision], args.out)
    (args.work / "report.json").write_text(json.dumps(report, indent=1))
    log.info("wrote %s (%s) in %.0f s", args.out, args.precision, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
