"""The runner <-> trial channel: JSON lines over one TCP connection per trial segment.

Rank 0 of a trial job connects to the runner (``NASALLOC_RUNNER=host:port``) and speaks first;
the other ranks never talk to the runner, they get the decision from rank 0 by a broadcast.
A socket (rather than files) lets the runner wait on all trials at once with ``selectors``
and notice at once when a trial dies (the connection closes); it works across nodes too,
which the SLURM executor needs.

Messages, trial -> runner::

    {"type": "hello", "token": T, "pid": P, "world_size": W}      on connect
    {"type": "ready", "epoch": E, "load_s": S}                     model built, checkpoint loaded
    {"type": "epoch", "epoch": E, "metric": M, "test_metric": M2, "train_s": S, "eval_s": S,
     "samples": N}                                                 after every epoch; then waits
    {"type": "checkpointed", "epoch": E, "save_s": S}              after a pause, before exit 0

runner -> trial, one answer to every "epoch"::

    {"decision": "continue" | "pause" | "stop"}

``token`` identifies the segment (the runner gives each launch its own), so a stale process of
an earlier launch can never be mistaken for the current one.
"""

from __future__ import annotations

import json
import socket
from typing import Optional

RUNNER_ENV = "NASALLOC_RUNNER"
TOKEN_ENV = "NASALLOC_TOKEN"
DECISIONS = ("continue", "pause", "stop")


def encode(message: dict) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


class LineBuffer:
    """Accumulates bytes and yields complete JSON lines (a message may arrive in pieces)."""

    def __init__(self) -> None:
        self._data = b""

    def feed(self, chunk: bytes) -> list[dict]:
        self._data += chunk
        *lines, self._data = self._data.split(b"\n")
        messages = []
        for line in lines:
            if line.strip():
                messages.append(json.loads(line))
        return messages


class TrialLink:
    """Rank 0's blocking end of the channel."""

    def __init__(self, address: str, token: str, timeout_s: float = 30.0):
        host, _, port = address.rpartition(":")
        self._sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self._sock.settimeout(None)  # decisions may take as long as the runner needs
        self._buffer = LineBuffer()
        self._pending: list[dict] = []
        self.token = token

    def send(self, message: dict) -> None:
        self._sock.sendall(encode(message))

    def receive(self) -> dict:
        """The next message from the runner; ConnectionError when the runner went away."""
        while not self._pending:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the runner closed the channel")
            self._pending.extend(self._buffer.feed(chunk))
        return self._pending.pop(0)

    def decision(self) -> str:
        answer = self.receive().get("decision")
        if answer not in DECISIONS:
            raise ConnectionError(f"runner sent decision {answer!r}, expected one of {DECISIONS}")
        return answer

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def parse_address(address: Optional[str]) -> str:
    if not address or ":" not in address:
        raise ValueError(f"{RUNNER_ENV}={address!r} is not host:port")
    return address


class ChannelServer:
    """The runner's end: one listening socket; each running segment's rank 0 connects and is
    known by the token of its ``hello``. One thread, no busy waiting: :meth:`poll` blocks in
    ``selectors`` for at most ``timeout`` seconds."""

    def __init__(self, host: str):
        import selectors

        self._selectors = selectors
        self.sock = socket.create_server((host, 0))
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ, None)
        self.expected: set = set()
        self.by_token: dict = {}                       # token -> connection
        self.buffers: dict = {}                        # connection -> LineBuffer
        self.owner: dict = {}                          # connection -> token (None until hello)

    def expect(self, token: str) -> None:
        self.expected.add(token)

    def connected(self, token: str) -> bool:
        return token in self.by_token

    def poll(self, timeout: float) -> list:
        """(token, message) pairs that arrived within ``timeout`` seconds."""
        out: list = []
        for key, _ in self.selector.select(timeout=timeout):
            if key.fileobj is self.sock:
                conn, _ = self.sock.accept()
                self.buffers[conn], self.owner[conn] = LineBuffer(), None
                self.selector.register(conn, self._selectors.EVENT_READ, None)
            else:
                out.extend(self._read(key.fileobj))
        return out

    def drain(self, token: str, timeout: float = 1.0) -> list:
        """What a segment that has exited still had in flight (read until the connection closes)."""
        out: list = []
        conn = self.by_token.get(token)
        if conn is not None:
            conn.settimeout(timeout)
            while conn in self.buffers:
                out.extend(self._read(conn))
        return out

    def send(self, token: str, message: dict) -> bool:
        conn = self.by_token.get(token)
        try:
            conn.sendall(encode(message))
            return True
        except (OSError, AttributeError):
            return False  # gone: the job's exit is noticed and recorded by the runner

    def forget(self, token: str) -> None:
        self.expected.discard(token)
        conn = self.by_token.pop(token, None)
        if conn is not None:
            self._drop(conn)

    def _read(self, conn) -> list:
        try:
            chunk = conn.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return []
        out = []
        for message in self.buffers[conn].feed(chunk):
            token = self.owner[conn]
            if token is None:
                token = message.get("token") if message.get("type") == "hello" else None
                if token not in self.expected or token in self.by_token:
                    self._drop(conn)  # not a segment we launched (or a stale one): ignore it
                    return out
                self.owner[conn], self.by_token[token] = token, conn
            out.append((token, message))
        return out

    def _drop(self, conn) -> None:
        token = self.owner.pop(conn, None)
        self.buffers.pop(conn, None)
        if token is not None and self.by_token.get(token) is conn:
            del self.by_token[token]
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def close(self) -> None:
        for conn in list(self.buffers):
            self._drop(conn)
        self.selector.unregister(self.sock)
        self.sock.close()
        self.selector.close()
