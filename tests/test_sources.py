"""Frame sources: preprocessing, synthetic shapes, video files, IDX datasets and (faked) cameras.

Everything runs offline in seconds: videos and IDX files are written into tmp_path by the tests,
the camera is a fake capture object (there is no webcam here), and the system fashion-mnist and
OpenCV sample video are used only when installed.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import av
import cv2
import numpy as np
import pytest

from ffstream.sources import (
    CameraSource,
    Frame,
    FrameSource,
    IdxSource,
    Preprocess,
    SourceError,
    SyntheticSource,
    VideoFileSource,
    dataset_arrays,
    load_idx,
    open_source,
)
from ffstream.sources.idx import FASHION_MNIST_DIR
from ffstream.sources.synthetic import DEFAULT_FRAMES
from tests.media import make_idx_dir, write_idx, write_video

VTEST_AVI = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
WAIT_S = 5.0  # upper bound for any thread handshake; a pass takes milliseconds


# --- helpers -------------------------------------------------------------------------------------


class FakeCapture:
    """Stands in for cv2.VideoCapture, since no webcam exists on the test machine.

    Delivers `frames` in order, then reports end of stream. With `hold_at`, the read that would return
    frame `hold_at` sets `holding` and blocks until the test sets `resume`: a handshake, not a sleep.
    """

    def __init__(self, frames=(), *, opened=True, hold_at=None, endless=False):
        self.frames, self.opened, self.hold_at, self.endless = list(frames), opened, hold_at, endless
        self.reads = 0
        self.holding, self.resume, self.released = threading.Event(), threading.Event(), threading.Event()

    def isOpened(self):
        return self.opened

    def read(self):
        if self.reads == self.hold_at:
            self.holding.set()
            self.resume.wait(WAIT_S)
        i = self.reads
        self.reads += 1
        if self.endless:
            return True, np.full((4, 6, 3), i % 256, np.uint8)
        if i >= len(self.frames):
            return False, None
        return True, self.frames[i]

    def release(self):
        self.released.set()


def bgr(value: int) -> np.ndarray:
    return np.full((4, 6, 3), value, np.uint8)


# --- Preprocess ----------------------------------------------------------------------------------


def test_preprocess_same_size_grey_is_scaled_copy():
    img = np.arange(28 * 28, dtype=np.uint32).reshape(28, 28).astype(np.uint8)
    out = Preprocess()(img)
    assert out.dtype == np.float32 and out.shape == (1, 28, 28) and out.flags.c_contiguous
    np.testing.assert_allclose(out[0], img / 255.0, rtol=1e-6)


def test_preprocess_shrinks_with_area_averaging():
    small = np.random.default_rng(0).integers(0, 256, size=(14, 14)).astype(np.uint8)
    big = np.kron(small, np.ones((2, 2), np.uint8))  # each pixel a 2x2 block: area averaging undoes it
    out = Preprocess(size=(14, 14), scale=1.0)(big)
    np.testing.assert_array_equal(out[0], small.astype(np.float32))


def test_preprocess_rgb_to_grey_uses_luma_weights():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255  # RGB order: pure red
    out = Preprocess(size=(8, 8), scale=1.0)(red)
    assert out.shape == (1, 8, 8)
    assert abs(float(out.mean()) - 0.299 * 255) < 1.5  # red's luma weight, not blue's 0.114


def test_preprocess_color_keeps_rgb_order_and_expands_grey():
    img = np.zeros((6, 10, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30
    out = Preprocess(size=(3, 5), color=True, scale=1.0)(img)
    assert out.shape == (3, 3, 5) and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0, 0], [10, 20, 30])
    grey = Preprocess(size=(6, 10), color=True, scale=1.0)(np.full((6, 10), 7, np.uint8))
    assert grey.shape == (3, 6, 10) and np.all(grey == 7)


def test_preprocess_upscales_and_reports_shape():
    pre = Preprocess(size=(40, 30), color=True, scale=0.5)
    assert pre.shape == (3, 40, 30)
    out = pre(np.full((4, 3, 3), 100, np.uint8))
    assert out.shape == (3, 40, 30) and np.allclose(out, 50.0)


def test_preprocess_batch_matches_per_image():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    for pre in (Preprocess(), Preprocess(color=True), Preprocess(size=(14, 10))):
        batch = pre.batch(images)
        assert batch.shape == (5, *pre.shape) and batch.dtype == np.float32
        np.testing.assert_allclose(batch, np.stack([pre(im) for im in images]), rtol=1e-6)


def test_preprocess_rejects_bad_input_and_is_frozen():
    with pytest.raises(ValueError, match="image"):
        Preprocess()(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        Preprocess(size=(0, 28))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Preprocess().size = (1, 1)


# --- the contract every source keeps ------------------------------------------------------------


def _synthetic(tmp_path):
    return SyntheticSource(Preprocess(), 25, seed=3)


def _video(tmp_path):
    write_video(tmp_path / "clip.mkv", n=25)
    return VideoFileSource(tmp_path / "clip.mkv", Preprocess())


def _idx(tmp_path):
    make_idx_dir(tmp_path, n=25)
    return open_source(f"idx:{tmp_path}", Preprocess())


def _camera(tmp_path):
    return CameraSource(0, Preprocess(), capture_factory=lambda target: FakeCapture([bgr(i) for i in range(25)]))


@pytest.mark.parametrize("make", [_synthetic, _video, _idx, _camera], ids=["synthetic", "video", "idx", "camera"])
def test_source_contract(make, tmp_path):
    with make(tmp_path) as src:
        assert isinstance(src, FrameSource) and src.name
        frames = list(src)
        assert frames, "a source should yield frames"
        assert [f.index for f in frames] == list(range(len(frames)))
        for f in frames:
            assert isinstance(f, Frame)
            assert f.pixels.shape == src.shape == (1, 28, 28)
            assert f.pixels.dtype == np.float32 and f.pixels.flags.c_contiguous
            assert 0.0 <= f.pixels.min() and f.pixels.max() <= 1.0
            assert f.t_src > 0
            if src.num_classes is None:
                assert f.label is None
            else:
                assert 0 <= f.label < src.num_classes
        if not src.live:
            assert src.total == len(frames) and src.dropped == 0
        assert "total=" in repr(src)
    assert src.closed
    src.close()  # idempotent
    with pytest.raises(SourceError, match="closed"):
        iter(src)


# --- synthetic -----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    def run(seed):
        frames = list(SyntheticSource(Preprocess(), 60, seed=seed))
        return np.stack([f.pixels for f in frames]), [f.label for f in frames]

    (a, la), (b, lb), (c, _) = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, b)
    assert la == lb
    assert not np.array_equal(a, c)


def test_synthetic_labels_shapes_and_epochs():
    src = open_source("synthetic:400", Preprocess(size=(20, 36), color=True), seed=2, epochs=2)
    assert (src.total, src.num_classes, src.shape, src.live) == (800, 4, (3, 20, 36), False)
    frames = list(src)
    labels = [f.label for f in frames]
    assert len(frames) == 800 and set(labels) == {0, 1, 2, 3}
    assert all(f.pixels.shape == (3, 20, 36) for f in frames)
    np.testing.assert_array_equal(frames[5].pixels, frames[405].pixels)  # epoch 2 replays epoch 1
    assert open_source("synthetic", Preprocess()).total == DEFAULT_FRAMES


def test_synthetic_shapes_move_smoothly_and_change_every_segment():
    frames = list(SyntheticSource(Preprocess(), 300, seed=0, noise=0.0))
    x = np.stack([f.pixels for f in frames])  # (T, 1, 28, 28)
    labels = np.array([f.label for f in frames])
    # a new shape every 20-40 frames (it may draw the same class again): label runs last >= 20 frames
    changes = np.flatnonzero(np.diff(labels) != 0)
    assert len(changes) >= 4
    assert np.diff(changes).min() >= 20
    # within a segment consecutive frames differ (motion), but much less than frames far apart
    step = np.abs(x[1:] - x[:-1]).mean(axis=(1, 2, 3))
    assert np.all(step[:15] > 0), "the shape should move every frame"
    far = np.abs(x[100:] - x[:-100]).mean()
    assert step.mean() < 0.5 * far


def test_synthetic_is_fast():
    import time

    src = SyntheticSource(Preprocess(), 1000)
    t0 = time.perf_counter()
    assert sum(1 for _ in src) == 1000
    assert time.perf_counter() - t0 < 2.0  # ~thousands of frames/s; generous for slow CI


# --- video files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_video_decodes_every_frame_and_keeps_content(tmp_path, ext):
    path = tmp_path / f"clip.{ext}"
    written = write_video(path, n=40)
    src = open_source(str(path), Preprocess(size=(48, 64)), epochs=2)
    assert isinstance(src, VideoFileSource)
    assert (src.live, src.num_classes, src.total) == (False, None, 80)
    frames = list(src)
    assert len(frames) == 80 and src.bad_frames == 0 and src.dropped == 0
    for i in (0, 17, 39):
        expected = cv2.cvtColor(written[i], cv2.COLOR_RGB2GRAY) / 255.0
        assert np.abs(frames[i].pixels[0] - expected).mean() < 0.04, f"frame {i} content lost"
        np.testing.assert_allclose(frames[40 + i].pixels, frames[i].pixels)  # epoch 2 replays the file
    colour = list(VideoFileSource(path, Preprocess(size=(48, 64), color=True)))
    assert colour[5].pixels.shape == (3, 48, 64)
    assert np.abs(colour[5].pixels.transpose(1, 2, 0) - written[5] / 255.0).mean() < 0.05


def test_luma_shortcut_matches_ffmpeg_grey(tmp_path):
    from ffstream.sources.video import _grey

    write_video(tmp_path / "clip.mkv", n=5)
    with av.open(str(tmp_path / "clip.mkv")) as container:
        for frame in container.decode(video=0):
            diff = np.abs(_grey(frame).astype(int) - frame.to_ndarray(format="gray").astype(int))
            assert diff.max() <= 1, "the Y plane, range-stretched, is FFmpeg's grey image"


def test_truncated_video_yields_fewer_frames_without_crashing(tmp_path):
    # mkv is streamable, like a recording cut off mid-write; an mp4 without its index is unreadable instead
    path = tmp_path / "clip.mkv"
    write_video(path, n=40)
    raw = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(raw[: int(len(raw) * 0.6)])
    src = VideoFileSource(cut, Preprocess())
    frames = list(src)
    assert 0 < len(frames) < 40
    assert src.total is not None  # from the header, so a progress bar still works


def test_corrupted_video_skips_damage_and_goes_on(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, n=40)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    src = VideoFileSource(bad, Preprocess())
    frames = list(src)
    assert 0 < len(frames) <= 40
    assert frames[-1].index == len(frames) - 1, "decoding should go on past the damage"
    assert src.bad_frames > 0 or len(frames) < 40, "damage should show up as skipped or missing frames"


def test_video_errors_are_one_line_source_errors(tmp_path):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n" * 50)
    cases = {
        str(not_video): "not a readable video",
        str(tmp_path / "missing.mp4"): "not found",
        str(tmp_path): "directory",
        "nonsense:spec": "unknown source",
    }
    for spec, message in cases.items():
        with pytest.raises(SourceError, match=message) as info:
            open_source(spec, Preprocess())
        assert "\n" not in str(info.value)


def test_video_without_video_stream_is_rejected(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(SourceError, match="no video stream"):
        open_source(str(path), Preprocess())


@pytest.mark.skipif(not os.path.exists(VTEST_AVI), reason=f"{VTEST_AVI} not installed (opencv-doc)")
def test_real_video_sample_decodes():
    with open_source(VTEST_AVI, Preprocess()) as src:
        assert src.total and src.total > 100
        frames = [f for f, _ in zip(src, range(30))]
    assert len(frames) == 30
    assert all(f.pixels.shape == (1, 28, 28) for f in frames)
    assert frames[0].pixels.std() > 0.02, "a real scene is not flat"


# --- IDX datasets --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_load_idx_round_trips(tmp_path, gz):
    images, labels = make_idx_dir(tmp_path, gz=gz)
    ext = ".gz" if gz else ""
    got_images, got_labels = load_idx(
        tmp_path / f"train-images-idx3-ubyte{ext}", tmp_path / f"train-labels-idx1-ubyte{ext}"
    )
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_idx_source_epochs_and_shuffle(tmp_path):
    images, labels = make_idx_dir(tmp_path, n=12, prefix="t10k", gz=True)
    pre = Preprocess(size=(5, 7), scale=1.0)
    src = open_source(f"idx:{tmp_path}:test", pre, seed=4, epochs=3)
    assert (src.total, src.num_classes, src.live) == (36, 3, False)
    frames = list(src)
    assert len(frames) == 36
    pixel_keys = [f.pixels.tobytes() for f in frames]
    epochs = [pixel_keys[i * 12 : (i + 1) * 12] for i in range(3)]
    file_order = [pre(im).tobytes() for im in images]
    for epoch in epochs:
        assert sorted(epoch) == sorted(file_order), "each epoch shows every image once"
    assert epochs[0] != file_order and epochs[0] != epochs[1], "shuffled, with a new order each epoch"
    by_pixels = {pre(im).tobytes(): int(lab) for im, lab in zip(images, labels)}
    assert all(by_pixels[f.pixels.tobytes()] == f.label for f in frames), "labels travel with their images"
    again = [f.pixels.tobytes() for f in open_source(f"idx:{tmp_path}:test", pre, seed=4, epochs=3)]
    assert again == pixel_keys, "same seed, same order"
    in_order = [f.pixels.tobytes() for f in open_source(f"idx:{tmp_path}:test", pre, shuffle=False)]
    assert in_order == file_order


def test_idx_rejects_bad_files(tmp_path):
    make_idx_dir(tmp_path, n=6)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(SourceError, match="magic"):
        open_source(f"idx:{tmp_path}", Preprocess())
    make_idx_dir(tmp_path, n=6)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(SourceError, match="6 images but 5 labels"):
        open_source(f"idx:{tmp_path}", Preprocess())
    with pytest.raises(SourceError, match="apt-get install dataset-fashion-mnist"):
        open_source(f"idx:{tmp_path}:test", Preprocess())


def test_dataset_arrays_match_the_stream(tmp_path):
    images, labels = make_idx_dir(tmp_path, n=8, h=28, w=28)
    x, y = dataset_arrays(f"idx:{tmp_path}", Preprocess())
    assert x.shape == (8, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_array_equal(y, labels)
    stream = list(IdxSource(images, labels, Preprocess(), shuffle=False))
    np.testing.assert_allclose(x, np.stack([f.pixels for f in stream]), rtol=1e-6)
    xs, ys = dataset_arrays("synthetic:50", Preprocess(size=(16, 16)))
    assert xs.shape == (50, 1, 16, 16) and set(ys.tolist()) <= {0, 1, 2, 3}


@pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST_DIR), reason="fashion-mnist not installed (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_test_split():
    with open_source("fashion-mnist:test", Preprocess()) as src:
        assert (src.total, src.num_classes, src.shape) == (10000, 10, (1, 28, 28))
        frames = list(src)
    assert len(frames) == 10000
    assert np.bincount([f.label for f in frames], minlength=10).tolist() == [1000] * 10
    x, y = dataset_arrays("fashion-mnist:test", Preprocess())
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert 0.2 < float(x.mean()) < 0.4  # mostly dark background, bright garments


# --- camera (fake capture) -----------------------------------------------------------------------


def test_camera_latest_frame_wins_and_drops_are_counted():
    fake = FakeCapture([bgr(10 * i) for i in range(10)], hold_at=10)
    src = CameraSource(0, Preprocess(size=(4, 6), scale=1.0), capture_factory=lambda target: fake)
    assert src.live and src.total is None and src.num_classes is None and src.name == "webcam:0"
    assert fake.holding.wait(WAIT_S), "the reader thread should have read all ten frames"
    frames = iter(src)
    first = next(frames)
    assert np.all(first.pixels == 90), "the newest frame, not the oldest"
    assert src.dropped == 9
    fake.resume.set()  # the next read reports end of stream
    assert list(frames) == []
    src.close()
    assert fake.released.wait(WAIT_S)


def test_camera_close_stops_an_endless_stream():
    fake = FakeCapture(endless=True)
    src = CameraSource("rtsp://camera.invalid/stream", Preprocess(), capture_factory=lambda target: fake)
    frames = iter(src)
    got = [next(frames) for _ in range(3)]
    assert [f.index for f in got] == [0, 1, 2]
    assert got[0].t_src <= got[1].t_src <= got[2].t_src
    src.close()
    assert fake.released.wait(WAIT_S), "close() should stop the reader, which releases the capture"
    assert list(frames) == []


def test_camera_close_does_not_hang_on_a_blocked_read():
    fake = FakeCapture([bgr(1)], hold_at=0)
    src = CameraSource(1, Preprocess(), capture_factory=lambda target: fake, join_timeout_s=0.05)
    assert fake.holding.wait(WAIT_S)
    src.close()  # returns after join_timeout_s although read() is still blocked
    assert not fake.released.is_set(), "never release a capture another thread is reading"
    fake.resume.set()
    assert fake.released.wait(WAIT_S), "the reader releases it once read() returns"


def test_camera_that_cannot_open_raises():
    fake = FakeCapture(opened=False)
    with pytest.raises(SourceError, match="cannot open webcam:3"):
        CameraSource(3, Preprocess(), capture_factory=lambda target: fake)
    assert fake.released.is_set()
    with pytest.raises(SourceError, match="cannot open"):
        open_source("webcam:97", Preprocess())  # real OpenCV; no such device here
