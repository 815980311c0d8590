"""Training progress: the first iterations are logged whatever logger.print_freq says, and an interactive
terminal gets a progress bar below log lines that stay as they are in the log file (none without a TTY)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import ROOT
from test_train_common import read_jsonl, run_training, tiny_data_fixture, write_options  # noqa: F401 (fixture)

from lkdn.training.pipeline import FIRST_LINES

pytestmark = pytest.mark.usefixtures("one_thread")

LINE = re.compile(r"\[epoch:\s*\d+, iter:\s*(\d+), lr:")


def test_first_iterations_are_logged_whatever_print_freq_says(tmp_path: Path, tiny_data,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="early", train__total_iter=12, logger__print_freq=6,
                             logger__save_checkpoint_freq=100, val__val_freq=100)
    assert run_training(opt_file, tmp_path) == 0
    err = capsys.readouterr().err
    assert [int(i) for i in LINE.findall(err)] == [1, 2, 5, 6, 10, 12]  # FIRST_LINES up to 12, and every 6th
    exp = tmp_path / "experiments" / "early"
    log_file = next(exp.glob("train_early_*.log")).read_text()
    assert [int(i) for i in LINE.findall(log_file)] == [1, 2, 5, 6, 10, 12]
    # the records keep the print_freq cadence
    assert [r["iter"] for r in read_jsonl(exp / "train_log.jsonl")] == [6, 12]
    assert "Training:" not in err and "\r" not in err  # stderr is not a terminal here: no bar
    assert FIRST_LINES[0] == 1


def test_a_resumed_run_logs_its_first_iterations_too(tmp_path: Path, tiny_data,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="again", train__total_iter=8, logger__print_freq=100,
                             logger__save_checkpoint_freq=4, val__val_freq=100)
    assert run_training(opt_file, tmp_path, "--force_yml", "train:total_iter=4") == 0
    capsys.readouterr()
    assert run_training(opt_file, tmp_path, "--auto_resume") == 0
    assert [int(i) for i in LINE.findall(capsys.readouterr().err)] == [5, 6]  # iterations 1 and 2 of this start


def _read_terminal(proc: subprocess.Popen[bytes], master: int, timeout: float) -> str:
    """Everything the process writes to its terminal until it exits (read as it comes: a full pty blocks)."""
    chunks, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
        raise AssertionError(f"training did not end within {timeout} s")
    return b"".join(chunks).decode("utf-8", errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_a_terminal_gets_a_progress_bar_and_unchanged_log_lines(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="bar", train__total_iter=30, logger__print_freq=10,
                             logger__save_checkpoint_freq=100, val__val_freq=100, logger__use_tb_logger=False)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal of 160 columns
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("TQDM_DISABLE", None)
    try:
        proc = subprocess.Popen([sys.executable, str(ROOT / "lkdn" / "train.py"), "-opt", str(opt_file),
                                 "--root_path", str(tmp_path)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        terminal = _read_terminal(proc, master, timeout=300)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0, terminal[-3000:]
    assert re.search(r"Training: 100%\|.*\| 30/30 ", terminal), terminal[-2000:]
    # every log line of the file reaches the terminal whole, on a line of its own once the bar is cleared
    screen_lines = {part.strip() for line in terminal.replace("\r\n", "\n").split("\n") for part in line.split("\r")}
    log_file = next((tmp_path / "experiments" / "bar").glob("train_bar_*.log")).read_text()
    logged = [line for line in log_file.splitlines() if LINE.search(line)]
    assert [int(LINE.search(line).group(1)) for line in logged] == [1, 2, 5, 10, 20, 30]
    for line in logged:
        assert line.strip() in screen_lines, line


def _log_one_line() -> None:
    from lkdn.utils import setup_logging

    setup_logging().warning("a line from a forked process")


def test_a_forked_process_logs_while_tqdm_s_lock_is_held_elsewhere() -> None:
    """tqdm's write lock is shared with forked processes: a log line must not wait for it (a forked
    trainer or data worker would hang for ever, and its parent with it)."""
    import multiprocessing

    from tqdm import tqdm

    lock = tqdm.get_lock()
    lock.acquire()  # as a bar-refreshing thread of this process holds it at the moment of a fork
    try:
        child = multiprocessing.get_context("fork").Process(target=_log_one_line)
        child.start()
        child.join(60)  # a hang detector, not a timing: the line takes milliseconds
        hung = child.is_alive()
        if hung:
            child.kill()
            child.join()
    finally:
        lock.release()
    assert not hung and child.exitcode == 0
