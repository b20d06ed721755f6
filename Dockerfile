# ffstream: one image for every worker; the command picks the worker (`ffstream worker layer --index 1`).
#
#   docker build -t ffstream:cpu .                                   # CPU torch (default)
#   docker build -t ffstream:cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .   # CUDA torch; its wheels bundle the CUDA
#                                                                            # runtime, the host's driver comes in
#                                                                            # through the NVIDIA container toolkit
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .   # or on a CUDA base image
#   deploy/compose-test-image.sh                                     # no registry: a debootstrapped Debian base
#                                                                    # (ffstream-base:bookworm), torch from the disk
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    FFSTREAM_HEALTH_DIR=/tmp/ffstream-health \
    FFSTREAM_TOPOLOGY_BIND_HOST=*

# A CUDA base image has no Python of its own; python:*-slim has one. OpenCV (headless) needs libglib for webcams/RTSP.
RUN set -eux; \
    apt-get update; \
    if ! command -v python3 >/dev/null; then apt-get install -y --no-install-recommends python3 python3-venv python3-pip; fi; \
    apt-get install -y --no-install-recommends libglib2.0-0; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/venv

# torch first, from the chosen index: a plain `pip install torch` would pull a multi-GB CUDA build. Wheels in the
# context's wheels/ (deploy/compose-test-image.sh puts the CPU wheel there where no torch index is reachable) are
# preferred; the README is only the anchor that lets the folder be missing.
COPY README.md wheel[s] /tmp/wheels/
RUN pip install --find-links /tmp/wheels --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ffstream ./ffstream
RUN pip install .

# Not root: the worker needs no privileges. The video group reads /dev/video0 (webcam profile).
RUN set -eux; \
    groupadd --system --gid 10001 ffstream; \
    useradd --system --uid 10001 --gid ffstream --groups video --home-dir /var/lib/ffstream --create-home --shell /usr/sbin/nologin ffstream; \
    mkdir -p /var/lib/ffstream/checkpoints /tmp/ffstream-health; \
    chown -R ffstream:ffstream /var/lib/ffstream /tmp/ffstream-health
USER 10001:10001
VOLUME ["/var/lib/ffstream/checkpoints"]

ENTRYPOINT ["ffstream"]
CMD ["--help"]
