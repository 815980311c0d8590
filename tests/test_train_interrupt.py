"""A Ctrl-C that reaches ``lkdn/train.py`` outside the training loop (during the set-up, or a second one while
saving) ends it with one line and exit status 130, not a traceback."""

from __future__ import annotations

import signal

import pytest

import lkdn.train
from lkdn.training import pipeline


def _interrupted(**kwargs: object) -> int:
    raise KeyboardInterrupt


def test_ctrl_c_outside_the_loop_is_one_line_and_status_130(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pipeline, "train_pipeline", _interrupted)
    monkeypatch.delenv("LKDN_TRACEBACK", raising=False)
    assert lkdn.train.main(["-opt", "a.yml"]) == 128 + signal.SIGINT == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "interrupted: nothing more was saved; every state written so far is complete (resume with --auto-resume)"]
    monkeypatch.setenv("LKDN_TRACEBACK", "1")  # the traceback on request, as for the other errors
    with pytest.raises(KeyboardInterrupt):
        lkdn.train.main(["-opt", "a.yml"])
