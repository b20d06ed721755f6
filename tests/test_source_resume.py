"""A restarted file source resumes where its stream had got to: `FrameSource.seek`, the saved position, the worker.

The fault test that kills a real source process is tests/faults/test_kill.py::test_kill_the_source_it_resumes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from ffstream.sources import (
    IdxSource,
    Position,
    Preprocess,
    SyntheticSource,
    VideoFileSource,
    open_source,
)
from ffstream.workers.source import SourceWorker
from ffstream.workers.source_position import PositionStore, SavedPosition
from tests.media import make_idx_dir, write_video
from tests.rig import receive, running, unique


def _video(tmp_path):
    path = tmp_path / "clip.mkv"
    if not path.exists():
        write_video(path, n=30)
    return VideoFileSource(path, Preprocess(), epochs=2)


def _idx(tmp_path):
    make_idx_dir(tmp_path, n=25)
    return open_source(f"idx:{tmp_path}", Preprocess(), epochs=2, seed=5)


def _synthetic(tmp_path):
    return SyntheticSource(Preprocess(), 25, seed=3, epochs=2)


MAKERS = {"video": _video, "idx": _idx, "synthetic": _synthetic}


@pytest.mark.parametrize("kind", list(MAKERS))
@pytest.mark.parametrize("cut", [0, 7, 25, 33])  # the start, inside pass 0, the pass boundary, inside pass 1
def test_seek_to_a_position_yields_exactly_the_rest_of_the_stream(tmp_path, kind, cut):
    make = MAKERS[kind]
    with make(tmp_path) as src:
        whole = [(f.pixels, f.label) for f in src]
    with make(tmp_path) as src:
        it = iter(src)
        for _ in range(cut):
            next(it)
        position = src.position
    per_pass = len(whole) // 2
    assert position == (Position() if cut == 0 else Position((cut - 1) // per_pass, (cut - 1) % per_pass + 1))
    with make(tmp_path) as src:
        src.seek(position)
        rest = [(f.pixels, f.label) for f in src]
    assert len(rest) == len(whole) - cut, (position, len(rest))
    for (a, la), (b, lb) in zip(rest, whole[cut:]):
        np.testing.assert_array_equal(a, b)
        assert la == lb


def test_a_source_that_cannot_resume_says_so():
    class Live(SyntheticSource):
        def identity(self):
            return None

    with Live(Preprocess(), 5) as src, pytest.raises(Exception, match="cannot resume"):
        src.seek(Position(0, 2))


def test_identity_changes_with_the_file_and_the_order(tmp_path):
    src = _video(tmp_path)
    before = src.identity()
    assert before == _video(tmp_path).identity()
    write_video(tmp_path / "clip.mkv", n=31)  # rewritten: size and mtime change
    assert _video(tmp_path).identity() != before
    images, labels = np.zeros((4, 5, 5), np.uint8), np.arange(4)
    a = IdxSource(images, labels, Preprocess(), seed=1).identity()
    assert a == IdxSource(images.copy(), labels, Preprocess(), seed=1).identity()
    assert a != IdxSource(images, labels, Preprocess(), seed=2).identity()  # another shuffle order
    assert a != IdxSource(images + 1, labels, Preprocess(), seed=1).identity()


def test_position_store_refuses_what_does_not_apply(tmp_path):
    path = tmp_path / "source.json"
    store = PositionStore(path, {"kind": "video", "size": 1}, run_id="run-a")
    assert store.load() is None  # nothing saved yet
    store.save(SavedPosition(Position(1, 4), frames=34, batches=9))
    assert store.load() == SavedPosition(Position(1, 4), 34, 9)
    assert PositionStore(path, {"kind": "video", "size": 2}, run_id="run-a").load() is None  # another file
    assert PositionStore(path, {"kind": "video", "size": 1}, run_id="run-b").load() is not None  # a new run resumes too
    store.save(SavedPosition(Position(2, 0), frames=60, batches=15, ended=True))
    assert store.load().ended  # a restart within the run stays at the end
    assert PositionStore(path, {"kind": "video", "size": 1}, run_id="run-b").load() is None  # a new run replays it
    for bad in ("{not json", json.dumps({"format": "other"}), json.dumps([1, 2]),
                json.dumps({**json.loads(path.read_text()), "offset": -3})):
        path.write_text(bad)
        assert store.load() is None, bad


def _learned(consumer: zmq.Socket, until_end: bool = True, batches: int | None = None) -> tuple[list, bool]:
    """Learn messages from `consumer`, up to `batches` of them or to the end marker; and whether the end came."""
    got = []
    while batches is None or len(got) < batches:
        msg = receive(consumer)
        if msg.kind == "control":
            return got, True
        got.append(msg)
    return got, False


def test_a_restarted_source_worker_resumes_with_its_counters_and_loses_nothing(tmp_path, zmq_context):
    with _video(tmp_path) as src:
        whole = np.stack([f.pixels for f in src])  # (60, 1, 28, 28)
    path, addr, batch = tmp_path / "source.json", unique("resume"), 4
    consumer = zmq_context.socket(zmq.PULL)
    consumer.setsockopt(zmq.LINGER, 0)
    consumer.bind(addr)

    def worker(run_id="run-a"):
        return SourceWorker(_video(tmp_path), addr, None, batch=batch, position_path=str(path), position_every_s=0,
                            run_id=run_id, context=zmq_context)

    first = worker()
    with running(first):
        before, _ = _learned(consumer, batches=5)
    saved = json.loads(path.read_text())
    assert 0 < saved["frames"] <= first.frames and saved["frames"] % batch == 0, (saved, first.frames)
    while consumer.poll(100):  # what the first worker had queued; a real kill loses it, the replay covers it
        consumer.recv_multipart()

    second = worker()
    assert second.resumed_from == saved["frames"] and second.batches == saved["batches"]
    with running(second):
        after, ended = _learned(consumer)
    assert ended and after[0].seq == saved["batches"]
    sent = np.concatenate([np.concatenate([m.array for m in before])[: saved["frames"]]] + [m.array for m in after])
    np.testing.assert_array_equal(sent, whole)  # the prefix it had reached, then the rest: nothing lost, nothing twice
    assert second.metrics()["frames"] == len(whole)

    third = worker()  # a restart after the end, in the same run: nothing is replayed, the end marker goes again
    with running(third):
        replay, ended = _learned(consumer)
    assert replay == [] and ended
    fourth = worker(run_id="run-b")  # a new run plays the finished stream again from the start
    assert fourth.resumed_from is None and fourth.frames == 0
    fourth.source.close()


def test_a_paced_source_resumed_mid_stream_keeps_its_pace_from_where_it_resumed(tmp_path, zmq_context):
    """rate_fps paces from the resumed process's first batch: a source resumed at frame F once waited F / rate_fps
    before its first batch (150 s seen in docker-compose)."""
    path, addr, batch = tmp_path / "source.json", unique("paced"), 4
    consumer = zmq_context.socket(zmq.PULL)
    consumer.setsockopt(zmq.LINGER, 0)
    consumer.bind(addr)
    worker = lambda rate: SourceWorker(_video(tmp_path), addr, None, batch=batch, position_path=str(path), position_every_s=0,
                                       run_id="run-a", rate_fps=rate, context=zmq_context)
    with running(worker(None)):
        _learned(consumer, batches=12)
    resumed = worker(2.0)  # 2 frames/s: the first batch is due in 1.5 s, the next two 2 s apart each
    assert resumed.resumed_from >= 5 * batch, resumed.resumed_from  # the old rule would wait 11.5 s and more
    while consumer.poll(100):
        consumer.recv_multipart()
    with running(resumed):
        first = receive(consumer, timeout=6.0)
        assert first.seq == resumed.resumed_from // batch
        # still paced: the next batch is not sent at once (4 frames at 2 frames/s)
        assert not consumer.poll(1000)


def test_a_position_that_cannot_be_saved_does_not_stop_the_stream(tmp_path, caplog):
    (tmp_path / "file").write_text("not a directory")
    store = PositionStore(tmp_path / "file" / "source.json", {"kind": "video"})  # its directory cannot be made
    store.save(SavedPosition(Position(0, 4), frames=4, batches=1))
    store.save(SavedPosition(Position(0, 8), frames=8, batches=2))
    assert store.failed and store.load() is None
    assert sum("cannot save the source position" in r.message for r in caplog.records) == 1  # said once
