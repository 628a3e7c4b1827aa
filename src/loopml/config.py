"""Where things live. The only module that reads environment variables.

- ``LOOPML_HOME`` (default ``./.loopml``): holds ``loopml.db`` and ``artifacts/``.
- ``LOOPML_TRACKING_URI``: ``sqlite:///path/to/loopml.db``,
  ``postgresql+psycopg://user:pw@host/db`` or ``http://host:port`` (a loopml
  server). Default: ``sqlite:///$LOOPML_HOME/loopml.db``.
- ``LOOPML_ARTIFACT_ROOT``: where a database store keeps artifacts (default
  ``$LOOPML_HOME/artifacts``).
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
    artifact_root: Path
    tracking_token: str | None
    server_token: str | None
    heartbeat_interval: float
    heartbeat_timeout: float
    ui_plotly_js: Path | None = None  # LOOPML_UI_PLOTLY_JS: the plotly.js bundle the web UI serves

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
    artifact_root = Path(env.get("LOOPML_ARTIFACT_ROOT") or home / "artifacts").expanduser()
    return Settings(
        home=home,
        tracking_uri=check_tracking_uri(uri),
        artifact_root=artifact_root,
        tracking_token=env.get("LOOPML_TRACKING_TOKEN") or None,
        server_token=env.get("LOOPML_SERVER_TOKEN") or None,
        heartbeat_interval=_float_env(env, "LOOPML_HEARTBEAT_INTERVAL", 5.0),
        heartbeat_timeout=_float_env(env, "LOOPML_HEARTBEAT_TIMEOUT", 60.0),
        ui_plotly_js=Path(env["LOOPML_UI_PLOTLY_JS"]).expanduser() if env.get("LOOPML_UI_PLOTLY_JS") else None,
    )
