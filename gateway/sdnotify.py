"""systemd's notification protocol (sd_notify), without a dependency.

Only the datagrams we need: READY=1, WATCHDOG=1, STATUS=..., STOPPING=1. Outside systemd
(no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same in a terminal.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self._address = address or None
        usec = os.environ.get("WATCHDOG_USEC")
        #: systemd's watchdog period in seconds, or None when the watchdog is off.
        self.watchdog_s = int(usec) / 1e6 if usec and usec.isdigit() else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> None:
        if self._address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(self._address)
            sock.sendall("\n".join(lines).encode())
