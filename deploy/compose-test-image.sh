#!/usr/bin/env bash
# Build ffstream's image where no image registry can be reached (CI, air-gapped hosts).
#
#   deploy/compose-test-image.sh            # makes ffstream-base:bookworm (once), then ffstream:cpu
#
# 1. The base image: Debian bookworm from Debian's own packages (debootstrap from the host's apt mirror), with
#    the host's CA bundle (so pip and apt inside the build trust what the host trusts), `docker import`ed as
#    $FFSTREAM_BASE_IMAGE. Skipped when `docker image inspect` finds it: it is made once per machine.
# 2. The project's image: the Dockerfile, built with no pull and host networking (package registries are reached
#    the way the host reaches them). Torch wheels found on this machine's disk (/opt/wheels, or
#    $FFSTREAM_TORCH_WHEELS) go into the build context's wheels/ so the image gets the CPU build, not CUDA.
#    Docker's layer cache makes a rebuild with unchanged sources take seconds.
#
# Exit codes: 0 built; 3 the docker infrastructure is missing (no docker, no daemon, no debootstrap, the base
# image cannot be made) so callers can skip; anything else: our build failed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE_IMAGE="${FFSTREAM_BASE_IMAGE:-ffstream-base:bookworm}"
IMAGE="${FFSTREAM_IMAGE:-ffstream:cpu}"
CACHE="${FFSTREAM_DOCKER_CACHE:-/var/cache/ffstream-docker}"   # the staged build context (kept: it is small)
WHEELS="${FFSTREAM_TORCH_WHEELS:-/opt/wheels}"
TORCH_VERSION="${FFSTREAM_TORCH_VERSION:-2.13.0}"

infra() { echo "compose-test-image: $*" >&2; exit 3; }
log() { echo "compose-test-image: $*" >&2; }

command -v docker >/dev/null 2>&1 || infra "no docker binary (apt-get install docker.io)"
docker info >/dev/null 2>&1 || infra "docker daemon not reachable (start dockerd as root)"

# --- 1. the base image --------------------------------------------------------------------------------------
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE: cached"
else
  command -v debootstrap >/dev/null 2>&1 || infra "no debootstrap to make $BASE_IMAGE (apt-get install debootstrap)"
  # The mirror apt already uses (deb822 "URIs:" or one-line "deb URL"), so debootstrap goes where apt can go.
  MIRROR="$(grep -rhoE '^(URIs:[[:space:]]*|deb[[:space:]]+)https?://[^[:space:]]*/debian/?([[:space:]]|$)' \
              /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | awk '{print $NF}' || true)"
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
  ROOTFS="$(mktemp -d /var/tmp/ffstream-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOTFS"' EXIT
  log "base image $BASE_IMAGE: debootstrap bookworm from $MIRROR"
  t0=$(date +%s)
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
    || { tail -n 5 "$ROOTFS.log" >&2; infra "debootstrap failed (log: $ROOTFS.log)"; }
  # The host's CA bundle: a proxy or mirror the host trusts is then trusted inside the build too.
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"
  cp /etc/apt/sources.list "$ROOTFS/etc/apt/sources.list" 2>/dev/null || true
  cp -r /etc/apt/sources.list.d/. "$ROOTFS/etc/apt/sources.list.d/" 2>/dev/null || true
  rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
  tar -C "$ROOTFS" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - "$BASE_IMAGE" >/dev/null || infra "docker import of $BASE_IMAGE failed"
  rm -rf "$ROOTFS" "$ROOTFS.log"; trap - EXIT
  log "base image $BASE_IMAGE: made in $(( $(date +%s) - t0 )) s"
fi

# --- 2. the project's image ---------------------------------------------------------------------------------
# A staged context (what .dockerignore lets in, plus wheels/), so no wheel is ever copied into the worktree.
mkdir -p "$CACHE/context/wheels"
cp "$ROOT/Dockerfile" "$ROOT/pyproject.toml" "$ROOT/README.md" "$CACHE/context/"
rm -rf "$CACHE/context/ffstream"
(cd "$ROOT" && tar -c --exclude='__pycache__' --exclude='*.pyc' ffstream) | tar -C "$CACHE/context" -x
TORCH_WHEEL="$(ls "$WHEELS"/torch-"$TORCH_VERSION"+cpu-*.whl 2>/dev/null | head -n1 || true)"
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [ -n "$TORCH_WHEEL" ]; then
  # Same name, same bytes: docker's COPY checksum stays put and the torch layer stays cached.
  cmp -s "$TORCH_WHEEL" "$CACHE/context/wheels/$(basename "$TORCH_WHEEL")" || cp "$TORCH_WHEEL" "$CACHE/context/wheels/"
  # Torch's own dependencies (filelock, sympy, ...) come from PyPI: the CPU wheel's pin ("+cpu") wins over PyPI's.
  BUILD_ARGS+=(--build-arg "TORCH_VERSION=$TORCH_VERSION+cpu" --build-arg "TORCH_INDEX_URL=https://pypi.org/simple")
  log "torch: $(basename "$TORCH_WHEEL") from the local disk"
fi
log "building $IMAGE on $BASE_IMAGE"
t0=$(date +%s)
docker build --pull=false --network host -t "$IMAGE" "${BUILD_ARGS[@]}" "$CACHE/context" >"$CACHE/build.log" 2>&1 \
  || { tail -n 20 "$CACHE/build.log" >&2; echo "compose-test-image: docker build failed (log: $CACHE/build.log)" >&2; exit 1; }
log "image $IMAGE: built in $(( $(date +%s) - t0 )) s"
