"""Where things live. The only module that reads environment variables.

- ``LOOPML_HOME`` (default ``./.loopml``): holds ``loopml.db`` and ``artifacts/``.
- ``LOOPML_TRACKING_URI``: ``sqlite:///path/to/loopml.db``,
  ``postgresql+psycopg://user:pw@host/db`` or ``http://host:port`` (a loopml
  server). Default: ``sqlite:///$LOOPML_HOME/loopml.db``.
- ``LOOPML_ARTIFACT_ROOT``: where a database store keeps artifacts, model files
  and dataset rows: a folder (default ``$LOOPML_HOME/artifacts``) or
  ``s3://bucket/prefix`` (an S3-compatible object store, the ``s3`` extra; boto3
  reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
  ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3`` itself). Local copies of S3 objects are
  cached under ``$LOOPML_HOME/cache/s3``.
- ``LOOPML_S3_ENDPOINT_URL``: the URL of an S3-compatible store that is not AWS
  (MinIO, Ceph, ...), e.g. ``http://127.0.0.1:9000``; addressed path-style.
- ``LOOPML_TRACKING_TOKEN``: bearer token sent to a loopml server.
- ``LOOPML_SERVER_TOKEN``: token a loopml server requires (also
  ``--auth-token-file``).
- ``LOOPML_HEARTBEAT_TIMEOUT`` (seconds, default 60): a RUNNING run whose
  heartbeat is older reads as KILLED.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["Settings", "settings"]

DEFAULT_HOME = ".loopml"


@dataclass(frozen=True, kw_only=True)
class Settings:
    home: Path
    tracking_uri: str
    artifact_root: Path | str  # a folder, or an s3://bucket/prefix URI kept as text (a Path would fold its '//')
    tracking_token: str | None
    server_token: str | None
    heartbeat_interval: float
    heartbeat_timeout: float
    ui_plotly_js: Path | None = None  # LOOPML_UI_PLOTLY_JS: the plotly.js bundle the web UI serves
    s3_endpoint_url: str | None = None  # LOOPML_S3_ENDPOINT_URL: an S3-compatible store that is not AWS

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))


def _float_env(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} should be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} should be a positive number of seconds, got {raw!r}")
    return value


def check_tracking_uri(uri: str) -> str:
    """Return ``uri`` if loopml can use it, else raise ConfigError saying what works."""
    if uri.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://", "http://", "https://")):
        return uri
    raise ConfigError(
        f"Tracking URI {uri!r} is not supported. Use sqlite:///path/to/loopml.db, "
        "postgresql+psycopg://user:password@host/db or http://host:port (a loopml server)."
    )


def settings(env: dict[str, str] | None = None) -> Settings:
    """Read the configuration from ``env`` (default: ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("LOOPML_HOME") or DEFAULT_HOME).expanduser()
    uri = env.get("LOOPML_TRACKING_URI") or f"sqlite:///{(home / 'loopml.db').as_posix()}"
    raw_root = env.get("LOOPML_ARTIFACT_ROOT") or ""
    artifact_root: Path | str = raw_root if "://" in raw_root else Path(raw_root or home / "artifacts").expanduser()
    endpoint = env.get("LOOPML_S3_ENDPOINT_URL") or None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"LOOPML_S3_ENDPOINT_URL should be an http:// or https:// URL, e.g. http://127.0.0.1:9000; got {endpoint!r}")
    return Settings(
        home=home,
        tracking_uri=check_tracking_uri(uri),
        artifact_root=artifact_root,
        tracking_token=env.get("LOOPML_TRACKING_TOKEN") or None,
        server_token=env.get("LOOPML_SERVER_TOKEN") or None,
        heartbeat_interval=_float_env(env, "LOOPML_HEARTBEAT_INTERVAL", 5.0),
        heartbeat_timeout=_float_env(env, "LOOPML_HEARTBEAT_TIMEOUT", 60.0),
        ui_plotly_js=Path(env["LOOPML_UI_PLOTLY_JS"]).expanduser() if env.get("LOOPML_UI_PLOTLY_JS") else None,
        s3_endpoint_url=endpoint,
    )
