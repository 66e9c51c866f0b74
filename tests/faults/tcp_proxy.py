"""A threaded TCP proxy on 127.0.0.1 that injects network faults on demand.

One thread runs a ``selectors`` loop over the listening socket and every proxied
connection; the fault methods hand their change to that thread and return once it
is in effect, so a test may arm a fault and act on the very next line.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

_CHUNK = 65536
#: Stop reading a side while this much of its data waits for the other side (back-pressure).
_HIGH_WATER = 1 << 20
#: Bytes of client data kept per connection, so a pattern split over two reads is still found.
_WINDOW = 1024
_CONNECT_TIMEOUT = 5.0
_CALL_TIMEOUT = 10.0
_LINGER_RESET = struct.pack("ii", 1, 0)
_LISTENER = "listener"
_WAKE = "wake"


def abort_socket(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class _Pair:
    """One proxied connection: the accepted client socket and its socket to the target."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.server: socket.socket | None = None
        self.connecting = False
        self.connect_deadline = 0.0
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.client_eof = False
        self.server_eof = False
        self.server_shut = False
        self.client_shut = False
        self.tail = b""
        self.drop_armed = False
        self.closed = False


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:port`` to ``(target_host, target_port)``.

    ``port`` is chosen by the kernel on the first ``start()`` and kept by later ones.
    Faults: ``black_hole()``, ``refuse()``, ``reset_all()``, ``drop_reply_to()`` and
    ``drop_next_reply()``; ``heal()`` ends the black hole and the refusal.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        #: Server replies discarded by ``drop_reply_to()`` / ``drop_next_reply()``.
        self.dropped_replies = 0
        self._target = (socket.gethostbyname(target_host), target_port)
        self._pairs: set[_Pair] = set()
        self._masks: dict[socket.socket, int] = {}
        self._black_holed = False
        self._refusing = False
        self._drop_pattern = b""
        self._drop_remaining = 0
        self._commands: collections.deque[tuple[Callable[[], None], threading.Event]] = (
            collections.deque()
        )
        self._stopping = False
        self._crash: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Listen and start forwarding."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(1024)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._stopping = False
        self._crash = None
        self._thread = threading.Thread(
            target=self._run, name=f"FaultProxy:{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and every connection (abruptly) and join the thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout=_CALL_TIMEOUT)
        if self._thread.is_alive():  # pragma: no cover - the loop never blocks for long
            raise RuntimeError("the proxy thread did not stop")
        self._thread = None
        assert self._selector is not None and self._wake_r is not None
        assert self._wake_w is not None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self._selector = self._wake_r = self._wake_w = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def connections(self) -> int:
        """Live proxied connections (including those held by a black hole)."""
        return len(self._pairs)

    # ------------------------------------------------------------------ faults

    def black_hole(self) -> None:
        """Forward nothing either way, on existing and new connections; keep them all open.

        Clients hang as behind a network partition or a SIGSTOPped peer. Nothing is
        read while the hole lasts (the kernel buffers hold the bytes) and connections
        accepted meanwhile reach the target only on ``heal()``.
        """

        def apply() -> None:
            self._black_holed = True
            for pair in list(self._pairs):
                self._update(pair)

        self._call(apply)

    def refuse(self) -> None:
        """Reset new connections at once, like a server that is down; existing ones go on."""

        def apply() -> None:
            self._refusing = True

        self._call(apply)

    def heal(self) -> None:
        """End ``black_hole()`` and ``refuse()``; armed reply drops stay armed.

        Connections that survived the black hole are kept and resume: nothing held
        back is discarded (like a healed partition whose TCP retransmits catch up).
        """

        def apply() -> None:
            self._black_holed = False
            self._refusing = False
            for pair in list(self._pairs):
                if pair.server is None:
                    self._connect(pair)
                if not pair.closed:
                    self._update(pair)

        self._call(apply)

    def reset_all(self) -> None:
        """Close every current connection with an RST on both sides; new ones still work."""

        def apply() -> None:
            for pair in list(self._pairs):
                self._close(pair, abort=True)

        self._call(apply)

    def drop_reply_to(self, pattern: bytes, *, count: int = 1) -> None:
        """Lose the server's reply to the next ``count`` client chunks containing ``pattern``.

        Once such a chunk has been forwarded, the first data the server then sends on
        that connection (its reply: the request was processed, a COMMIT committed) is
        discarded and both sides of the connection are reset. Replaces any earlier arming;
        ``count=0`` disarms.
        """
        if len(pattern) > _WINDOW:
            raise ValueError(f"patterns are limited to {_WINDOW} bytes")
        if count < 0:
            raise ValueError("count must not be negative")

        def apply() -> None:
            self._drop_pattern = pattern
            self._drop_remaining = count

        self._call(apply)

    def drop_next_reply(self) -> None:
        """Lose the server's reply to the very next client chunk, on any connection.

        psycopg opens a transaction with a round trip of its own (``BEGIN``): armed right
        before a transaction's first statement, this loses the reply to that ``BEGIN``;
        ``drop_reply_to()`` with a piece of the statement targets the statement itself.
        """
        self.drop_reply_to(b"", count=1)

    # ------------------------------------------------------------------ the loop thread

    def _call(self, fn: Callable[[], None]) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the proxy is not running") from self._crash
        done = threading.Event()
        self._commands.append((fn, done))
        self._wake()
        if not done.wait(_CALL_TIMEOUT) or self._crash is not None:
            raise RuntimeError("the proxy thread did not apply the change") from self._crash

    def _wake(self) -> None:
        if self._wake_w is not None:
            # A full wake-up buffer already guarantees a wake-up.
            with contextlib.suppress(BlockingIOError):
                self._wake_w.send(b"\0")

    def _run(self) -> None:
        selector, listener, wake_r = self._selector, self._listener, self._wake_r
        assert selector is not None and listener is not None and wake_r is not None
        try:
            while not self._stopping:
                for key, mask in selector.select(timeout=0.2):
                    if key.data == _WAKE:
                        with contextlib.suppress(BlockingIOError):
                            wake_r.recv(4096)
                    elif key.data == _LISTENER:
                        self._accept()
                    else:
                        pair, is_client = key.data
                        if pair.closed:  # closed by an earlier event of this batch
                            continue
                        try:
                            self._on_event(pair, is_client, mask)
                        except OSError:
                            self._close(pair, abort=True)
                self._run_commands()
                self._expire_connects()
        except BaseException as exc:
            self._crash = exc
            raise
        finally:
            for pair in list(self._pairs):
                self._close(pair, abort=True)
            selector.unregister(listener)
            listener.close()
            self._listener = None
            while self._commands:  # nobody waits forever on a stopped proxy
                self._commands.popleft()[1].set()

    def _run_commands(self) -> None:
        while self._commands:
            fn, done = self._commands.popleft()
            try:
                fn()
            finally:
                done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # nothing left to accept, or the client gave up already
                return
            if self._refusing:
                abort_socket(client)
                continue
            try:
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                abort_socket(client)
                continue
            pair = _Pair(client)
            self._pairs.add(pair)
            if not self._black_holed:
                self._connect(pair)
            if not pair.closed:
                self._update(pair)

    def _connect(self, pair: _Pair) -> None:
        try:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError:  # out of file descriptors: the client sees a reset
            self._close(pair, abort=True)
            return
        pair.server = server
        try:
            server.setblocking(False)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = server.connect_ex(self._target)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err not in (0, errno.EINPROGRESS):
            self._close(pair, abort=True)
            return
        pair.connecting = err != 0
        pair.connect_deadline = time.monotonic() + _CONNECT_TIMEOUT
        self._update(pair)

    def _expire_connects(self) -> None:
        now = time.monotonic()
        for pair in list(self._pairs):
            if pair.connecting and now > pair.connect_deadline:
                self._close(pair, abort=True)

    def _on_event(self, pair: _Pair, is_client: bool, mask: int) -> None:
        if not is_client and pair.connecting:
            assert pair.server is not None
            if pair.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._close(pair, abort=True)  # target down: the client sees a reset
                return
            pair.connecting = False
        else:
            if mask & selectors.EVENT_READ:
                self._read(pair, is_client)
            if not pair.closed and mask & selectors.EVENT_WRITE:
                self._flush(pair, to_client=is_client)
        if not pair.closed:
            self._update(pair)

    def _read(self, pair: _Pair, is_client: bool) -> None:
        if is_client:
            data = pair.client.recv(_CHUNK)
            if data:
                self._inspect(pair, data)
                pair.to_server += data
            else:
                pair.client_eof = True
            self._flush(pair, to_client=False)
            return
        assert pair.server is not None
        data = pair.server.recv(_CHUNK)
        if data and pair.drop_armed:
            self.dropped_replies += 1
            self._close(pair, abort=True)
            return
        if data:
            pair.to_client += data
        else:
            pair.server_eof = True
        self._flush(pair, to_client=True)

    def _inspect(self, pair: _Pair, data: bytes) -> None:
        """Arm the drop of this connection's next reply if ``data`` completes the pattern."""
        if not pair.drop_armed and self._drop_remaining > 0:
            keep = len(self._drop_pattern) - 1
            window = pair.tail[max(0, len(pair.tail) - keep) :] if keep > 0 else b""
            if self._drop_pattern in window + data:
                pair.drop_armed = True
                self._drop_remaining -= 1
        pair.tail = (pair.tail + data[-_WINDOW:])[-_WINDOW:]

    def _flush(self, pair: _Pair, *, to_client: bool) -> None:
        if self._black_holed or pair.server is None or pair.connecting:
            return
        if to_client:
            sock, buf, eof = pair.client, pair.to_client, pair.server_eof
        else:
            sock, buf, eof = pair.server, pair.to_server, pair.client_eof
        while buf:
            try:
                sent = sock.send(buf)
            except BlockingIOError:
                return
            del buf[:sent]
        # Pass a half-close on once everything before it has been delivered.
        if eof and not (pair.client_shut if to_client else pair.server_shut):
            sock.shutdown(socket.SHUT_WR)
            if to_client:
                pair.client_shut = True
            else:
                pair.server_shut = True
        if pair.client_shut and pair.server_shut:
            self._close(pair, abort=False)

    def _update(self, pair: _Pair) -> None:
        """Register the events each socket of ``pair`` waits for in its current state."""
        client_mask = server_mask = 0
        if pair.connecting:
            server_mask = selectors.EVENT_WRITE
        elif pair.server is not None and not self._black_holed:
            if not pair.client_eof and len(pair.to_server) < _HIGH_WATER:
                client_mask |= selectors.EVENT_READ
            # Writable also when a half-close waits to be passed on.
            if pair.to_client or (pair.server_eof and not pair.client_shut):
                client_mask |= selectors.EVENT_WRITE
            if not pair.server_eof and len(pair.to_client) < _HIGH_WATER:
                server_mask |= selectors.EVENT_READ
            if pair.to_server or (pair.client_eof and not pair.server_shut):
                server_mask |= selectors.EVENT_WRITE
        self._set_mask(pair.client, client_mask, (pair, True))
        if pair.server is not None:
            self._set_mask(pair.server, server_mask, (pair, False))

    def _set_mask(self, sock: socket.socket, mask: int, data: object) -> None:
        assert self._selector is not None
        current = self._masks.get(sock, 0)
        if mask == current:
            return
        if not current:
            self._selector.register(sock, mask, data)
        elif not mask:
            self._selector.unregister(sock)
        else:
            self._selector.modify(sock, mask, data)
        if mask:
            self._masks[sock] = mask
        else:
            del self._masks[sock]

    def _close(self, pair: _Pair, *, abort: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        self._pairs.discard(pair)
        for sock in (pair.client, pair.server):
            if sock is None:
                continue
            self._set_mask(sock, 0, None)
            if abort:
                abort_socket(sock)
            else:
                sock.close()
