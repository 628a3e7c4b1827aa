"""Follow a registry reference and hot-swap the served version when it moves.

A thread resolves the reference (``digits@production``, ``digits`` for the
newest version) every ``interval`` seconds. When it names another version,
the thread loads and warms that version (:func:`~loopml.serve.backends.load_backend`)
while the old one keeps serving, then hands it to ``install`` on the
server's loop. Requests already queued finish on the version they were
validated against; the next batch runs on the new one, so no request fails
during a swap. A reference to a fixed version (``digits/3``) is loaded once.
A failed load is logged and retried at the next poll; the old version stays.
Example::

    follower = Follower(registry, "digits@production", load=lambda v: load_backend(registry, v),
                        install=server.install, interval=5.0)
    follower.start()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..store.registry import parse_ref

if TYPE_CHECKING:
    from ..store.protocols import Registry
    from ..store.registry import ModelVersion
    from .backends import Backend

__all__ = ["Follower"]

log = logging.getLogger("loopml.serve")


class Follower:
    """See the module docstring. ``on_version(version)`` receives every resolved version (for ``/v1/models``)."""

    def __init__(
        self,
        registry: "Registry",
        ref: str,
        *,
        load: Callable[["ModelVersion"], "Backend"],
        install: Callable[["Backend"], None],
        interval: float = 5.0,
        on_version: Callable[["ModelVersion"], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        _, which = parse_ref(ref)
        self.registry = registry
        self.ref = ref
        self.follows = not isinstance(which, int)
        self.load = load
        self.install = install
        self.interval = interval
        self.on_version = on_version
        self.on_error = on_error
        self.current: int | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopml-serve-follow", daemon=True)

    def start(self) -> None:
        """Resolve, load and install in the background now, then every ``interval`` seconds."""
        self._thread.start()

    def poll_now(self) -> None:
        """Check the reference now instead of at the next interval."""
        self._poke.set()

    def stop(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop following: the thread ends after the check in progress, if any.

        ``wait=False`` only tells it to (for the server's event loop, which must not block
        on a version being loaded); ``wait=True`` also joins the thread, up to ``timeout`` s.
        """
        self._stop.set()
        self._poke.set()
        if wait:
            self._thread.join(timeout=timeout)

    def check(self) -> bool:
        """Resolve once; load, warm and install a new version. True when one was installed."""
        version = self.registry.resolve(self.ref)
        if self.on_version is not None:
            self.on_version(version)
        if version.version == self.current:
            return False
        backend = self.load(version)
        self.current = version.version
        self.install(backend)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
                self.last_error = None
            except Exception as exc:  # registry down, a broken file: keep serving the old version
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("loopml serve: could not load %s: %s", self.ref, self.last_error)
                if self.on_error is not None:
                    self.on_error(exc)
            if self.current is not None and not self.follows:
                return
            self._poke.wait(self.interval)
            self._poke.clear()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def state(self) -> dict[str, Any]:
        return {"ref": self.ref, "follows": self.follows, "interval_s": self.interval, "last_error": self.last_error}
