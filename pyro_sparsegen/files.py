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

from .errors import SparsegenError

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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
USERBLOCK = 512
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
