"""The in-car alert page (P7, P8): live alerts with both images beside the wanted plate, a sound, and buttons to
record the outcome, for a logged-in officer on the in-car network only.

Why it is built this way:
- The standard library's ThreadingHTTPServer: one page, one officer, a handful of requests; a web framework would
  add dependencies and attack surface without earning its place. New alerts reach the page by Server-Sent Events
  (one thread per open page), so publishing never waits for a browser.
- Everything shown comes from hostile input (plate text, list fields): the server escapes what it renders, and the
  script builds the alert with ``textContent`` only, under a CSP without inline scripts or styles.
- Sessions: a random token in an HttpOnly, SameSite=Strict cookie; every POST carries the session's CSRF token
  (the login form a double-submit token). An open live page counts as use, so an officer watching for alerts is
  not logged out while driving; a closed page ends after ``idle_timeout_s``, any session after ``max_session_s``.
  Each request re-checks the account, so a disabled user is out at once.
- Images are served only to a logged-in session, from the Alert's bytes in memory: nothing is written to disk.
- The access record (P13): every login, refused login (with the real reason) and refused role, every alert sent
  to a page (hits.view) and every image served (image.view) is recorded under the user's name before it is sent;
  what cannot be recorded is not shown.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..access.audit import AuditError, AuditLog
from ..access.session import ROLES_FOR, AccessDenied, Session, record_refused_login, start_session
from ..access.users import AuthError, User
from ..alerts import MAX_NOTE, OUTCOMES, Alert
from ..store.errors import StoreError
from .hub import AlertHub, Subscription

__all__ = ["ALLOWED_ROLES", "AlertHub", "AlertPage", "RecordOutcome", "Subscription", "Users", "alert_json"]

log = logging.getLogger(__name__)

ALLOWED_ROLES = ROLES_FOR["hits.view"]  # a technician or auditor sees no plates or images
KEEPALIVE_S = 15.0
MAX_BODY = 16 * 1024
MAX_SESSIONS = 32
SESSION_COOKIE = "alpr_session"
LOGIN_COOKIE = "alpr_login"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_IMAGE = re.compile(r"/image/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/(crop|scene)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STATIC = {"/static/alert.js": "text/javascript; charset=utf-8", "/static/alert.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),  # "no-referrer" makes Chrome send "Origin: null" on our own POSTs
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)

RecordOutcome = Callable[[str, str, str, str], object]  # (hit uuid, outcome, officer, note); raises ValueError


class Users(Protocol):
    """What the page needs of the accounts (edge.access.users.UserStore fits)."""

    def authenticate(self, name: str, password: str, now: float) -> User: ...

    def get(self, name: str) -> User | None: ...


# --- what the page shows ------------------------------------------------------------------------------------


def alert_json(a: Alert, outcome: dict[str, object] | None = None) -> dict[str, object]:
    """The alert as the page's script receives it (text only; images by URL)."""
    e = a.hit.entry
    f = a.fix
    return {
        "uuid": a.uuid,
        "read_text": a.read_text,
        "read_confidence": a.read_confidence,
        "camera_id": a.camera_id,
        "unit_id": a.unit_id,
        "seen_at": a.seen_at,
        "raised_at": a.raised_at,
        "wanted_plate": e.plate,
        "wanted_state": e.state,
        "list_id": e.list_id,
        "list_code": e.list_code,
        "reason": e.reason,
        "instructions": e.instructions,
        "case_number": e.case_number,
        "vehicle_description": e.vehicle_description,
        "synopsis": e.synopsis,  # a manual entry's P6 details ("" for a signed list's entry)
        "requesting_officer": e.requesting_officer,
        "entered_by": e.entered_by,
        "explanation": a.hit.explain(),
        "list_version": a.list_info.version,
        "list_age_s": a.list_age_s,
        "list_stale": a.list_stale,
        "fix": {
            "source": f.source,
            "lat": f.lat,
            "lon": f.lon,
            "age_s": f.age_s,
            "eph_m": f.eph_m,
            "speed_mps": f.speed_mps,
            "track_deg": f.track_deg,
        },
        "crop_url": f"/image/{a.uuid}/crop",
        "scene_url": f"/image/{a.uuid}/scene" if a.scene_jpeg is not None else None,
        "outcome": outcome,
    }


def _page(title: str, body: str, body_class: str, head: str = "") -> bytes:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="stylesheet" href="/static/alert.css">{head}</head>'
        f'<body class="{body_class}">{body}</body></html>\n'
    ).encode()


def login_html(csrf: str, error: str = "", name: str = "") -> bytes:
    err = f'<p class="error" id="login-error" role="alert">{html.escape(error)}</p>' if error else ""
    return _page(
        "ALPR alerts: log in",
        f"<main><h1>ALPR alerts</h1>{err}"
        '<form method="post" action="/login" id="login-form">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        f'<label>Name <input name="name" id="name" autocomplete="username" required maxlength="64" '
        f'value="{html.escape(name)}"></label>'
        '<label>Password <input type="password" name="password" id="password" autocomplete="current-password" '
        'required maxlength="1024"></label>'
        '<button type="submit" id="login">Log in</button></form></main>',
        "login",
    )


def live_html(user: User, csrf: str) -> bytes:
    name = html.escape(user.name)
    return _page(
        "ALPR alerts",
        f'<header><span id="who">{name} ({html.escape(user.role)})</span>'
        '<span id="conn" class="conn">connecting…</span>'
        '<button type="button" id="sound" hidden>Turn sound on</button>'
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        '<button type="submit" id="logout">Log out</button></form></header>'
        '<main id="alerts"><p id="empty">No alerts yet. New alerts appear here with a sound.</p></main>'
        '<script src="/static/alert.js"></script>',
        "live",
        head=f'<meta name="csrf-token" content="{html.escape(csrf)}">'
        f'<meta name="outcomes" content="{html.escape(" ".join(OUTCOMES))}">',
    )


def _static(path: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", path.rsplit("/", 1)[1]).read_bytes()


# --- sessions -----------------------------------------------------------------------------------------------


@dataclass
class _Session:
    token: str
    user: User
    csrf: str
    created: float  # time.monotonic()
    last_seen: float


class _Sessions:
    def __init__(self, users: Users, idle_timeout_s: float, max_session_s: float) -> None:
        self._users = users
        self._idle = idle_timeout_s
        self._max = max_session_s
        self._by_token: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, user: User) -> _Session:
        now = time.monotonic()
        s = _Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._by_token[s.token] = s
            while len(self._by_token) > MAX_SESSIONS:
                self._by_token.popitem(last=False)  # the least recently used
        return s

    def end(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def touch(self, token: str | None) -> _Session | None:
        """The live session of ``token`` (marked used now), or None: unknown, idle too long, too old, or its
        account disabled or no longer allowed."""
        if token is None or not _TOKEN.fullmatch(token):
            return None
        now = time.monotonic()
        with self._lock:
            s = self._by_token.get(token)
            if s is None:
                return None
            if now - s.last_seen > self._idle or now - s.created > self._max:
                del self._by_token[token]
                log.info("session of %s ended (timeout)", s.user.name)
                return None
        try:
            current = self._users.get(s.user.name)
        except StoreError as e:
            # a database hiccup must not log an officer out in the middle of an alert
            log.error("cannot re-check the account of %s: %s", s.user.name, e)
            current = s.user
        if current is None or current.disabled or current.role not in ALLOWED_ROLES:
            self.end(token)
            log.info("session of %s ended (account disabled or changed)", s.user.name)
            return None
        with self._lock:
            s.last_seen = now
            self._by_token.move_to_end(token)
        return s


# --- the server ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    page: AlertPage


class AlertPage:
    """Serves the alert page on ``bind``:``port`` (0: any free port; see ``port`` after start)."""

    def __init__(
        self,
        hub: AlertHub,
        users: Users,
        record_outcome: RecordOutcome,
        bind: str = "127.0.0.1",
        port: int = 8080,
        *,
        audit: AuditLog,
        idle_timeout_s: float = 15 * 60.0,
        max_session_s: float = 14 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError("port: must be in 0..65535")
        if not 0 < idle_timeout_s <= max_session_s:
            raise ValueError("idle_timeout_s: must be positive and at most max_session_s")
        self.hub = hub
        self.users = users
        self.record_outcome = record_outcome
        self.audit = audit
        self.bind = bind
        self._port = port
        self.clock = clock
        self.sessions = _Sessions(users, idle_timeout_s, max_session_s)
        self.login_gate = threading.Semaphore(1)  # one Argon2 verification at a time: the CPU is for recognition
        self.stopping = threading.Event()
        self._outcomes: dict[str, dict[str, object]] = {}
        self._outcomes_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._streams: set[Subscription] = set()
        self._streams_lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    def start(self) -> None:
        try:
            server = _Server((self.bind, self._port), _Handler)
        except OSError as e:
            raise OSError(e.errno, f"cannot serve the alert page on {self.bind}:{self._port}: {e.strerror}") from e
        server.page = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="alert-page", daemon=True)
        self._thread.start()
        log.info("alert page on http://%s:%d/", self.bind, self.port)

    def stop(self) -> None:
        """Stop serving; open live pages are disconnected (they reconnect to the next start and must log in)."""
        self.stopping.set()
        with self._streams_lock:
            streams = list(self._streams)
        for s in streams:
            self.hub.unsubscribe(s)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def open_stream(self) -> Subscription:
        sub = self.hub.subscribe()
        with self._streams_lock:
            self._streams.add(sub)
        return sub

    def close_stream(self, sub: Subscription) -> None:
        with self._streams_lock:
            self._streams.discard(sub)
        self.hub.unsubscribe(sub)

    def outcome_of(self, hit_uuid: str) -> dict[str, object] | None:
        with self._outcomes_lock:
            return self._outcomes.get(hit_uuid)

    def note_outcome(self, hit_uuid: str, record: dict[str, object]) -> None:
        with self._outcomes_lock:
            self._outcomes[hit_uuid] = record
            if len(self._outcomes) > 1000:  # only alerts still on the page matter
                keep = {a.uuid for a in self.hub.recent()}
                self._outcomes = {k: v for k, v in self._outcomes.items() if k in keep}


class _BadRequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "alpr-edge"
    sys_version = ""
    timeout = 30  # a client that stops sending (or reading) is dropped

    @property
    def page(self) -> AlertPage:
        return self.server.page

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("alert page %s: " + format, self.client_address[0], *args)

    # --- responses ---

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (*SECURITY_HEADERS, *headers):
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, where: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._send(HTTPStatus.SEE_OTHER if self.command == "POST" else HTTPStatus.FOUND, b"", "text/plain",
                   (("Location", where), *headers))  # fmt: skip

    def _json(self, status: HTTPStatus, doc: dict[str, object]) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    def _text(self, status: HTTPStatus, message: str) -> None:
        self._send(status, message.encode(), "text/plain; charset=utf-8")

    # --- request parts ---

    def _cookie(self, name: str) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None

    def _session(self) -> _Session | None:
        return self.page.sessions.touch(self._cookie(SESSION_COOKIE))

    def _form(self) -> dict[str, str]:
        """The urlencoded body, each field at most once; _BadRequestError otherwise."""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise _BadRequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected application/x-www-form-urlencoded")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError as e:
            raise _BadRequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from e
        if not 0 <= length <= MAX_BODY:
            raise _BadRequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_BODY} bytes")
        try:
            fields = parse_qs(self.rfile.read(length).decode("utf-8"), keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError) as e:
            raise _BadRequestError(HTTPStatus.BAD_REQUEST, "malformed form") from e
        if any(len(v) != 1 for v in fields.values()):
            raise _BadRequestError(HTTPStatus.BAD_REQUEST, "a field was given more than once")
        return {k: v[0] for k, v in fields.items()}

    def _same_origin(self) -> bool:
        """A POST from another site's page names that site in Origin; refuse it whatever else it carries."""
        origin = self.headers.get("Origin")
        if origin is None:
            return True
        return origin == f"http://{self.headers.get('Host', '')}"

    # --- routes ---

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/login":
                return self._login_form()
            if path == "/favicon.ico":
                return self._text(HTTPStatus.NOT_FOUND, "no icon")
            if path in _STATIC:
                return self._send(HTTPStatus.OK, _static(path), _STATIC[path])
            session = self._session()
            if session is None:
                if path == "/events" or path.startswith("/image/"):
                    return self._text(HTTPStatus.UNAUTHORIZED, "log in first")
                return self._redirect("/login")
            if path == "/":
                return self._send(HTTPStatus.OK, live_html(session.user, session.csrf), "text/html; charset=utf-8")
            if path == "/events":
                return self._events(session)
            m = _IMAGE.fullmatch(path)
            if m:
                return self._image(session, m.group(1), m.group(2))
            self._text(HTTPStatus.NOT_FOUND, "not found")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            if not self._same_origin():
                return self._text(HTTPStatus.FORBIDDEN, "cross-site request refused")
            if path == "/login":
                return self._login(self._form())
            session = self._session()
            if session is None:
                return self._text(HTTPStatus.UNAUTHORIZED, "log in first")
            form = self._form()
            token = self.headers.get("X-CSRF-Token") or form.get("csrf", "")
            if not secrets.compare_digest(token.encode(), session.csrf.encode()):
                return self._text(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token")
            if path == "/outcome":
                return self._outcome(session, form)
            if path == "/logout":
                self.page.sessions.end(session.token)
                log.info("user %s logged out of the alert page", session.user.name)
                return self._redirect("/login", ((("Set-Cookie", _cookie(SESSION_COOKIE, "", "/", 0)),)))
            self._text(HTTPStatus.NOT_FOUND, "not found")
        except _BadRequestError as e:
            self._text(e.status, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _login_form(self, status: HTTPStatus = HTTPStatus.OK, error: str = "", name: str = "") -> None:
        # one token per browser: a second GET /login (a redirected favicon request, another tab) must not
        # invalidate the form already shown
        token = self._cookie(LOGIN_COOKIE) or ""
        if not _TOKEN.fullmatch(token):
            token = secrets.token_urlsafe(32)
        self._send(status, login_html(token, error, name), "text/html; charset=utf-8",
                   (("Set-Cookie", _cookie(LOGIN_COOKIE, token, "/login", 600)),))  # fmt: skip

    def _login(self, form: dict[str, str]) -> None:
        expected = self._cookie(LOGIN_COOKIE) or ""
        given = form.get("csrf", "")
        if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
            return self._login_form(HTTPStatus.FORBIDDEN, "The form had expired. Please log in again.")
        name, password = form.get("name", ""), form.get("password", "")
        try:
            with self.page.login_gate:
                user = self.page.users.authenticate(name, password, self.page.clock())
        except AuthError as e:
            log.info("alert page login refused (%s) from %s", e.reason, self.client_address[0])
            try:
                record_refused_login(self.page.audit, name, e.reason, via="alert-page")
            except AuditError as ae:
                log.error("alert page: %s", ae)
            return self._login_form(HTTPStatus.UNAUTHORIZED, str(e), name[:64])
        except StoreError as e:
            log.error("alert page login failed: %s", e)
            return self._login_form(HTTPStatus.SERVICE_UNAVAILABLE, "Accounts cannot be read; try again.", name[:64])
        try:
            start_session(self.page.audit, user, "hits.view", via="alert-page")
        except AccessDenied:
            log.info("alert page refused user %s: role %s", user.name, user.role)
            return self._login_form(
                HTTPStatus.FORBIDDEN,
                f"The role {user.role} may not see alerts (operators, investigators and administrators may).",
            )
        except AuditError as e:
            log.error("alert page: %s", e)
            return self._login_form(HTTPStatus.SERVICE_UNAVAILABLE, "The access record cannot be written; try again.")
        session = self.page.sessions.create(user)
        log.info("user %s logged in to the alert page", user.name)
        self._redirect("/", (("Set-Cookie", _cookie(SESSION_COOKIE, session.token, "/", None)),
                             ("Set-Cookie", _cookie(LOGIN_COOKIE, "", "/login", 0))))  # fmt: skip

    def _image(self, session: _Session, hit_uuid: str, kind: str) -> None:
        alert = self.page.hub.get(hit_uuid)
        data = None if alert is None else alert.crop_jpeg if kind == "crop" else alert.scene_jpeg
        if not data or alert is None:
            return self._text(HTTPStatus.NOT_FOUND, "no such image")
        detail = {"hit_uuids": [hit_uuid], "read_uuids": [alert.read_uuid], "image": kind, "count": 1}
        try:
            Session(session.user, self.page.audit).record("image.view", detail=detail)
        except AuditError as e:
            log.error("alert page: %s", e)
            return self._text(HTTPStatus.SERVICE_UNAVAILABLE, "the access record cannot be written")
        self._send(HTTPStatus.OK, data, "image/jpeg")

    def _outcome(self, session: _Session, form: dict[str, str]) -> None:
        hit_uuid, outcome, note = form.get("hit", ""), form.get("outcome", ""), form.get("note", "")
        if not _UUID.fullmatch(hit_uuid):
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "hit: not a hit id"})
        if outcome not in OUTCOMES:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"outcome: must be one of {', '.join(OUTCOMES)}"})
        if len(note) > MAX_NOTE:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"note: at most {MAX_NOTE} characters"})
        officer = session.user.name
        try:
            self.page.record_outcome(hit_uuid, outcome, officer, note)
        except ValueError as e:  # UnknownHitError is one; the messages name the field, never a plate
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        except StoreError as e:
            log.error("outcome of hit %s could not be stored: %s", hit_uuid, e)
            return self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the outcome could not be stored; try again"})
        except Exception:
            log.exception("recording the outcome of hit %s failed", hit_uuid)
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "the outcome could not be recorded"})
        record: dict[str, object] = {"outcome": outcome, "officer": officer, "at": self.page.clock(), "note": note}
        self.page.note_outcome(hit_uuid, record)
        log.info("user %s recorded outcome %s for hit %s", officer, outcome, hit_uuid)
        self._json(HTTPStatus.OK, {"hit": hit_uuid, **record})

    def _events(self, session: _Session) -> None:
        page = self.page
        sub = page.open_stream()
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            for k, v in SECURITY_HEADERS:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(b"retry: 2000\n\n")
            while not page.stopping.is_set():
                alert = sub.get(KEEPALIVE_S)
                if page.sessions.touch(session.token) is None:
                    self.wfile.write(b"event: logout\ndata: {}\n\n")
                    return
                if alert is not None:
                    try:  # nothing is shown that is not recorded
                        Session(session.user, page.audit).record(
                            "hits.view", detail={"hit_uuids": [alert.uuid], "read_uuids": [alert.read_uuid], "count": 1}
                        )
                    except AuditError as e:
                        log.error("alert page: %s", e)
                        return  # the browser reconnects and is sent the recent alerts again
                    doc = alert_json(alert, page.outcome_of(alert.uuid))
                    self.wfile.write(f"event: alert\nid: {alert.uuid}\ndata: {json.dumps(doc)}\n\n".encode())
                elif sub.closed:
                    return  # cut off (too slow) or stopping: the browser reconnects and gets the recent alerts
                else:
                    self.wfile.write(b": keepalive\n\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            page.close_stream(sub)


def _cookie(name: str, value: str, path: str, max_age: int | None) -> str:
    """A Set-Cookie value: HttpOnly and SameSite=Strict always (no Secure: the in-car page is plain HTTP)."""
    age = f"; Max-Age={max_age}" if max_age is not None else ""
    return f"{name}={value}; Path={path}; HttpOnly; SameSite=Strict{age}"
