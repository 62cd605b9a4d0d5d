"""The console's loop on one serial port: open (8N1), log in, serve commands, log out; reopen when the port goes.

- Login: a name and a password (not echoed) within ``login_timeout_s``; ``UserStore.authenticate`` (its lockout
  applies) and ``require(user, "maintenance")``: technicians and administrators only. Refusals are recorded.
- Every command is recorded (action ``console.command``, detail {"command": its name}) *before* it runs; if the
  access record cannot be written the command is refused. Arguments are never recorded (they could hold text a
  technician typed, such as a plate).
- A session without input for ``idle_timeout_s`` is logged out.
- Hostile input: lines are bounded (``max_line``), bytes are decoded leniently (``lineedit``), at most
  ``LINES_PER_S`` lines a second are acted on (a burst of ``LINE_BURST``); the rest are dropped and counted.
  Output that nobody reads is dropped after ``WRITE_TIMEOUT_S`` rather than blocking.
- The port vanishing (USB gadget unplugged, EIO) ends the session; the port is reopened with capped backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import serial

from ..access.audit import AuditError, AuditLog
from ..access.session import AccessDenied, record_refused_login, require
from ..access.users import AuthError, User, UserStore
from ..config import Config
from ..store.errors import StoreError
from .commands import COMMANDS, CommandError, Context, help_text, parse
from .lineedit import Cancelled, LineEditor, Overlong

log = logging.getLogger(__name__)

PROMPT = "alpr> "
READ_CHUNK = 4096
POLL_S = 0.1
WRITE_TIMEOUT_S = 2.0
LINES_PER_S = 5.0
LINE_BURST = 10.0
FAIL_PAUSE_S = 2.0  # after a refused login: slows guessing down further than Argon2 does
BACKOFF = (0.2, 10.0)


class PortGoneError(Exception):
    """The serial port failed (unplugged, closed by the other side, EIO)."""


class TimedOutError(Exception):
    """The login or idle timer ran out."""


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float = LINE_BURST
    at: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Console:
    """One console on ``port``; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        cfg: Config,
        config_path: Path,
        users: UserStore,
        audit: AuditLog,
        status_path: Path,
        stop: threading.Event,
        *,
        port: str | None = None,
        baud: int | None = None,
        make_context: Callable[[Context], Context] = lambda c: c,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.users = users
        self.audit = audit
        self.status_path = status_path
        self.stop = stop
        self.port_name = port or cfg.console.port
        self.baud = baud or cfg.console.baud
        self.make_context = make_context  # tests: swap journal/restart commands
        c = cfg.console
        self.login_timeout_s, self.idle_timeout_s = c.login_timeout_s, c.idle_timeout_s
        self.editor = LineEditor(c.max_line)
        self.bucket = _Bucket(LINES_PER_S, LINE_BURST)
        self.dropped_lines = 0
        self.opens = 0
        self._port: serial.Serial | None = None

    # -- the port --------------------------------------------------------------------------------------------

    def run(self) -> None:
        delay = BACKOFF[0]
        while not self.stop.is_set():
            try:
                self._port = serial.Serial(self.port_name, self.baud, bytesize=serial.EIGHTBITS,
                                           parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE, timeout=POLL_S,
                                           write_timeout=WRITE_TIMEOUT_S)  # fmt: skip
            except (serial.SerialException, OSError, ValueError) as e:
                log.warning("console: cannot open %s: %s; retrying in %.1f s", self.port_name, e, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, BACKOFF[1])
                continue
            self.opens += 1
            log.info("console on %s at %d 8N1", self.port_name, self.baud)
            try:
                self._serve()
                delay = BACKOFF[0]
            except PortGoneError as e:
                log.warning("console: %s lost (%s); reopening", self.port_name, e)
            finally:
                port, self._port = self._port, None
                try:
                    port.close()
                except (serial.SerialException, OSError):
                    log.debug("console: close failed", exc_info=True)
            self.editor.reset()
            self.stop.wait(delay)
            delay = min(delay * 2, BACKOFF[1])

    def write(self, text: str) -> None:
        port = self._port
        if port is None:
            return
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace")
        self._send(port, data)

    def _send(self, port: serial.Serial, data: bytes) -> None:
        try:
            port.write(data)
        except serial.SerialTimeoutException:
            pass  # nobody is reading: output is dropped, never queued without bound
        except (serial.SerialException, OSError) as e:
            raise PortGoneError(str(e)) from e

    def _read(self) -> bytes:
        port = self._port
        assert port is not None
        try:
            data = bytes(port.read(1))
            if data:
                waiting = port.in_waiting
                if waiting:
                    data += bytes(port.read(min(waiting, READ_CHUNK)))
            return data
        except (serial.SerialException, OSError) as e:
            raise PortGoneError(str(e)) from e

    def read_line(self, prompt: str, *, echo: bool = True, deadline: float) -> str | None:
        """The next line typed; None on Ctrl-C; TimedOutError when ``deadline`` (monotonic) passes."""
        port = self._port
        assert port is not None
        self.editor.echo = echo
        self.write(prompt)
        while True:
            if self.stop.is_set():
                raise TimedOutError("stopping")
            out, event = self.editor.step()
            if out:
                self._send(port, out)
            if event is None:
                if time.monotonic() > deadline:
                    raise TimedOutError("timeout")
                data = self._read()
                if data:
                    self.editor.push(data)
                continue
            if isinstance(event, Cancelled):
                return None
            if not self.bucket.take():
                self.dropped_lines += 1
                if self.dropped_lines % 100 == 1:
                    self.write(f"input too fast: line ignored ({self.dropped_lines} so far)\n")
                self.write(prompt)
                continue
            if isinstance(event, Overlong):
                self.write(f"error: line longer than {event.limit} characters; discarded\n")
                self.write(prompt)
                continue
            return event.text

    # -- sessions --------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        self.write("\nalpr-edge diagnostics console\n")
        while not self.stop.is_set():
            try:
                user = self._login()
            except TimedOutError:
                if not self.stop.is_set():
                    self.write("\nlogin timed out\n")
                self.editor.reset()
                continue
            if user is None:
                continue
            try:
                self._session(user)
            except TimedOutError:
                if not self.stop.is_set():
                    self._record(user, "console.logout", {"why": "idle"})
                    self.write("\nidle: logged out\n")
            except PortGoneError:
                self._record(user, "console.logout", {"why": "port lost"})
                raise

    def _login(self) -> User | None:
        deadline = time.monotonic() + self.login_timeout_s
        name = self.read_line("\nlogin: ", deadline=deadline)
        if not name or not name.strip():
            return None
        password = self.read_line("password: ", echo=False, deadline=deadline)
        if password is None:
            return None
        try:
            user = self.users.authenticate(name.strip(), password, time.time())
        except AuthError as e:
            self._refused(name, e.reason)
            self.write(f"{AuthError.MESSAGE}\n")
            self.stop.wait(FAIL_PAUSE_S)
            return None
        except StoreError as e:
            log.error("console: login failed: %s", e)
            self.write("login failed: the user store cannot be read\n")
            return None
        try:
            require(user, "maintenance")
        except AccessDenied as e:
            self._record(user, "access.denied", {"what": "maintenance", "via": "console"})
            self.write(f"{e}\n")
            return None
        if not self._record(user, "console.login", {"port": self.port_name}):
            self.write("login refused: the access record cannot be written\n")
            return None
        self.write(f"logged in as {user.name} ({user.role}); 'help' lists the commands\n")
        return user

    def _refused(self, name: str, why: str) -> None:
        try:
            record_refused_login(self.audit, name.strip(), why, via="console")
        except (AuditError, StoreError, ValueError) as e:
            log.error("console: cannot record a refused login: %s", e)

    def _record(self, user: User, action: str, detail: dict[str, str]) -> bool:
        try:
            self.audit.record(user.name, user.role, action, detail=detail)
            return True
        except (AuditError, StoreError, ValueError) as e:
            log.error("console: cannot record %s: %s", action, e)
            return False

    def _session(self, user: User) -> None:
        def ask(prompt: str) -> str | None:
            return self.read_line(prompt, deadline=time.monotonic() + self.idle_timeout_s)

        ctx = self.make_context(Context(self.cfg, self.config_path, self.status_path, user, self.audit, ask))
        while True:
            line = self.read_line(PROMPT, deadline=time.monotonic() + self.idle_timeout_s)
            if line is None or not line.strip():
                continue
            try:
                cmd, name, args = parse(line)
            except CommandError as e:
                self._record(user, "console.command", {"command": "(malformed)"})
                self.write(f"error: {e}\n")
                continue
            if name in ("logout", "exit", "quit"):
                self._record(user, "console.logout", {"why": "logout"})
                self.write("logged out\n")
                return
            recorded = name if (cmd is not None or name == "help") else "(unknown)"
            if not self._record(user, "console.command", {"command": recorded}):
                self.write("error: the access record cannot be written; command refused\n")
                continue
            if name == "help":
                self.write(help_text() + "\n")
                continue
            if cmd is None:
                self.write(f"error: unknown command {name[:32]!r}; 'help' lists the commands\n")
                continue
            try:
                out = cmd.handler(ctx, args)
            except CommandError as e:
                out = f"error: {e}"
            except (AuditError, StoreError) as e:
                log.error("console: %s: %s", cmd.name, e)
                out = f"error: {cmd.name}: the access record cannot be written; nothing done"
            except (TimedOutError, PortGoneError):
                raise
            except Exception as e:  # a bug in one command must not end the console
                log.exception("console: %s failed", cmd.name)
                out = f"error: {cmd.name} failed ({type(e).__name__})"
            self.write(out + "\n")


__all__ = ["COMMANDS", "Console", "PortGoneError"]
