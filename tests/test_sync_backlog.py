"""Thirty days offline: a busy unit's backlog of 200,000 reads drains completely into PostgreSQL, nothing lost and
nothing duplicated. Slow (about a minute here): run with `bash scripts/test -m slow` or by scripts/bench_sync.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_200k_backlog_drains_with_nothing_lost_or_duplicated() -> None:
    spec = importlib.util.spec_from_file_location("bench_sync", REPO / "scripts" / "bench_sync.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    servers = bench.Servers()
    try:
        run = bench.drain(servers, 200_000, False, 2)
    finally:
        servers.close()
    assert run["stored"] == 200_000 and run["lost"] == 0 and run["duplicated"] == 0
    assert run["seconds"] <= 180
