"""Optional: sample the server with py-spy during one scenario and summarise where its CPU goes."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path


class PySpy:
    """`py-spy record --gil` of the server: only the thread holding the GIL, i.e. where Python burns CPU.

    Sampling pauses the server 100 times a second, so figures of the profiled scenario are perturbed.
    """

    def __init__(
        self, executable: str, pid: int, output: Path, duration_seconds: float, *, subprocesses: bool = False
    ) -> None:
        self.output = output
        self.command = [
            executable, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_seconds))),
            "--rate", "100", "--gil", "--format", "raw", "--output", str(output),
            *(["--subprocesses"] if subprocesses else []),  # the server's worker processes
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def find(executable: str) -> str:
        found = shutil.which(executable)
        if found is None:
            raise SystemExit(f"py-spy not found at {executable!r}; install it in a separate venv and pass --py-spy")
        return found

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self) -> str:
        assert self.process is not None
        _, stderr = self.process.communicate(timeout=120)
        return stderr.decode(errors="replace") if self.process.returncode else ""


def summarise(collapsed: Path, top: int = 25) -> list[str]:
    """Self and inclusive shares of the sampled frames."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[_short(frames[-1])] += count
        for frame in {_short(frame) for frame in frames}:
            inclusive[frame] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} active samples; top frames by self time:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in self_counts.most_common(top)]
    lines.append("top frames by inclusive time:")
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/file.py:line)"; keep the function and the file's tail.
    name, _, location = frame.partition(" (")
    location = location.rstrip(")")
    path, _, _line = location.rpartition(":")
    tail = "/".join(Path(path).parts[-2:]) if path else location
    return f"{name} ({tail})"
