"""Files: every writer of the package goes through :func:`atomic_file` (a temporary in the same
folder, fsynced, renamed over the target): an interrupted or failed write never damages what was
there. Imports nothing of the package.
"""

import contextlib
import hashlib
import os
import re
import secrets
import socket

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
