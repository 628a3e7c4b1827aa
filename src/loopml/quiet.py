"""Keep third-party noise out of the user's terminal, without hiding errors.

Libraries under loopml talk on their own: torchao logs a warning for each CUDA
kernel library it cannot load on a CPU machine, ExecuTorch's XNNPACK delegate
prints CPU-probe lines from C++ straight to file descriptor 2, ONNX Runtime
logs graph warnings natively. None of it is the user's business, and none of
it is an error. Two tools, each used around the one call that makes the noise:

- :func:`quiet_loggers`: Python loggers of third parties raised to ERROR for the
  duration of a call (their warnings are noise; their errors still show).
- :func:`native_output`: file descriptor 2 redirected, for the duration of a
  call into native code that writes to it unconditionally, into
  ``$LOOPML_HOME/logs/native.log`` (appended, each block headed by what ran).
  When the call raises, what it wrote is copied back to stderr before the
  exception propagates, so a real failure keeps its native diagnostics.

ONNX Runtime is quieted by its own switch (severity 3: errors only), see
:func:`import_onnxruntime`; loopml's own sessions also set ``log_severity_level=3``.

>>> import os
>>> from loopml import config
>>> with native_output("a native call"):
...     _ = os.write(2, b"cpuinfo: probing the CPU\\n")     # as C++ code writes to fd 2
>>> (config.settings().home / "logs" / "native.log").read_text().splitlines()[-1]   # not in the terminal
'cpuinfo: probing the CPU'
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .config import settings
from .errors import ConfigError

__all__ = ["NATIVE_LOG", "import_onnxruntime", "native_output", "ort_errors_only", "quiet_loggers"]

NATIVE_LOG = "logs/native.log"
"""Where :func:`native_output` keeps what native code wrote, under ``LOOPML_HOME``."""

ORT_ERROR = 3  # ONNX Runtime's severity levels: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_ORT_QUIET = False

log = logging.getLogger("loopml.native")
# one redirect at a time: file descriptor 2 belongs to the whole process, so nested or concurrent blocks must
# restore it in the reverse order they took it
_FD_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_loggers(names: Sequence[str], level: int = logging.ERROR) -> Iterator[None]:
    """Raise the loggers ``names`` to ``level`` inside the block (their warnings are noise there).

    >>> import logging
    >>> with quiet_loggers(["torchao"]):
    ...     logging.getLogger("torchao").warning("Failed to load _C_mxfp8.so")    # not shown
    ...     level = logging.getLogger("torchao").level
    >>> logging.getLevelName(level), logging.getLogger("torchao").level       # and back after the block
    ('ERROR', 0)
    """
    loggers = [logging.getLogger(name) for name in names]
    before = [lg.level for lg in loggers]
    root = logging.getLogger()
    # a module-level logging.warning() (ONNX Runtime's quantizers use them) calls basicConfig() when the root logger
    # has no handler, which would leave a stderr handler behind for every library's warnings from then on
    guard = logging.NullHandler() if root in loggers and not root.handlers else None
    try:
        if guard is not None:
            root.addHandler(guard)
        for lg in loggers:
            lg.setLevel(max(level, lg.level))
        yield
    finally:
        for lg, old in zip(loggers, before):
            lg.setLevel(old)
        if guard is not None:
            root.removeHandler(guard)


def _log_path() -> Path | None:
    try:
        return settings().home / NATIVE_LOG
    except ConfigError:  # a bad tracking URI is reported where it is used, not by a log file
        return None


def _keep(what: str, text: str) -> None:
    log.debug("%s wrote: %s", what, text.strip())
    path = _log_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {what} (pid {os.getpid()})\n{text}")
            if not text.endswith("\n"):
                f.write("\n")
    except OSError:  # a read-only home: the lines were noise, losing them costs nothing (they are at DEBUG)
        pass


@contextlib.contextmanager
def native_output(what: str) -> Iterator[None]:
    """Send what native code writes to file descriptor 2 inside the block to ``$LOOPML_HOME/logs/native.log``.

    ``what`` heads the block in the log. If the block raises, the captured text is
    written to stderr first, so no diagnostic of a real failure is lost. Python's
    ``sys.stderr`` is flushed around the redirect; threads that write to stderr
    meanwhile land in the log too (blocks are short: one native call).
    """
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded interpreters): nothing to redirect
        yield
        return
    with _FD_LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stderr, sys.__stderr__):
            if stream is not None:
                with contextlib.suppress(Exception):  # a closed or replaced stream has nothing to flush
                    stream.flush()
        saved = os.dup(fd)
        failed = False
        try:
            os.dup2(sink.fileno(), fd)
            yield
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(Exception):
                sys.__stderr__.flush()  # type: ignore[union-attr]
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            if text:
                if failed:
                    os.write(fd, text.encode("utf-8", "replace"))
                _keep(what, text)


def import_onnxruntime() -> Any:
    """``import onnxruntime`` as loopml uses it: quiet, errors only.

    The import runs under :func:`native_output` (on CPUs its probe does not know,
    ONNX Runtime's static initialisers print to fd 2), and ONNX Runtime's default
    logger is set to errors only (severity 3) once: the thread-pool lines a session
    logs when it is created (``pthread_setaffinity_np failed`` where the CPU set is
    restricted, as in containers) go through the default logger, not the session's
    ``log_severity_level``. It is process-wide: call
    ``onnxruntime.set_default_logger_severity(2)`` afterwards to see warnings again.
    Raises ``ModuleNotFoundError`` when ONNX Runtime is not installed.

    >>> ort = import_onnxruntime()
    >>> ort.__name__
    'onnxruntime'
    """
    global _ORT_QUIET
    ort: Any = sys.modules.get("onnxruntime")
    if ort is None:
        with native_output("import onnxruntime"):
            ort = importlib.import_module("onnxruntime")
    if not _ORT_QUIET:
        ort.set_default_logger_severity(ORT_ERROR)
        _ORT_QUIET = True
    return ort


@contextlib.contextmanager
def ort_errors_only() -> Iterator[None]:
    """ONNX Runtime at errors only inside the block, its quantizers' root-logger warnings included
    (``onnxruntime.quantization`` calls ``logging.warning`` on the root logger).

    >>> import logging
    >>> with ort_errors_only():
    ...     root = logging.getLogger().level       # onnxruntime.quantization.quantize_static(...) runs here
    >>> logging.getLevelName(root)
    'ERROR'
    """
    import_onnxruntime()
    with quiet_loggers(["", "onnxruntime", "onnx"]):
        yield
