"""Regenerate the shipped digits learning-curve benchmark (nasalloc/data/digits_curves.csv.gz).

    python bench/make_digits_curves.py --configs 250 --epochs 81 --seed 0 \
        --out nasalloc/data/digits_curves.csv.gz --jobs 1

Same flags as ``python -m nasalloc.workloads.benchmark``; see nasalloc/data/digits_curves.md
for how the shipped file was made.
"""

from nasalloc.workloads.benchmark import main

if __name__ == "__main__":
    main()
