"""`pretrain data` killed by its pid, SIGTERM, SIGKILL or Ctrl-C, or one of its workers killed,
at seeded moments while its worker processes run: every worker dies with it, and the
immediate rerun resumes to the output of an uninterrupted run (no clash with the dead
attempt's temporary files)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads process parents from /proc (Linux)")

N_FILES = 12   # one task each; ~1 MB each, over the size below which no workers start


def _corpus(folder: Path) -> None:
    """English-looking documents (words drawn from the pydoc topics) that pass the web
    filters, so the tasks do the full per-document work."""
    words = re.findall(r"[A-Za-z]+", " ".join(topics.values()))
    rng = random.Random(0)
    folder.mkdir()
    for f in range(N_FILES):
        with open(folder / f"part-{f:03d}.jsonl", "w") as out:
            size = i = 0
            while size < 1_000_000:
                text = " ".join(" ".join(rng.choices(words, k=rng.randint(8, 20))).capitalize()
                                + "." for _ in range(rng.randint(8, 20)))
                out.write(json.dumps({"id": f"{f}-{i}", "text": text}) + "\n")
                size, i = size + len(text), i + 1


def _data(root: Path, corpus: Path, name: str, session: bool = False) -> subprocess.Popen:
    cfg = root / f"{name}.toml"
    cfg.write_text(f'name = "{name}"\n[data]\nworkers = 2\ngroup_bytes = 0\n'   # a task a file
                   f'[[data.sources]]\ntype = "local"\n'
                   f'paths = ["{corpus}/*.jsonl"]\n')
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "pretrain", "data", "-c", str(cfg),
                             f"--runs_dir={root / 'runs'}"], env=env, stderr=subprocess.PIPE,
                            text=True, start_new_session=session)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"   # a zombie has exited; only its parent's wait is missing


def _outputs(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "data").iterdir())
            if p.name != "manifest.json"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("data-kill")
    _corpus(root / "corpus")
    proc = _data(root, root / "corpus", "whole")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return root, _outputs(root / "runs" / "whole")


@pytest.mark.slow
@pytest.mark.parametrize("seed, sig", [(1, signal.SIGKILL), (2, signal.SIGTERM),
                                       (3, signal.SIGKILL), (4, "ctrl-c"), (5, "worker")])
def test_killed_data_stage_leaves_no_worker_and_reruns_to_the_same_output(uninterrupted, seed,
                                                                           sig):
    root, want = uninterrupted
    name = f"killed-{seed}"
    work = root / "runs" / name / ".work"
    # Ctrl-C as the workers start: where an idle or importing worker printed its traceback
    done_before_kill = 0 if sig == "ctrl-c" else random.Random(seed).randint(0, N_FILES // 2)
    # Ctrl-C: SIGINT to the terminal's process group, the workers included
    proc = _data(root, root / "corpus", name, session=sig == "ctrl-c")
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = [c for c in _children(proc.pid) if c not in workers] + workers
        if len(list(work.glob("*/*.done"))) >= done_before_kill and len(workers) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the stage ended before the kill point"
    workers = sorted(set(workers + _children(proc.pid)))
    if sig == "worker":   # one worker killed from outside (as the OOM killer does)
        os.kill(next(w for w in workers if b"spawn_main" in _cmdline(w)), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        # one line saying what happened and what to do, no BrokenProcessPool traceback
        assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
        assert "a worker process died" in err and "rerun to resume" in err, err[-3000:]
    elif sig == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        # one line from the parent, no worker's KeyboardInterrupt traceback
        assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    else:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        if sig == signal.SIGTERM:   # a scheduler's notice: stopped as at Ctrl-C, exit 75
            assert proc.returncode == 75 and "Traceback" not in err, err[-3000:]
            assert "preempted: SIGTERM outside training" in err
    assert len(workers) >= 2, workers   # the pool and the resource tracker at least
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "worker processes outlived the killed stage"

    again = _data(root, root / "corpus", name)   # immediately, as a user would
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    if done_before_kill:
        assert "tasks already done, resuming" in err
    assert _outputs(root / "runs" / name) == want
