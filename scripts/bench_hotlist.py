#!/usr/bin/env python3
"""Hot list scale benchmark: a 1,000,000-entry state extract, built and matched as on a unit.

A seeded synthetic extract (US, EU and Brazilian plate patterns, list codes, case numbers, instructions, vehicle
descriptions, some expired entries) plus partial plates (``7AB*``, ``AB?123``) is built into a ``ListIndex`` from
an iterator of HotEntry, and (when ``edge/hotlist/csvformat.py`` is there) from CSV bytes through its parser.
Measured: build time, memory of the built index (tracemalloc peak and steady, RSS growth), and match latency per
read (p50/p99/max) over reads that are a mix of misses, exact, look-alike, partial and alternative-candidate hits,
each with 6 candidates. Targets (issue 5): build in seconds, p99 <= 1 ms per read, <= 200 MB.

    .venv/bin/python scripts/bench_hotlist.py [--entries 1000000] [--partials 1000] [--reads 20000] [--no-csv]

Prints a table and one JSON line (last line of stdout). Plates here are synthetic, so printing them is harmless,
but the script prints none anyway.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import random
import string
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.hotlist.entry import LIST_CODES, HotEntry, ListInfo
from edge.hotlist.index import ListIndex
from edge.hotlist.lookalike import DEFAULT_TABLE
from edge.hotlist.matcher import Matcher

L = string.ascii_uppercase
D = string.digits
US_STATES = ("CA", "TX", "FL", "NY", "PA", "IL", "OH", "GA", "NC", "MI", "OR", "WA", "AZ", "NV", "CO")
EU_STATES = ("D", "F", "I", "NL", "PL", "GB", "E", "B")
NOW = 1_790_000_000.0  # a fixed "now" so that the run is the same every time
TARGET_P99_MS = 1.0
TARGET_MB = 200.0
TARGET_BUILD_S = 10.0


def _pick(rng: random.Random, spec: str) -> str:
    return "".join(rng.choice(L if c == "L" else D if c == "9" else L + D) for c in spec)


# plate shapes per region: L letter, 9 digit, X either
US_SHAPES = ("9LLL999", "LLL9999", "LLL999", "999LLL", "9LL9999", "LL99999", "LLLL99")
EU_SHAPES = ("LL999LL", "LLL9999", "LL99LLL", "L LL999", "99LLL9", "LL99999", "LLL99LL")
BR_SHAPES = ("LLL9999", "LLL9L99")
# Vanity plates of 2 or 3 characters are few (states sell them at a premium): each 2-character plate read
# matches every entry with that plate or a look-alike of it, so a list full of them makes such reads slow.
VANITY_LENGTHS = (2, 3, 4, 5, 6, 7)
VANITY_WEIGHTS = (0.5, 4, 15, 25, 30, 25.5)
INSTRUCTIONS = (
    "",
    "",
    "",
    "stop only with probable cause",
    "do not stop: notify investigating agency",
    "confirm with dispatch before any action",
    "occupants may be armed: felony stop procedure",
    "notify AMBER alert coordinator at once",
)
MAKES = ("HONDA CIVIC", "TOYOTA CAMRY", "FORD F150", "VW GOLF", "FIAT UNO", "CHEVROLET ONIX", "BMW 320", "KIA RIO")
COLOURS = ("BLK", "WHI", "SIL", "BLU", "RED", "GRY")


def random_plate(rng: random.Random) -> tuple[str, str]:
    """A plate and its state, 70 % US (10 % of those vanity), 20 % EU, 10 % Brazil."""
    r = rng.random()
    if r < 0.7:
        if rng.random() < 0.1:
            return _pick(rng, "X" * rng.choices(VANITY_LENGTHS, VANITY_WEIGHTS)[0]), rng.choice(US_STATES)
        return _pick(rng, rng.choice(US_SHAPES)), rng.choice(US_STATES)
    if r < 0.9:
        return _pick(rng, rng.choice(EU_SHAPES).replace(" ", "")), rng.choice(EU_STATES)
    return _pick(rng, rng.choice(BR_SHAPES)), "BR"


def synthetic_extract(n: int, partials: int, seed: int, list_id: str, sample: list[str]) -> Iterator[HotEntry]:
    """``n`` fixed plates and ``partials`` partial plates, interleaved; every 50th plate is kept in ``sample``."""
    rng = random.Random(seed)
    codes = LIST_CODES[:-1]
    weights = (40, 20, 12, 4, 1, 1, 6, 5, 3, 1, 6)
    every = max(1, n // partials) if partials else 0
    made = 0
    for i in range(n):
        plate, state = random_plate(rng)
        if i % 50 == 0:
            sample.append(plate)
        code = rng.choices(codes, weights)[0]
        desc = f"{rng.randint(1998, 2025)} {rng.choice(MAKES)} {rng.choice(COLOURS)}" if rng.random() < 0.5 else ""
        r = rng.random()
        entered = NOW - rng.uniform(0, 3e8)
        expires = None if r < 0.8 else NOW + rng.uniform(1, 3e7) if r < 0.95 else rng.uniform(entered, NOW - 1)
        yield HotEntry(
            entry_id=f"V{i:09d}",
            list_id=list_id,
            plate=plate,
            state=state if rng.random() < 0.95 else None,
            list_code=code,
            reason=code.replace("_", " ").capitalize(),
            case_number=f"{rng.choice(('NIC/', 'CASE-', ''))}{rng.randint(10**7, 10**10)}",
            entered=entered,
            expires=expires,
            instructions=rng.choice(INSTRUCTIONS),
            vehicle_description=desc,
        )
        if every and i % every == every - 1 and made < partials:
            yield partial_entry(rng, made, list_id)
            made += 1


def make_pattern(rng: random.Random) -> str:
    plate, _ = random_plate(rng)
    while len(plate) < 5:
        plate, _ = random_plate(rng)
    kind = rng.random()
    if kind < 0.4:
        return plate[: rng.randint(3, 5)] + "*"  # start of the plate only
    if kind < 0.8:
        chars = list(plate)
        for pos in rng.sample(range(len(chars)), rng.randint(1, 2)):
            chars[pos] = "?"
        return "".join(chars)
    return plate[:2] + "*" + plate[-2:]  # first and last two


def partial_entry(rng: random.Random, k: int, list_id: str) -> HotEntry:
    return HotEntry(
        entry_id=f"P{k:06d}",
        list_id=list_id,
        plate=make_pattern(rng),
        state=None,
        list_code=rng.choice(("WANTED_PERSON", "AMBER_ALERT", "BOLO")),
        reason="Partial plate from a major crime",
        case_number=f"MC-{rng.randint(10**5, 10**6)}",
        entered=NOW - 86400,
        expires=NOW + 30 * 86400,
        instructions="partial plate: confirm vehicle description before any action",
        vehicle_description=f"{rng.choice(MAKES)} {rng.choice(COLOURS)}",
    )


def lookalike_of(rng: random.Random, plate: str, k: int) -> str:
    """``plate`` with up to ``k`` characters swapped for a look-alike (when it has that many)."""
    chars = list(plate)
    spots = [i for i, c in enumerate(chars) if _in_class(c)]
    for i in rng.sample(spots, min(k, len(spots))):
        cls = next(c for c in DEFAULT_TABLE.classes if chars[i] in c)
        chars[i] = rng.choice([c for c in cls if c != chars[i]])
    return "".join(chars)


def _in_class(c: str) -> bool:
    return any(c in cls for cls in DEFAULT_TABLE.classes)


def fill_pattern(rng: random.Random, pattern: str) -> str:
    out = []
    for c in pattern:
        if c == "?":
            out.append(rng.choice(L + D))
        elif c == "*":
            out.append(_pick(rng, "X" * rng.randint(0, 3)))
        else:
            out.append(c)
    return "".join(out)


def alternatives(rng: random.Random, text: str, n: int) -> list[str]:
    """OCR-like alternatives: one or two characters changed, or one dropped."""
    out = []
    for _ in range(n):
        chars = list(text)
        if len(chars) > 2 and rng.random() < 0.2:
            del chars[rng.randrange(len(chars))]
        else:
            for _ in range(rng.randint(1, 2)):
                chars[rng.randrange(len(chars))] = rng.choice(L + D)
        out.append("".join(chars))
    return out


def make_reads(
    rng: random.Random, n: int, sample: list[str], patterns: list[str]
) -> list[tuple[str, str, list[float], list[tuple[str, float]]]]:
    """(category, text, char confidences, 6 candidates: the text first, then 5 alternatives)."""
    reads = []
    cats = ("miss", "exact", "lookalike", "partial", "candidate")
    for i in range(n):
        cat = cats[i % len(cats)] if i % 10 >= 2 else "miss"  # 40 % misses, 15 % each other kind
        if cat == "exact":
            text = rng.choice(sample)
        elif cat == "lookalike":
            text = lookalike_of(rng, rng.choice(sample), rng.randint(1, 2))
        elif cat == "partial" and patterns:
            text = fill_pattern(rng, rng.choice(patterns))
        else:
            text = random_plate(rng)[0]
        alts = alternatives(rng, text, 5)
        if cat == "candidate":
            alts[rng.randrange(5)] = rng.choice(sample)
        confs = [round(rng.uniform(0.4, 1.0), 3) for _ in text]
        cands = [(text, 0.9)] + [(a, round(0.5 / (k + 2), 4)) for k, a in enumerate(alts)]
        reads.append((cat, text, confs, cands))
    return reads


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(round(p / 100 * (len(sorted_ms) - 1))))]


def timed_build(make: Callable[[], ListIndex]) -> tuple[ListIndex, float, float]:
    """The index, wall seconds and CPU seconds of this process."""
    t0, c0 = time.perf_counter(), time.process_time()
    ix = make()
    return ix, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000, help="fixed plates in the extract")
    ap.add_argument("--partials", type=int, default=1_000, help="partial/wildcard plates in the extract")
    ap.add_argument("--reads", type=int, default=20_000, help="reads matched for the latency figures")
    ap.add_argument("--limit", type=int, default=2, help="look-alike limit")
    ap.add_argument("--seed", type=int, default=5, help="random seed")
    ap.add_argument("--no-csv", action="store_true", help="skip the build from CSV bytes")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    info = ListInfo("ncic-bench", 1, NOW - 3600, args.entries + args.partials, "bench")
    rows: list[tuple[str, str, str]] = []
    result: dict[str, object] = {"entries": args.entries, "partials": args.partials, "lookalike_limit": args.limit}

    # 1. build from an iterator, RSS measured in a process that has built nothing yet
    gc.collect()
    rss0 = rss_mb()
    sample: list[str] = []
    ix, total_s, total_cpu = timed_build(
        lambda: ListIndex.build(info, synthetic_extract(args.entries, args.partials, args.seed, info.list_id, sample))
    )
    rss_delta = rss_mb() - rss0 - len(sample) * 60 / 2**20
    # the generator alone (making HotEntry objects) costs part of that time: measure it too
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in synthetic_extract(args.entries, args.partials, args.seed, info.list_id, []):
        pass
    gen_s, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
    build_s, build_cpu = total_s - gen_s, total_cpu - gen_cpu
    rows += [
        ("build from an iterator, wall / CPU", f"{total_s:.2f} / {total_cpu:.2f} s", ""),
        ("  generating the synthetic HotEntry objects alone", f"{gen_s:.2f} / {gen_cpu:.2f} s", ""),
        ("  so the index build itself", f"{build_s:.2f} / {build_cpu:.2f} s", f"<= {TARGET_BUILD_S:.0f} s"),
        ("entries indexed / partial / skipped", f"{len(ix)} / {ix.wildcard_count} / {ix.skipped_count}", ""),
        ("index arrays + records (nbytes)", f"{ix.nbytes / 2**20:.1f} MB", ""),
        ("RSS growth after build", f"{rss_delta:.1f} MB", f"<= {TARGET_MB:.0f} MB"),
    ]
    result.update(
        build_s=round(build_s, 3),
        build_cpu_s=round(build_cpu, 3),
        generate_s=round(gen_s, 3),
        rss_delta_mb=round(rss_delta, 1),
        nbytes_mb=round(ix.nbytes / 2**20, 1),
    )

    # 2. the same build under tracemalloc: peak while building, and what stays
    del ix
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    ix = ListIndex.build(info, synthetic_extract(args.entries, args.partials, args.seed, info.list_id, []))
    gc.collect()
    steady, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    steady_mb, peak_mb = (steady - base) / 2**20, (peak - base) / 2**20
    rows += [
        ("tracemalloc steady (the index)", f"{steady_mb:.1f} MB", f"<= {TARGET_MB:.0f} MB"),
        ("tracemalloc peak while building", f"{peak_mb:.1f} MB", f"<= {TARGET_MB:.0f} MB"),
    ]
    result.update(tracemalloc_steady_mb=round(steady_mb, 1), tracemalloc_peak_mb=round(peak_mb, 1))

    # 3. match latency
    rng = random.Random(args.seed + 1)
    patterns = [wp.plate for wp in ix.wildcards]
    manual = ListIndex.build(
        ListInfo("manual", 1, NOW - 60, 200, "manual"),
        (
            partial_entry(rng, k, "manual")
            if k % 4 == 0
            else HotEntry(
                f"M{k}", "manual", random_plate(rng)[0], None, "BOLO", "Be on the lookout", f"L-{k}", NOW - 60, None, ""
            )
            for k in range(200)
        ),
    )
    matcher = Matcher([ix, manual], lookalike_limit=args.limit)
    reads = make_reads(rng, args.reads, sample, patterns)
    for _, text, confs, cands in reads[:200]:
        matcher.match(text, confs, cands, now=NOW)
    lat: dict[str, list[float]] = {}
    hits: dict[str, int] = {}
    all_ms: list[float] = []
    cpu_ms: list[float] = []
    for cat, text, confs, cands in reads:
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        found = matcher.match(text, confs, cands, now=NOW)
        ms = (time.perf_counter_ns() - t0) / 1e6
        cpu_ms.append((time.thread_time_ns() - c0) / 1e6)
        all_ms.append(ms)
        lat.setdefault(cat, []).append(ms)
        hits[cat] = hits.get(cat, 0) + bool(found)
    all_ms.sort()
    cpu_ms.sort()
    p50, p99, mx = percentile(all_ms, 50), percentile(all_ms, 99), all_ms[-1]
    cpu_p50, cpu_p99 = percentile(cpu_ms, 50), percentile(cpu_ms, 99)
    rows.append(
        (
            f"match, {len(reads)} reads x 6 candidates: p50 / p99 / max",
            f"{p50:.3f} / {p99:.3f} / {mx:.3f} ms",
            f"p99 <= {TARGET_P99_MS} ms",
        )
    )
    rows.append(
        (
            "  CPU time of this thread per read: p50 / p99 / max",
            f"{cpu_p50:.3f} / {cpu_p99:.3f} / {cpu_ms[-1]:.3f} ms",
            "(wall time above includes waits for a busy CPU)",
        )
    )
    per_cat = {}
    for cat in ("miss", "exact", "lookalike", "partial", "candidate"):
        cat_ms = sorted(lat.get(cat, [0.0]))
        n = len(lat.get(cat, []))
        per_cat[cat] = {
            "reads": n,
            "with_hits": hits.get(cat, 0),
            "p50_ms": round(percentile(cat_ms, 50), 4),
            "p99_ms": round(percentile(cat_ms, 99), 4),
        }
        rows.append(
            (
                f"  {cat}: reads with a hit / p50 / p99",
                f"{hits.get(cat, 0)}/{n}  {percentile(cat_ms, 50):.3f} / {percentile(cat_ms, 99):.3f} ms",
                "",
            )
        )
    result.update(p50_ms=round(p50, 4), p99_ms=round(p99, 4), max_ms=round(mx, 4), by_kind=per_cat)
    result.update(cpu_p50_ms=round(cpu_p50, 4), cpu_p99_ms=round(cpu_p99, 4), cpu_max_ms=round(cpu_ms[-1], 4))
    result["load_average"] = round(os.getloadavg()[0], 2)

    # 4. build from CSV bytes, when the CSV parser is there (written by another part of issue 5)
    csv_mod = None
    if not args.no_csv:
        try:
            csv_mod = importlib.import_module("edge.hotlist.csvformat")
        except ImportError:
            csv_mod = None
    if csv_mod is not None and hasattr(csv_mod, "parse_csv") and hasattr(csv_mod, "write_csv"):
        del ix, matcher
        gc.collect()
        data = csv_mod.write_csv(synthetic_extract(args.entries, args.partials, args.seed, info.list_id, []))
        t0, c0 = time.perf_counter(), time.process_time()
        parsed = csv_mod.parse_csv(data, info.list_id, "bench.csv")
        ix = ListIndex.build(info, parsed)
        csv_s, csv_cpu = time.perf_counter() - t0, time.process_time() - c0
        errors = getattr(parsed, "error_count", 0)
        rows.append(
            (
                "build from CSV bytes (csvformat parse + index), wall / CPU",
                f"{csv_s:.2f} / {csv_cpu:.2f} s ({len(data) / 2**20:.0f} MB, {len(ix)} entries, {errors} bad lines)",
                f"<= {TARGET_BUILD_S:.0f} s",
            )
        )
        result.update(
            csv_build_s=round(csv_s, 3),
            csv_build_cpu_s=round(csv_cpu, 3),
            csv_mb=round(len(data) / 2**20, 1),
            csv_entries=len(ix),
            csv_line_errors=errors,
        )
    else:
        rows.append(("build from CSV bytes", "skipped (no edge.hotlist.csvformat, or --no-csv)", ""))
        result.update(csv_build_s=None)

    ok = p99 <= TARGET_P99_MS and max(steady_mb, rss_delta) <= TARGET_MB and build_s <= TARGET_BUILD_S
    result["targets_met"] = ok
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<50} {target}")
    print(json.dumps({"bench": "hotlist", **result}, sort_keys=True))
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
