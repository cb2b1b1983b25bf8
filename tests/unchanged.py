"""A run folder's files before a refused input, and the check that they are all still exactly as they were
(bytes and modification time), so a bad input is shown to cost nothing already written."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Written:
    """The files under ``root`` as they are now; ``assert_unchanged`` compares against that."""

    def __init__(self, root: Path):
        self.root = root
        # Old modification times, so that a rewrite with the same bytes still shows as a change.
        past = time.time() - 3600
        for path in self._files():
            os.utime(path, (past, past))
        self.before = self._snapshot()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def _snapshot(self) -> dict[str, tuple[bytes, int]]:
        return {str(p.relative_to(self.root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in self._files()}

    def assert_unchanged(self, new_files_allowed_under: str | None = None) -> None:
        """Every earlier file is byte-for-byte and mtime-for-mtime the same, and none went missing; new
        files are an error too, except under ``new_files_allowed_under`` (a sub-folder a refused stage may
        have begun, like a fresh training folder)."""
        now = self._snapshot()
        changed = sorted(k for k in self.before if now.get(k) != self.before[k])
        assert not changed, f"a refused input changed (or removed) earlier results: {changed}"
        new = sorted(k for k in now if k not in self.before)
        if new_files_allowed_under is not None:
            new = [k for k in new if not k.startswith(new_files_allowed_under.rstrip("/") + "/")]
        assert not new, f"a refused input wrote files: {new}"
