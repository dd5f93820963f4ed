#!/usr/bin/env bash
# Download, here, the wheels a GPU machine lacks for scripts/device_check.sh (Python 3.12, manylinux x86-64):
# that machine has torch, numpy, scipy, matplotlib, tensorboard and pytest, but no gymnasium or POT, and it
# cannot reach a package index. The wheels go to .whl/ (ignored by git; carry it to the machine).
#
#   scripts/fetch_device_wheels.sh            # then run scripts/device_check.sh there with .whl carried
#   scripts/fetch_device_wheels.sh --dry-run  # list what would be downloaded
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(gymnasium==1.4.0 farama-notifications==0.0.6 pot==0.9.7.post1)  # cloudpickle: in the image
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
args=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl)
for p in "${PLATFORMS[@]}"; do args+=(--platform "$p"); done
if [ "${1:-}" = "--dry-run" ]; then
  echo "would download into .whl/: ${WHEELS[*]}"
  echo "python3 -m pip download ${args[*]} <each wheel>"
  exit 0
fi
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for w in "${WHEELS[@]}"; do
  python3 -m pip download -q "${args[@]}" "$w"
done
ls -l .whl
