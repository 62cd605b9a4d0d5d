"""Where hot list updates come from, and the worker that offers them to the unit's store.

Every source answers one question, "which candidate bundles do you have now?" (``BundleSource.fetch``): a folder
of ``*.hlb`` files, an HTTPS URL, and later headquarters over MQTT. Candidates are only candidates: the repository
verifies each one. The ``Refresher`` checks at start, every interval (at most 24 h, P4) and at once when poked
(an update was announced), and never dies on a bad source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .bundle import DEFAULT_MAX_BUNDLE_BYTES, MAGIC, BundleError, peek_header
from .entry import ListInfo
from .repository import DEFAULT_STALE_AFTER_S, Accepted, HotListRepository, ListStatus

log = logging.getLogger(__name__)

MAX_INTERVAL_S = 24 * 3600.0
MAX_INDEX_ENTRIES = 64
_MAX_INDEX_BYTES = 64 * 1024
_MAX_REMEMBERED = 10_000


class SourceError(Exception):
    """The source as a whole could not be read this time (folder missing, server unreachable, bad certificate)."""


class BundleSource(Protocol):
    """One place updates come from."""

    def fetch(self) -> list[bytes]:
        """The candidate bundles now offered; raises SourceError when the source cannot be read at all. A single
        unreadable candidate is left out and described in ``problems``."""
        ...

    def describe(self) -> str:
        """For status lines and the change record: the folder or URL (no secrets)."""
        ...

    @property
    def problems(self) -> tuple[str, ...]:
        """What went wrong with single candidates during the last fetch."""
        ...


class DirectorySource:
    """Every ``*.hlb`` file in a folder (a USB stick, a synced share); other files are ignored."""

    def __init__(self, path: Path, max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> None:
        self.path = Path(path)
        self.max_bundle_bytes = max_bundle_bytes
        self._problems: tuple[str, ...] = ()

    def describe(self) -> str:
        return str(self.path)

    @property
    def problems(self) -> tuple[str, ...]:
        return self._problems

    def fetch(self) -> list[bytes]:
        problems: list[str] = []
        try:
            names = sorted(p for p in self.path.iterdir() if p.name.endswith(".hlb"))
        except OSError as e:
            self._problems = ()
            raise SourceError(f"cannot list {self.path}: {e.strerror}") from e
        out = []
        for p in names:
            try:
                with p.open("rb") as f:
                    st = os.fstat(f.fileno())
                    if not stat.S_ISREG(st.st_mode):
                        problems.append(f"{p.name}: not a regular file")
                        continue
                    if st.st_size > self.max_bundle_bytes:
                        problems.append(f"{p.name}: {st.st_size} bytes, over the {self.max_bundle_bytes}-byte limit")
                        continue
                    data = f.read(self.max_bundle_bytes + 1)
            except OSError as e:
                problems.append(f"{p.name}: unreadable ({e.strerror})")
                continue
            if len(data) > self.max_bundle_bytes:
                problems.append(f"{p.name}: over the {self.max_bundle_bytes}-byte limit")
                continue
            out.append(data)
        self._problems = tuple(problems)
        return out


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to other https:// URLs: a redirect must never downgrade to plain HTTP."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise urllib.error.HTTPError(newurl, code, "redirect away from https refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpsSource:
    """An HTTPS URL with the server certificate verified (against ``ca_file`` or the system's CAs).

    The URL may name one bundle, or an index: a UTF-8 text file listing bundle URLs one a line (relative ones are
    resolved against the index; ``#`` starts a comment; https only; at most 64). Which one it is, is told by the
    content: a bundle starts with its magic bytes. An index lets headquarters publish several lists at one URL.
    """

    def __init__(
        self,
        url: str,
        ca_file: Path | None = None,
        timeout_s: float = 30.0,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme != "https":
            raise ValueError(f"hot list source {url!r}: only https:// URLs are allowed")
        self.url = url
        self.timeout_s = timeout_s
        self.max_bundle_bytes = max_bundle_bytes
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), _HttpsOnlyRedirects())
        self._problems: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urllib.parse.urlunsplit(("https", host, parts.path, "", ""))  # no credentials or query

    @property
    def problems(self) -> tuple[str, ...]:
        return self._problems

    def _get(self, url: str, limit: int) -> bytes:
        try:
            with self._opener.open(url, timeout=self.timeout_s) as resp:
                data: bytes = resp.read(limit + 1)
        except urllib.error.HTTPError as e:
            raise SourceError(f"HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            raise SourceError(f"cannot reach the server: {e.reason}") from e
        except (OSError, ssl.SSLError) as e:  # timeouts, resets
            raise SourceError(f"download failed: {e}") from e
        if len(data) > limit:
            raise SourceError(f"over the {limit}-byte limit")
        return data

    def fetch(self) -> list[bytes]:
        self._problems = ()
        data = self._get(self.url, self.max_bundle_bytes)
        if data.startswith(MAGIC):
            return [data]
        if len(data) > _MAX_INDEX_BYTES:
            raise SourceError("neither a bundle nor an index (too large for an index)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SourceError("neither a bundle nor an index (not UTF-8 text)") from e
        urls = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        problems: list[str] = []
        if len(urls) > MAX_INDEX_ENTRIES:
            problems.append(f"index lists {len(urls)} bundles; only the first {MAX_INDEX_ENTRIES} are fetched")
            urls = urls[:MAX_INDEX_ENTRIES]
        out = []
        for i, u in enumerate(urls, start=1):
            full = urllib.parse.urljoin(self.url, u)
            if urllib.parse.urlsplit(full).scheme != "https":
                problems.append(f"index line {i}: not an https URL")
                continue
            try:
                out.append(self._get(full, self.max_bundle_bytes))
            except SourceError as e:
                problems.append(f"index entry {i}: {e}")
        self._problems = tuple(problems)
        return out


def source_for(spec: str, ca_file: Path | None = None, timeout_s: float = 30.0) -> BundleSource:
    """A source from a configuration string: an https:// URL or a folder."""
    if "://" in spec:
        return HttpsSource(spec, ca_file=ca_file, timeout_s=timeout_s)
    return DirectorySource(Path(spec))


@dataclass(frozen=True)
class RefreshStatus:
    last_check: float | None  # when the last check ended (UTC epoch seconds)
    last_success: float | None  # the last check in which every source could be read
    last_error: str | None  # the latest problem: a source unreadable, a candidate unreadable or refused
    last_error_at: float | None
    accepted: int  # bundles accepted since start
    refused: int
    lists: tuple[ListStatus, ...]  # ages as of the status call

    @property
    def stale(self) -> bool:
        """A list in force is past its age limit, or there is none at all."""
        return not self.lists or any(s.stale for s in self.lists)


class Refresher:
    """The worker thread offering candidate bundles from every source to the store."""

    def __init__(
        self,
        repo_factory: Callable[[], HotListRepository],
        sources: Sequence[BundleSource],
        trusted_keys: Sequence[Ed25519PublicKey],
        interval_s: float,
        on_update: Callable[[], None],
        stop: threading.Event,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"refresh interval must be over 0 and at most {MAX_INTERVAL_S:.0f} s (P4: 24 hours)")
        self._repo_factory = repo_factory
        self._sources = tuple(sources)
        self._keys = tuple(trusted_keys)
        self.interval_s = interval_s
        self._on_update = on_update
        self._stop = stop
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._done_refused: set[str] = set()  # digests of bundles refused for good: not offered again
        # Replaced whole, never mutated: other threads read them without a lock.
        self._state = RefreshStatus(None, None, None, None, 0, 0, ())
        self._lists: tuple[ListInfo, ...] = ()
        self.checks = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hotlist-refresh", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def poke(self) -> None:
        """An update was announced: check now."""
        self._wake.set()

    def status(self) -> RefreshStatus:
        now = self._clock()
        s = self._state
        lists = tuple(ListStatus(i, now - i.created, now - i.created > self.stale_after_s) for i in self._lists)
        return RefreshStatus(s.last_check, s.last_success, s.last_error, s.last_error_at, s.accepted, s.refused,
                             lists)  # fmt: skip

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self.check()
            deadline = time.monotonic() + self.interval_s
            while not self._stop.is_set() and not self._wake.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, 1.0))  # wakes within a second of the shared stop event

    def check(self) -> int:
        """One pass over every source; returns the number of bundles accepted. Never raises."""
        errors: list[str] = []
        accepted = refused = 0
        all_read = True
        try:
            repo = self._repo_factory()
        except Exception as e:  # the store may be briefly unavailable: try again next time
            log.warning("hot list refresh: cannot open the store: %s", e)
            self._finish([f"store: {e}"], 0, 0, all_read=False)
            return 0
        try:
            in_force = {i.list_id: i.version for i in repo.lists()}
            candidates: list[tuple[int, str, bytes, str | None, str]] = []  # version, digest, bundle, list, source
            for src in self._sources:
                try:
                    got = src.fetch()
                except Exception as e:  # SourceError, or a bug in a source: the other sources still count
                    all_read = False
                    errors.append(f"{src.describe()}: {e}")
                    log.warning("hot list source %s: %s", src.describe(), e)
                    continue
                errors.extend(f"{src.describe()}: {p}" for p in src.problems)
                for data in got:
                    digest = hashlib.sha256(data).hexdigest()
                    if digest in self._done_refused:
                        continue
                    try:
                        h = peek_header(data)
                        list_id, version = h.list_id, h.version
                    except BundleError:
                        list_id, version = None, 0  # offered anyway, so that its refusal is recorded (once)
                    candidates.append((version, digest, data, list_id, src.describe()))
            # Newest claimed version first (a stable sort keeps the sources' order): the older versions of a list
            # lying in the same folder are then skipped, not recorded as replays at every check.
            for version, digest, data, list_id, source in sorted(candidates, key=lambda c: -c[0]):
                if list_id is not None and list_id in in_force and version <= in_force[list_id]:
                    continue
                result = repo.offer(data, self._keys, source=source)
                if isinstance(result, Accepted):
                    accepted += 1
                    in_force[result.info.list_id] = result.info.version
                    continue
                if result.code != "unchanged":
                    refused += 1
                    errors.append(f"{source}: refused: {result.reason}")
                if result.permanent:
                    if len(self._done_refused) > _MAX_REMEMBERED:
                        self._done_refused.clear()
                    self._done_refused.add(digest)
            self._lists = tuple(repo.lists())
        except Exception as e:  # a store error: logged, retried at the next check
            log.exception("hot list refresh failed")
            errors.append(f"refresh failed: {e}")
            all_read = False
        finally:
            repo.close()
        self._finish(errors, accepted, refused, all_read)
        if accepted:
            try:
                self._on_update()
            except Exception:
                log.exception("hot list update callback failed")
        return accepted

    def _finish(self, errors: list[str], accepted: int, refused: int, all_read: bool) -> None:
        now = self._clock()
        s = self._state
        self.checks += 1
        self._state = RefreshStatus(
            last_check=now,
            last_success=now if all_read else s.last_success,
            last_error=errors[-1] if errors else s.last_error,
            last_error_at=now if errors else s.last_error_at,
            accepted=s.accepted + accepted,
            refused=s.refused + refused,
            lists=(),
        )
