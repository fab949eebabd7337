"""Progress bars: drawn on a terminal (or TUNESERVE_PROGRESS=1), silent otherwise, nestable."""

from __future__ import annotations

from tuneserve import progress
from tuneserve.progress import progress_bar, with_progress


def test_bars_nest_and_inner_ones_are_erased(monkeypatch, capsys):
    monkeypatch.setenv("TUNESERVE_PROGRESS", "1")

    def work(advance):
        display = progress._ACTIVE.get()  # one display: the inner bar is a line of the outer
        assert [t.description for t in display.tasks] == ["outer step", "inner scoring"]
        for _ in range(3):
            advance(1)
        return "scored"

    with progress_bar("outer step", total=2) as advance:
        for _ in range(2):
            assert with_progress("inner scoring", 3, work) == "scored"
            advance(1, accuracy=0.5)
            assert len(progress._ACTIVE.get().tasks) == 1  # the transient line is removed
        with progress_bar("inner kept", total=1) as inner:
            inner(1)
    err = capsys.readouterr().err
    assert "outer step" in err and "2/2" in err and "accuracy=0.5" in err
    assert "inner kept" in err and "inner scoring" not in err  # a transient line is gone
    assert err.count("outer step") == 1  # one display, not two fighting over the line


def test_no_bar_without_a_terminal_or_when_turned_off(monkeypatch, capsys):
    monkeypatch.setenv("TUNESERVE_PROGRESS", "0")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)  # even on a terminal
    assert with_progress("scoring", 3, lambda advance: advance(3) or 7) == 7
    assert capsys.readouterr().err == ""
