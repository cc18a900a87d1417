"""A warm-up launch before the first measured job: ``python -m nasalloc.profiler.warm SPEC``.

The first process after a while pays cold imports (torch, the workload, its data read from
disk into the page cache): on the project's 2-core machine the first measured start-up came out
8.0 s against 3-4 s for every later launch, and a validation run launches dozens of segments on
warm caches. This module imports what a trial imports and builds the workload's data, then
exits; the profiler runs it once, unmeasured, before the first measured job.
"""

from __future__ import annotations

import json
import sys


def main(argv=None) -> int:
    import importlib

    argv = sys.argv[1:] if argv is None else argv
    importlib.import_module("torch")  # the import is the point

    from nasalloc.workloads.registry import load_workload

    workload = load_workload(argv[0], **(json.loads(argv[1]) if len(argv) > 1 else {}))
    if hasattr(workload, "splits"):
        workload.splits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
