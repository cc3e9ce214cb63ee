"""The progress line: rewritten in place in a Jupyter notebook (one output line, not a line per
epoch), plain lines on stderr elsewhere, nothing when quiet."""

from __future__ import annotations

import sys
import types

from autolfads.progress import ProgressLine


class FakeHandle:
    def __init__(self, shown: list[str]) -> None:
        self.shown = shown

    def update(self, obj: object) -> None:
        self.shown.append(str(obj))


def fake_ipython(monkeypatch) -> list[str]:
    """An `IPython.display` whose `display(..., display_id=True)` records what it shows."""
    shown: list[str] = []
    module = types.ModuleType("IPython.display")

    class Pretty(str):
        pass

    def display(obj, display_id=False):
        assert display_id is True
        shown.append(str(obj))
        return FakeHandle(shown)

    module.Pretty, module.display = Pretty, display
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", module)
    return shown


def test_in_a_notebook_one_line_is_updated_in_place(monkeypatch, capsys):
    shown = fake_ipython(monkeypatch)
    progress = ProgressLine(3)
    progress.live, progress.notebook = False, True  # as rich finds it under Jupyter
    with progress:
        for epoch in range(1, 4):
            progress.update(epoch, f"valid {epoch}")
    assert shown[0] == "epoch 0/3  starting"
    assert [line.split("  ")[:2] for line in shown[1:]] == [
        ["epoch 1/3", "valid 1"],
        ["epoch 2/3", "valid 2"],
        ["epoch 3/3", "valid 3"],
    ]
    assert capsys.readouterr().err == ""  # no line per epoch


def test_elsewhere_a_plain_line_per_update_and_nothing_when_quiet(capsys):
    progress = ProgressLine(2)
    progress.live = progress.notebook = False
    with progress:
        progress.update(1, "x")
    assert capsys.readouterr().err.startswith("epoch 1/2  x  elapsed")
    with ProgressLine(2, quiet=True) as quiet:
        quiet.update(1, "x")
    assert capsys.readouterr().err == ""
