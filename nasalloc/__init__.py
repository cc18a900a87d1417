"""nasalloc: choose how many GPUs each trial of an early-stopping NAS/HPO search gets.

The loop is ``profile`` (measure DDP scaling) -> ``simulate`` (replay HyperBand/ASHA/BOHB in
SimPy under every split of a GPU budget) -> ``validate`` (run the best and worst splits for
real with the same scheduler objects). See README.md.
"""

__version__ = "0.2.0"  # 0.2: HyperBand/BOHB decide as Ray Tune 2.60 / HpBandSter 0.7.4
