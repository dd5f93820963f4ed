#!/usr/bin/env python
"""Our ms/iteration beside the reference implementation's, interleaved in one sitting, as ratios.

The reference is the paper's code (GFNOrg/gfn-diffusion, ``energy_sampling/``), timed by the harness in
``../shared/refbench/ref_iter_time.py`` (its own ``train_step``; see that folder's README for exporting the
code). Each round times every cell once for us (``scripts/bench_speed.py``'s ``measure``, in a subprocess)
and once for the reference (the harness, in a subprocess), so both sides see the same machine state;
absolute times on shared machines swing several-fold from minute to minute, ratios taken this way do not.

    python scripts/compare_reference.py --ref-dir /path/to/gfn-diffusion/energy_sampling
    python scripts/compare_reference.py --ref-dir DIR --cells tb:manywell32,tb-expl-lp:manywell32 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "refbench" / "ref_iter_time.py"
# our preset -> the harness's mode; our short target name -> (the harness's energy, its --dim)
MODES = {"tb": "tb", "fl-subtb": "subtb", "tb-expl-lp": "tb+lp", "pis": "pis", "tb-expl-ls": "tb+expl+ls"}
ENERGIES = {
    "25gmm": ("25gmm", None),
    "funnel": ("hard_funnel", None),
    "manywell8": ("many_well", 8),
    "manywell32": ("many_well", 32),
    "manywell128": ("many_well", 128),
    "manywell512": ("many_well", 512),
}
DEFAULT_CELLS = [f"{p}:{t}" for p in ("tb", "fl-subtb", "tb-expl-lp", "pis") for t in ENERGIES] + ["ls:manywell32"]


def ours(preset: str, target: str, iterations: int, threads: int) -> float:
    """Our median ms/iteration (bench_speed's ``measure``); for ``ls``, one local-search call with full
    buffers (``measure_local_search``)."""
    if preset == "ls":
        call, key = f"measure_local_search({target!r}, 'cpu', {threads})", "ls_call_ms"
    else:
        call, key = f"measure({preset!r}, {target!r}, {iterations}, 3, 'cpu', {threads})", "ms"
    code = "import json, sys; sys.path.insert(0, 'scripts'); import bench_speed; "
    code += f"print('JSON', json.dumps(bench_speed.{call}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.split("JSON ", 1)[1])[key]


def reference(preset: str, target: str, iterations: int, threads: int, ref_dir: str) -> float:
    """The reference's median ms per ``train_step``; for ``ls``, its local-search call with full buffers."""
    energy, dim = ENERGIES[target]
    cmd = [sys.executable, str(HARNESS), "--energy", energy, "--threads", str(threads)]
    cmd += ["--dim", str(dim)] if dim else []
    if preset == "ls":
        cmd += ["--mode", "tb+expl+ls", "--warmup", "0", "--iters", "2", "--prefill", "600000"]
    else:
        cmd += ["--mode", MODES[preset], "--iters", str(iterations)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "REF_DIR": ref_dir}, check=True)
    record = json.loads(out.stdout.split("JSON ", 1)[1].splitlines()[0])
    if preset == "ls":
        return statistics.median(record["langevin_dynamics_call_ms"])
    return _median_ms(record)


def _median_ms(record: dict) -> float:
    """The harness's median ms per ``train_step`` (its JSON's ``all`` statistics)."""
    if not isinstance(record.get("all"), dict) or "median_ms" not in record["all"]:
        raise ValueError(f"the harness's output has no all.median_ms: {sorted(record)}")
    return record["all"]["median_ms"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-dir", required=True, help="the exported reference energy_sampling/ folder")
    p.add_argument("--cells", default=",".join(DEFAULT_CELLS), help="comma list of preset:target")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write every round's numbers here")
    args = p.parse_args(argv)
    if not HARNESS.is_file():
        p.error(f"the reference harness {HARNESS} is missing")
    if not (Path(args.ref_dir) / "train.py").is_file():
        p.error(f"--ref-dir {args.ref_dir} has no train.py: export the reference's energy_sampling/ there")
    cells = [tuple(c.split(":")) for c in args.cells.split(",")]
    for preset, target in cells:
        if (preset not in MODES and preset != "ls") or target not in ENERGIES:
            p.error(f"unknown cell {preset}:{target}; presets {sorted(MODES)}, targets {sorted(ENERGIES)}")
    rows = {cell: {"ours": [], "reference": []} for cell in cells}
    for r in range(args.rounds):
        for preset, target in cells:
            rows[preset, target]["ours"].append(ours(preset, target, args.iterations, args.threads))
            rows[preset, target]["reference"].append(
                reference(preset, target, args.iterations, args.threads, args.ref_dir)
            )
            o, ref = rows[preset, target]["ours"][-1], rows[preset, target]["reference"][-1]
            print(f"round {r + 1} {preset}:{target}: ours {o:.1f} ms, reference {ref:.1f} ms, ratio {o / ref:.3f}")
    print("\n| preset | target | ours ms | reference ms | ratio per round | ratio of medians |")
    print("|---|---|---|---|---|---|")
    out = []
    for (preset, target), v in rows.items():
        ratios = [o / r for o, r in zip(v["ours"], v["reference"])]
        med = statistics.median(v["ours"]) / statistics.median(v["reference"])
        print(
            f"| {preset} | {target} | {statistics.median(v['ours']):.1f} | {statistics.median(v['reference']):.1f} | "
            f"{', '.join(f'{x:.3f}' for x in ratios)} | {med:.3f} |"
        )
        out.append({"preset": preset, "target": target, **v, "ratios": ratios, "ratio_of_medians": med})
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
