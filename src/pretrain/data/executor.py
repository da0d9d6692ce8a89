"""Where the data stage's tasks run: in this process, in a pool of worker processes on
this machine, or as Ray tasks on a cluster. The tasks themselves (``runner.run_task``) do
not know which: each writes its files under temporary names and renames them when done,
so a retried or resumed task gives the same output. Progress counts tasks and, from the
tasks' heartbeat files (``heartbeat.py``), the documents and bytes read so far, the same
way for all three.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..config import ConfigError, PretrainError
from ..log import Progress
from .config import DataConfig
from .heartbeat import Watch, beat_path
from .runner import Task, run_task

# Below this much input in files, worker processes cost more to start (~1 s each: spawn
# re-imports numpy, the language model) than they save.
_MIN_PARALLEL_BYTES = 8 << 20
_PACKED = 4   # text through gzip or zstd: 3-5x smaller (8 MB of .zst was one worker's 30 MB)
LINE_EVERY_S = 10.0   # a plain progress line (a log, not a terminal) at most this often


def execute(cfg: DataConfig, todo: list[Task], work: Path, ngrams_path: str) -> None:
    if cfg.executor == "ray" and todo:
        _ray(cfg, todo, work, ngrams_path)
        return
    workers = min(cfg.workers or os.cpu_count() or 1, len(todo))
    if _small(todo):
        workers = 1
    with _bar(todo) as bar, _watch(bar, todo, work):
        if workers <= 1:
            for t in todo:
                run_task(cfg, t, work, ngrams_path)
                bar.update(1)
            return
        # spawn, not fork: the parent may hold threads (torch, the progress bar)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=die_with_parent, initargs=(os.getpid(),)) as ex:
            try:
                with _sigint_blocked():   # the workers start now, and keep it blocked
                    futures = [ex.submit(run_task, cfg, t, work, ngrams_path) for t in todo]
                done = 0
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(1)
                    done += 1
            except BrokenProcessPool as e:   # killed from outside (the OOM killer, a user)
                raise PretrainError(
                    f"data: a worker process died (killed from outside, e.g. by the system "
                    f"when memory ran out) with {done} of {len(todo)} tasks done; rerun to "
                    f"resume the others (a lower data.workers needs less memory)") from e
            except KeyboardInterrupt:
                # Ctrl-C reached the workers' process group too: they never take it (each
                # had printed a traceback) and stop here, their unfinished tasks redone on
                # the rerun; the pool would otherwise wait for every queued task
                for p in multiprocessing.active_children():
                    p.kill()
                ex.shutdown(cancel_futures=True)
                raise


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it starts worker processes, which inherit the
    mask through exec and so never take a Ctrl-C: one while a worker imported or waited
    for a task printed its KeyboardInterrupt traceback. This process still gets it: from
    another thread, or when the mask is lifted (a blocked signal waits; an ignored one, as
    first tried, was lost when it came during the starts)."""
    if not hasattr(signal, "pthread_sigmask"):   # not POSIX: workers keep the default
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _small(todo: list[Task]) -> bool:
    """Whether the tasks are local files of less than ``_MIN_PARALLEL_BYTES`` of text in
    all (a whole-source task or a remote file may be any size: worth a worker; a gzip or
    zstd file counts as ``_PACKED`` times its size, about what text compresses by)."""
    files = [f for t in todo for f in t.files or []]
    if not all(t.files for t in todo) or any("://" in f for f in files):
        return False
    return sum(Path(f).stat().st_size * (_PACKED if f.lower().endswith((".gz", ".zst")) else 1)
               for f in set(files)) < _MIN_PARALLEL_BYTES


def _bar(todo: list[Task]) -> Progress:
    return Progress("data", total=len(todo), unit="tasks", every_s=LINE_EVERY_S)


def _watch(bar: Progress, todo: list[Task], work: Path) -> Watch:
    return Watch(bar, [beat_path(work, t.stem) for t in todo])


def die_with_parent(parent: int) -> None:
    """In a worker process: exit as soon as ``parent`` does, however it ends (SIGKILL
    included), so no worker outlives the process that holds the run directory's lock and a
    rerun never races with a previous attempt's workers. Linux: the kernel sends SIGKILL
    (PR_SET_PDEATHSIG); elsewhere a thread polls the parent id."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) \
        if sys.platform.startswith("linux") else None
    if libc is not None and libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
        if os.getppid() != parent:   # the parent died before the call above
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


_PR_SET_PDEATHSIG = 1   # <linux/prctl.h>


def _ray(cfg: DataConfig, todo: list[Task], work: Path, ngrams_path: str) -> None:
    """The same tasks as Ray tasks (one CPU each). A task writes its files under a
    temporary name and renames them, so Ray's retry of a task on a lost worker is safe."""
    try:
        import ray
    except ImportError:
        raise ConfigError("data.executor = 'ray' needs Ray: pip install ray") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=cfg.ray_address or None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        pending = [remote.remote(cfg, t, work, ngrams_path) for t in todo]
        with _bar(todo) as bar, _watch(bar, todo, work):
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # a task's exception is raised here
                bar.update(1)
    finally:
        if started:
            ray.shutdown()


