"""The registry over HTTP: a :class:`~loopml.store.protocols.Registry`, like
:class:`~loopml.store.registry.RegistryStore`, whose calls go to a loopml server.

Used by :mod:`loopml.models.registry` when ``LOOPML_TRACKING_URI`` is an
``http://`` URL. Files are downloaded once into a cache folder
(``$LOOPML_HOME/cache/models/<name>/<version>/``) and their sha256 checked
against the server's record before anything loads them; export and
quantization run on the server, next to the files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import config
from ..errors import IntegrityError, NotFound
from ..files import atomic_path
from ..store.artifacts import sha256_file
from ..store.registry import (
    AliasEvent,
    ModelInfo,
    ModelVersion,
    check_format,
    check_model_name,
    parse_ref,
)

if TYPE_CHECKING:
    from ..tracking.remote import RemoteStore

__all__ = ["RemoteRegistry"]


def _q(segment: str) -> str:
    return quote(segment, safe="")


class RemoteRegistry:
    """A loopml server's registry: the :class:`~loopml.store.protocols.Registry` methods over HTTP.

    Besides, :meth:`export` and :meth:`quantize` ask the server to do that work next
    to its files. What writes files on the store's disk (``RegistryStore.create_version``,
    ``add_file``) has no HTTP counterpart: :func:`loopml.store.registry.local_registry`
    refuses this registry with an error that says where to run instead.
    """

    def __init__(self, remote: "RemoteStore") -> None:
        self.remote = remote
        self.cache = config.settings().home / "cache" / "models"

    def __repr__(self) -> str:
        return f"RemoteRegistry({self.remote.uri!r})"

    def _model(self, name: str) -> str:
        return f"/models/{_q(check_model_name(name))}"

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(**m) for m in self.remote.request_json("GET", "/models")["models"]]

    def get_model(self, name: str) -> ModelInfo:
        return ModelInfo(**self.remote.request_json("GET", self._model(name))["model"])

    def list_versions(self, name: str) -> list[ModelVersion]:
        return [ModelVersion.from_dict(v) for v in self.remote.request_json("GET", self._model(name))["versions"]]

    def get_version(self, name: str, version: int) -> ModelVersion:
        return ModelVersion.from_dict(self.remote.request_json("GET", f"{self._model(name)}/versions/{int(version)}"))

    def resolve(self, ref: str) -> ModelVersion:
        name, which = parse_ref(ref)
        tail = "latest" if which is None else str(which)
        return ModelVersion.from_dict(self.remote.request_json("GET", f"{self._model(name)}/versions/{_q(tail)}"))

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        params = {"alias": alias} if alias else None
        doc = self.remote.request_json("GET", f"{self._model(name)}/alias-history", params=params)
        return [AliasEvent(**e) for e in doc["events"]]

    def file_path(self, name: str, version: int, fmt: str, *, verify: bool = True) -> Path:
        """Download one format's file into the cache (once) and check its sha256 against the server's record."""
        check_format(fmt)
        mv = self.get_version(name, version)
        info = mv.files.get(fmt)
        if info is None:
            raise NotFound(f"Version {mv.ref} has no {fmt!r} file (it has: {', '.join(sorted(mv.files)) or 'none'})")
        folder = self.cache / name / str(mv.version)
        target = folder / f"{info.sha256[:16]}-{info.path.rsplit('/', 1)[-1]}"
        if target.is_file() and (not verify or sha256_file(target) == info.sha256):
            return target
        folder.mkdir(parents=True, exist_ok=True)
        response = self.remote.request("GET", f"{self._model(name)}/versions/{mv.version}/files/{_q(fmt)}", stream=True)
        digest = hashlib.sha256()
        try:
            with atomic_path(target) as tmp, open(tmp, "wb") as f:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    f.write(chunk)
                if digest.hexdigest() != info.sha256:
                    raise IntegrityError(
                        f"The {fmt} file of {mv.ref} downloaded from {self.remote.uri} does not match its recorded "
                        "sha256; not loading it"
                    )
        finally:
            response.close()
        return target

    def create_version_from_run(
        self, name: str, source: str, *, created_by: str | None = None, tags: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        body = {"source": source, "created_by": created_by, "tags": dict(tags) if tags else None, "description": description}
        return ModelVersion.from_dict(self.remote.request_json("POST", f"{self._model(name)}/versions", body))

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None) -> AliasEvent:
        doc = self.remote.request_json("PUT", f"{self._model(name)}/aliases/{_q(alias)}", {"version": int(version), "by": by})
        return AliasEvent(**doc)

    def delete_alias(self, name: str, alias: str, *, by: str | None = None) -> AliasEvent:
        params = {"by": by} if by else None
        return AliasEvent(**self.remote.request_json("DELETE", f"{self._model(name)}/aliases/{_q(alias)}", params=params))

    def delete_version(self, name: str, version: int) -> None:
        self.remote.request_json("DELETE", f"{self._model(name)}/versions/{int(version)}")

    def set_measurements(self, name: str, version: int, measurements: Mapping[str, Any]) -> ModelVersion:
        doc = self.remote.request_json("PATCH", f"{self._model(name)}/versions/{int(version)}", {"measurements": dict(measurements)})
        return ModelVersion.from_dict(doc)

    def set_description(self, name: str, version: int, description: str | None) -> ModelVersion:
        doc = self.remote.request_json("PATCH", f"{self._model(name)}/versions/{int(version)}", {"description": description})
        return ModelVersion.from_dict(doc)

    def export(self, ref: str, formats: list[str]) -> ModelVersion:
        mv = self.resolve(ref)
        doc = self.remote.request_json("POST", f"{self._model(mv.name)}/versions/{mv.version}/export", {"formats": formats})
        return ModelVersion.from_dict(doc)

    def quantize(self, ref: str, *, method: str, bits: int, data: str | None, seed: int, epochs: int | None) -> ModelVersion:
        mv = self.resolve(ref)
        body = {"method": method, "bits": bits, "data": data, "seed": seed, "epochs": epochs}
        return ModelVersion.from_dict(self.remote.request_json("POST", f"{self._model(mv.name)}/versions/{mv.version}/quantize", body))


