"""Each implementation has every member of its Protocol, with the Protocol's parameters.

mypy checks the types statically (tests/contracts/conformance.py, run by
tests/test_typing.py); this checks at run time what a caller sees: the names,
kinds and defaults of each method's parameters, and ``isinstance`` against the
``runtime_checkable`` Protocols. An implementation may add optional parameters.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from loopml.models.remote import RemoteRegistry
from loopml.store.protocols import ArtifactStore, Registry, TrackingBackend
from loopml.store.registry import RegistryStore
from loopml.store.tracking import TrackingStore
from loopml.tracking.remote import RemoteStore

PAIRS = [
    (ArtifactStore, TrackingStore),
    (ArtifactStore, RemoteStore),
    (TrackingBackend, TrackingStore),
    (TrackingBackend, RemoteStore),
    (Registry, RegistryStore),
    (Registry, RemoteRegistry),
]


def _methods(protocol: type) -> dict[str, Any]:
    out = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object,) or klass.__name__ in ("Protocol", "Generic"):
            continue
        for name, value in vars(klass).items():
            if callable(value) and not name.startswith("_"):
                out[name] = value
    return out


@pytest.mark.parametrize(("protocol", "impl"), PAIRS, ids=lambda x: x.__name__)
def test_implementation_has_the_protocols_methods_and_parameters(protocol: type, impl: type) -> None:
    methods = _methods(protocol)
    assert {"list_artifacts", "resolve"} & set(methods), methods  # the walk found the Protocol's own methods
    for name, proto_fn in methods.items():
        impl_fn = getattr(impl, name, None)
        assert callable(impl_fn), f"{impl.__name__} lacks {protocol.__name__}.{name}"
        want = inspect.signature(proto_fn).parameters
        got = inspect.signature(impl_fn).parameters
        for pname, p in want.items():
            assert pname in got, f"{impl.__name__}.{name} lacks parameter {pname!r}"
            q = got[pname]
            assert q.kind == p.kind, f"{impl.__name__}.{name}({pname}): {q.kind} != {p.kind}"
            assert (q.default is inspect.Parameter.empty) == (p.default is inspect.Parameter.empty), (
                f"{impl.__name__}.{name}({pname}) should {'not ' if p.default is inspect.Parameter.empty else ''}have a default"
            )
        extra = [q for n, q in got.items() if n not in want]
        assert all(q.default is not inspect.Parameter.empty or q.kind in (q.VAR_KEYWORD, q.VAR_POSITIONAL) for q in extra), (
            f"{impl.__name__}.{name} adds required parameters {[q.name for q in extra]}"
        )
        assert list(want) == list(got)[: len(want)], f"{impl.__name__}.{name}: parameters out of order"


def test_instances_are_instances_of_their_protocols(tmp_path: Any) -> None:
    store = TrackingStore(f"sqlite:///{tmp_path / 'loopml.db'}", artifact_root=tmp_path / "artifacts")
    remote = RemoteStore("http://127.0.0.1:9")  # no request is sent
    try:
        assert isinstance(store, TrackingBackend) and isinstance(remote, TrackingBackend)
        assert isinstance(store, ArtifactStore) and isinstance(remote, ArtifactStore)
        assert isinstance(RegistryStore(store), Registry) and isinstance(RemoteRegistry(remote), Registry)
        assert not isinstance(RegistryStore(store), TrackingBackend)
    finally:
        remote.close()
        store.close()


def test_protocols_import_without_sqlalchemy_or_httpx() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import loopml.store.protocols as p; "
        "heavy = sorted(m for m in ('sqlalchemy', 'httpx', 'torch') if m in sys.modules); "
        "assert not heavy, heavy; print(p.TrackingBackend.__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "TrackingBackend", proc.stderr


def test_registry_of_names_what_it_takes() -> None:
    from loopml.models.registry import registry_of

    with pytest.raises(TypeError, match="Argument backend should be a TrackingStore or a RemoteStore, got str"):
        registry_of("sqlite:///x.db")  # type: ignore[arg-type]
