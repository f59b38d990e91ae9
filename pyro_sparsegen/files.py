"""Files: every writer of the package goes through :func:`atomic_file` (a temporary in the same
folder, fsynced, renamed over the target): an interrupted or failed write never damages what was
there. The package's HDF5 files (checkpoints, codes) carry a SHA-256 of the whole file in their
HDF5 user block (:func:`seal`), checked before libhdf5 reads a byte (:func:`read_sealed`).
Imports only :mod:`pyro_sparsegen.errors`.
"""

import contextlib
import hashlib
import io
import os
import re
import secrets
import socket
import warnings

from .errors import SparsegenError, first_line

_TEMPORARY = re.compile(r"\.tmp-(\d+)-([0-9a-f]{8})-[0-9a-f]+")


def host_tag():
    """A short tag of this host (temporaries name their writer by pid and host)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove the temporaries of :func:`atomic_file` in ``folder`` whose writer (a process on
    this host, named in the file name) is gone; a live writer's are left alone."""
    host, me = host_tag(), os.getpid()
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            match = _TEMPORARY.match(name)
            if match and match[2] == host and int(match[1]) != me and not _alive(int(match[1])):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))


def _new_temporary(folder, suffix):
    """Create an empty ``.tmp-<pid>-<host>-<random><suffix>`` in ``folder``, mode
    ``0o666 & ~umask`` like any file the user creates (``mkstemp`` would make it 0600)."""
    prefix = f".tmp-{os.getpid()}-{host_tag()}-"
    while True:
        tmp = os.path.join(folder, prefix + secrets.token_hex(6) + suffix)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_file(path, suffix=None):
    """Yield a temporary path in ``path``'s folder to write (text or binary, any way); when the
    block ends without error the file is fsynced and renamed over ``path`` (and the folder
    fsynced), else removed. Every writer of the package goes through here.

    The temporary is named ``.tmp-<pid>-<host>-<random><suffix>`` (``suffix``: default
    ``path``'s extension); temporaries of writers on this host that died mid-write are removed
    first, a live (concurrent) writer's never.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(folder)
    tmp = _new_temporary(folder, os.path.splitext(path)[1] if suffix is None else suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as e:  # a full disk, a quota, an I/O error: name the file and the errno
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise naming(e, path) from e
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)")


def naming(error, path):
    """``error`` (an ``OSError``) as one that names ``path`` and its errno:
    ``[Errno 28] No space left on device: 'run/checkpoint.h5'``. libhdf5's errors (h5py's
    ``OSError`` without an errno) carry it in their text; the C library's message is kept
    when none is found."""
    import errno as errnos

    code = error.errno
    if code is None:
        found = _ERRNO_IN_TEXT.search(str(error))
        code = int(found[1]) if found else None
    if code is None:
        return OSError(errnos.EIO, f"cannot write ({first_line(error)})", path)
    return OSError(code, os.strerror(code), path)  # OSError picks the subclass of the errno


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def output_folder(path, error=OSError):
    """Create the folder ``path`` (and its parents) if it is missing and check that it can be
    written to; a problem raises ``error`` with one line naming the folder. Returns ``path``."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise error(f"{path}: cannot create the output folder ({e.strerror})") from None
    if not os.access(path, os.W_OK):
        raise error(f"{path}: output folder is not writable")
    return path


# -- checksums in the HDF5 user block --
# An HDF5 file may begin with a "user block" (512 bytes here) that libhdf5 skips: it looks for
# its signature at offsets 0, 512, 1024, ... The package writes its files with one
# (h5py's ``userblock_size``) and puts a header there: a magic line, the size of the rest of
# the file and its SHA-256, then zeros. A file is read whole into memory, checked, and only
# then handed to libhdf5 (from memory: the bytes checked are the bytes parsed), because damaged
# HDF5 metadata can crash or hang the C library.
USERBLOCK = 512  #: bytes of the HDF5 user block that holds the checksum
SEAL_MAGIC = b"pyro_sparsegen sha256 v1\n"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SEAL = re.compile(rb"size=(\d{1,20})\nsha256=([0-9a-f]{64})\n")


class DamagedFileError(SparsegenError, ValueError):
    """A file of the package whose checksum header is missing or does not match its bytes
    (truncated, a byte changed): one line naming the file and what is wrong."""


def _sha256(handle, start):
    handle.seek(start)
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _seal_header(data):
    """The user block (:data:`USERBLOCK` bytes) that seals the HDF5 image ``data`` (its own
    user block, zeros, included)."""
    body = memoryview(data)[USERBLOCK:]
    header = SEAL_MAGIC + b"size=%d\nsha256=%s\n" % (len(body),
                                                    hashlib.sha256(body).hexdigest().encode())
    return header.ljust(USERBLOCK, b"\0")


def write_sealed_h5(path, fill, before_replace=None):
    """Write an HDF5 file to ``path`` atomically and sealed (:func:`seal`): ``fill(f)`` fills
    an ``h5py.File`` built in memory; its bytes then go to the temporary of
    :func:`atomic_file` by plain writes — so that a full disk is one ``OSError`` naming
    ``path`` and its errno, not an error inside libhdf5 (whose half-closed objects complain
    again when they are freed). ``before_replace(tmp)``: run before the rename (tests)."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=USERBLOCK) as f:
        fill(f)
    data = buffer.getbuffer()
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as out:
            out.write(_seal_header(data))
            out.write(data[USERBLOCK:])
            out.flush()
        if before_replace is not None:
            before_replace(tmp)
    return path


def seal(path, replace=False):
    """Write the checksum header into the (empty, :data:`USERBLOCK`-byte) user block of the
    HDF5 file ``path``: the SHA-256 and size of everything after it. Call it on the
    temporary of :func:`atomic_file`, after the HDF5 file is closed; ``replace``: over an
    existing header (a file edited in place on purpose — the checksum guards against damage,
    not against a forger, who can always write a matching one)."""
    with open(path, "r+b") as handle:
        head = handle.read(USERBLOCK)
        if len(head) != USERBLOCK or (any(head) and not (replace and head.startswith(
                SEAL_MAGIC))):
            raise ValueError(f"{path}: no empty {USERBLOCK}-byte user block to seal")
        digest, size = _sha256(handle, USERBLOCK)
        header = SEAL_MAGIC + b"size=%d\nsha256=%s\n" % (size, digest.encode())
        handle.seek(0)
        handle.write(header.ljust(USERBLOCK, b"\0"))
        handle.flush()


def read_sealed(path, what="file"):
    """The bytes of the package's HDF5 file ``path`` and whether they were verified:
    ``(data, True)`` for a sealed file whose checksum matches; ``(data, False)`` for a file
    written before checksums (an HDF5 file from offset 0: it cannot be checked). Anything
    else raises :class:`DamagedFileError` in one line (``what``: ``"checkpoint"``, ...)."""
    name = os.path.basename(os.fspath(path))
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(HDF5_SIGNATURE):
        return data, False
    if not data.startswith(SEAL_MAGIC):
        if len(data) < USERBLOCK:
            raise DamagedFileError(f"{name}: not a pyro_sparsegen {what} ({len(data)} bytes, "
                                   "no checksum header)")
        raise DamagedFileError(f"{name}: not a pyro_sparsegen {what}, or its checksum header "
                               "is damaged")
    header = data[len(SEAL_MAGIC):USERBLOCK]
    match = _SEAL.match(header)
    if match is None or any(header[match.end():]) or len(data) < USERBLOCK:
        raise DamagedFileError(f"{name}: damaged {what} (its checksum header is damaged)")
    size, digest = int(match[1]), match[2].decode()
    if len(data) - USERBLOCK != size:
        raise DamagedFileError(f"{name}: damaged {what} (truncated or extended: "
                               f"{len(data)} bytes, the header says {size + USERBLOCK})")
    if hashlib.sha256(memoryview(data)[USERBLOCK:]).hexdigest() != digest:
        raise DamagedFileError(f"{name}: damaged {what} (its SHA-256 does not match: "
                               "a byte changed since it was written)")
    return data, True


class UnverifiedWarning(UserWarning):
    """A file written before the package's files carried a checksum: loaded, but a damaged byte
    in it could not be noticed."""


def warn_unverified(path, stacklevel=3):
    """The one :class:`UnverifiedWarning` of a file written before checksums."""
    warnings.warn(f"{os.path.basename(os.fspath(path))}: written before the package's files "
                  "carried a checksum: loaded unverified (save it again to add one)",
                  UnverifiedWarning, stacklevel=stacklevel)


def open_verified(path, what, warn=True):
    """``h5py.File`` of the package's HDF5 file ``path`` (read-only, from memory) after its
    checksum is checked (:func:`read_sealed`); a file without one (written before checksums)
    gives one :class:`UnverifiedWarning` (with ``warn``; else the caller says so, once it has
    seen the file is one of its own). Returns ``(file, verified)``; a damaged file raises
    :class:`DamagedFileError`."""
    data, verified = read_sealed(path, what)
    if not verified and warn:
        warn_unverified(path, stacklevel=3)
    import h5py

    return h5py.File(io.BytesIO(data), "r"), verified


# -- one writer per run folder --
LOCK = ".lock"  # in the run folder: the writer's pid, host and start, while it holds it


class FolderLockedError(SparsegenError):
    """Another live process is writing the run folder (one line naming it)."""


def _holder(fd):
    """``(pid, host, since)`` recorded in the lock file ``fd``, or ``None``."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").split()
    if len(text) >= 2 and text[0].isdigit():
        return int(text[0]), text[1], " ".join(text[2:])
    return None


class FolderLock:
    """The lock of a run folder: one process writes it at a time (under torch.distributed,
    rank 0 for the whole job). An ``fcntl.flock`` on ``FOLDER/.lock`` — the kernel drops it
    when its process dies, however it dies — and the file names its holder (pid, host, start)
    for the message of a process refused. A lock left by a dead process is taken over, with
    one line on stderr saying so. Re-entrant within one process; :meth:`release` once per
    :meth:`acquire`."""

    _held = {}  # real path of the folder -> FolderLock (this process's)

    def __init__(self, folder, fd):
        self.folder, self.fd, self.count = folder, fd, 1

    @classmethod
    def acquire(cls, folder, refuse=FolderLockedError):
        """Hold ``folder``'s lock (the folder must exist); raises ``refuse`` in one line when
        another live process holds it."""
        import fcntl
        import sys
        import time

        key = os.path.realpath(folder)
        if key in cls._held:
            cls._held[key].count += 1
            return cls._held[key]
        fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                who = (f"process {holder[0]} on {holder[1]}, since {holder[2]}" if holder
                       else "another process")
                raise refuse(f"{folder}: {who} is writing this run folder; wait for it to "
                             "finish or choose another --out") from None
            except OSError:  # no flock here (some network file systems): the pid decides
                holder = _holder(fd)
                if holder and holder[1] == socket.gethostname() and holder[0] != os.getpid() \
                        and _alive(holder[0]):
                    raise refuse(f"{folder}: process {holder[0]} on {holder[1]}, since "
                                 f"{holder[2]}, is writing this run folder; wait for it to "
                                 "finish or choose another --out") from None
            previous = _holder(fd)
            if previous is not None and previous[0] != os.getpid():
                sys.stderr.write(f"pyro-sparsegen: {folder}: took over the lock left by "
                                 f"process {previous[0]} on {previous[1]} (since "
                                 f"{previous[2]}), which is no longer running\n")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} "
                          f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        lock = cls._held[key] = cls(folder, fd)
        return lock

    @classmethod
    def holds(cls, folder):
        """Whether this process holds ``folder``'s lock."""
        return os.path.realpath(folder) in cls._held

    def release(self):
        """Undo one :meth:`acquire`; the last one empties the lock file and unlocks it."""
        self.count -= 1
        if self.count > 0:
            return
        key = os.path.realpath(self.folder)
        if self._held.get(key) is self:
            del self._held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # a clean release: nothing to take over
        os.close(self.fd)  # closing the descriptor drops the flock
