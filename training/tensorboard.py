"""TensorBoard event files that can never stall training.

:class:`EventLog` writes events synchronously, in the training thread, with tensorboardX's
record writer: no queue and no background thread that could die (a full disk) and leave the
loop blocked on a full queue. The first failure is reported once (a warning naming the folder and
the error); logging then stops and training goes on, checkpoints included.

History after a resume: the trainer flushes the log before every checkpoint, so every step a
checkpoint covers is on disk; steps after it are logged again by the resumed run, which opens its
file with a "session start" event at its first step, so TensorBoard drops the earlier file's
events from that step on (its purge rule) and shows each step once.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np


class EventLog:
    """``add_scalar`` / ``add_image`` / ``flush`` / ``close`` over one event file in ``logdir``.

    ``purge_step``: the first step of a resumed run (None for a fresh one).
    """

    def __init__(self, logdir: str | Path, purge_step: int | None = None):
        self.logdir = Path(logdir)
        self.failed: str | None = None
        self._writer = None
        self.path: Path | None = None  # the event file
        try:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            self.logdir.mkdir(parents=True, exist_ok=True)
            # nanoseconds and pid in the name: a resumed run started within the same second gets its
            # own file, which sorts after the earlier one (TensorBoard reads files in name order)
            self._writer = EventsWriter(str(self.logdir / "events"),
                                        filename_suffix=f".{time.time_ns():020d}.{os.getpid()}")
            self.path = Path(self._writer._file_name)
            if purge_step is not None:
                self._write(Event(step=int(purge_step), wall_time=time.time(),
                                  session_log=SessionLog(status=SessionLog.START)))
        except OSError as e:
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        if self.failed is None:
            self.failed = f"{e}"
            print(f"warning: TensorBoard logging to {self.logdir} stopped ({e}); training and checkpoints "
                  f"go on", file=sys.stderr)
        self._writer = None

    def _write(self, event) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write_event(event)
        except OSError as e:
            self._fail(e)

    def _summary(self, summary, step: int) -> None:
        if self._writer is None:
            return
        from tensorboardX.proto.event_pb2 import Event

        self._write(Event(summary=summary, step=int(step), wall_time=time.time()))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar

        self._summary(scalar(tag, float(value)), step)

    def add_image(self, tag: str, image: np.ndarray, step: int, dataformats: str = "HWC") -> None:
        """``image``: uint8 (0-255) or float (0-1) in ``dataformats`` layout."""
        if self._writer is None:
            return
        from tensorboardX.summary import image as image_summary

        self._summary(image_summary(tag, image, dataformats=dataformats), step)

    def flush(self) -> None:
        """Everything logged so far, on disk (fsync'ed)."""
        if self._writer is None:
            return
        try:
            self._writer.flush()
        except OSError as e:
            self._fail(e)

    def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
        except OSError as e:
            self._fail(e)
        self._writer = None


def read_scalars(logdir: str | Path, tag: str) -> dict[int, float]:
    """``step -> value`` of scalar ``tag`` as TensorBoard shows it: event files in name (time)
    order, a "session start" at step s dropping the earlier files' events at steps >= s.
    Unreadable trailing records (a file cut by a kill) are ignored, as TensorBoard does."""
    import struct

    from tensorboardX.proto.event_pb2 import Event, SessionLog

    values: dict[int, float] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("Q", data[pos:pos + 8])
            end = pos + 12 + length + 4
            if end > len(data):
                break
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos = end
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                values = {s: v for s, v in values.items() if s < event.step}
            for v in event.summary.value:
                if v.tag == tag:
                    values[int(event.step)] = float(v.simple_value)
    return values
