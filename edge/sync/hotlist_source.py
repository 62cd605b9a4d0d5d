"""Hot list bundles from headquarters over MQTT, as a source for the hot list Refresher.

The uplink hands each retained bundle it receives (``offer``, its ``on_hotlist_bundle``) to this source, which
keeps it until the Refresher's next ``fetch`` and pokes the Refresher so that it checks at once. Bundles are only
candidates: the repository verifies the signature and version of each. A retained bundle comes again on every
reconnect; the same bytes on the same topic are offered once, so that a reconnect is not reported as a replay.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable

from ..hotlist.bundle import DEFAULT_MAX_BUNDLE_BYTES, MAGIC

log = logging.getLogger(__name__)


class MqttBundleSource:
    """A hot list BundleSource (edge.hotlist.refresh) fed by the uplink's MQTT subscription."""

    def __init__(
        self,
        poke: Callable[[], None] | None = None,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        description: str = "headquarters over MQTT",
    ) -> None:
        self.poke = poke  # set it to Refresher.poke once the Refresher exists
        self.max_bundle_bytes = max_bundle_bytes
        self._description = description
        self._lock = threading.Lock()
        self._waiting: list[bytes] = []
        self._seen: dict[str, str] = {}  # topic -> sha256 of the last bundle offered from it
        self._problems: list[str] = []
        self._last_problems: tuple[str, ...] = ()

    def describe(self) -> str:
        return self._description

    @property
    def problems(self) -> tuple[str, ...]:
        return self._last_problems

    def offer(self, data: bytes, topic: str) -> None:
        """Keep ``data`` (received on ``topic``) for the next fetch and poke the Refresher. Any thread."""
        if not data:  # an empty retained message clears the topic at the broker: nothing to offer
            return
        problem = None
        if len(data) > self.max_bundle_bytes:
            problem = f"{topic}: {len(data)} bytes, over the {self.max_bundle_bytes} limit"
        elif not data.startswith(MAGIC):
            problem = f"{topic}: not a hot list bundle"
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if problem is not None:
                self._problems.append(problem)
            elif self._seen.get(topic) == digest:
                return
            else:
                self._seen[topic] = digest
                self._waiting.append(bytes(data))
        if problem is not None:
            log.warning("hot list bundle refused before verification: %s", problem)
        poke = self.poke
        if poke is not None:
            try:
                poke()
            except Exception:
                log.exception("poking the hot list refresher failed")

    def fetch(self) -> list[bytes]:
        """The bundles received since the last fetch (and the problems seen meanwhile, in ``problems``)."""
        with self._lock:
            out, self._waiting = self._waiting, []
            self._last_problems, self._problems = tuple(self._problems), []
        return out
