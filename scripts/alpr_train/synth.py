"""Synthetic plates rendered with free fonts (Debian fonts-opendin OFL-1.1, fonts-liberation OFL-1.1,
fonts-dejavu Bitstream-Vera licence), and the image degradations that the OCR and detector train on.

US reading depends on these: no public US set with plate text exists beyond plates-dev.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILES = [
    "/usr/share/fonts/truetype/opendin/OSP-DIN.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
]
SMALL_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
L = string.ascii_uppercase
D = string.digits
US_STATES = [
    "CALIFORNIA", "TEXAS", "FLORIDA", "NEW YORK", "ILLINOIS", "OHIO", "GEORGIA", "MICHIGAN", "ARIZONA",
    "WASHINGTON", "COLORADO", "OREGON", "NEVADA", "UTAH", "VIRGINIA", "MARYLAND", "NEW JERSEY", "ALASKA",
    "MASSACHUSETTS", "PENNSYLVANIA", "TENNESSEE", "KENTUCKY", "MISSOURI", "IOWA", "MONTANA", "INDIANA",
    "IDAHO", "KANSAS", "ALABAMA", "CONNECTICUT", "OKLAHOMA", "LOUISIANA", "MINNESOTA", "WISCONSIN",
]
US_SLOGANS = [
    "dmv.ca.gov", "SUNSHINE STATE", "LAND OF LINCOLN", "THE LONE STAR STATE", "GRAND CANYON STATE",
    "EMPIRE STATE", "GREAT LAKES", "BIRTHPLACE OF AVIATION", "LIVE FREE OR DIE", "THE LAST FRONTIER",
    "PEACH STATE", "FAMOUS POTATOES", "EVERGREEN STATE", "", "", "",
]
US_PATTERNS = ["DLLLDDD", "LLLDDDD", "LLLDDD", "DDDLLL", "LLDDDD", "DLLDDDD", "LLLLDDD", "DDDDLL",
               "LLDDDLL", "DDLLDD", "LLLDDDL", "DLDDDD", "LDDDDD", "DDDDDD", "LLDLDDD", "DLLLDD", "LLLLL", "LDLLDD"]
EU_PATTERNS = [("LL DDD LL", "fr"), ("LL-DDDLL", "sk"), ("LL DDDDD", "pl"), ("LLL DDD", "se"),
               ("L LL DDDD", "de"), ("LL LL DDD", "de"), ("LLL LL DDD", "de"), ("LL DD LLL", "gb"),
               ("DDDD LLL", "es"), ("LL DDDLL", "it"), ("L DDD LLL", "be"), ("LL-DDD-L", "nl"),
               ("DD-LLL-D", "nl"), ("LLL-DDDD", "ro"), ("LL DD LLL", "ro"), ("LL DDDD LL", "hr")]
EU_TWO_LINE = [("LL DD", "LLL DD"), ("LL", "DDDLL"), ("LLL", "DDDD"), ("L DD", "DD DLL"), ("LLL L", "DDD"),
               ("DD", "LLLDD"), ("LL D", "DDDD"), ("LLDD", "LLL")]


# Most US states and EU countries leave out I, O and Q (they look like 1 and 0); Brazil uses all 26 letters.
L_SERIAL = "".join(c for c in L if c not in "IOQ")


def _fill(rng: np.random.Generator, pattern: str, letters: str = L_SERIAL) -> str:
    return "".join(rng.choice(list(letters)) if c == "L" else rng.choice(list(D)) if c == "D" else c for c in pattern)


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=8192)
def _char_width(path: str, size: int, c: str) -> float:
    if c == " ":
        return size * 0.35
    b = _font(path, size).getbbox(c)
    return float(b[2] - b[0])


def _draw_text_fit(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font_path: str,
                   fill: tuple[int, int, int], rng: np.random.Generator) -> None:
    """Draw ``text`` into ``box`` (x0, y0, x1, y1), as large as fits, with a random letter spacing."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    spacing = float(rng.uniform(-0.02, 0.12))

    def measure(size: int) -> tuple[list[float], float, int]:
        f = _font(font_path, size)
        widths = [_char_width(font_path, size, c) for c in text]
        asc = f.getbbox("A")
        return widths, sum(widths) + spacing * size * (len(text) - 1), asc[3] - asc[1]

    size = bh
    widths, total, th = measure(size)
    size = max(6, int(size * min(1.0, bw / max(total, 1), bh / max(th, 1))))
    widths, total, th = measure(size)
    while (total > bw or th > bh) and size > 6:
        size -= 1
        widths, total, th = measure(size)
    f = _font(font_path, size)
    asc = f.getbbox("A")
    th = asc[3] - asc[1]
    x = x0 + (bw - total) / 2
    y = y0 + (bh - th) / 2 - asc[1]
    for c, w in zip(text, widths):
        if c != " ":
            draw.text((x - f.getbbox(c)[0], y), c, font=f, fill=fill)
        x += w + spacing * size


def _rand_color(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))  # type: ignore[return-value]


def render_us(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    w, h = 360, 180
    bg = _rand_color(rng, 170, 256) if rng.random() < 0.8 else _rand_color(rng, 0, 256)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    if rng.random() < 0.4:  # a gradient or a faint scene across the plate, as on many state designs
        arr = np.array(img).astype(np.float32)
        grad = np.linspace(rng.uniform(-50, 0), rng.uniform(0, 50), h)[:, None, None]
        arr = np.clip(arr + grad, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        d = ImageDraw.Draw(img)
    lum = sum(bg) / 3
    fg = _rand_color(rng, 0, 90) if lum > 110 else _rand_color(rng, 200, 256)
    if rng.random() < 0.3:
        fg = (int(rng.integers(100, 200)), 0, 0) if lum > 110 else fg
    text = _fill(rng, str(rng.choice(US_PATTERNS)))
    shown = text
    if len(text) >= 5 and rng.random() < 0.5:
        k = int(rng.integers(2, len(text) - 1))
        shown = text[:k] + str(rng.choice([" ", "-", " "])) + text[k:]
    state = str(rng.choice(US_STATES))
    sc = fg if rng.random() < 0.5 else _rand_color(rng, 0, 160)
    _draw_text_fit(d, (20, 6, w - 20, 42), state, str(rng.choice(FONT_FILES[:5])), sc, rng)
    slogan = str(rng.choice(US_SLOGANS))
    if slogan:
        _draw_text_fit(d, (40, h - 32, w - 40, h - 8), slogan, SMALL_FONT, sc, rng)
    if rng.random() < 0.4:  # registration stickers in the corners
        for cx in (rng.choice([12, w - 60]),):
            d.rectangle((int(cx), 8, int(cx) + 46, 34), fill=_rand_color(rng, 0, 256))
    _draw_text_fit(d, (18, 48, w - 18, h - 36), shown, str(rng.choice(FONT_FILES)), fg, rng)
    if rng.random() < 0.6:
        d.rectangle((2, 2, w - 3, h - 3), outline=fg, width=int(rng.integers(2, 6)))
    # bolt holes
    for bx in (70, w - 80):
        if rng.random() < 0.5:
            d.ellipse((bx, 14, bx + 10, 24), fill=_rand_color(rng, 60, 200))
    return np.array(img)[:, :, ::-1].copy(), text


def render_eu(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    w, h = 520, 112
    pattern, country = EU_PATTERNS[int(rng.integers(len(EU_PATTERNS)))]
    yellow = country in ("nl", "gb") and rng.random() < 0.5
    bg = (int(rng.integers(200, 256)), int(rng.integers(180, 225)), 0) if yellow else _rand_color(rng, 205, 256)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    strip = int(rng.integers(40, 52)) if rng.random() < 0.9 else 0
    if strip:
        d.rectangle((0, 0, strip, h), fill=(0, 51, int(rng.integers(140, 200))))
        for a in range(12):
            ang = a / 12 * 2 * np.pi
            cx, cy = strip / 2 + 12 * np.cos(ang), 32 + 12 * np.sin(ang)
            d.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(255, 204, 0))
        _draw_text_fit(d, (4, 62, strip - 4, 100), country.upper(), SMALL_FONT, (255, 255, 255), rng)
    shown = _fill(rng, pattern)
    text = shown.replace(" ", "").replace("-", "")
    fg = _rand_color(rng, 0, 50)
    _draw_text_fit(d, (strip + 10, 10, w - 10, h - 10), shown, str(rng.choice(FONT_FILES)), fg, rng)
    d.rectangle((1, 1, w - 2, h - 2), outline=fg, width=int(rng.integers(2, 5)))
    return np.array(img)[:, :, ::-1].copy(), text


def render_eu_two_line(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    w, h = 280, 200
    top, bottom = EU_TWO_LINE[int(rng.integers(len(EU_TWO_LINE)))]
    top_s, bottom_s = _fill(rng, top), _fill(rng, bottom)
    img = Image.new("RGB", (w, h), _rand_color(rng, 200, 256))
    d = ImageDraw.Draw(img)
    fg = _rand_color(rng, 0, 50)
    font = str(rng.choice(FONT_FILES))
    x0 = 10
    if rng.random() < 0.6:
        d.rectangle((0, 0, 40, h // 2), fill=(0, 51, 153))
        x0 = 48
    _draw_text_fit(d, (x0, 10, w - 10, h // 2 - 6), top_s, font, fg, rng)
    _draw_text_fit(d, (10, h // 2 + 4, w - 10, h - 10), bottom_s, font, fg, rng)
    d.rectangle((1, 1, w - 2, h - 2), outline=fg, width=3)
    text = (top_s + bottom_s).replace(" ", "")
    return np.array(img)[:, :, ::-1].copy(), text


def render_br(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    w, h = 400, 130
    mercosur = rng.random() < 0.35
    if mercosur:
        text = _fill(rng, "LLLDLDD", L)
        img = Image.new("RGB", (w, h), _rand_color(rng, 215, 256))
        d = ImageDraw.Draw(img)
        d.rectangle((0, 0, w, 26), fill=(0, 40, int(rng.integers(130, 200))))
        _draw_text_fit(d, (150, 3, 250, 23), "BRASIL", SMALL_FONT, (255, 255, 255), rng)
        _draw_text_fit(d, (14, 32, w - 14, h - 8), text, str(rng.choice(FONT_FILES)), (0, 0, 0), rng)
        d.rectangle((1, 1, w - 2, h - 2), outline=(0, 0, 0), width=3)
        return np.array(img)[:, :, ::-1].copy(), text
    text = _fill(rng, "LLLDDDD", L)
    grey = int(rng.integers(150, 230))
    red = rng.random() < 0.15  # commercial plates: red with white characters
    bg = (200, 30, 30) if red else (grey, grey, grey)
    fg = (245, 245, 245) if red else _rand_color(rng, 0, 50)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    city = str(rng.choice(["PR-CURITIBA", "PR - PARANAGUA", "SP-SAO PAULO", "RJ-RIO DE JANEIRO", "MG-BELO HORIZONTE",
                           "SC-JOINVILLE", "PR-LONDRINA"]))
    _draw_text_fit(d, (80, 6, w - 80, 30), city, SMALL_FONT, fg, rng)
    shown = text[:3] + str(rng.choice(["-", "·", " "])) + text[3:]
    _draw_text_fit(d, (12, 34, w - 12, h - 8), shown, str(rng.choice(FONT_FILES)), fg, rng)
    d.rectangle((2, 2, w - 3, h - 3), outline=fg, width=4)
    return np.array(img)[:, :, ::-1].copy(), text


RENDERERS = {"us": render_us, "eu": render_eu, "eu2": render_eu_two_line, "br": render_br}


# ---------------------------------------------------------------- degradations


def perspective(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jit = rng.uniform(-amount, amount, (4, 2)) * np.float32([w, h])
    dst = src + jit
    dst -= dst.min(axis=0)
    size = dst.max(axis=0).astype(int) + 1
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    return cv2.warpPerspective(img, m, (int(size[0]), int(size[1])), borderMode=cv2.BORDER_REPLICATE)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A plain, noisy, sometimes shaded surface (car body, bumper) around the plate."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    noise = rng.normal(0, rng.uniform(2, 25), (max(1, h // 4), max(1, w // 4))).astype(np.float32)
    bg = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)[:, :, None] + base
    if rng.random() < 0.5:
        bg += (np.linspace(-40, 40, w, dtype=np.float32) * rng.uniform(-1, 1))[None, :, None]
    return np.clip(bg, 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, motion, glare, night/IR, low resolution, noise and JPEG artefacts, each at random."""
    out = img.astype(np.float32)
    h, w = out.shape[:2]
    if rng.random() < 0.15:  # glare: a bright elliptical blob (not so bright that characters vanish)
        mask = np.zeros((h, w), np.float32)
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.ellipse(mask, c, (int(w * rng.uniform(0.1, 0.5)), int(h * rng.uniform(0.2, 0.8))),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, w * 0.05))
        out += mask[:, :, None] * rng.uniform(30, 110)
    if rng.random() < 0.2:  # night / IR: dark, strong contrast, near-monochrome
        g = out.mean(axis=2, keepdims=True)
        out = np.repeat(g, 3, axis=2) * rng.uniform(0.3, 1.4) + rng.uniform(-60, 10)
    out = out * rng.uniform(0.5, 1.3) + rng.uniform(-40, 40)  # exposure
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.35 and h > 20:  # low resolution: down to a few pixels per character, then back up
        s = rng.uniform(max(0.3, 14 / h), 0.8)
        small = cv2.resize(out, (max(4, int(w * s)), max(4, int(h * s))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    r = rng.random()
    if r < 0.25:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 2.0))
    elif r < 0.45:  # motion blur
        k = int(rng.integers(3, 8))
        kern = np.zeros((k, k), np.float32)
        if rng.random() < 0.7:
            kern[k // 2, :] = 1
        else:
            np.fill_diagonal(kern, 1)
        out = cv2.filter2D(out, -1, kern / kern.sum())
    if rng.random() < 0.5:
        out = np.clip(out.astype(np.float32) + rng.normal(0, rng.uniform(2, 14), out.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 90))])
        if ok:
            out = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return out


def place_in_crop(plate: np.ndarray, rng: np.random.Generator, mx: tuple[float, float], my: tuple[float, float]
                  ) -> np.ndarray:
    """The plate on a background with random margins, as the detector's crop would show it."""
    h, w = plate.shape[:2]
    l, r = (int(w * rng.uniform(*mx)) for _ in range(2))
    t, b = (int(h * rng.uniform(*my)) for _ in range(2))
    # negative margins cut into the plate, as a tight detector box does
    plate = plate[max(0, -t) : h - max(0, -b), max(0, -l) : w - max(0, -r)]
    l, r, t, b = max(0, l), max(0, r), max(0, t), max(0, b)
    h, w = plate.shape[:2]
    canvas = background(rng, h + t + b, w + l + r)
    canvas[t : t + h, l : l + w] = plate
    return canvas


def synth_ocr_sample(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, str]:
    """A synthetic crop as the detector would hand it to the OCR (BGR), and its text."""
    plate, text = RENDERERS[kind](rng)
    if rng.random() < 0.7:
        plate = perspective(plate, rng, 0.06)
    ang = rng.uniform(-6, 6)
    crop = place_in_crop(plate, rng, (-0.03, 0.12), (-0.05, 0.25))
    if abs(ang) > 0.5:
        hh, ww = crop.shape[:2]
        m = cv2.getRotationMatrix2D((ww / 2, hh / 2), ang, 1.0)
        crop = cv2.warpAffine(crop, m, (ww, hh), borderMode=cv2.BORDER_REPLICATE)
    # shrink to a realistic pixel size before degrading (plates are often 60-150 px wide)
    target_w = int(rng.uniform(60, 260))
    s = target_w / crop.shape[1]
    crop = cv2.resize(crop, (target_w, max(8, int(crop.shape[0] * s))), interpolation=cv2.INTER_AREA)
    return degrade(crop, rng), text


def save_examples(folder: Path, n: int = 24, seed: int = 0) -> None:
    """Write a few rendered samples to look at."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = list(RENDERERS)[i % len(RENDERERS)]
        img, text = synth_ocr_sample(rng, kind)
        cv2.imwrite(str(folder / f"{i:02d}_{kind}_{text}.png"), img)
