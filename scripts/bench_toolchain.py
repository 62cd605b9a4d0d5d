#!/usr/bin/env python3
"""The training toolchain compared: PyTorch + litert-torch + ai-edge-quantizer (the ``train`` extra, what the
repository uses) against Keras 3 on TensorFlow with TensorFlow's own TFLite converter.

For each, in a fresh virtual environment under ``--work``: the time to install it with pip (no pip cache; PyTorch
comes from the local file this machine has, see the env notes, so its time is not a download), its size on disk,
and, with the OCR network of ``scripts/alpr_train/models.py`` (the Keras copy has the same layers and parameter
count): training steps per second (batch 64, CTC loss, random images: the figure is the toolchain's, not the
model's), the time to export fp32 and full-int8 ``.tflite`` files (int8 calibrated on 100 images), their sizes, and
whether the unit's runtime (edge.vision.runtime on ai-edge-litert) loads and runs them, with its time per inference.
Prints a table and a JSON line.

  .venv/bin/python scripts/bench_toolchain.py [--work /tmp/toolchains] [--steps 40] [--keep]
"""

from __future__ import annotations

import argparse
import configparser
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the edge package, when not installed
TENSORFLOW = "tensorflow-cpu==2.21.0"

# Run inside each toolchain's venv: argv = steps, out dir. Prints one JSON line.
PROBE_TORCH = r"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "@SCRIPTS@")
from alpr_train.models import ExportOCR, PlateOCR
from alpr_train import export
steps, out = int(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(1); torch.set_num_threads(2)
net = PlateOCR(37).to(memory_format=torch.channels_last)
params = sum(p.numel() for p in net.parameters())
opt = torch.optim.AdamW(net.parameters(), 1e-3)
ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
rng = np.random.default_rng(1)
x = torch.tensor(rng.random((64, 1, 32, 128), np.float32)).to(memory_format=torch.channels_last)
y = torch.tensor(rng.integers(1, 37, (64, 7)))
def step():
    opt.zero_grad()
    logp = net(x).permute(2, 0, 1).log_softmax(2)
    loss = ctc(logp, y, torch.full((64,), 32), torch.full((64,), 7))
    loss.backward(); opt.step()
step(); t = time.perf_counter()
for _ in range(steps): step()
sps = steps / (time.perf_counter() - t)
net = net.to(memory_format=torch.contiguous_format).eval()
t = time.perf_counter()
fp32 = export.export_fp32(ExportOCR(net), torch.zeros(1, 32, 128, 1), out / "ocr_fp32.tflite")
t_fp32 = time.perf_counter() - t
calib = [rng.random((1, 32, 128, 1), np.float32) for _ in range(100)]
t = time.perf_counter()
int8 = export.quantize_int8(fp32, calib, out / "ocr_int8.tflite")
t_int8 = time.perf_counter() - t
print(json.dumps({"params": params, "steps_per_s": sps, "export_fp32_s": t_fp32, "export_int8_s": t_int8,
                  "fp32": str(fp32), "int8": str(int8)}))
"""

PROBE_KERAS = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
from pathlib import Path
import numpy as np, tensorflow as tf, keras
from keras import layers
steps, out = int(sys.argv[1]), Path(sys.argv[2])
tf.config.threading.set_intra_op_parallelism_threads(2); tf.config.threading.set_inter_op_parallelism_threads(2)
keras.utils.set_random_seed(1)
def cbr(x, c, k=3, s=1, pad="same"):
    x = layers.Conv2D(c, k, s, padding=pad, use_bias=False)(x)
    return layers.ReLU()(layers.BatchNormalization()(x))
inp = keras.Input((32, 128, 1), batch_size=None)
x = cbr(inp, 32, s=2); x = cbr(x, 48); x = layers.MaxPool2D(2)(x)
x = cbr(x, 64); x = cbr(x, 64); x = layers.MaxPool2D((2, 1))(x)
x = cbr(x, 96); x = cbr(x, 96); x = cbr(x, 160, k=(4, 1), pad="valid")
x = cbr(x, 160, k=(1, 5)); x = layers.Dropout(0.1)(x)
x = layers.Conv2D(37, 1)(x)
logits = layers.Reshape((32, 37))(x)
net = keras.Model(inp, logits)
params = net.count_params() - sum(int(np.prod(w.shape)) for w in net.non_trainable_weights)
opt = keras.optimizers.AdamW(1e-3)
rng = np.random.default_rng(1)
xb = tf.constant(rng.random((64, 32, 128, 1), np.float32))
yb = tf.constant(rng.integers(1, 37, (64, 7)), tf.int32)
@tf.function
def step():
    with tf.GradientTape() as tape:
        lg = net(xb, training=True)
        loss = tf.reduce_mean(tf.nn.ctc_loss(yb, lg, tf.fill([64], 7), tf.fill([64], 32), logits_time_major=False,
                                             blank_index=0))
    grads = tape.gradient(loss, net.trainable_variables)
    opt.apply_gradients(zip(grads, net.trainable_variables))
step(); t = time.perf_counter()
for _ in range(steps): step()
sps = steps / (time.perf_counter() - t)
probs = keras.Model(inp, layers.Softmax()(logits))
inp1 = keras.Input((32, 128, 1), batch_size=1)  # a fixed batch of 1, as the unit runs it
fixed = keras.Model(inp1, probs(inp1))
t = time.perf_counter()
fp32 = out / "ocr_fp32.tflite"
fp32.write_bytes(tf.lite.TFLiteConverter.from_keras_model(fixed).convert())
t_fp32 = time.perf_counter() - t
calib = [rng.random((1, 32, 128, 1), np.float32) for _ in range(100)]
t = time.perf_counter()
cv = tf.lite.TFLiteConverter.from_keras_model(fixed)
cv.optimizations = [tf.lite.Optimize.DEFAULT]
cv.representative_dataset = lambda: ([c] for c in calib)
cv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
int8 = out / "ocr_int8.tflite"
int8.write_bytes(cv.convert())
t_int8 = time.perf_counter() - t
print(json.dumps({"params": params, "steps_per_s": sps, "export_fp32_s": t_fp32, "export_int8_s": t_int8,
                  "fp32": str(fp32), "int8": str(int8)}))
"""


def train_pins() -> list[str]:
    """The ``train`` extra's pinned requirements, as setup.cfg states them."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [line.strip() for line in cfg["options.extras_require"]["train"].splitlines() if line.strip()]


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def run_litert(path: Path, repeat: int = 200) -> float:
    """Median ms per inference of ``path`` through the unit's own runtime (edge.vision.runtime: ai-edge-litert,
    XNNPACK, 2 threads, input and output quantisation included)."""
    import numpy as np

    from edge.vision.runtime import load_model

    model = load_model(path, threads=2)
    if model.outputs[0].shape != (1, 32, 37):
        raise RuntimeError(f"{path}: output shape {model.outputs[0].shape}, expected (1, 32, 37)")
    x = np.random.default_rng(1).random(model.inputs[0].shape, dtype=np.float32)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        model.run(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[20:])


def toolchain(name: str, requirements: list[str], probe: str, work: Path, steps: int) -> dict[str, object]:
    venv = work / f"venv-{name}"
    out = work / f"out-{name}"
    shutil.rmtree(venv, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    t = time.perf_counter()
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", *requirements], check=True)
    install_s = time.perf_counter() - t
    size = du_mb(venv)
    script = work / f"probe-{name}.py"
    script.write_text(probe.replace("@SCRIPTS@", str(REPO / "scripts")))
    res = subprocess.run([str(py), str(script), str(steps), str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{name}: the probe failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    row: dict[str, object] = {"toolchain": name, "requirements": requirements, "install_s": install_s,
                              "venv_mb": size}
    row.update(json.loads(res.stdout.strip().splitlines()[-1]))
    for kind in ("fp32", "int8"):
        path = Path(str(row.pop(kind)))
        row[f"{kind}_kb"] = path.stat().st_size / 1000
        row[f"{kind}_litert_ms"] = run_litert(path)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="where the venvs go (default: a temporary folder)")
    ap.add_argument("--steps", type=int, default=40, help="training steps timed")
    ap.add_argument("--keep", action="store_true", help="keep the venvs")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="toolchains-"))
    work.mkdir(parents=True, exist_ok=True)
    torch_reqs = [r for r in train_pins() if r.split("==")[0] in ("torch", "litert-torch", "ai-edge-quantizer")]
    rows = []
    try:
        rows.append(toolchain("pytorch", torch_reqs, PROBE_TORCH, work, args.steps))
        rows.append(toolchain("keras-tf", [TENSORFLOW], PROBE_KERAS, work, args.steps))
    finally:
        if not args.keep:
            for name in ("pytorch", "keras-tf"):
                shutil.rmtree(work / f"venv-{name}", ignore_errors=True)
    print(f"{'toolchain':<10}{'install s':>10}{'venv MB':>9}{'params':>9}{'train steps/s':>15}"
          f"{'fp32 export s':>15}{'int8 export s':>15}{'int8 KB':>9}{'int8 ms':>9}{'fp32 ms':>9}")
    for r in rows:
        print(f"{r['toolchain']:<10}{r['install_s']:>10.0f}{r['venv_mb']:>9.0f}{r['params']:>9}"
              f"{r['steps_per_s']:>15.2f}{r['export_fp32_s']:>15.1f}{r['export_int8_s']:>15.1f}"
              f"{r['int8_kb']:>9.0f}{r['int8_litert_ms']:>9.3f}{r['fp32_litert_ms']:>9.3f}")
    print(json.dumps({"bench": "toolchain", "work": str(work), "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
