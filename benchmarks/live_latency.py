"""Live latency with the defaults: `ffstream run` on a camera stand-in (MJPEG over HTTP, 15 frames/s), p50/p99
source-to-sink latency of learned frames while the layers learn (issue 19's target: p50 <= 100 ms).

    python benchmarks/live_latency.py --frames 300                       # the defaults a live source gets
    python benchmarks/live_latency.py --frames 300 -- --recipe video-live  # anything after -- goes to ffstream run

Prints one JSON object: latency_p50_ms, latency_p99_ms, frames, per layer updates, camera drops, wall_s.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ffstream.bench.mjpeg import MjpegServer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fps", type=float, default=15.0, help="the camera's frame rate")
    p.add_argument("--frames", type=int, default=300, help="frames the run learns, then stops")
    p.add_argument("--timeout", type=float, default=600, help="seconds before the run is given up")
    p.add_argument("run_args", nargs="*", help="more arguments for ffstream run (after --)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="live-latency-") as tmp, MjpegServer(fps=args.fps) as cam:
        summary = Path(tmp) / "summary.json"
        cmd = [sys.executable, "-m", "ffstream", "run", "--source", cam.url, "--max-frames", str(args.frames), "--no-progress",
               "--http", "none", "--monitor", f"ipc://{tmp}/monitor.pub", "--summary-json", str(summary), *args.run_args]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=args.timeout)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return done.returncode
        s = json.loads(summary.read_text())
    sink = s.get("sink") or {}
    print(json.dumps({"source": "MJPEG over HTTP", "camera_fps": args.fps, "run_args": args.run_args,
                      "latency_p50_ms": sink.get("latency_p50_ms"), "latency_p99_ms": sink.get("latency_p99_ms"),
                      "frames": sink.get("frames"), "updates": [layer.get("updates") for layer in s["layers"]],
                      "camera_dropped": (s.get("source_stats") or {}).get("dropped"), "wall_s": round(time.monotonic() - started, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
