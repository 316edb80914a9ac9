"""Writing files so that a crash never leaves a half-written one behind.

Every writer goes through a temporary name in the target's own folder (so the final rename
stays on one filesystem and is atomic), fsyncs it, then renames it over the target: a reader
sees the old file or the new one, never a part. A failing write removes its temporary; only a
killed process (SIGKILL, power loss) can leave one, named `.<name>-<random><suffix>`, which
no mmae reader picks up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _fsync(path: Path) -> None:
    """Flush a file's (or, where the platform allows, a folder's) data to the disk."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


# Read once: setting the umask (even for an instant) races with threads creating files.
_UMASK = _read_umask()


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)` in the target's folder, then rename it over `path`.

    The temporary file (`.mmae-XXXX.tmp<suffix>`, made with the permissions the umask gives a
    new file) keeps the target's suffix (for writers that pick a format from it);
    a writer that would append its own suffix (`np.savez` to a name without `.npz`) must
    write to an open handle instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".mmae-", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide it from the group
    try:
        write(Path(temporary))
        _fsync(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda temporary: temporary.write_bytes(data))


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; when the block ends without an error, its
    files are fsynced and it replaces `path` (an existing folder there is renamed aside first
    and removed after). On an error the staging folder is removed and `path` is untouched.

    POSIX has no atomic swap of two non-empty folders: between the two renames `path` is
    briefly absent, but it never holds a mix of old and new files or a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mmae-", suffix=".tmp", dir=path.parent))
    os.chmod(staging, 0o777 & ~_UMASK)
    old: Path | None = None
    try:
        yield staging
        for folder, _, files in os.walk(staging):
            for name in files:
                _fsync(Path(folder) / name)
            _fsync(Path(folder))
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=".mmae-old-", suffix=".tmp", dir=path.parent))
            os.replace(path, old)  # `old` is empty, so a folder may replace it
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            if not path.exists():
                os.replace(old, path)  # put the previous folder back
            else:
                with contextlib.suppress(OSError):
                    old.rmdir()  # the rename aside failed: `old` is still empty
        raise
    _fsync(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
