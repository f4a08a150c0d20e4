"""Where commands write, and the rules that keep a user's files safe.

Every command that writes (prune, progressive, demo: folders; finetune, export, ``--json``:
files) goes through here:

- an output is never an input, the current folder, a folder that holds an input or the current
  folder, an existing file without ``--force``, or a folder holding files mdp-trt did not write;
- a folder is written beside its final place and swapped in whole (Linux ``renameat2`` with
  ``RENAME_EXCHANGE``; elsewhere two renames, and a kill between them leaves the old folder
  under a hidden name beside it, never nothing), the old one removed only afterwards;
- a lock file beside the output keeps a second run from writing the same output at once;
- a manifest (``.mdp-trt-manifest.json``) in each folder lists the files mdp-trt wrote there,
  so that ``--force`` can tell a finished run from a user's folder and ``--resume`` keeps the
  files the user added.

The rules are checked before any work starts (``check_output_file`` / ``check_output_folder``)
and again when the folder is taken (``output_folder``), so a refusal comes in a second, not
after minutes of measuring.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from mdp_trt.errors import InputError

__all__ = ["MANIFEST", "check_output_file", "check_output_folder", "output_folder",
           "write_text"]

log = logging.getLogger(__name__)

MANIFEST = ".mdp-trt-manifest.json"
_MANIFEST_FORMAT = "mdp-trt-manifest/1"
_SHOWN = 3  # foreign files named in a refusal


def _real(path: Path) -> Path:
    """The absolute path a write to ``path`` lands on (a symlinked output is written through)."""
    return Path(os.path.abspath(path)).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _creatable_parent(path: Path, flag: str) -> None:
    """``path``'s nearest existing ancestor must be a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write in {parent} (read-only or not yours); "
                         "choose a writable path")


def _check_not_inputs(target: Path, shown: Path, inputs: Iterable[Path], flag: str) -> None:
    cwd = _real(Path.cwd())
    if _inside(cwd, target):
        what = "the current folder" if target == cwd else "a folder holding the current folder"
        raise InputError(f"{flag} {shown} is {what}; mdp-trt never replaces it: name a new "
                         "folder, e.g. -o pruned")
    for given in inputs:
        if given is not None and _inside(_real(Path(given)), target):
            relation = "is" if _real(Path(given)) == target else "holds"
            raise InputError(f"{flag} {shown} {relation} the input {given}; mdp-trt never "
                             "writes over its input: choose another output")


def check_output_file(path: str | os.PathLike, *, flag: str, inputs: Iterable[Path] = (),
                      force: bool = False) -> Path:
    """Refuse a file output that would overwrite an input, a folder or (without ``force``) an
    existing file, or that cannot be created. Returns the path to write (through a symlink)."""
    shown = Path(path)
    target = _real(shown)
    if target.is_dir():
        raise InputError(f"{flag} {shown} is a folder; give a file path")
    for given in inputs:
        if given is not None and Path(given).exists() and target == _real(Path(given)):
            raise InputError(f"{flag} {shown} is the input {given}; mdp-trt never writes over "
                             "its input: choose another file")
    if target.exists() and not force:
        raise InputError(f"{flag} {shown} exists; pass `force` to replace it, or choose "
                         "another file", parameters=("force",))
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"{flag} {shown} is read-only; choose another file")
    _creatable_parent(target, flag)
    return target


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, renamed over it)."""
    target = _real(Path(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- folders ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Existing:
    """What an existing output folder holds: files listed by its manifest, and the others."""

    written: frozenset[str]
    foreign: tuple[str, ...]


def _entries(folder: Path) -> list[str]:
    """Every file, link and empty folder below ``folder``, as posix paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        found += [(base / name).relative_to(folder).as_posix() for name in files]
        found += [(base / name).relative_to(folder).as_posix() for name in dirs
                  if (base / name).is_symlink() or not any((base / name).iterdir())]
    return sorted(found)


def _read_manifest(folder: Path) -> frozenset[str] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
        return None
    return frozenset(str(name) for name in data.get("files", []))


def _existing(folder: Path) -> _Existing | None:
    if not folder.exists():
        return None
    entries = [e for e in _entries(folder) if e != MANIFEST]
    written = _read_manifest(folder)
    if written is None:
        return _Existing(frozenset(), tuple(entries))
    return _Existing(written, tuple(e for e in entries if e not in written))


def _foreign_text(foreign: tuple[str, ...]) -> str:
    more = f" and {len(foreign) - _SHOWN} more" if len(foreign) > _SHOWN else ""
    return ", ".join(foreign[:_SHOWN]) + more


def check_output_folder(path: str | os.PathLike, *, inputs: Iterable[Path] = (),
                        force: bool = False, keep_foreign: bool = False,
                        flag: str = "-o") -> Path:
    """Refuse an output folder that mdp-trt may not replace (see the module docstring); with
    ``keep_foreign`` (``--resume``) files the manifest does not list are kept, not refused.
    Returns the folder to write (through a symlink)."""
    shown = Path(path)
    target = _real(shown)
    if target.exists() and not target.is_dir():
        raise InputError(f"{flag} {shown} is a file; give a folder (it is created if missing)")
    _check_not_inputs(target, shown, inputs, flag)
    _creatable_parent(target, flag)
    existing = _existing(target)
    if existing is None or not (existing.written or existing.foreign):
        return target
    if not existing.written:
        raise InputError(f"{flag} {shown} holds files mdp-trt did not write "
                         f"({_foreign_text(existing.foreign)}); mdp-trt replaces only folders it "
                         "wrote itself: choose a new folder")
    if not force:
        raise InputError(f"{flag} {shown} holds an earlier mdp-trt run; pass `force` to replace "
                         "it, or choose another folder", parameters=("force",))
    if existing.foreign and not keep_foreign:
        raise InputError(f"{flag} {shown} also holds files mdp-trt did not write "
                         f"({_foreign_text(existing.foreign)}); `force` replaces only a folder "
                         "of mdp-trt's own files: move those away, or choose another folder",
                         parameters=("force",))
    return target


@contextmanager
def _lock(target: Path, shown: Path, flag: str) -> Iterator[None]:
    """An exclusive lock on ``.NAME.mdp-trt.lock`` beside the output, removed on release."""
    path = target.parent / f".{target.name}.mdp-trt.lock"
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise InputError(f"{flag} {shown}: another mdp-trt run is writing it now (lock "
                             f"{path}); wait for it to finish, or choose another folder") from None
        # The holder before us may have removed the file after we opened it: lock the live one.
        if path.exists() and os.stat(path).st_ino == os.fstat(handle).st_ino:
            break
        os.close(handle)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder``'s missing parents; returns them, outermost first."""
    missing = [p for p in reversed(folder.parents) if not p.exists()]
    folder.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _carry(old: Path, new: Path, names: tuple[str, ...]) -> None:
    """Give ``new`` the user's files of ``old`` as hard links (no copy, and the files stay in
    ``old`` until the swap), or copies where the file system has no hard links."""
    for name in names:
        source, dest = old / name, new / name
        if dest.exists() or dest.is_symlink():
            raise InputError(f"{old / name}: a file of yours has the name of one mdp-trt writes; "
                             "rename it, then run again")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and not source.is_symlink():
            dest.mkdir()
            continue
        try:
            os.link(source, dest, follow_symlinks=False)
        except OSError:
            shutil.copy2(source, dest, follow_symlinks=False)


def _write_manifest(folder: Path, carried: tuple[str, ...], command: str) -> None:
    written = [e for e in _entries(folder) if e not in set(carried) and e != MANIFEST]
    (folder / MANIFEST).write_text(json.dumps(
        {"format": _MANIFEST_FORMAT, "written_by": f"mdp-trt {command}", "files": written},
        indent=1))


def _libc_exchange():
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    return function


_RENAMEAT2 = _libc_exchange()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; the old ``target`` ends at ``staging``'s path or under a
    hidden name beside it, and is removed last."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _RENAMEAT2 is not None and _RENAMEAT2(_AT_FDCWD, os.fsencode(staging), _AT_FDCWD,
                                             os.fsencode(target), _RENAME_EXCHANGE) == 0:
        shutil.rmtree(staging)
        return
    code = ctypes.get_errno() if _RENAMEAT2 is not None else errno.ENOSYS
    if code not in (errno.ENOSYS, errno.EINVAL):
        raise OSError(code, os.strerror(code), str(target))
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.rename(target, old / target.name)
    os.rename(staging, target)
    shutil.rmtree(old)


@contextmanager
def output_folder(path: str | os.PathLike, *, command: str, inputs: Iterable[Path] = (),
                  force: bool = False, keep_foreign: bool = False,
                  flag: str = "-o") -> Iterator[Path]:
    """A staging folder that becomes ``path`` only if the body succeeds.

    Checks ``check_output_folder``'s rules, takes the output's lock, and yields an empty folder
    beside ``path``. On success a manifest of what the body wrote is added, the user's own files
    are carried over (``keep_foreign``) and the folder is swapped in. On any error, Ctrl-C or a
    signal turned into an exception (``cli.main``), the staging folder, the lock and any parent
    folders this created are removed: nothing outside the output changes.
    """
    inputs = list(inputs)
    shown = Path(path)
    check_output_folder(shown, inputs=inputs, force=force, keep_foreign=keep_foreign, flag=flag)
    target = _real(shown)
    created = _make_parents(target)
    try:
        with _lock(target, shown, flag):
            # A run that held the lock a moment ago may have finished into the folder.
            check_output_folder(shown, inputs=inputs, force=force, keep_foreign=keep_foreign,
                                flag=flag)
            existing = _existing(target)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
            try:
                os.chmod(staging, 0o777 & ~_umask())
                yield staging
                carried = existing.foreign if existing is not None else ()
                _carry(target, staging, carried)
                _write_manifest(staging, carried, command)
                _swap_in(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except BaseException:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
