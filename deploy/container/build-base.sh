#!/usr/bin/env bash
# Builds deploy/container/Containerfile with podman on a machine that cannot pull images:
# makes the Debian bookworm base locally with mmdebstrap (from the Debian mirror apt already
# uses) and tags it as the two names the Containerfile starts FROM, then builds with
# --pull=never.
#   sudo deploy/container/build-base.sh [--base-only] [--tag 0.1.0] [--mirror URL]
#       [--runtime runc] [--ulimit nofile=20000:20000 ...]
# --runtime goes to podman, --ulimit (repeatable) to `podman build`. A VM that mounts
# cgroups in hybrid mode needs `--runtime runc` (crun refuses hybrid mode), and one without
# CAP_SYS_RESOURCE needs --ulimit values at or under its own hard limits (podman's defaults,
# nofile 1048576, fail there with "setrlimit ... Operation not permitted").
# Needs: apt install mmdebstrap podman (root, or a rootless podman with subuids).
# The CUDA image (Containerfile.cuda) starts from NVIDIA's images, which cannot be made this
# way: mirror them (podman pull on a connected machine, podman save | podman load here).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
tag="0.1.0"
mirror="http://deb.debian.org/debian"
base_only=0
global_args=()  # podman's own options (--runtime)
build_args=()   # podman build's (--ulimit)
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --base-only) base_only=1; shift ;;
    --runtime) global_args+=(--runtime "$2"); shift 2 ;;
    --ulimit) build_args+=(--ulimit "$2"); shift 2 ;;
    *) echo "build-base.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || { echo "build-base.sh: $tool not found (apt install $tool)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# minbase: essential packages and apt, about what debian:bookworm-slim holds. The build
# stage installs its compilers on top, the runtime stage its libraries.
mmdebstrap --variant=minbase --include=ca-certificates --aptopt='APT::Install-Recommends "false"' \
  bookworm "$work/bookworm.tar" "$mirror"
podman import --change 'CMD ["/bin/bash"]' "$work/bookworm.tar" localhost/engramd-base:bookworm
podman tag localhost/engramd-base:bookworm docker.io/library/debian:bookworm
podman tag localhost/engramd-base:bookworm docker.io/library/debian:bookworm-slim
echo "build-base.sh: base image localhost/engramd-base:bookworm (also debian:bookworm, debian:bookworm-slim)"
[ "$base_only" -eq 1 ] && exit 0

# --format docker keeps the HEALTHCHECK (the OCI format has none).
# --network host: the build stage's apt-get reaches the mirror as the host does.
podman ${global_args[@]+"${global_args[@]}"} build --pull=never --format docker --network host \
  ${build_args[@]+"${build_args[@]}"} \
  -f "$repo/deploy/container/Containerfile" \
  -t "localhost/engramd:$tag" "$repo"
echo "build-base.sh: built localhost/engramd:$tag"
