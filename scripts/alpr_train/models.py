"""The two networks, in PyTorch, sized for a Raspberry Pi 4 (MACs are printed by the training scripts)."""

from __future__ import annotations

import torch
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, s: int = 1, p: int | tuple[int, int] = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PlateOCR(nn.Module):
    """Conv-only CTC recogniser: 1 x 32 x 128 grayscale in, 32 steps x 37 classes out.

    No recurrent layers: they convert badly to int8 TFLite and are slower on a Pi; context along the plate
    comes from 1-D convolutions over the step axis instead.
    """

    def __init__(self, num_classes: int = 37, width: float = 1.0) -> None:
        super().__init__()
        c = [int(round(v * width / 8)) * 8 for v in (32, 48, 64, 96, 160)]
        self.features = nn.Sequential(
            cbr(1, c[0], s=2),  # 16 x 64
            cbr(c[0], c[1]), nn.MaxPool2d(2),  # 8 x 32
            cbr(c[1], c[2]), cbr(c[2], c[2]), nn.MaxPool2d((2, 1)),  # 4 x 32
            cbr(c[2], c[3]), cbr(c[3], c[3]),
            cbr(c[3], c[4], k=(4, 1), p=0),  # 1 x 32  # type: ignore[arg-type]
        )
        self.context = nn.Sequential(
            nn.Conv2d(c[4], c[4], (1, 5), padding=(0, 2), bias=False), nn.BatchNorm2d(c[4]), nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(c[4], num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1 x H x W -> N x C x T logits."""
        return self.context(self.features(x))[:, :, 0, :]


def step_probabilities(net: PlateOCR, x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W -> N x T x C softmax probabilities, written so that the TFLite graph stays lean.

    The features are N x C x 1 x T, which TFLite holds as NHWC N x 1 x T x C: taking them in that order is a plain
    reshape, and a softmax over the last axis becomes the one built-in int8 SOFTMAX. (A softmax over the channel axis
    of N x C x T became transposes and a softmax spelt out in eight ops with float steps between them: 0.24 ms per
    network on this machine against 0.16, and further from the fp32 outputs; MODEL_CARD.md, Speed.)
    """
    y = net.context(net.features(x))
    return torch.softmax(y.permute(0, 2, 3, 1)[:, 0], dim=-1)


class ExportOCR(nn.Module):
    """NHWC float input (as the runtime feeds it) -> N x T x C softmax probabilities."""

    def __init__(self, net: PlateOCR) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return step_probabilities(self.net, x.permute(0, 3, 1, 2))


class EnsembleOCR(nn.Module):
    """Several trained PlateOCR networks as one model: NHWC input -> the mean of their softmax outputs, N x T x C.

    Networks trained from different seeds and augmentations make different mistakes on the few real plates of a
    region; averaging their per-step probabilities before the CTC decoding cancels part of them. One graph keeps
    the runtime unchanged (one model, one output) and lets XNNPACK run it as one invocation.
    """

    def __init__(self, nets: list[PlateOCR]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        total = step_probabilities(self.nets[0], x)  # type: ignore[arg-type]
        for net in self.nets[1:]:
            total = total + step_probabilities(net, x)  # type: ignore[arg-type]
        return total * (1.0 / len(self.nets))  # ADD and MUL in TFLite (a stack and MEAN cost two requantisations more)


class PlateDetectorNet(nn.Module):
    """Fully-convolutional plate-centre detector: RGB in, stride-8 heatmap logits (1) and box (4) out.

    A stride-16 branch gives context (a plate sits on a car); it is upsampled and fused at stride 8.
    """

    def __init__(self, width: int = 1) -> None:
        super().__init__()
        c = [16, 32, 64, 96]
        self.stem = nn.Sequential(cbr(3, c[0], s=2), cbr(c[0], c[1], s=2))  # /4
        self.s8 = nn.Sequential(cbr(c[1], c[2], s=2), cbr(c[2], c[2]))  # /8
        self.s16 = nn.Sequential(cbr(c[2], c[3], s=2), cbr(c[3], c[3]), cbr(c[3], c[3]))  # /16
        self.fuse = nn.Sequential(cbr(c[2] + c[3], 64, k=1, p=0), cbr(64, 64))
        self.heat = nn.Conv2d(64, 1, 1)
        self.box = nn.Conv2d(64, 4, 1)
        nn.init.constant_(self.heat.bias, -4.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f8 = self.s8(self.stem(x))
        f16 = self.s16(f8)
        up = nn.functional.interpolate(f16, size=f8.shape[2:], mode="nearest")
        f = self.fuse(torch.cat([f8, up], 1))
        return self.heat(f), self.box(f)


class ExportDetector(nn.Module):
    """NHWC RGB 0..1 input -> (N x H x W x 1 sigmoid heatmap, N x H x W x 4 box), two separate outputs so
    that int8 quantisation gives each its own scale."""

    def __init__(self, net: PlateDetectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat, box = self.net(x.permute(0, 3, 1, 2))
        return torch.sigmoid(heat).permute(0, 2, 3, 1), box.permute(0, 2, 3, 1)


def seed_everything(seed: int, threads: int) -> None:
    """Seed Python, NumPy and PyTorch and fix the thread count: the same command gives the same model."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def count_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of conv and linear layers for one input."""
    macs = 0

    def hook(m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            macs += int(out.numel() // out.shape[0]) * k
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()
        model(x)
    for h in handles:
        h.remove()
    return sum(p.numel() for p in model.parameters()), macs
