"""Who holds a lease or a lock: owner ids and the one check that their process is gone.

The keeper names lease owners with :func:`new_owner`; the store's apply lock and the
keeper's revocation both ask whether a holder on this host still runs
(:func:`pid_alive`, :func:`holder_is_dead`).
"""

from __future__ import annotations

import os

__all__ = ["holder_is_dead", "new_owner", "pid_alive"]


def new_owner(role: str) -> str:
    """A lease owner id: host, pid and a random part (unique per worker and call)."""
    import socket  # here: reading a fresh token names no owner
    import uuid

    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a non-positive pid counts as alive)."""
    if pid <= 0:
        return True  # not a real pid: never treat as stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder_is_dead(owner: str | None) -> bool:
    """True when a lease owner (see :func:`new_owner`) ran on this host and its process is gone."""
    import socket

    parts = (owner or "").split(":")
    if len(parts) < 4 or parts[1] != socket.gethostname():
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    return pid != os.getpid() and not pid_alive(pid)
