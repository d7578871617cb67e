"""Writing files so that nothing is ever half-written, nothing foreign is deleted, and two processes never
share an output folder.

- Atomic writes: a temporary sibling, fsync, rename. A reader sees the old file or the new one.
- Write failures (a full disk, a read-only folder) become one UserError line; the temporary file is removed
  and the previous file is left as it was.
- Ownership: a folder gpt2lab writes records the names of the files it wrote (its manifest). `--overwrite`
  and retention remove only those; any other file in the folder is the user's and stays.
- Locks: an exclusive flock on OUT/.gpt2lab.lock (or a sibling for a folder that does not exist yet). The
  kernel drops it when the holder dies, so a lock left by a killed process is simply free again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path

from .errors import UserError

LOCK_FILE = ".gpt2lab.lock"


def absolute(path: str | os.PathLike) -> Path:
    """An absolute path with `.` and `..` resolved, so `--out .` has a name and a parent."""
    return Path(os.path.abspath(os.fspath(path)))


def utf8_path(path: str | os.PathLike) -> bool:
    """Whether the path's name is valid UTF-8: libraries that take paths as Rust or C++ strings (safetensors,
    TensorBoard's writer) cannot open one that is not, while Python's own file functions can."""
    try:
        os.fspath(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def input_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """`path` when it is a file to read (a regular file, or a link to one); otherwise one line saying what it is
    instead (missing, a folder, a device such as /dev/urandom that never ends, a pipe) and `fix`."""
    p = Path(path)
    if p.is_file():
        return p
    why = ("does not exist" if not p.exists() else "is a folder" if p.is_dir()
           else "is not a regular file (a device, a pipe or a socket)")
    raise UserError(f"{what} {p} {why}; {fix}")


def input_folder(path: str | os.PathLike, what: str, fix: str) -> Path:
    """`path` when it is a folder; otherwise one line saying what it is instead (missing, a file, a device) and `fix`."""
    p = Path(path)
    if p.is_dir():
        return p
    why = "does not exist" if not p.exists() else "is a file, not a folder" if p.is_file() else "is not a folder"
    raise UserError(f"{what} {p} {why}; {fix}")


def describe_os_error(exc: BaseException) -> str:
    """`No space left on device`, `Permission denied`, ... for any write failure, OSError or not."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)
    for known in ("No space left on device", "Permission denied", "Read-only file system", "Disk quota exceeded"):
        if known.lower() in text.lower():
            return known
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def write_error(what: str, path: Path, exc: BaseException, fix: str = "free disk space or choose another --out") -> UserError:
    return UserError(f"could not write {what} {path} ({describe_os_error(exc)}); {fix}")


# what network and cluster filesystems (NFS, Lustre, CIFS, some FUSE) answer to a directory fsync or a flock they
# do not support
UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.ENOLCK, errno.EBADF)


def fsync_dir(path: Path) -> None:
    """Make a rename in this folder durable, where the filesystem can (not all network filesystems can)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, what: str = "file") -> None:
    """Write data so that a reader sees the old file or the new one; a failure is one line, nothing left over.
    The temporary file is the process's own, so two processes writing one file (ranks, the lab's cores) never
    write into each other's: the last rename wins, whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(what, path, exc) from None


def write_text_atomic(path: Path, text: str, what: str = "file") -> None:
    """UTF-8; a path name that is not UTF-8 (a byte the OS gave as a surrogate) is written back as that byte."""
    write_bytes_atomic(path, text.encode("utf-8", errors="surrogateescape"), what)


def write_json_atomic(path: Path, obj, what: str = "file") -> None:
    """JSON (non-finite floats as null-free strings are the caller's business) written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n", what)


# --- ownership -----------------------------------------------------------------------------------------------

def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a file gpt2lab wrote is recognised by it, never by its name)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def foreign_entries(folder: Path, ours: set[str]) -> list[str]:
    """Names in folder that gpt2lab did not write (not in `ours`, not a lock or temporary file of ours)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in ours and p.name != LOCK_FILE and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def remove_owned(folder: Path, names) -> None:
    """Delete the files and folders named in `names` (our manifest), and nothing else."""
    for name in names:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def refuse_symlink(path: Path, what: str) -> None:
    """gpt2lab's own working folders and lock files are never symbolic links: one planted under such a name could
    point at the user's data, which emptying or truncating it would destroy."""
    if path.is_symlink():
        raise UserError(f"{path} ({what}) is a symbolic link, which gpt2lab never makes; it writes nothing through "
                        "it: remove the link (its target is untouched) and run the command again")


def clear_folder(folder: Path) -> None:
    """Empty a command's own working folder, keeping its lock; never through a symbolic link."""
    refuse_symlink(folder, "a working folder")
    remove_owned(folder, [p.name for p in folder.iterdir() if p.name != LOCK_FILE])


def publish_folder(work: Path, out: Path) -> None:
    """Give a finished working folder its final name (OUT must be absent or empty); its lock file stays behind."""
    (work / LOCK_FILE).unlink(missing_ok=True)
    if out.is_dir():
        out.rmdir()
    os.replace(work, out)


def copy_mode_from_umask(path: Path) -> None:
    """Files written through a temporary file (safetensors, tempfile) can end up 0600; give them the mode a plain
    open() would, as the user's umask says."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~umask)


# --- locks -----------------------------------------------------------------------------------------------------

class FolderLock:
    """An exclusive, non-blocking lock on an output folder for as long as a command writes into it.

    The lock is OUT/.gpt2lab.lock; acquiring it creates OUT if needed, so two processes racing on a new --out
    lock the same file and the second is refused with one line naming the holder. release(cleanup=True)
    removes a folder this lock created if nothing else was written into it (a command that failed early); a
    private folder (a command's working folder) is removed whenever it holds nothing but the lock.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder", private: bool = False,
                 remedy: str = "wait for it to finish or choose another --out"):
        self.folder, self.what, self.remedy = absolute(folder), what, remedy
        self._fd: int | None = None
        self._created = self._private = private
        self.note: str | None = None  # said when the filesystem cannot lock

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def _open(self) -> int:
        if self._private:  # a working folder of gpt2lab's own: never a link (the user's --out may be one)
            refuse_symlink(self.folder, self.what)
        refuse_symlink(self.path, "the lock file")
        try:
            self._created = self._created or not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted in the moment between the check and the open is refused too
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                refuse_symlink(self.path, "the lock file")
            raise write_error(self.what, self.folder, exc, "check that the path is a writable folder") from None

    def acquire(self) -> "FolderLock":
        for _ in range(10):  # the holder may remove the folder as it finishes: then lock the new one
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise UserError(f"{self.folder} is in use by {holder}; {self.remedy}") from None
                if exc.errno in UNSUPPORTED:  # a filesystem without locks (NFS without lockd, some Lustre mounts)
                    self.note = (f"{self.folder} is on a filesystem that cannot lock ({exc.strerror}): make sure no "
                                 "other gpt2lab process writes there")
                    self._fd = None
                    return self
                raise
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise UserError(f"could not lock {self.folder}: it keeps disappearing; is another process removing it?")
        content = os.pread(fd, 256, 0)
        if content and not re.fullmatch(rb"gpt2lab process \d+\n?", content):  # a user's file of that name
            os.close(fd)
            raise UserError(f"{self.path} holds something gpt2lab did not write (a lock of gpt2lab's holds only its "
                            "process number); move it away and run the command again")
        with contextlib.suppress(OSError):  # who holds it, for the message; a full disk must not stop the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"gpt2lab process {os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self, cleanup: bool = False) -> None:
        """Drop the lock; with cleanup, also remove the folder if this lock created it and it is otherwise empty."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        if cleanup and self._created and self.folder.is_dir() and not [p for p in self.folder.iterdir() if p.name != LOCK_FILE]:
            with contextlib.suppress(OSError):
                self.path.unlink()
                self.folder.rmdir()
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, exc_type, *_) -> None:
        self.release(cleanup=exc_type is not None)
