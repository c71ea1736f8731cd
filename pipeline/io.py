"""Atomic file and folder writes, so an interrupted stage never leaves a half-written output."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Temporaries are named `.<output name>.<pid>-<random>.tmp[suffix]` (and `.old` for a folder moved
# aside), so a later run can tell its own leftovers from those of a process that is still writing.
# Names without the pid come from earlier versions; they count as stale when older than this process.
_PROCESS_START = time.time()
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceLeft(OSError):
    """A write failed because its filesystem is full; the message names the folder and the free space."""

    def __str__(self) -> str:
        return str(self.strerror)


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    # A sibling in the same folder: rename() is atomic only within one filesystem.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _stale_temporaries(path: Path) -> list[Path]:
    """The temporaries that writes of `path` left behind and no live process is still writing."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)-)?[a-z0-9_]{{8}}\.(?:tmp|old)(?:\.[^/]*)?$")
    try:
        siblings = list(path.parent.iterdir())
    except FileNotFoundError:
        return []
    stale = []
    for p in siblings:
        match = pattern.match(p.name)
        if match is None:
            continue
        pid = match.group(1)
        try:
            if (not _pid_alive(int(pid))) if pid is not None else p.lstat().st_mtime < _PROCESS_START:
                stale.append(p)
        except FileNotFoundError:  # its owner finished meanwhile
            continue
    return stale


def remove_stale_temporaries(path: str | Path) -> list[str]:
    """Remove what killed writes of the output `path` left beside it; return the names removed.

    Only names of this module's pattern for `path` count, and only those of processes that are gone
    (or, for names without a pid, older than this process), so two runs side by side never remove
    each other's temporaries. A kill between atomic_dir's two renames left the output under neither
    name: the previous folder, moved aside as `.old`, is put back first (the new one is not known to
    be complete)."""
    path = Path(path)
    stale = _stale_temporaries(path)
    for old in (p for p in stale if p.name.endswith(".old")):
        if not os.path.lexists(path) and (old / "x").is_dir():
            os.replace(old / "x", path)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return sorted(p.name for p in stale)


def clear_stale_outputs(root: str | Path, *outputs: str | Path) -> list[str]:
    """What killed earlier runs of a stage left beside each of its `outputs` (relative to `root`), removed
    before the stage starts: remove_stale_temporaries for each. Returns the names removed."""
    return [name for out in outputs for name in remove_stale_temporaries(Path(root) / out)]


def is_no_space(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from, says the filesystem is full."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
    return False


def _free_bytes(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    return "an unknown amount" if n is None else f"{n / 2**20:.1f} MiB"


def no_space_error(path: str | Path, need: int | None = None) -> NoSpaceLeft:
    """The NoSpaceLeft error for a write of `path` (that needed `need` bytes, when known)."""
    path = Path(path)
    free = _size(_free_bytes(path.parent))
    what = f"needs {_size(need)} and {free} are free" if need is not None else f"failed with {free} free"
    return NoSpaceLeft(
        errno.ENOSPC,
        f"no space left on {path.parent}: writing '{path}' {what}; free some space there (or point the output "
        "elsewhere) and run again; nothing half-written was kept.",
    )


# torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc:...]"; when it
# was given a path rather than a file object the OSError behind it is lost, and only the free space
# that is left tells a full disk from another write failure.
_TORCH_WRITE_FAILURE = re.compile(r"enforce fail at inline_container|PytorchStreamWriter failed|file write failed")
_NEARLY_FULL = 64 << 20


@contextmanager
def no_space_as_error(path: str | Path) -> Iterator[None]:
    """Translate a write of `path` that failed for want of space (OSError ENOSPC, or torch.save's
    zip-writer failure on a nearly full disk) into NoSpaceLeft naming the folder; other errors pass.
    For every writer of large files, e.g. checkpoints: `with no_space_as_error(p): torch.save(x, fh)`."""
    try:
        yield
    except NoSpaceLeft:
        raise
    except (OSError, RuntimeError) as err:
        full = is_no_space(err)
        if not full and isinstance(err, RuntimeError) and _TORCH_WRITE_FAILURE.search(str(err)):
            free = _free_bytes(Path(path).parent)
            full = free is not None and free < _NEARLY_FULL
        if full:
            raise no_space_error(path) from err
        raise


def check_free_space(path: str | Path, need: int) -> None:
    """Raise NoSpaceLeft before writing `need` bytes to `path` when its filesystem has less free."""
    free = _free_bytes(Path(path).parent)
    if free is not None and free < need:
        raise no_space_error(path, need)


def preallocate(fd: int, size: int, path: str | Path) -> None:
    """Reserve `size` bytes for the open file `fd`: a full disk then fails here with NoSpaceLeft instead
    of later (a memory map of a sparse file dies with SIGBUS when a page cannot be allocated)."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in _NO_SPACE_ERRNOS:
            raise no_space_error(path, size) from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    except AttributeError:  # no posix_fallocate on this platform: the free-space check has to do
        pass


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path`, on error it is removed. A full disk
    raises NoSpaceLeft; temporaries of earlier killed writes of `path` are removed first."""
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = _tmp_sibling(path, path.suffix)
    try:
        with no_space_as_error(path):
            yield tmp
            # mkstemp creates 0600 files; give the output the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces the folder `path` as a whole.

    Leftovers of killed earlier writes of `path` are cleared (and a folder stranded between the two
    renames below is put back) before the new temporary is made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        # mkdtemp creates 0700 folders; give the output what a plain mkdir would, so others on shared
        # storage can read it when the umask allows.
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            # Move the old folder aside first so the new one appears in a single rename.
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block SIGTERM raises SystemExit(143) like Ctrl+C raises KeyboardInterrupt, so the
    `finally` clauses of atomic writes remove their temporaries (the default SIGTERM skips them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, keys sorted so diffs between runs are readable."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def save_torch(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` atomically; equal payloads give equal bytes."""
    import torch  # here, not at the top: configuration code imports this module without needing torch

    # Through a file object: given a path, torch.save names the zip records after the (random)
    # temporary file, and equal tensors would give different files.
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: str | Path, what: str, remedy: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The state dict in `path`, unpickled with weights_only=True: tensors and containers only, so a
    crafted file cannot run code. Anything else raises `error` naming the file, `what` and `remedy`.
    A file that passes holds no other objects, so a library that unpickles it again runs nothing either."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable, truncated or holding objects other than tensors
        # Only the reason: torch's message goes on to suggest weights_only=False, the very thing refused here.
        unpickler = re.search(
            r"WeightsUnpickler error:\s*(.*?)\s*(?:Please use|Check the documentation|$)", str(err), re.S
        )
        reason = (
            f"not plain tensors: {' '.join(unpickler.group(1).split())}"
            if unpickler
            else (str(err).strip().splitlines() or [repr(err)])[0]
        )
        raise error(
            f"'{path}' is not a usable {what} ({reason}); refused without running anything it holds. {remedy}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise error(f"'{path}' is not a usable {what} (not a mapping of names to tensors). {remedy}")
    return state


def load_versioned_torch(
    path: str | Path, version: int, what: str, missing_hint: str, wrong_hint: str
) -> dict[str, Any]:
    """The dict that save_torch wrote with {"format": version}; tensors and plain values only
    (weights_only). A missing file raises FileNotFoundError and another format ValueError, each
    naming the file, `what` it should be and the hint that says how to make it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist; {missing_hint}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != version:
        raise ValueError(f"'{path}' is not a {what} of format {version}; {wrong_hint}")
    return payload
