"""Headquarters' documents (the monthly audit memorandum, the yearly report) as HTML and PDF from one data model.

Why it is built this way:
- A document is a small tree of frozen dataclasses (sections of paragraphs, facts, tables and bar charts) made by
  the code that knows the numbers; this module only lays it out, so the HTML and the PDF cannot disagree.
- HTML is self-contained (inline CSS, charts as inline SVG, no scripts, fonts or images from elsewhere) and every
  text is escaped: case numbers, reasons and notes were typed by people and are hostile input.
- PDF with fpdf2 (pure Python; no system libraries, unlike WeasyPrint's Pango): DejaVu Sans from Debian's
  fonts-dejavu-core when present (any Unicode text), else the PDF core font Helvetica with the text reduced to
  Latin-1. Charts are vector drawing, from the same geometry as the SVG. The PDF's dates come from the document, so
  the same document renders to the same bytes (a signed memorandum's SHA-256 can be checked by rendering again).
- Every chart is followed by a table of its numbers: the figures are in the text layer, searchable and readable.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")  # Okabe-Ito: colour-blind safe
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Paragraph:
    text: str
    emphasis: bool = False  # bold: a warning or a conclusion


@dataclass(frozen=True)
class Facts:
    """Label: value lines (the period, who signed, ...)."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    widths: tuple[int, ...] = ()  # relative column widths; equal when empty
    numeric: tuple[bool, ...] = ()  # right-aligned columns


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class BarChart:
    """Grouped bars: one group per label, one bar per series."""

    title: str
    labels: tuple[str, ...]
    series: tuple[Series, ...]


Block = Paragraph | Facts | Table | BarChart


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    created_at: float  # UTC epoch seconds; printed, and the PDF's creation date
    sections: tuple[Section, ...]
    banner: str = ""  # e.g. "DRAFT: not signed off", shown on top of every page
    footer: str = "CONFIDENTIAL: for official use only"


def clean(text: str) -> str:
    """Text without control characters (tabs become spaces), for both renderers."""
    return _CONTROL.sub("", text.replace("\t", " "))


def utc(t: float | None) -> str:
    """'2026-03-04 05:06 UTC', or '-'."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- chart geometry (shared) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    series: int
    value: float


@dataclass(frozen=True)
class ChartLayout:
    width: float
    height: float
    plot_left: float
    plot_bottom: float  # y of the axis (y grows downwards, as in SVG and fpdf)
    plot_right: float
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...]  # (y, label) gridlines
    labels: tuple[tuple[float, str], ...]  # (x centre, label) under each group


def nice_max(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``v`` (at least 1): a round top for the axis."""
    if v <= 1:
        return 1.0
    k = 1.0
    while k * 10 < v:
        k *= 10
    for m in (1, 2, 2.5, 5, 10):
        if m * k >= v:
            return m * k
    return 10 * k


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def chart_layout(chart: BarChart, width: float, height: float) -> ChartLayout:
    """Bars, gridlines and labels in a ``width`` x ``height`` box (any unit); the legend goes below it."""
    left, right, top, bottom = width * 0.09, width * 0.98, height * 0.06, height * 0.84
    top_value = nice_max(max((v for s in chart.series for v in s.values), default=0.0))
    groups = max(len(chart.labels), 1)
    slot = (right - left) / groups
    n = max(len(chart.series), 1)
    bar_w = slot * 0.8 / n
    bars = []
    for si, s in enumerate(chart.series):
        for gi, v in enumerate(s.values[: len(chart.labels)]):
            h = (bottom - top) * max(v, 0.0) / top_value
            bars.append(Bar(left + gi * slot + slot * 0.1 + si * bar_w, bottom - h, bar_w, h, si, v))
    ticks = tuple((bottom - (bottom - top) * i / 4, _fmt(top_value * i / 4)) for i in range(5))
    labels = tuple((left + (gi + 0.5) * slot, lab) for gi, lab in enumerate(chart.labels))
    return ChartLayout(width, height, left, bottom, right, tuple(bars), ticks, labels)


# -- HTML ----------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;font-size:11pt;color:#111;max-width:60rem;margin:2rem auto;
padding:0 1rem;line-height:1.4}
h1{font-size:18pt;margin-bottom:0}h2{font-size:13pt;border-bottom:1px solid #999;margin-top:2rem}
.sub{color:#444;margin-top:.2rem}.banner{background:#fde2b8;border:1px solid #d08c1b;padding:.4rem .8rem;
font-weight:bold}.em{font-weight:bold}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{font-weight:bold}dd{margin:0}table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:9.5pt}
th,td{border:1px solid #bbb;padding:.2rem .4rem;vertical-align:top;text-align:left;overflow-wrap:anywhere}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1rem 0}
figcaption{font-weight:bold}footer{margin-top:2rem;color:#555;font-size:9pt}
"""


def _svg(chart: BarChart) -> str:
    lay = chart_layout(chart, 640.0, 240.0)
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 640 {240 + 22 * ((len(chart.series) + 2) // 3)}" '
        f'role="img" aria-label="{e(clean(chart.title))}" style="width:100%;max-width:48rem">'
    ]
    for y, lab in lay.ticks:
        out.append(
            f'<line x1="{lay.plot_left:.1f}" y1="{y:.1f}" x2="{lay.plot_right:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{lay.plot_left - 4:.1f}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{e(lab)}</text>'
        )
    for b in lay.bars:
        out.append(
            f'<rect x="{b.x:.2f}" y="{b.y:.2f}" width="{b.w:.2f}" height="{b.h:.2f}" '
            f'fill="{PALETTE[b.series % len(PALETTE)]}"><title>{e(_fmt(b.value))}</title></rect>'
        )
    out.append(
        f'<line x1="{lay.plot_left:.1f}" y1="{lay.plot_bottom:.1f}" x2="{lay.plot_right:.1f}" '
        f'y2="{lay.plot_bottom:.1f}" stroke="#333"/>'
    )
    for x, lab in lay.labels:
        y = lay.plot_bottom + 14
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="10" text-anchor="middle">{e(clean(lab))}</text>')
    for i, s in enumerate(chart.series):
        x, y = 60 + (i % 3) * 190, 240 + 22 * (i // 3)
        out.append(
            f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{x + 18}" y="{y}" font-size="11">{e(clean(s.name))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _html_table(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(clean(c))}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        cells = []
        for i, v in enumerate(row):
            cls = ' class="n"' if i < len(t.numeric) and t.numeric[i] else ""
            cells.append(f"<td{cls}>{e(clean(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def chart_table(chart: BarChart) -> Table:
    """The numbers behind a chart: one row per series, one column per label (as the chart reads)."""
    rows = tuple(
        (s.name, *(_fmt(s.values[i]) if i < len(s.values) else "" for i in range(len(chart.labels))))
        for s in chart.series
    )
    n = len(chart.labels)
    return Table(("", *chart.labels), rows, (5, *(2,) * n), (False, *(True,) * n))


def to_html(doc: Document) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(clean(doc.title))}</title><style>{_CSS}</style></head><body>",
    ]
    if doc.banner:
        parts.append(f'<p class="banner">{e(clean(doc.banner))}</p>')
    parts.append(f'<h1>{e(clean(doc.title))}</h1><p class="sub">{e(clean(doc.subtitle))}</p>')
    for sec in doc.sections:
        parts.append(f"<section><h2>{e(clean(sec.title))}</h2>")
        for b in sec.blocks:
            if isinstance(b, Paragraph):
                cls = ' class="em"' if b.emphasis else ""
                parts.append(f"<p{cls}>{e(clean(b.text))}</p>")
            elif isinstance(b, Facts):
                items = "".join(f"<dt>{e(clean(k))}</dt><dd>{e(clean(v))}</dd>" for k, v in b.items)
                parts.append(f"<dl>{items}</dl>")
            elif isinstance(b, Table):
                parts.append(_html_table(b))
            else:
                parts.append(f"<figure><figcaption>{e(clean(b.title))}</figcaption>{_svg(b)}</figure>")
                parts.append(_html_table(chart_table(b)))
        parts.append("</section>")
    parts.append(f"<footer>{e(clean(doc.footer))} · generated {e(utc(doc.created_at))}</footer></body></html>")
    return "\n".join(parts) + "\n"


# -- PDF -----------------------------------------------------------------------------------------------------------


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


class _Pdf(FPDF):
    def __init__(self, doc: Document, font_dir: Path | None) -> None:
        super().__init__(format="A4")
        self.doc = doc
        self.family = "Helvetica"
        if font_dir is not None and (font_dir / "DejaVuSans.ttf").is_file():
            self.add_font("DejaVu", "", str(font_dir / "DejaVuSans.ttf"))
            self.add_font("DejaVu", "B", str(font_dir / "DejaVuSans-Bold.ttf"))
            self.family = "DejaVu"
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(True, 18)
        self.set_creation_date(datetime.fromtimestamp(doc.created_at, tz=UTC))
        self.set_title(self.t(doc.title))
        self.set_creator("alpr-edge")

    def t(self, text: str) -> str:
        """Text the current font can show (core fonts: Latin-1 only)."""
        text = clean(text)
        if self.family == "Helvetica":
            text = text.replace("\u2014", "-").replace("\u2013", "-").replace("\u00b7", "-")
            return text.encode("latin-1", "replace").decode("latin-1")
        return text

    def header(self) -> None:
        if self.doc.banner:
            self.set_font(self.family, "B", 9)
            self.set_text_color(160, 80, 0)
            self.cell(0, 5, self.t(self.doc.banner), new_x="LMARGIN", new_y="NEXT", align="C")
            self.set_text_color(0, 0, 0)
            self.ln(1)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.family, "", 8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, self.t(f"{self.doc.footer} - {self.doc.title}"), align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"page {self.page_no()}/{{nb}}", align="R")
        self.set_text_color(0, 0, 0)


def _pdf_table(pdf: _Pdf, t: Table) -> None:
    pdf.set_font(pdf.family, "", 8)
    pdf.set_draw_color(170, 170, 170)
    pdf.set_fill_color(255, 255, 255)
    widths = t.widths if len(t.widths) == len(t.columns) else tuple(1 for _ in t.columns)
    aligns = tuple("RIGHT" if i < len(t.numeric) and t.numeric[i] else "LEFT" for i in range(len(t.columns)))
    with pdf.table(
        col_widths=widths,
        text_align=aligns,
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        cell_fill_color=(246, 246, 246),
        cell_fill_mode="ROWS",
        line_height=4.2,
        padding=1,
    ) as table:
        head = table.row()
        for c in t.columns:
            head.cell(pdf.t(c))
        for r in t.rows:
            row = table.row()
            for i in range(len(t.columns)):
                row.cell(pdf.t(r[i]) if i < len(r) else "")
    pdf.set_draw_color(0, 0, 0)
    pdf.ln(2)


def _pdf_facts(pdf: _Pdf, facts: Facts) -> None:
    """Label: value lines as a borderless two-column table (long labels and values wrap)."""
    pdf.set_font(pdf.family, "B", 9.5)
    label_w = min(max((pdf.get_string_width(pdf.t(k)) for k, _ in facts.items), default=0.0) + 4, pdf.epw * 0.45)
    pdf.set_font(pdf.family, "", 9.5)
    with pdf.table(
        col_widths=(label_w, pdf.epw - label_w),
        borders_layout="NONE",
        first_row_as_headings=False,
        line_height=4.8,
        padding=(0.4, 0, 0.4, 0),
    ) as table:
        for k, v in facts.items:
            row = table.row()
            row.cell(pdf.t(k), style=FontFace(emphasis="BOLD"))
            row.cell(pdf.t(v))
    pdf.ln(1.5)


def _pdf_chart(pdf: _Pdf, chart: BarChart) -> None:
    width, height = pdf.epw, 62.0
    legend = 6.0 * ((len(chart.series) + 2) // 3)
    if pdf.get_y() + height + legend + 8 > pdf.page_break_trigger:
        pdf.add_page()
    pdf.set_font(pdf.family, "B", 10)
    pdf.cell(0, 6, pdf.t(chart.title), new_x="LMARGIN", new_y="NEXT")
    x0, y0 = pdf.l_margin, pdf.get_y()
    lay = chart_layout(chart, width, height)
    pdf.set_font(pdf.family, "", 7)
    pdf.set_line_width(0.15)
    for y, lab in lay.ticks:
        pdf.set_draw_color(221, 221, 221)
        pdf.line(x0 + lay.plot_left, y0 + y, x0 + lay.plot_right, y0 + y)
        pdf.text(x0 + lay.plot_left - 1.5 - pdf.get_string_width(lab), y0 + y + 1.2, lab)
    for b in lay.bars:
        pdf.set_fill_color(*_rgb(PALETTE[b.series % len(PALETTE)]))
        if b.h > 0:
            pdf.rect(x0 + b.x, y0 + b.y, b.w, b.h, style="F")
    pdf.set_draw_color(51, 51, 51)
    pdf.line(x0 + lay.plot_left, y0 + lay.plot_bottom, x0 + lay.plot_right, y0 + lay.plot_bottom)
    for x, lab in lay.labels:
        text = pdf.t(lab)
        pdf.text(x0 + x - pdf.get_string_width(text) / 2, y0 + lay.plot_bottom + 4, text)
    pdf.set_font(pdf.family, "", 8)
    for i, s in enumerate(chart.series):
        lx, ly = x0 + 10 + (i % 3) * 60, y0 + height + 6 * (i // 3)
        pdf.set_fill_color(*_rgb(PALETTE[i % len(PALETTE)]))
        pdf.rect(lx, ly - 2.6, 3, 3, style="F")
        pdf.text(lx + 4.5, ly, pdf.t(s.name))
    pdf.set_draw_color(0, 0, 0)
    pdf.set_y(y0 + height + legend + 2)
    _pdf_table(pdf, chart_table(chart))


def to_pdf(doc: Document, font_dir: Path | None = DEJAVU) -> bytes:
    pdf = _Pdf(doc, font_dir)
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_font(pdf.family, "B", 16)
    pdf.multi_cell(0, 8, pdf.t(doc.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(pdf.family, "", 10)
    pdf.multi_cell(0, 5, pdf.t(f"{doc.subtitle}  (generated {utc(doc.created_at)})"), new_x="LMARGIN", new_y="NEXT")
    for sec in doc.sections:
        if pdf.get_y() + 30 > pdf.page_break_trigger:
            pdf.add_page()
        pdf.ln(3)
        pdf.set_font(pdf.family, "B", 12)
        pdf.cell(0, 7, pdf.t(sec.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_draw_color(150, 150, 150)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + pdf.epw, pdf.get_y())
        pdf.ln(2)
        for b in sec.blocks:
            if isinstance(b, Paragraph):
                pdf.set_font(pdf.family, "B" if b.emphasis else "", 9.5)
                pdf.multi_cell(0, 4.8, pdf.t(b.text), new_x="LMARGIN", new_y="NEXT")
                pdf.ln(1.5)
            elif isinstance(b, Facts):
                _pdf_facts(pdf, b)
            elif isinstance(b, Table):
                _pdf_table(pdf, b)
            else:
                _pdf_chart(pdf, b)
    return bytes(pdf.output())


# -- files ---------------------------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600 (the documents name searches, cases and people)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_documents(doc: Document, out_dir: Path, stem: str, *, pdf: bytes | None = None) -> tuple[Path, Path, bytes]:
    """``out_dir/stem.html`` and ``out_dir/stem.pdf`` (the folder is made, mode 0700; ``pdf``: already rendered);
    returns both paths and the PDF's bytes. OSError when the folder cannot be written."""
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pdf = to_pdf(doc) if pdf is None else pdf
    html_path, pdf_path = out_dir / f"{stem}.html", out_dir / f"{stem}.pdf"
    _write_private(html_path, to_html(doc).encode("utf-8"))
    _write_private(pdf_path, pdf)
    return html_path, pdf_path, pdf


def month_labels(months: Sequence[int]) -> tuple[str, ...]:
    names = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return tuple(names[m - 1] for m in months)
