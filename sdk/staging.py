"""Atomic writes: a file or a bundle directory appears complete or not at all.

Everything is written under a hidden name beside its destination, on the same file system,
and renamed into place only once complete. A failed run removes what it wrote; a killed run
(power cut, SIGKILL, OOM killer) leaves a staging folder named after its pid, which the next
run removes, and if it died while replacing a bundle, the next run puts the old one back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["check_output_folder", "recover_interrupted", "staged_directory", "staged_file"]

logger = logging.getLogger(__name__)


def _existing_ancestor(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.is_dir():
            return candidate
    return Path.cwd()


def check_output_folder(final_dir: str | Path, what: str = "--out") -> None:
    """Refuse, before any work, a bundle folder that cannot be published where it is asked for.

    Raises:
        OptionsError: The folder is a file, lies inside another bundle, or its nearest existing folder
            cannot be written; the message names the path and says nothing was written.
    """
    from .errors import OptionsError

    final_dir = Path(final_dir)
    untouched = "nothing was written and any bundle there is untouched"
    if final_dir.exists() and not final_dir.is_dir():
        raise OptionsError(f"{what}: {final_dir} is a file, not a folder; pick a folder for the bundle ({untouched})")
    for parent in final_dir.absolute().parents:
        if (parent / "manifest.json").is_file():
            raise OptionsError(f"{what}: {final_dir} is inside the bundle {parent}; pick a folder outside it ({untouched})")
    for candidate in [final_dir, *final_dir.parents]:
        if candidate.exists():
            if not candidate.is_dir():
                raise OptionsError(f"{what}: {candidate} is a file, so {final_dir} cannot be created ({untouched})")
            if not os.access(candidate, os.W_OK | os.X_OK):
                raise OptionsError(f"{what}: cannot write in {candidate} (permission denied); pick another folder ({untouched})")
            return


#: Staging directory -> the bundle directory it becomes, while a conversion fills it.
_BECOMES: dict[Path, Path] = {}


def published_path(path: str | Path) -> Path:
    """Where ``path`` will be once published: the final bundle folder for a staging folder still being
    filled (so that messages never name a folder that vanishes), else ``path`` itself."""
    path = Path(path)
    return _BECOMES.get(path.absolute(), path)


def _staging_prefix(final_dir: Path) -> str:
    """Name start of the staging folders for ``final_dir``; the writing process's pid follows it."""
    return f".tillsight-staging-{final_dir.name}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover_interrupted(final_dir: str | Path) -> None:
    """Clean up after a conversion that was killed (power cut, SIGKILL, OOM killer).

    Removes staging directories of processes that no longer run, and, if a run died between
    moving the old bundle aside and moving the new one in, puts the old bundle back.
    """
    final_dir = Path(final_dir).absolute()
    stage_root = _existing_ancestor(final_dir.parent)
    prefix = _staging_prefix(final_dir)
    for stale in stage_root.glob(f"{prefix}*-*"):
        pid = stale.name[len(prefix) :].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            logger.info("removing %s, left by an interrupted conversion", stale)
            shutil.rmtree(stale, ignore_errors=True)
    if not final_dir.parent.is_dir():
        return
    backups = sorted(final_dir.parent.glob(f".{final_dir.name}.replaced-*"), key=lambda p: p.stat().st_mtime)
    if backups and not final_dir.exists():
        logger.warning("restoring %s: a conversion was interrupted while replacing it", final_dir)
        os.rename(backups.pop(), final_dir)
    for backup in backups:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def staged_file(final_path: str | Path) -> Iterator[Path]:
    """Write one file under a hidden temporary name beside ``final_path``; move it into place on success.

    On an exception the temporary file is removed and ``final_path`` is left as it was.

    Yields:
        The temporary path to write (it has ``final_path``'s suffix, for writers that check it).
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{final_path.stem}.", suffix=final_path.suffix, dir=final_path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        _make_readable(Path(temporary), directory=False)
        os.replace(temporary, final_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _make_readable(path: Path, directory: bool) -> None:
    """The mode an ordinary ``open``/``mkdir`` would give (0644/0755 under the usual umask), not mkstemp's
    and mkdtemp's owner-only 0600/0700: a kiosk's service user must read what a deploy user wrote."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


@contextlib.contextmanager
def staged_directory(final_dir: str | Path) -> Iterator[Path]:
    """Build a directory in a hidden staging place; rename it to ``final_dir`` on success.

    The staging directory lives beside the output on the same file system (in the nearest
    existing ancestor, so that a failed run creates no output directory at all). On an
    exception it is removed and ``final_dir`` is left as it was. An existing ``final_dir``
    is replaced only after the new one is complete. Leftovers of a killed earlier run are
    cleaned up first (see :func:`recover_interrupted`).

    Yields:
        The staging directory to fill.
    """
    final_dir = Path(final_dir).absolute()
    recover_interrupted(final_dir)
    stage_root = _existing_ancestor(final_dir.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(final_dir)}{os.getpid()}-", dir=stage_root))
    _BECOMES[staging.absolute()] = final_dir
    try:
        yield staging
        _make_readable(staging, directory=True)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        if final_dir.exists():
            backup = final_dir.with_name(f".{final_dir.name}.replaced-{uuid.uuid4().hex[:8]}")
            os.rename(final_dir, backup)
            try:
                os.rename(staging, final_dir)
            except OSError:
                os.rename(backup, final_dir)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(staging, final_dir)
        logger.info("wrote bundle %s", final_dir)
    finally:
        _BECOMES.pop(staging.absolute(), None)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
