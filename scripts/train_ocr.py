#!/usr/bin/env python3
"""Train the plate OCR (conv-only CTC) and export models/plate_ocr.tflite.

One command, seeded and reproducible on the CPU:  python scripts/train_ocr.py
It trains ``--members`` networks (seeds --seed, --seed + 1, ...; each with its own rendered data, in
``--work``/seed<N>/) and exports their average as one model (combine_ocr.py): two networks that learnt from
different plates make different mistakes, and their average read better than either on most validation sets
(MODEL_CARD.md).
Needs the training extra: pip install -e '.[train]'  (PyTorch CPU, litert-torch, ai-edge-quantizer).
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
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the edge package, when not installed

import combine_ocr

from alpr_train import export, glyph_shuffle, ocr_data
from alpr_train.models import ExportOCR, PlateOCR, count_macs, seed_everything
from edge.vision.ocr import CHARSET, NUM_CLASSES, greedy_char_confidences

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("train_ocr")


def greedy(logits: torch.Tensor) -> list[str]:
    best = logits.argmax(1).numpy()
    out = []
    for row in best:
        prev, s = 0, []
        for c in row:
            if c != 0 and c != prev:
                s.append(CHARSET[c - 1])
            prev = c
        out.append("".join(s))
    return out


def jitter(xb: torch.Tensor, rng: np.random.Generator, p: float) -> torch.Tensor:
    """Fresh geometry and photometry for a fraction p of the batch: the cached images are fixed copies (30 per
    real US crop), and the network learns those by heart; a new small shift, scale, shear, contrast and noise
    at every draw makes each one a different image. Bounded so no character leaves the crop."""
    n = xb.shape[0]
    pick = torch.from_numpy(rng.random(n) < p)
    k = int(pick.sum())
    if k == 0:
        return xb
    u = lambda lo, hi: torch.from_numpy(rng.uniform(lo, hi, k).astype(np.float32))  # noqa: E731
    sx, sy = u(1.0, 1.12), u(0.95, 1.15)  # >1 shows more of the crop (zoom out), so nothing is cut
    theta = torch.zeros(k, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 1] = u(-0.12, 0.12)  # shear: italic or slanted plates
    theta[:, 1, 0] = u(-0.02, 0.02)  # small rotation
    theta[:, 0, 2], theta[:, 1, 2] = u(-0.02, 0.02), u(-0.08, 0.08)
    sub = xb[pick]
    grid = nn.functional.affine_grid(theta, list(sub.shape), align_corners=False)
    sub = nn.functional.grid_sample(sub, grid, padding_mode="border", align_corners=False)
    c, b = u(0.6, 1.15)[:, None, None, None], u(-0.12, 0.12)[:, None, None, None]
    sub = (sub - 0.5) * c + 0.5 + b
    sub = sub + torch.randn_like(sub) * u(0.0, 0.06)[:, None, None, None]
    xb = xb.clone()
    xb[pick] = sub.clamp(0.0, 1.0)
    return xb


def evaluate(net: nn.Module, val: dict[str, tuple[np.ndarray, list[str]]]) -> dict[str, float]:
    net.eval()
    res = {}
    with torch.no_grad():
        for name, (x, texts) in val.items():
            logits = net(torch.from_numpy(x[:, None].astype(np.float32) / 255.0))
            pred = greedy(logits)
            res[name] = float(np.mean([p == t for p, t in zip(pred, texts)]))
    net.train()
    return res


def val_sets() -> dict[str, tuple[np.ndarray, list[str]]]:
    sets: dict[str, tuple[list[np.ndarray], list[str]]] = {}
    for s in ocr_data.real_samples("val"):
        name = ("scene-" if s.box else "crop-") + s.region
        from edge.vision.ocr import prepare_crop

        img = ocr_data.val_image(s)
        sets.setdefault(name, ([], []))
        sets[name][0].append((prepare_crop(img, ocr_data.H, ocr_data.W, s.two_line) * 255).astype(np.uint8))
        sets[name][1].append(s.text)
    return {k: (np.stack(v[0]), v[1]) for k, v in sorted(sets.items())}


# Shuffled-glyph copies per aligned real crop: US most, since its real plates are few and its formats loose.
SHUFFLE_COPIES = {"us": 40, "eu": 20, "br": 8}


def clean_real_train(regions: set[str]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The one-line real training crops per region, prepared as the runtime would see them (no augmentation)."""
    from edge.vision.ocr import prepare_crop

    out: dict[str, tuple[list[np.ndarray], list[str]]] = {}
    for s in ocr_data.real_samples("train"):
        if s.two_line or s.region not in regions:
            continue
        img = (prepare_crop(ocr_data.val_image(s), ocr_data.H, ocr_data.W) * 255).astype(np.uint8)
        out.setdefault(s.region, ([], []))
        out[s.region][0].append(img)
        out[s.region][1].append(s.text)
    return {k: (np.stack(v[0]), v[1]) for k, v in out.items()}


def add_shuffled(net: PlateOCR, clean: dict[str, tuple[np.ndarray, list[str]]],
                 rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Shuffled-glyph copies of the real crops (alpr_train.glyph_shuffle), cut at the network's own alignment."""
    net.eval()
    xs, ts = [], []
    with torch.no_grad():
        for region, (imgs, labels) in sorted(clean.items()):
            logits = net(torch.from_numpy(imgs[:, None].astype(np.float32) / 255.0))
            probs = logits.softmax(1).permute(0, 2, 1).numpy()
            x, t = glyph_shuffle.make(imgs, labels, probs, CHARSET, SHUFFLE_COPIES.get(region, 10), rng)
            log.info("shuffled glyphs %s: %d images from %d crops", region, len(t), len(labels))
            xs.append(x)
            ts += t
    net.train()
    return np.concatenate(xs), ts


def train_member(args: argparse.Namespace, seed: int, work: Path) -> tuple[Path, Path]:
    """Train one network with ``seed`` in ``work``: (its state dict, its dataset cache)."""
    seed_everything(seed, args.threads)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    n = args.synthetic
    synth_counts = {"us": int(n * 0.5), "eu": int(n * 0.22), "eu2": int(n * 0.1), "br": int(n * 0.18)}
    real_copies = {"us": 30, "eu": 20, "br": 6}
    cache = work / f"dataset-seed{seed}-n{n}.npz"
    if cache.exists():  # the same seed and counts give the same images: reuse them
        z = np.load(cache)
        x_all, texts, src = z["x"], [str(t) for t in z["texts"]], z["src"]
    else:
        x_all, texts, src = ocr_data.build(seed, synth_counts, real_copies, workers=args.data_workers)
        np.savez(cache, x=x_all, texts=np.array(texts), src=src)
    keep = np.array([0 < len(t) <= 16 for t in texts])
    x_all, texts, src = x_all[keep], [t for t, k in zip(texts, keep) if k], src[keep]
    log.info("training images: %d (%d real-derived, %d synthetic) in %.0f s",
             len(texts), int(src.sum()), int((src == 0).sum()), time.time() - t0)
    targets = [torch.tensor(ocr_data.encode(t), dtype=torch.long) for t in texts]
    val = val_sets()
    log.info("validation crops: %s", {k: len(v[1]) for k, v in val.items()})

    net = PlateOCR(NUM_CLASSES, args.width)
    params, macs = count_macs(net, torch.zeros(1, 1, ocr_data.H, ocr_data.W))
    log.info("PlateOCR: %d parameters, %.1f M MACs", params, macs / 1e6)
    net = net.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    avg = (torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema),
                                               use_buffers=True) if args.ema else None)
    rng = np.random.default_rng(seed)
    clean = clean_real_train(set(args.shuffle_regions.split(","))) if args.shuffle_at else None
    history = []
    bar = tqdm(range(1, args.steps + 1), desc="ocr", mininterval=5)
    ema = None
    for step in bar:
        if step == args.shuffle_at and clean is not None:
            xs, ts = add_shuffled(net, clean, np.random.default_rng(seed + 7))
            x_all = np.concatenate([x_all, xs])
            texts += ts
            src = np.concatenate([src, np.full(len(ts), 2, np.uint8)])
            targets += [torch.tensor(ocr_data.encode(t), dtype=torch.long) for t in ts]
        idx = rng.integers(0, len(texts), args.batch)
        xb = torch.from_numpy(x_all[idx][:, None].astype(np.float32) / 255.0)
        if rng.random() < 0.3:  # invert: light-on-dark plates
            flip = torch.from_numpy(rng.random(args.batch) < 0.3)
            xb[flip] = 1.0 - xb[flip]
        if args.jitter:
            xb = jitter(xb, rng, args.jitter)
        xb = xb.contiguous(memory_format=torch.channels_last)
        tb = [targets[i] for i in idx]
        logits = net(xb)  # N x C x T
        logp = logits.permute(2, 0, 1).log_softmax(2)
        loss = ctc(logp, torch.cat(tb), torch.full((args.batch,), logp.shape[0], dtype=torch.long),
                   torch.tensor([len(t) for t in tb], dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        if avg is not None:
            avg.update_parameters(net)
        ema = float(loss) if ema is None else 0.98 * ema + 0.02 * float(loss)
        bar.set_postfix(loss=f"{ema:.3f}")
        if step % 1000 == 0 or step == args.steps:
            acc = evaluate(net, val)
            history.append({"step": step, "loss": ema, **acc})
            log.info("step %d loss %.3f val %s", step, ema, {k: round(v, 3) for k, v in acc.items()})
            if avg is not None:
                acc = evaluate(avg.module, val)
                history.append({"step": step, "ema": True, **acc})
                log.info("step %d average val %s", step, {k: round(v, 3) for k, v in acc.items()})
    pt = work / "plate_ocr.pt"
    torch.save(net.state_dict(), pt)
    if avg is not None:  # the average is the network kept
        net = avg.module
        pt = work / "plate_ocr_ema.pt"
        torch.save(net.state_dict(), pt)

    # export: fp32, fp16, int8; measure each on the validation crops through the runtime
    net = net.to(memory_format=torch.contiguous_format).eval()
    sample = torch.zeros(1, ocr_data.H, ocr_data.W, 1)
    fp32 = export.export_fp32(ExportOCR(net), sample, work / "plate_ocr_fp32.tflite")
    variants = {"fp32": fp32}
    try:
        variants["fp16"] = export.quantize_fp16(fp32, work / "plate_ocr_fp16.tflite")
    except Exception as e:
        log.warning("fp16 export failed: %s", e)
    calib = export.calibration_sample(x_all, seed)
    variants["int8"] = export.quantize_int8(fp32, calib, work / "plate_ocr_int8.tflite")
    report = {"params": params, "macs": macs, "history": history, "variants": {}}
    from edge.vision.runtime import load_model

    for name, path in variants.items():
        m = load_model(path, threads=1)
        accs = {}
        for vname, (x, vt) in val.items():
            ok = 0
            for img, t in zip(x, vt):
                probs = m.run(img[None, :, :, None].astype(np.float32) / 255.0)[0][0]
                ok += greedy_char_confidences(probs)[0] == t
            accs[vname] = ok / len(vt)
        report["variants"][name] = {"bytes": path.stat().st_size, "val_exact_greedy": accs}
        log.info("%s: %d bytes, val %s", name, path.stat().st_size, {k: round(v, 3) for k, v in accs.items()})
    (work / "report.json").write_text(json.dumps(report, indent=1))
    log.info("network seed %d done in %.0f s", seed, time.time() - t0)
    return pt, cache


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier of the network")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    ap.add_argument("--data-workers", type=int, default=2, help="processes rendering the training images")
    ap.add_argument("--synthetic", type=int, default=60000, help="synthetic plates in all")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "plate_ocr.tflite")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "ocr",
                    help="each network's data cache, checkpoints and exports go to WORK/seed<N>/, the average to WORK")
    ap.add_argument("--precision", choices=["int8", "fp16", "fp32"], default="int8",
                    help="which exported variant becomes --out")
    ap.add_argument("--shuffle-at", type=int, default=0,
                    help="step at which shuffled-glyph copies of the real crops join the training set (0: never, the "
                         "default; tried at 2500, see MODEL_CARD.md)")
    ap.add_argument("--shuffle-regions", default="us,eu,br", help="regions whose real crops are shuffled")
    ap.add_argument("--jitter", type=float, default=0.5,
                    help="fraction of each batch given a fresh random shift, scale, shear, contrast and noise (0: off)")
    ap.add_argument("--ema", type=float, default=0.999,
                    help="decay of an exponential moving average of the weights, which is the network kept (0: off)")
    ap.add_argument("--members", type=int, default=2,
                    help="networks trained (seeds --seed, --seed + 1, ...) and averaged into the one model exported")
    args = ap.parse_args()
    if args.members < 1:
        ap.error("--members: at least 1")
    if args.members > 1 and args.precision == "fp16":
        ap.error("--precision fp16: an averaged model is exported as int8 or fp32")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.time()
    members = [train_member(args, args.seed + k, args.work / f"seed{args.seed + k}") for k in range(args.members)]
    first = args.work / f"seed{args.seed}" / f"plate_ocr_{args.precision}.tflite"
    if len(members) == 1:
        shutil.copyfile(first, args.out)
    else:
        try:
            combine_ocr.combine([pt for pt, _ in members], members[0][1], args.seed, args.width, args.work, args.out,
                                args.precision)
        except combine_ocr.MisalignedError as e:  # a model is still written: the first network alone
            log.warning("the networks cannot be averaged (%s); exporting the seed %d network alone", e, args.seed)
            shutil.copyfile(first, args.out)
            members = members[:1]
    log.info("wrote %s (%s, %d network(s)) in %.0f s", args.out, args.precision, len(members), time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
