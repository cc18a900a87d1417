"""nasalloc.simulator: schedulers (HyperBand, ASHA, BOHB), the SimPy engine, cluster placement,
time model, sweep and report. This package never imports torch: planning works on a laptop."""
