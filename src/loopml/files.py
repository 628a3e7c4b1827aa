"""Writing a file whole or not at all: the one policy every file loopml writes follows.

The content goes to a temporary file in the target's own folder (a rename across
file systems would not be atomic), which is flushed and ``fsync``-ed, given its
mode, and renamed onto the target with :func:`os.replace`; on POSIX the folder is
``fsync``-ed too, so that the rename itself survives a power cut. A reader sees
the old file or the new one, never half of one. If writing fails, the temporary
file is removed and the old file is left as it was.

The mode is stated, not inherited: :data:`FILE_MODE` (``0o644``, the owner
writes, everyone may read: checkpoints, models and artifacts are data) unless
the caller passes another (``mode=0o600`` for a secret). A temporary file is
created ``0o600`` and gets its mode only when it is complete.

- :func:`atomic_write` for bytes already in memory;
- :func:`atomic_path` for a writer that wants a file name (``torch.save``,
  ``onnx.save``, ``np.savez``) or streams chunks (a download).

>>> from pathlib import Path
>>> atomic_write("out/config.json", b'{"lr": 0.01}')
PosixPath('out/config.json')
>>> with atomic_path("out/weights.npz") as tmp:      # a temporary name beside out/weights.npz
...     np.savez(tmp, w=np.zeros(3))
>>> sorted(p.name for p in Path("out").iterdir())    # no temporary file is left behind
['config.json', 'weights.npz']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from .errors import ArgumentError, ArgumentTypeError

__all__ = ["FILE_MODE", "atomic_path", "atomic_write"]

FILE_MODE = 0o644
"""The mode of every file loopml writes unless the caller states another: the owner writes, everyone reads."""


def _check_mode(mode: object) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ArgumentError(f"Argument mode should be a file mode between 0o000 and 0o777, e.g. mode=0o644; got {mode!r}")
    return mode


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; Windows cannot open a folder and needs no such step)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (e.g. certain network mounts) refuse to fsync a folder: the rename stands
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it becomes ``path``, whole.

    The temporary file exists (empty) when the block starts and keeps ``path``'s
    suffix (some writers check it, e.g. ``torch.export.save`` wants ``.pt2``).
    On success it is fsynced, given ``mode``, and renamed onto ``path`` (an
    existing file is replaced); on an exception it is removed and ``path`` is
    left as it was. The folder is created if missing.

    >>> with atomic_path("model.pt") as tmp:
    ...     torch.save({"w": torch.zeros(2)}, tmp)
    >>> sorted(torch.load("model.pt"))
    ['w']
    """
    mode = _check_mode(mode)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # the writer may have closed and reopened the name, or replaced the file: fsync what is there now
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` whole or not at all (see :func:`atomic_path`); return the path.

    >>> atomic_write("note.txt", b"hello")
    PosixPath('note.txt')
    >>> Path("note.txt").read_bytes()
    b'hello'
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArgumentTypeError(f"Argument data should be bytes, e.g. text.encode('utf-8'); got {type(data).__name__}")
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)
