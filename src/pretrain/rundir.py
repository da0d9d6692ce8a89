"""Run directory: its lock, stage manifests and atomic stage outputs.

Layout of ``runs/<name>/``::

    config.toml          the resolved run config (what ``pretrain config show`` prints)
    <stage>/             one folder per completed stage, with manifest.json inside
    .tmp-<stage>-<pid>/  a stage in progress; renamed to <stage>/ only on success

A stage is *complete* when ``<stage>/manifest.json`` exists with ``status == "complete"``
and every output file it lists is there with its size. The manifest records the stage's
``key`` (``pipeline.py`` computes it and decides what to skip), the sha256 of every output
and an ``output_fingerprint`` over them (less the run's logs, ``StageRun.logs``), which the
keys of later stages include.

Atomicity: a stage only ever writes into its temporary folder. The manifest is written
last, then the folder is renamed over the old one (``os.replace`` cannot replace a
non-empty directory, so the old one is first renamed aside and removed after). An
interrupted stage leaves at most a ``.tmp-*`` folder, which is never taken as complete
and is swept on the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import PretrainError

MANIFEST = "manifest.json"
FORCED = ".forced-"   # + a stage's name: the key of its forced rerun not completed
CHECKSUMS = "checksums.json"   # a checkpoint's {file: {bytes, sha256}}, written last
DELETING = ".deleting"         # a checkpoint being removed (renamed first, then deleted)
_VERSIONED = ("torch", "numpy", "tiktoken", "rustbpe", "safetensors", "pretrain")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None when not in git."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "")


def changed_upstream(manifest: dict[str, Any] | None,
                     current: Callable[[str], dict[str, Any] | None]) -> list[str]:
    """The stages a stage read whose outputs were rewritten since it ran: the output
    fingerprints its ``manifest`` recorded against ``current(stage)``'s manifest now."""
    return [u for u, fp in upstream(manifest).items()
            if fp != (current(u) or {}).get("output_fingerprint")]


def upstream(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The stages a stage read, each with the output fingerprint it read (its manifest's)."""
    return ((manifest or {}).get("inputs") or {}).get("upstream") or {}


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest if it completed and its output files are all still there."""
    m = _completed(stage_dir)
    return None if m is None or _changed(stage_dir, m) else m


def load_manifest(stage_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the manifest, None), (None, why it cannot be used: one line naming it), or (None,
    None) where there is none."""
    path = stage_dir / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except (OSError, ValueError) as e:   # not JSON, not UTF-8, unreadable
        return None, f"{path}: unreadable ({type(e).__name__}: {str(e)[:200]})"
    if not isinstance(m, dict):
        return None, f"{path}: a JSON {type(m).__name__}, not a stage's manifest"
    outputs = m.get("outputs", {})
    if not isinstance(outputs, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("bytes"), int)
            and isinstance(v.get("sha256"), str) for v in outputs.values()):
        return None, f"{path}: its outputs are not a record of files (bytes and sha256 each)"
    if m.get("status") == "complete" and not isinstance(m.get("key"), str):
        return None, f"{path}: complete, but without the key of what the stage ran"
    inputs = m.get("inputs", {})
    if not isinstance(inputs, dict) or not isinstance(inputs.get("upstream", {}), dict) \
            or not isinstance(m.get("counts", {}), dict):
        return None, f"{path}: its inputs or counts are not the records a stage writes"
    return m, None


def sound_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest, complete or not, where it has the shape a stage writes."""
    return load_manifest(stage_dir)[0]


def _completed(stage_dir: Path) -> dict[str, Any] | None:
    m = load_manifest(stage_dir)[0]
    return m if m is not None and m.get("status") == "complete" else None


def changed_outputs(stage_dir: Path) -> list[str]:
    """The outputs of a completed stage that are missing or not the size it wrote (a
    truncated or replaced file); none where the stage has not completed."""
    return _changed(stage_dir, _completed(stage_dir) or {})


def _changed(stage_dir: Path, m: dict[str, Any]) -> list[str]:
    out = []
    for rel, info in m.get("outputs", {}).items():
        try:
            if (stage_dir / rel).stat().st_size != info["bytes"]:
                out.append(rel)
        except OSError:
            out.append(rel)
    return out


def other_train_checkpoints(folder: Path) -> list[Path]:
    """The checkpoint folders of a run's other train configs: those beside ``folder``
    (``checkpoints/train-<key>``, this config's)."""
    return sorted(p for p in folder.parent.glob("train-*") if p.is_dir() and p != folder)


def train_checkpoints(folder: Path, state_file: str = "state.json") -> list[Path]:
    """The complete checkpoints in a train config's ``folder``, oldest first: ``step-N``
    folders with their state file, neither half-written (``.tmp``) nor being removed."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if p.is_dir() and (p / state_file).is_file()
                  and not p.name.endswith((".tmp", DELETING)))


def remove_work(work: Path, pattern: str, current: Path | None = None) -> list[str]:
    """Remove the per-attempt folders in ``work`` that match ``pattern`` (``data-*``: a
    stage's ``.work/data-<key>``), ``current`` among them, then ``work`` itself if nothing
    else is in it. Returns the others, each with its size, for the log (they may be large)."""
    said = []
    for folder in sorted(work.glob(pattern)):
        if folder != current:
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            said.append(f"{folder} ({size / 1e6:.1f} MB)")
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):   # not empty (or already gone)
        work.rmdir()
    return said


def drop(tmp: Path) -> None:
    """Remove a temporary file after a failed write, if it is there and can be: on a
    read-only file system unlink() says EROFS even of a file that does not exist, and that
    error would replace the one being handled."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def honour_umask(path: Path) -> None:
    """Give ``path`` the mode a plain ``open()`` would (0666 less the umask): writers that go
    through a private temporary file (safetensors) leave 0600 whatever the umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


# what a full disk, a file size limit or a read-only file system says to a write
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def write_remedy(exc: OSError) -> str:
    """What to do before the rerun, for a write that failed with ``exc`` (WRITE_ERRNOS)."""
    return {errno.EFBIG: "raise the file size limit (ulimit -f)",
            errno.EROFS: "make the file system writable"}.get(exc.errno or 0, "make room")


def write_failure(path: Path, exc: BaseException) -> str:
    """Why writing ``path`` failed, in one line a user can act on: the disk full, the file
    size limit, a read-only or forbidden place, else the underlying error's first line.

    Libraries wrap the OS error differently (DCP collects each rank's exception in
    ``failures``; torch's zip writer and safetensors raise their own types with the errno
    lost), so the chain is searched and the file system is asked directly."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        e = todo.pop(0)
        seen.append(e)
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
        todo += [c for c in getattr(e, "failures", {}).values() if isinstance(c, BaseException)]
    os_err = next((e for e in seen if isinstance(e, OSError) and e.errno), None)
    where = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free
    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    code = os_err.errno if os_err else None
    left = f"{free / 2**20:.0f} MiB" if free >= 2**20 else f"{free / 2**10:.0f} KiB"
    full = f"the disk is full ({left} free on the file system of {where})"
    limit = f"the file size limit (ulimit -f) of {fsize:,} bytes was reached"
    if code == errno.EROFS:
        why = f"{where} is on a read-only file system"
    elif code in (errno.EACCES, errno.EPERM):
        why = f"no permission to write in {where}"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        why = full
    elif code == errno.EFBIG:
        why = limit
    elif code is None and free < (64 << 20):   # the library lost the errno: ask the disk
        why = full
    elif code is None and fsize != resource.RLIM_INFINITY:
        why = limit
    else:
        first = str(seen[-1] if os_err is None else os_err).strip().splitlines()
        why = f"{type(os_err or seen[-1]).__name__}: {first[0] if first else ''}"
    return f"could not write {path}: {why}"


def verify_files(folder: Path, recorded: dict[str, dict[str, Any]]) -> list[str]:
    """Re-hash each file of ``recorded`` (path relative to ``folder`` -> its bytes and
    sha256); one line per file that is missing or differs."""
    problems = []
    for rel, want in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != want["bytes"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, {want['bytes']} recorded")
        elif file_sha256(path) != want["sha256"]:
            problems.append(f"{path}: sha256 differs from the one recorded")
    return problems


def read_checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """A checkpoint's recorded sums; OSError or ValueError when unreadable."""
    sums = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
    if not isinstance(sums, dict) or not all(
            isinstance(v, dict) and {"bytes", "sha256"} <= v.keys() for v in sums.values()):
        raise ValueError("not a {file: {bytes, sha256}} table")
    return sums


def _check_folder(folder: Path, extras: bool) -> tuple[int, list[str]]:
    """(files recorded, one line per problem) of a stage's output folder against its
    manifest, or of a checkpoint against its checksums; with ``extras``, files the record
    does not name are problems too. Nothing recorded: (0, [])."""
    if (folder / MANIFEST).is_file():
        record, label = MANIFEST, "the manifest"
        m, why = load_manifest(folder)
        if m is None:
            return 0, [why or f"{folder / MANIFEST}: unreadable"]
        recorded = m.get("outputs", {})
        problems = [] if m.get("status") == "complete" else \
            [f"{folder / MANIFEST}: status {m.get('status')!r}, not complete"]
    elif (folder / CHECKSUMS).is_file():
        record, label = CHECKSUMS, CHECKSUMS
        try:
            recorded = read_checksums(folder)
        except (OSError, ValueError) as e:
            return 0, [f"{folder / CHECKSUMS}: unreadable ({type(e).__name__})"]
        problems = []
    else:
        return 0, []
    problems += verify_files(folder, recorded)
    if extras:
        problems += [f"{p}: not in {label}" for p in sorted(folder.rglob("*"))
                     if p.is_file() and p != folder / record   # (one of that name deeper
                     and str(p.relative_to(folder)) not in recorded]   # down is a stray)
    return len(recorded), problems


def verify_folder(folder: Path) -> list[str]:
    """A stage's output folder against its manifest, or a checkpoint against its checksums:
    one line per file that differs ([] when it matches, or records nothing). A run
    directory's stage folder without its manifest is one line too (nothing vouches for its
    files: damaged, or left by hand); any other folder that records nothing is []."""
    if (folder.parent / "config.toml").is_file() and folder.name == "train" \
            and not (folder / MANIFEST).is_file():
        return [f"{folder / MANIFEST}: missing (nothing vouches for the files there); "
                f"`pretrain verify {folder.parent}` checks the run, `pretrain run` makes the "
                "stage again"]
    return _check_folder(folder, extras=False)[1]


def verify_run(root: Path, stage_names: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """Every output of every stage of the run directory ``root`` against its manifest, and
    every checkpoint against its checksums: (files checked, one line per problem). A
    folder of ``stage_names`` without a manifest is a problem too (nothing vouches for it)."""
    if not (root / "config.toml").is_file() and not any(root.glob(f"*/{MANIFEST}")):
        raise PretrainError(f"{root}: not a run directory (no config.toml, no stage manifest)")
    checked, problems = 0, []
    folders = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
    for name in stage_names:
        folder = root / name
        if folder.is_dir() and not (folder / MANIFEST).is_file():
            files = sum(1 for p in folder.rglob("*") if p.is_file())
            problems.append(f"{folder}: no {MANIFEST} ({files} files nothing vouches for, "
                            "an interrupted rerun's or damage; `pretrain run` runs the stage "
                            "again, resuming what it can)")
    # a stage's folder removed while the stages made from it are still there: nothing of
    # theirs is damaged, but what they came from is gone (a rerun of them fails)
    made_from: dict[str, list[str]] = {}
    for folder in folders:
        m = read_manifest(folder)
        for u, fp in ((m or {}).get("inputs", {}).get("upstream") or {}).items():
            if fp is not None and not (root / u / MANIFEST).is_file():
                made_from.setdefault(u, []).append(folder.name)
    for u, users in sorted(made_from.items()):
        problems.append(f"{root / u}: missing (or its {MANIFEST}), though {', '.join(users)} "
                        f"{'was' if len(users) == 1 else 'were'} made from it; rerun it: "
                        "`pretrain run` (it runs what has no manifest, then what changed)")
    for ckpt in sorted(root.glob("checkpoints/*/step-*")):
        if not ckpt.is_dir() or ckpt.name.endswith((".tmp", DELETING)):   # written, removed
            continue
        if not (ckpt / CHECKSUMS).is_file():
            problems.append(f"{ckpt / CHECKSUMS}: unreadable (FileNotFoundError)")
            continue
        folders.append(ckpt)
    for folder in folders:
        n, found = _check_folder(folder, extras=True)
        checked += n
        problems += found
    return checked, problems


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="microseconds")


def fsync(path: Path) -> None:
    """A file's data, or a folder's entries (a rename inside it), on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class StageRun:
    """What a stage function receives: where to write, and what it read."""

    name: str
    out: Path                                   # temporary output folder
    inputs: dict[str, Path]                     # upstream stage name -> its final folder
    key: str = ""                               # the stage key (config + inputs)
    key_parts: dict[str, Any] = field(default_factory=dict)  # what the key hashes
    root: Path = Path(".")                      # the run directory
    forced: bool = False                        # rerun on request: start over, do not resume
    counts: dict[str, Any] = field(default_factory=dict)
    # outputs that record how the stage ran (times, throughput), which no later stage reads:
    # fingerprinted as files (verify), left out of the output fingerprint later keys take
    logs: set[str] = field(default_factory=set)


class RunDir:
    def __init__(self, root: Path):
        self.root = root

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest(self, stage: str) -> dict[str, Any] | None:
        return read_manifest(self.stage_dir(stage))

    def checkpoints(self, key: str) -> Path:
        """The train stage's checkpoints of the config keyed ``key``."""
        return self.root / "checkpoints" / f"train-{key}"

    def data_work(self, key: str) -> Path:
        """The data stage's per-task results of the attempt keyed ``key``, kept across a
        kill until it completes."""
        return self.root / ".work" / f"data-{key[:16]}"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One pretrain process per run directory: a second one would sweep the first's work.
        A run directory this created and left holding nothing but the lock (a command that
        failed on its checks) is removed again."""
        created = [p for p in [self.root, *self.root.parents] if not p.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 -- closed by the with below
        except OSError as e:
            raise PretrainError(f"{write_failure(self.root, e)}: a run directory must be "
                                "writable (choose another place with --runs_dir=...)") from e
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise PretrainError(f"{self.root} is in use by {holder}; wait for it or use "
                                    "another run name (--name=...)") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                if created and [p.name for p in self.root.iterdir()] == [".lock"]:
                    (self.root / ".lock").unlink()
                    for p in created:   # the run directory, then runs/ if this made it
                        try:
                            p.rmdir()
                        except OSError:   # another run has put something there since
                            break
                fcntl.flock(f, fcntl.LOCK_UN)

    def sweep_tmp(self) -> None:
        """Clean up after an interrupted process; call with the lock held.

        A stage killed while running leaves ``.tmp-<stage>-<pid>`` without a manifest: removed.
        Killed between the two renames of a publish, it leaves the old output as ``.old-*``
        and the new, complete one as ``.tmp-*``: the new one is put in place.
        """
        if not self.root.exists():
            return
        # the new output (.tmp) is preferred over the old one (.old) when both are complete
        for leftover in [*self.root.glob(".tmp-*"), *self.root.glob(".old-*")]:
            stage = leftover.name.split("-")[1]
            if not self.stage_dir(stage).exists() and read_manifest(leftover) is not None:
                os.replace(leftover, self.stage_dir(stage))
            else:
                shutil.rmtree(leftover, ignore_errors=True)

    def write_config(self, toml_text: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "config.toml"
        tmp = path.with_suffix(".toml.tmp")
        try:
            tmp.write_text(toml_text, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:
            drop(tmp)
            if e.errno not in WRITE_ERRNOS:
                raise
            raise PretrainError(f"{write_failure(path, e)}; nothing ran: {write_remedy(e)} "
                                "and rerun the same command") from None
        return path

    def execute(self, stage: str, key: str, key_parts: dict[str, Any], inputs: dict[str, Path],
                fn: Any, forced: bool = False) -> dict[str, Any]:
        """Run ``fn(StageRun)`` into a temporary folder and publish it atomically. A
        ``forced`` rerun is marked started as it starts (:meth:`mark_forced`); the mark goes
        when the stage completes. Stopped (Ctrl-C, a signal, a kill, an error), the earlier
        output stays complete and in use, and a plain rerun resumes the forced attempt
        rather than finding the stage up to date (the attempt, a retrain's checkpoints, was
        lost)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if forced:
            self.mark_forced(stage, key, started=True)
        tmp = self.root / f".tmp-{stage}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        run = StageRun(name=stage, out=tmp, inputs=inputs, key=key, key_parts=key_parts,
                       root=self.root, forced=forced)
        try:
            manifest = self._run_and_record(stage, key, key_parts, run, fn)
        except BaseException as e:
            if not (isinstance(e, OSError) and e.errno in WRITE_ERRNOS):
                shutil.rmtree(tmp, ignore_errors=True)   # the manifest's write failing too
                raise
            # the stage's own writes (a worker's, the manifest's) name no file in their
            # error: which stage, where, and why the disk said no (its free space read
            # before the stage's partial output is removed)
            where = Path(e.filename) if isinstance(e.filename, str) else self.stage_dir(stage)
            why = write_failure(where, e)
            shutil.rmtree(tmp, ignore_errors=True)
            raise PretrainError(f"stage {stage}: {why}; the stages before it are intact: "
                                f"{write_remedy(e)} and rerun the same command") from None
        final = self.stage_dir(stage)
        if final.exists():
            old = self.root / f".old-{stage}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            try:
                shutil.rmtree(old)
            except OSError as e:   # said: it may hold as much as the new output
                print(f"{stage}: could not remove the replaced output {old} ({e}); remove "
                      "it by hand", file=sys.stderr)
        else:
            os.replace(tmp, final)
        drop(self.root / f"{FORCED}{stage}")   # a forced attempt, if any, is done
        fsync(self.root)
        return manifest

    def mark_forced(self, stage: str, key: str, started: bool) -> None:
        """Mark ``stage`` as forced under ``key`` until it completes: asked (a command's
        ``--force`` names it or a stage before it) or started (it runs forced)."""
        mark = self.root / f"{FORCED}{stage}"
        tmp = mark.with_name(mark.name + ".tmp")
        tmp.write_text(f"{key}\n{'started' if started else 'asked'}\n", encoding="utf-8")
        os.replace(tmp, mark)

    def forced_attempt(self, stage: str) -> tuple[str, bool] | None:
        """(key, started) of ``stage``'s forced rerun that did not complete (stopped, or
        not reached: its command stopped before it), if any; ``started``: it ran, and a
        rerun resumes it, else a rerun starts it over."""
        try:
            key, _, state = (self.root / f"{FORCED}{stage}").read_text(
                encoding="utf-8").partition("\n")
        except OSError:
            return None
        return (key.strip(), state.strip() == "started") if key.strip() else None

    def _run_and_record(self, stage: str, key: str, key_parts: dict[str, Any], run: StageRun,
                        fn: Any) -> dict[str, Any]:
        """``fn(run)``, then its outputs hashed and the manifest written into ``run.out``."""
        tmp, started, started_at = run.out, time.time(), _now()
        fn(run)
        outputs = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                outputs[str(p.relative_to(tmp))] = {"bytes": p.stat().st_size,
                                                    "sha256": file_sha256(p)}
                fsync(p)  # on disk before the rename makes the stage look complete
        # the logs left out: a retrained identical model had changed the eval's key by
        # its log's tokens/s, and eval and sample reran
        read_later = {k: v for k, v in outputs.items() if k not in run.logs}
        out_fp = hashlib.sha256(json.dumps(read_later, sort_keys=True).encode()).hexdigest()[:16]
        manifest = {
            "stage": stage,
            "status": "complete",
            "key": key,
            "inputs": key_parts,
            "outputs": outputs,
            "output_fingerprint": out_fp,
            "counts": run.counts,
            "wall_s": round(time.time() - started, 3),
            "started_at": started_at,
            "finished_at": _now(),
            "versions": library_versions(),
            "git_commit": git_commit(),
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        return manifest
