"""A TCP proxy a test can cut, as when a server's host drops off the network: the
connections through it die and new ones are refused until it is mended. Or it can
swallow, as a black-holed route does: connections stay open and nothing comes back."""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import List, Optional

from tests.provider_api import free_port


class CuttableProxy:
    """A TCP proxy to a local server's port. `cut()` drops every connection and
    refuses new ones until `mend()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.connections: List[socket.socket] = []
        self.listener: Optional[socket.socket] = None
        self.lock = threading.Lock()
        self.swallowing = threading.Event()

    def mend(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self.listener is not None
        # shutdown wakes the thread blocked in accept(); close alone would leave the
        # socket listening until that accept returned
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for connection in self.connections:
                # shutdown first: close alone, while a copying thread is in recv(), sends
                # nothing, and the gateway's query would wait forever on a live socket
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self.connections.clear()

    def swallow(self) -> None:
        """From now on, what either side sends goes nowhere; every socket stays open."""
        self.swallowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_copy, args=(source, sink, self.swallowing),
                                 daemon=True).start()


def _copy(source: socket.socket, sink: socket.socket, swallowing: threading.Event) -> None:
    try:
        while chunk := source.recv(65536):
            if not swallowing.is_set():
                sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
