"""Tables of versions for people: the CLI's ``loopml models show`` and the demo print them.

>>> from loopml.models import registry
>>> from rich.console import Console
>>> table = versions_table(registry.list_versions("digits"))
>>> table.row_count, [str(c.header) for c in table.columns]
(1, ['version', 'kind', 'formats', 'accuracy', 'size', 'batch-1 ms', 'batch-64 ms', 'aliases', 'run', 'created (UTC)'])
>>> Console(width=160, color_system=None).print(table)
                                                     versions...
│ 1       │ fp32 │ onnx, pt2, torch │ -        │ -    │ -          │ -           │ @production │ ...
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

__all__ = ["mb", "versions_table"]


def mb(size: Any) -> str:
    """A file size for people: kB below 100 kB, MB above."""
    return "-" if size is None else f"{size / 1e6:.3f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def utc(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def versions_table(versions: list[Any]) -> Any:
    """The versions table: quantized variants sit right under their fp32 parent."""
    from rich.table import Table

    table = Table(
        "version", "kind", "formats", "accuracy", "size", "batch-1 ms", "batch-64 ms", "aliases", "run", "created (UTC)",
        title="versions",
    )
    by_parent: dict[int, list[Any]] = {}
    roots = []
    for v in sorted(versions, key=lambda v: v.version):
        if v.parent_version is not None and any(p.version == v.parent_version for p in versions):
            by_parent.setdefault(v.parent_version, []).append(v)
        else:
            roots.append(v)
    for root in roots:
        for v in [root, *by_parent.get(root.version, [])]:
            m = v.measurements
            kind = (
                f"  └ {v.tags['quantization.method']} int{v.tags.get('quantization.bits', '?')}"
                if "quantization.method" in v.tags
                else "fp32"
            )
            lat = m.get("latency_ms") or {}
            formats = ", ".join(f for f in sorted(v.files) if f not in ("input_example", "drift_reference") and not f.startswith("ood_"))
            if "ood_gate" in v.files:
                formats += " + OOD gate"
            table.add_row(
                str(v.version), kind, formats, fmt(m.get("accuracy")), mb(m.get("size_bytes")),
                fmt(lat.get("1"), ".3f"), fmt(lat.get("64"), ".3f"),
                ", ".join(f"@{a}" for a in v.aliases) or "-", (v.run_id or "-")[:8], utc(v.created_at),
            )
    return table
