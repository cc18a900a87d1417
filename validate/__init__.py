"""nasalloc.validate: executors (local, SLURM), the wall-clock runner that drives the same
scheduler objects as the simulator, and the predicted-vs-measured comparison."""
