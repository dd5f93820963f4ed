#!/usr/bin/env bash
# Install check: build the wheel, install it into a fresh virtual environment, use it from another
# directory (import, __version__, console scripts, a 2-iteration training), then install PyPI's `envs` and
# `openai-agents` (which ship top-level `envs/` and `agents/` packages) beside it and show that both
# theirs and ours still import, and that uninstalling `envs` leaves diffsampler intact.
#
#   scripts/check_install.sh [WORK_DIR]     # default: a new temporary directory
#
# The venv sees the system's site-packages (torch, gymnasium, ...: --system-site-packages), so only the
# wheel itself and the two PyPI packages are installed. Needs network access to PyPI for those two and
# for the build backend (setuptools >= 77). Exit status 0 when every check passes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$(mktemp -d -t diffsampler-install-XXXXXX)}
PYTHON=${PYTHON:-python}
mkdir -p "$WORK/elsewhere"
export OMP_NUM_THREADS=1
step() { printf '\n== %s\n' "$*"; }

step "build the wheel from $ROOT"
"$PYTHON" -m pip wheel "$ROOT" --no-deps -w "$WORK/wheels" -q
WHEEL=$(ls "$WORK"/wheels/diffsampler-*.whl)
echo "$WHEEL"
top=$("$PYTHON" -c "import sys, zipfile; print(sorted({n.split('/')[0] for n in zipfile.ZipFile(sys.argv[1]).namelist()}))" "$WHEEL")
echo "top-level entries: $top"
case "$top" in *"'envs'"* | *"'agents'"* | *"'buffers'"*) echo "FAIL: the wheel claims a generic top-level name"; exit 1 ;; esac

step "a fresh venv, the wheel installed, used from $WORK/elsewhere"
"$PYTHON" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --no-deps -q "$WHEEL"
cd "$WORK/elsewhere"
"$VPY" - <<'EOF'
import importlib.metadata as md
import diffsampler
from diffsampler import envs, agents, buffers  # noqa: F401
assert "/venv/" in diffsampler.__file__, f"imported {diffsampler.__file__}, not the installed wheel"
assert diffsampler.__version__ == md.version("diffsampler"), (diffsampler.__version__, md.version("diffsampler"))
print("import diffsampler:", diffsampler.__version__, diffsampler.__file__)
print("license:", md.metadata("diffsampler").get("License-Expression"))
EOF
"$WORK/venv/bin/diffsampler-train" --help | head -4
"$WORK/venv/bin/diffsampler-benchmark" --help | head -2
set +e
"$WORK/venv/bin/diffsampler-train" --iteratons 3
rc=$?
set -e
[ "$rc" = 2 ] || { echo "FAIL: a misspelt option gave exit status $rc"; exit 1; }
"$WORK/venv/bin/diffsampler-train" --preset tb --iterations 2 --num-steps 5 --batch-size 16 --eval-samples 16 \
  --figures false --no-progress --run-dir "$WORK/elsewhere/run" | tail -3

step "PyPI's envs and openai-agents beside it"
"$VPY" -m pip install -q envs openai-agents
"$VPY" - <<'EOF'
import importlib.metadata as md
import agents  # openai-agents
import envs  # PyPI's envs
import diffsampler.agents.training  # noqa: F401
import diffsampler.envs
from diffsampler.envs import make_mdp

assert "site-packages/agents" in agents.__file__ and hasattr(agents, "Agent"), agents.__file__
assert "site-packages/envs" in envs.__file__, envs.__file__
assert diffsampler.envs.__file__ != envs.__file__
mdp = make_mdp("DiffSampler-GMM25-v0")
print("theirs:", agents.__name__, md.version("openai-agents"), agents.__file__, "|", envs.__name__, md.version("envs"), envs.__file__)
print("ours:  ", diffsampler.envs.__file__, mdp)
EOF

step "pip uninstall envs leaves diffsampler intact"
"$VPY" -m pip uninstall -y -q envs
"$VPY" -c "import diffsampler.envs, diffsampler.agents.runs; print('diffsampler.envs still imports:', diffsampler.envs.__file__)"
"$WORK/venv/bin/diffsampler-train" --list-presets | head -2

step "all install checks passed ($WORK)"
