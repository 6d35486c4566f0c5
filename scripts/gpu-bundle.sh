#!/usr/bin/env bash
# Packs built binaries for the GPU machine (which has CUDA 13 with cuBLAS and the NVIDIA driver,
# but none of the Debian libraries) into .bundle/ at the repository root (gitignored):
#   .bundle/bin/   the binaries, stripped
#   .bundle/lib/   the shared libraries they need from this machine (ldd), stripped
#   .bundle/run.sh runs a command with those on PATH / LD_LIBRARY_PATH
#
# Usage: scripts/gpu-bundle.sh BUILD_DIR [BINARY_NAME...]
#   With no names: every test binary in BUILD_DIR/tests, plus engram and engramd when built.
# Then, on the device: .bundle/run.sh gpu_test   (the run tool carries .bundle: carry=[".bundle"])
#
# Left out of lib/: the C library family (libc, libm, libdl, libpthread, librt, ld-linux),
# the driver (libcuda, libnvidia-*), and cuBLAS (libcublas, libcublasLt: 600 MB, over the
# transfer limit; run.sh finds the machine's own, same major version). libcudart (small, the
# version we built against), libstdc++ and libgcc_s travel.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [BINARY_NAME...]" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
shift
out="$repo/.bundle"

bins=()
if [ $# -gt 0 ]; then
  for name in "$@"; do
    found=$(find "$build" -type f -executable -name "$name" -not -path '*/CMakeFiles/*' | head -1)
    if [ -z "$found" ]; then
      echo "gpu-bundle: $name not found under $build" >&2
      exit 1
    fi
    bins+=("$found")
  done
else
  while IFS= read -r f; do bins+=("$f"); done < <(
    find "$build/tests" "$build/tools" "$build/src" -type f -executable \
      \( -name '*_test' -o -name engram -o -name engramd \) -not -path '*/CMakeFiles/*' \
      2>/dev/null | sort)
fi
if [ ${#bins[@]} -eq 0 ]; then
  echo "gpu-bundle: no binaries found under $build" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
skip='^(linux-vdso|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|ld-linux|libcuda\.so|libnvidia-|libcublas\.so|libcublasLt\.so)'
for b in "${bins[@]}"; do
  cp "$b" "$out/bin/"
  strip --strip-unneeded "$out/bin/$(basename "$b")" 2>/dev/null || true
  # "name => /path (addr)" lines; a missing library is an error here, not on the device.
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ "$name" =~ $skip ]]; then continue; fi
    if [ "$path" = "not" ]; then
      echo "gpu-bundle: $(basename "$b") needs $name, which is not found here" >&2
      exit 1
    fi
    if [ ! -e "$out/lib/$name" ]; then
      cp -L "$path" "$out/lib/$name"
      chmod u+w "$out/lib/$name"
      strip --strip-unneeded "$out/lib/$name" 2>/dev/null || true
    fi
  done < <(ldd "$b")
done

cat > "$out/bundle.env" <<ENV
# Where the binaries were built: tests have these paths compiled in (test data, the CLI).
ENGRAM_SRC_DIR=$repo
ENGRAM_BUILD_DIR=$build
ENV

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs a command with the bundle's binaries and libraries: .bundle/run.sh gpu_test [args...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
source "$here/bundle.env"

# cuBLAS comes from this machine: the first directory that holds libcublasLt.so.13.
cublas_dir=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib \
         /usr/lib/x86_64-linux-gnu; do
  if [ -e "$d/libcublasLt.so.13" ]; then cublas_dir=$d; break; fi
done
if [ -z "$cublas_dir" ]; then
  found=$(ldconfig -p 2>/dev/null | awk '/libcublasLt\.so\.13 /{print $NF; exit}')
  if [ -z "$found" ]; then
    found=$(find /usr /opt -name 'libcublasLt.so.13' 2>/dev/null | head -1 || true)
  fi
  [ -n "$found" ] && cublas_dir=$(dirname "$found")
fi
if [ -z "$cublas_dir" ]; then
  echo "run.sh: libcublasLt.so.13 not found on this machine" >&2
else
  # libcublas.so.13 may sit beside it or elsewhere (pip wheels split them).
  other=""
  if [ ! -e "$cublas_dir/libcublas.so.13" ]; then
    other=$(find /usr /opt -name 'libcublas.so.13' 2>/dev/null | head -1 || true)
    [ -n "$other" ] && other=":$(dirname "$other")"
  fi
  cublas_dir="$cublas_dir$other"
fi

# Tests read test data and the CLI at the paths they were built with: make those resolve.
if [ ! -e "$ENGRAM_SRC_DIR" ] && [ "$ENGRAM_SRC_DIR" != "$repo" ]; then
  mkdir -p "$(dirname "$ENGRAM_SRC_DIR")" && ln -s "$repo" "$ENGRAM_SRC_DIR" 2>/dev/null ||
    echo "run.sh: could not link $ENGRAM_SRC_DIR to $repo (tests may not find tests/data)" >&2
fi
if [ -x "$here/bin/engram" ] && [ ! -e "$ENGRAM_BUILD_DIR/tools/engram" ]; then
  mkdir -p "$ENGRAM_BUILD_DIR/tools" 2>/dev/null && ln -s "$here/bin/engram" \
    "$ENGRAM_BUILD_DIR/tools/engram" 2>/dev/null || true
fi

export LD_LIBRARY_PATH="$here/lib${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$here/bin:$PATH"
exec "$@"
RUN
chmod +x "$out/run.sh"

echo "gpu-bundle: $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries," \
  "$(du -sh "$out" | cut -f1) in $out"
ls "$out/bin" "$out/lib"
