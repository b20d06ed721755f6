"""The check `ffstream run` makes on its source before torch is imported (torch takes seconds): a missing webcam.

Light on purpose: only os and sys, so the console script (entry.py) can call it first; importing it runs the
sources package's __init__ (numpy, OpenCV, PyAV), never torch.
"""

from __future__ import annotations

import os
import sys


def missing_webcam(spec: str) -> str | None:
    """The one-line error for webcam[:N] when /dev/videoN does not exist (Linux); None when it exists, or cannot tell.

    Opening the camera is left to the source worker, the one process that uses it; this catches the common
    mistake at once. Specs that are not a plain webcam[:N] are left to the full parser.
    """
    if spec != "webcam" and not spec.startswith("webcam:"):
        return None
    number = spec.partition(":")[2] or "0"
    if not number.isdigit() or not sys.platform.startswith("linux"):
        return None
    device = f"/dev/video{int(number)}"
    return None if os.path.exists(device) else f"cannot open {spec}: no such device {device}"
