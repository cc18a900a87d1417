"""RASDA's own resource decisions, for tests/simulator/test_rasda_stream.py.

RASDA (Aach et al., FGCS 2025; github.com/olympiquemarcel/rasda) is a Ray Tune
``ResourceChangingScheduler`` whose ``resource_allocation_function`` is
``res_allocate.create_resource_allocation(base_cpus, base_gpus, num_workers, scaling_factor,
min_t, max_t)``: after every result it returns the trial's new placement group (a list of
bundles) or None (keep the current one). This script imports that function from a checkout of
the RASDA repository (nothing of it is copied here), calls it for every training iteration of
a grid of settings, and writes the GPUs each answer gives (None: unchanged) with the RASDA
commit and Ray version:

    git clone https://github.com/olympiquemarcel/rasda /tmp/rasda   # commit 7977a5c5 was used
    .peers/bin/python bench/peers/make_rasda_stream.py --rasda /tmp/rasda \\
        --out tests/fixtures/peer_streams/rasda-doubling.json

(.peers is the environment of bench/peers/README.md: Ray Tune 2.60.0; res_allocate imports
ray.tune.) The function reads only ``result["training_iteration"]``; the trial and the
controller it is given are used for a log line only, so a stand-in trial name is passed.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

#: (min_t = ASHA's grace period, max_t, scaling_factor, num_workers, base_gpus): ASHA's reduction
#: factor equal to the scaling factor (as RASDA's README says to set it) and not (s != eta).
GRID = [(1, 9, 3, 1, 1), (1, 27, 3, 1, 1), (1, 81, 3, 2, 1), (1, 16, 2, 1, 1), (1, 16, 2, 4, 1),
        (1, 100, 2, 1, 1), (2, 64, 2, 2, 1), (3, 81, 3, 1, 1), (1, 81, 2, 1, 1), (4, 128, 2, 4, 1),
        (1, 32, 2, 1, 2)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rasda", required=True, help="a checkout of github.com/olympiquemarcel/rasda")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.rasda).resolve()))
    logging.disable(logging.WARNING)  # RASDA logs every new placement group as a warning
    import ray
    from res_allocate import create_resource_allocation

    commit = subprocess.run(["git", "-C", args.rasda, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown (not a git checkout)"
    cases = []
    for min_t, max_t, factor, workers, base_gpus in GRID:
        decide = create_resource_allocation(base_cpus=1, base_gpus=base_gpus, num_workers=workers,
                                            scaling_factor=factor, min_t=min_t, max_t=max_t)
        answers = []
        for iteration in range(1, max_t + 1):
            pgf = decide(None, "trial_0", {"training_iteration": iteration}, None)
            answers.append(None if pgf is None else int(sum(b.get("GPU", 0) for b in pgf.bundles)))
        cases.append({"min_t": min_t, "max_t": max_t, "scaling_factor": factor, "num_workers": workers,
                      "base_gpus": base_gpus, "start_gpus": workers * base_gpus,
                      "gpus_after_iteration": answers})
    out = {"peer": "rasda res_allocate.successive_resource_doubling", "rasda_commit": commit,
           "ray": ray.__version__, "python": sys.version.split()[0],
           "meaning": "gpus_after_iteration[i]: the GPUs RASDA gives the trial after its result of training "
                      "iteration i+1 (None: its resources are not changed)", "cases": cases}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {args.out} (rasda {commit[:8]}, ray {ray.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
