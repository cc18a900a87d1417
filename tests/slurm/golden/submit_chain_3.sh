#!/bin/bash
# Submit results/validate/validate.sbatch as a chain of 3 SLURM job(s) (written by `nasalloc sbatch`).
# The plan predicts 1.90 allocation(s).
# Each job starts when the previous one has ended, whatever its state (afterany), and
# resumes the run; a job that finds the search finished exits at once.
set -euo pipefail
jid=$(sbatch --parsable results/validate/validate.sbatch)
echo "submitted job $jid (1 of 3)"
for i in $(seq 2 3); do
  jid=$(sbatch --parsable --dependency=afterany:"${jid%%;*}" results/validate/validate.sbatch)
  echo "submitted job $jid ($i of 3, after the previous one)"
done
