"""The file source's saved position, so that a restarted source resumes where the stream had got to.

One JSON file (atomic: temporary file, fsync, rename), tied to the source's identity (path, size, mtime,
order): another file, or the same file rewritten, starts from the beginning. A stream that ended is
replayed by a new run, but stays ended for a restart within the same run.

>>> store = PositionStore("ck/source.json", {"kind": "video", ...}, run_id="ipc:///tmp/ffstream-x/layer1.in")  # doctest: +SKIP
>>> store.save(SavedPosition(Position(0, 640), frames=640, batches=20))                                  # doctest: +SKIP
>>> store.load().position                                                                                  # doctest: +SKIP
Position(epoch=0, offset=640)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from ffstream.sources import Position
from ffstream.workers.base import write_json_atomic

FORMAT = "ffstream-source-position-1"
log = logging.getLogger("ffstream.source")


@dataclass(frozen=True)
class SavedPosition:
    position: Position  # the next frame to send
    frames: int  # frames sent before it (the worker's counter, which max_frames bounds)
    batches: int  # batches sent before it: the next batch's seq, so a replayed batch keeps its seq
    ended: bool = False  # the stream had ended
    barrier: int = 0  # exactly-once: the barrier acknowledged at this position (ids go on from it after a restart)
    pass_id: str | None = None  # exactly-once: the pass over the stream that the workers' learned seqs belong to


class PositionStore:
    def __init__(
        self,
        path: str | os.PathLike,  # the JSON file, e.g. <checkpoint_dir>/source.json
        identity: dict,  # FrameSource.identity(): a saved position is only used for the same source
        run_id: str | None = None,  # names this run: a restart in the same run keeps an ended stream ended
    ):
        self.path = os.fspath(path)
        self.identity = identity
        self.run_id = run_id
        self.failed = False  # the last save failed (already logged)

    def load(self) -> SavedPosition | None:
        """Where to resume; None to start from the beginning (no file, another source, a finished earlier run)."""
        try:
            with open(self.path) as fh:
                saved = json.load(fh)
            if saved.get("format") != FORMAT:
                raise ValueError(f"format {saved.get('format')!r}")
            pass_id = saved.get("pass_id")
            found = SavedPosition(
                Position(int(saved["epoch"]), int(saved["offset"])), int(saved["frames"]), int(saved["batches"]), bool(saved["ended"]),
                int(saved.get("barrier", 0)), pass_id if isinstance(pass_id, str) else None,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring the unreadable source position %s (%s); starting from the beginning", self.path, exc)
            return None
        if min(found.position.epoch, found.position.offset, found.frames, found.batches, found.barrier) < 0:
            log.warning("ignoring the source position %s: negative counts; starting from the beginning", self.path)
            return None
        if saved.get("identity") != self.identity:
            log.info("the source position %s is for another source (or the file changed); starting from the beginning", self.path)
            return None
        if found.ended and saved.get("run") != self.run_id:
            return None  # an earlier run finished this stream: a new run plays it again
        return found

    def save(self, saved: SavedPosition) -> None:
        """Atomic write; a failure (a read-only or full disk) is logged once and the stream goes on without it."""
        try:
            self._write(saved)
        except OSError as exc:
            if not self.failed:
                log.warning("cannot save the source position to %s (%s); a restart will start over", self.path, exc)
            self.failed = True
        else:
            self.failed = False

    def _write(self, saved: SavedPosition) -> None:
        write_json_atomic(
            self.path,
            {
                "format": FORMAT,
                "identity": self.identity,
                "run": self.run_id,
                "epoch": saved.position.epoch,
                "offset": saved.position.offset,
                "frames": saved.frames,
                "batches": saved.batches,
                "ended": saved.ended,
                "barrier": saved.barrier,
                "pass_id": saved.pass_id,
            },
        )
