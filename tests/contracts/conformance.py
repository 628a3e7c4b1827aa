"""Static proof that each implementation satisfies its Protocol: tests/test_typing.py runs mypy (strict) on this file.

Nothing here runs; an implementation whose method drifts from its Protocol (a
parameter renamed, a return type changed, a method missing) makes an
assignment below a type error.
"""

from __future__ import annotations

from loopml.models.remote import RemoteRegistry
from loopml.store.protocols import ArtifactStore, Registry, TrackingBackend
from loopml.store.registry import RegistryStore
from loopml.store.tracking import TrackingStore
from loopml.tracking.remote import RemoteStore


def tracking_backends(local: TrackingStore, remote: RemoteStore) -> list[TrackingBackend]:
    return [local, remote]


def artifact_stores(local: TrackingStore, remote: RemoteStore) -> list[ArtifactStore]:
    return [local, remote]


def registries(local: RegistryStore, remote: RemoteRegistry) -> list[Registry]:
    return [local, remote]
