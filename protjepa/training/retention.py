"""Checkpoint retention (``train.keep_checkpoints``) and the bytes the checkpoints took.

An ESM-2 8M checkpoint (weights, AdamW state, EMA teacher) is about 100 MB; a run writes one
per ``train.checkpoint_at`` fraction. Keeping the last K before the final one bounds the disk a
run holds; a resume needs only the newest. Runs after :class:`BudgetCheckpointer` on the same
event, so it sees each checkpoint as soon as it is written.
"""
from __future__ import annotations

from pathlib import Path

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from protjepa.checkpoint_file import NAME


def _checkpoints(folder: Path) -> list[tuple[float, Path]]:
    return sorted((float(m.group(1)), p) for p in folder.glob("ckpt-*.pt") if (m := NAME.fullmatch(p.name)))


class CheckpointRetention(Callback):
    """Removes all but the last ``keep`` checkpoints before the final one (``None``: keeps all);
    counts what this run wrote (a file linked under several names once)."""

    def __init__(self, folder: Path, keep: int | None):
        self.folder = folder
        self.keep = keep
        self.written_bytes = 0
        self.written = 0
        self.removed: list[str] = []
        self._seen: set[tuple[int, int]] = set()

    def fit_start(self, state: State, logger: Logger) -> None:
        self._seen = {self._key(p) for _, p in _checkpoints(self.folder)}  # a resumed run's earlier files

    @staticmethod
    def _key(path: Path) -> tuple[int, int]:
        stat = path.stat()
        return stat.st_dev, stat.st_ino

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        found = _checkpoints(self.folder)
        for _, path in found:
            if self._key(path) not in self._seen:
                self._seen.add(self._key(path))
                self.written += 1
                self.written_bytes += path.stat().st_size
        if self.keep is None:
            return
        before_final = [path for fraction, path in found if fraction < 1.0]
        for path in before_final[:max(0, len(before_final) - self.keep)]:
            for file in self.folder.glob(f"{path.name}*"):  # with anything written beside it under its name
                file.unlink()
            self.removed.append(path.name)
        # What is left: a freed inode may be given to the next checkpoint, which must count as new.
        self._seen = {self._key(path) for _, path in _checkpoints(self.folder)}

    def describe(self) -> str:
        """One line for the run summary."""
        kept = ", ".join(p.name for _, p in _checkpoints(self.folder)) or "none"
        line = f"checkpoints: {kept}; this run wrote {self.written} ({self.written_bytes / 1e6:.1f} MB)"
        if self.removed:
            line += f", removed {', '.join(self.removed)} (train.keep_checkpoints: {self.keep})"
        return line
