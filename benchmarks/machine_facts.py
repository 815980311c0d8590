"""The CPU model and ISA flags of this machine (``/proc/cpuinfo`` where there is one), and its free memory."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU model name and its flags (``platform.processor()`` and no flags outside Linux)."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break  # the first processor's entry is enough
    except OSError:
        pass
    return cpu, flags


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_available() -> int | None:
    """Bytes the system can still give without swapping (``MemAvailable``), or None where unknown."""
    return _meminfo("MemAvailable")


def memory_total() -> int | None:
    """The system's memory in bytes (``MemTotal``), or None where unknown."""
    return _meminfo("MemTotal")
