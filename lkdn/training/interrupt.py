"""SIGINT / SIGTERM during training: finish the current iteration, save a state, then stop.

The handler only records the signal; the training loop checks :attr:`StopRequest.signum`
after each iteration (under DDP all ranks agree, see :func:`lkdn.training.dist.any_process`),
saves the networks and a training state, and exits with status ``128 + signal number``.
A second signal while saving is not caught again: it interrupts at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Installs the handlers (main thread only) and restores the previous ones on :meth:`restore`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            logger.warning("Received %s: saving a training state after this iteration, then stopping",
                           signal.Signals(signum).name)
        self.signum = signum
        self.restore()  # a second signal acts immediately

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}
