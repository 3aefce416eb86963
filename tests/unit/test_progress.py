"""Long training shows progress off a terminal too: plain lines, at most one per interval and one
at the end; none in CI or with LOWRANK_LAB_PROGRESS=0."""

from lowrank_lab.train import progress


def test_line_progress_prints_at_most_every_interval_and_at_the_end(monkeypatch):
    clock = iter([0.0, 5.0, 40.0, 41.0, 90.0, 91.0, 95.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    lines = []
    bar = progress.LineProgress(total=10, initial=0, desc="pack of 5", echo=lines.append, every=30.0)
    bar.update()          # at 5 s: quiet
    bar.update()          # at 40 s: a line
    bar.update()          # at 90 s: 50 s after it, a line
    bar.close()           # at the end: a line
    assert lines == ["pack of 5: step 2/10 (20%), 0 min 41 s", "pack of 5: step 3/10 (30%), 1 min 31 s",
                     "pack of 5: step 3/10 (30%), 1 min 35 s"]


def test_off_a_terminal_plain_lines_and_quiet_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LOWRANK_LAB_PROGRESS", raising=False)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress.step_progress(10, 0, "pack of 2"), progress.LineProgress)
    monkeypatch.setenv("LOWRANK_LAB_PROGRESS", "0")
    assert progress.step_progress(10, 0, "pack of 2") is None
