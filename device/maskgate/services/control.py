"""The local control socket behind ``maskgate door unlock|lock|auto|silence|status``.

A Unix stream socket (default ``$RUNTIME_DIRECTORY/control.sock``, i.e. /run/maskgate under systemd),
mode 0660 with group ``control.group`` (maskgate-operators): the file's permissions are the access
control, and the peer's Unix user (``SO_PEERCRED``) is who the override is recorded for. One JSON
line each way per connection:

    → {"command": "unlock", "seconds": 600, "reason": "delivery"}
    ← {"ok": true, "door": {...}, "overrides": [...], "inputs": {...}, "logged": true}   or   {"ok": false, "error": "..."}

A change is answered once it is committed to the event log (``logged``), or after ``LOG_WAIT`` seconds
with ``"logged": false`` when the log is failing or far behind: the door changed either way.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import pwd
import socket
import stat
import struct
import threading
from pathlib import Path
from typing import Callable

from ..access.controller import Auto, DoorController, Lock, Unlock
from ..errors import MaskgateError
from ..logs import Throttled

log = logging.getLogger(__name__)

COMMANDS = ("unlock", "lock", "auto", "silence", "status")
MAX_LINE = 4096
MAX_REASON = 200
OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
LOG_WAIT = 3.0  # seconds a change waits for its event-log row before it is answered (the client waits 5)
MIN_SECONDS = 1.0
PAUSE_MAX = 1.0  # seconds between accept attempts while the process is out of file descriptors


def peer_user(conn: socket.socket) -> str:
    """The Unix user at the other end of a connected Unix socket."""
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _check_request(request: object, max_seconds: float) -> tuple[str, float | None, str]:
    if not isinstance(request, dict) or request.get("command") not in COMMANDS:
        raise ValueError(f"command must be one of {', '.join(COMMANDS)}")
    command, seconds, reason = request["command"], request.get("seconds"), request.get("reason") or ""
    if seconds is not None:
        if command not in ("unlock", "lock"):
            raise ValueError(f"{command} takes no seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not MIN_SECONDS <= seconds <= max_seconds:
            raise ValueError(f"seconds must be a number from {MIN_SECONDS:g} to {max_seconds:g} "
                             f"(control.max_override_seconds), got {seconds!r}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ValueError(f"reason must be text of at most {MAX_REASON} characters")
    return command, seconds, " ".join(reason.split())  # one line in the event log


class ControlServer:
    """Answers control requests; ``handle`` is the protocol, the thread only moves lines."""

    name = "control-socket"

    def __init__(self, path: Path, *, controller: DoorController, group: str | None = None,
                 inputs: Callable[[], dict] = dict, logged: Callable[[float], bool] | None = None,
                 max_seconds: float = 86400.0):
        self.path, self.controller, self.group, self.inputs = Path(path), controller, group, inputs
        self.logged, self.max_seconds = logged, max_seconds
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = Throttled(log)

    def handle(self, request: object, who: str) -> dict:
        """One request from ``who`` (operator:<user>) → the reply."""
        try:
            command, seconds, reason = _check_request(request, self.max_seconds)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        if command == "unlock":
            self.controller.request(Unlock(source="operator", who=who, reason=reason or "manual unlock", seconds=seconds))
        elif command == "lock":
            self.controller.request(Lock(source="operator", who=who, reason=reason or "manual lock", seconds=seconds))
        elif command == "auto":
            self.controller.request(Auto(source="operator", who=who, reason=reason or "back to automatic"))
        elif command == "silence" and self.controller.silence(who=who, reason=reason) is None:
            return {"ok": False, "error": "no door alarm is sounding"}
        if command == "status":
            return self.status()
        log.info("control: %s%s by %s (%s)", command, f" for {seconds:g} s" if seconds else "", who, reason)
        if self.logged is None:  # no event log behind this server
            return self.status()
        logged = self.logged(LOG_WAIT)
        return {**self.status(), "logged": logged}

    def status(self) -> dict:
        now = self.controller.clock()
        state = self.controller.tick()
        overrides = [{"layer": layer, "unlock": claim.unlock, "who": claim.who, "reason": claim.reason,
                      "seconds_left": None if claim.until is None else round(claim.until - now, 1)}
                     for layer, claim in self.controller.claims().items() if layer != "vision"]
        return {"ok": True, "door": state.as_dict(now), "overrides": overrides, "inputs": self.inputs()}

    def start(self) -> None:
        """Listen (the socket appears with its final permissions, never briefly open to all)."""
        gid = None
        if self.group is not None:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise MaskgateError(f"control.group: no group {self.group!r} (systemd/install.sh creates "
                                    "maskgate-operators; or set control.group: null)") from None
        _take_over(self.path)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            staging.unlink(missing_ok=True)
            sock.bind(str(staging))
            os.chmod(staging, 0o600 if gid is None else 0o660)
            if gid is not None:
                os.chown(staging, -1, gid)
            os.rename(staging, self.path)
            sock.listen(8)
        except OSError as exc:
            sock.close()
            staging.unlink(missing_ok=True)
            raise MaskgateError(f"control socket {self.path}: cannot listen ({exc.strerror or exc})") from None
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        if self._sock is not None:
            self._sock.close()
            self.path.unlink(missing_ok=True)

    def healthy(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def _serve(self) -> None:
        """Accept and answer, one connection at a time; running out of descriptors pauses it, never ends it."""
        pause, starved = 0.05, False
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_DESCRIPTORS:
                    self._dropped("control socket: accept failed: %s", exc.strerror or exc)
                elif not starved:
                    starved = True
                    log.error("control socket: out of file descriptors (%s); accepting again once some are free",
                              exc.strerror)
                self._stopping.wait(pause)
                pause = min(pause * 2, PAUSE_MAX)
                continue
            if starved:
                starved = False
                log.warning("control socket: file descriptors are back; accepting again")
            pause = 0.05
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        try:
            who = f"operator:{peer_user(conn)}"
            line = _read_line(conn)
            try:
                reply = self.handle(json.loads(line), who) if line is not None else {
                    "ok": False, "error": f"request longer than {MAX_LINE} bytes"}
            except ValueError:
                reply = {"ok": False, "error": "request is not one JSON line"}
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:
            self._dropped("control connection dropped: %s", exc)


def _read_line(conn: socket.socket) -> bytes | None:
    """The first line, or None if it is longer than MAX_LINE."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_LINE and (chunk := conn.recv(4096)):
        data += chunk
    line = data.split(b"\n", 1)[0]
    return line if len(line) <= MAX_LINE else None


def _take_over(path: Path) -> None:
    """Remove a stale socket left by a daemon that died; refuse a live one or anything else."""
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise MaskgateError(f"control socket {path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise MaskgateError(f"control socket {path}: another maskgate daemon is listening there")


def send(path: Path, request: dict, *, group: str | None = None, timeout: float = 5.0) -> dict:
    """The client side (``maskgate door``): one request, the daemon's reply; problems are one-line errors."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n") and (chunk := sock.recv(65536)):
            line += chunk
    except FileNotFoundError:
        raise MaskgateError(f"{path}: no control socket (is the daemon running? see control: in its config)") from None
    except PermissionError:
        who = f"members of the {group} group" if group else "the daemon's user"
        raise MaskgateError(f"{path}: permission denied (only {who} may control the door)") from None
    except ConnectionRefusedError:
        raise MaskgateError(f"{path}: nobody is listening (is the daemon running?)") from None
    except socket.timeout:
        raise MaskgateError(f"{path}: the daemon did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise MaskgateError(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(line)
    except ValueError:
        raise MaskgateError(f"{path}: not a maskgate control socket (garbled answer)") from None
    if not isinstance(reply, dict):
        raise MaskgateError(f"{path}: not a maskgate control socket (unexpected answer)")
    if not reply.get("ok"):
        raise MaskgateError(f"the daemon refused: {reply.get('error', 'no reason given')}")
    return reply
