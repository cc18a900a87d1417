"""nasalloc.profiler: DDP timing worker, launchers (local, SLURM) and the scaling-model fit.
torch is imported lazily, only in the processes that train."""
