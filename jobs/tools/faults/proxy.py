"""A TCP proxy on loopback that cuts PostgreSQL connections at chosen points of a COPY
transaction: the fault suite's and the e2e tests' way to lose a connection for real.

Reusable by tests and by ``jobs.tools.faults``; it knows the PostgreSQL wire protocol only
as far as spotting a ``COPY "…"`` statement and a ``COMMIT`` (TLS must be off).
"""

from __future__ import annotations

import contextlib
import socket
import threading

import sqlalchemy as sa


class CuttingProxy:
    """Relays TCP to PostgreSQL; cuts up to ``cuts`` connections in a COPY transaction.

    ``at="copy"``: right after forwarding the ``COPY … FROM STDIN`` statement (the server
    aborts the transaction). ``at="commit"``: after the server has answered that
    transaction's COMMIT, before the client hears it — the commit happened, the client
    cannot know. Connections without a COPY pass untouched. TLS must be off (the proxy
    reads the statements).
    """

    def __init__(self, upstream: tuple[str, int], at: str, cuts: int) -> None:
        self.upstream = upstream
        self.at = at
        self.cuts_left = cuts
        self.cuts_made = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return (
            f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
            "?sslmode=disable&gssencmode=disable"
        )

    def close(self) -> None:
        """Stop listening and close every relayed connection (none is left to the GC)."""
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left == 0:
                return False
            self.cuts_left -= 1
            self.cuts_made += 1
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        with self._lock:
            self._sockets += [client, server]
        cut_on_reply = threading.Event()

        def cut() -> None:
            _close(client)
            _close(server)

        def replies() -> None:
            while True:
                try:
                    data = server.recv(65536)
                except OSError:
                    cut()
                    return
                if not data or cut_on_reply.is_set():
                    cut()
                    return
                try:
                    client.sendall(data)
                except OSError:
                    cut()
                    return

        threading.Thread(target=replies, daemon=True).start()
        in_copy = False
        tail = b""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                cut()
                return
            if not data:
                cut()
                return
            window = tail + data
            tail = window[-16:]
            # The statement itself, not a parameter quoting it (an error text in job_runs).
            if not in_copy and data[:1] in (b"Q", b"P") and b'COPY "' in data[:48]:
                in_copy = True
                if self.at == "copy" and self._take_cut():
                    server.sendall(data)
                    cut()
                    return
            elif in_copy and b"COMMIT" in window:
                in_copy = False
                if self.at == "commit" and self._take_cut():
                    cut_on_reply.set()
            try:
                server.sendall(data)
            except OSError:
                cut()
                return


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def for_url(url: str, at: str, cuts: int) -> CuttingProxy:
    """A proxy in front of the server of ``url``; ``proxy.url(database)`` to go through it."""
    parsed = sa.engine.make_url(url)
    return CuttingProxy((parsed.host or "127.0.0.1", parsed.port or 5432), at, cuts)


def proxied_url(proxy: CuttingProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's (user and database kept)."""
    parsed = sa.engine.make_url(url)
    routed = parsed.set(host="127.0.0.1", port=proxy.port).update_query_dict(
        {"sslmode": "disable", "gssencmode": "disable"}
    )
    return str(routed.render_as_string(hide_password=False))
