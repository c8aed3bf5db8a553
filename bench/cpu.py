"""CPU time of a process (or of it and its descendants), read from /proc (Linux)."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of every thread of ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; fields after it start with the state (field 3).
    fields = stat[stat.rindex(")") + 2 :].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / CLOCK_TICKS_PER_SECOND


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant: a server with several processes is their sum."""
    return sum(process_tree_cpu(pid).values())


def process_tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and of each live descendant, by process id."""
    seconds: dict[int, float] = {}
    for member in [pid, *_descendants(pid)]:
        with suppress(FileNotFoundError, ProcessLookupError):  # it exited in between
            seconds[member] = process_cpu_seconds(member)
    return seconds


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found
