import io

from pretrain import log


def test_progress_prints_plain_lines_when_not_a_terminal(monkeypatch):
    err = io.StringIO()  # not a tty
    monkeypatch.setattr("sys.stderr", err)
    with log.Progress("train", total=3, unit="steps", every_s=0.0) as p:
        for i in range(3):
            p.update(1, loss=1.0 / (i + 1))
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("[train] 1/3 steps") and "loss=1" in lines[0]
    assert lines[-1].startswith("[train] 3/3 steps") and "loss=0.3333" in lines[-1]
    assert len(lines) == 3  # the closing line is not repeated


def test_log0_is_silent_on_other_ranks(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    log.log0("hidden")
    with log.Progress("x", total=1) as p:
        p.update(1)
    monkeypatch.setenv("RANK", "0")
    log.log0("shown")
    assert capsys.readouterr().err == "shown\n"
