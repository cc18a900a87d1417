"""``nasalloc simulate``: replay HyperBand, ASHA and BOHB in SimPy under every split of a GPU
budget and predict the best one.

Everything the user gives is checked before ``--out`` is created: a bad value ends with one
line naming it and exit status 2, and nothing is written.

Defaults (each printed when used):

* ``--profile``: the embedded default (published ResNet-50 figures on A100, cited);
* ``--curves``: the shipped digits learning-curve benchmark;
* ``--gpus-per-trial``: every power of two up to the budget that places evenly on the nodes,
  plus the fractions 1/k for the co-location counts k the profile measured (none when it
  measured none: under the time-slicing assumption sharing never wins, see ``cluster.py``);
* ``--gpus-per-node``: the profile's, else 4;
* ``--max-epochs``: the curves' length; ``--min-epochs`` 1; ``--eta`` 3;
* ``--brackets``: one full HyperBand iteration (s_max + 1 brackets) for HyperBand and BOHB, and
  ASHA creates as many trials as those brackets start (``--trials N`` gives all three N trials).
"""

from __future__ import annotations

import sys
import time

import click

from nasalloc.options import out_option, quiet_option, seed_option
from nasalloc.errors import UserError

from .labels import duration, split_tick

@click.command("simulate")
@click.option("--budget", type=int, required=True, help="GPUs of the whole search (e.g. 64).")
@click.option("--profile", "profile_path", type=str, default=None,
              help="profile.json from `nasalloc profile` [default: embedded published A100 profile].")
@click.option("--curves", "curves_path", type=str, default=None,
              help="Learning curves: a trace CSV (docs/formats.md) [default: shipped digits benchmark].")
@click.option("--algorithms", default="hyperband,asha,bohb", show_default=True, help="Comma-separated list.")
@click.option("--gpus-per-trial", "gpus_per_trial", default=None,
              help="Splits to compare, e.g. 0.5,1,2,4 (fractions: trials share a GPU) "
                   "[default: powers of two up to the budget, plus 1/k for co-location counts k the profile measured].")
@click.option("--gpus-per-node", "gpus_per_node", type=int, default=None,
              help="GPUs per node [default: the profile's, else 4].")
@click.option("--max-epochs", "max_epochs", type=int, default=None, help="max_t [default: the curves' length].")
@click.option("--min-epochs", "min_epochs", type=int, default=1, show_default=True, help="min_t.")
@click.option("--eta", type=int, default=3, show_default=True, help="Reduction factor.")
@click.option("--trials", type=int, default=None, help="Trials to create (HyperBand/BOHB fill brackets with them).")
@click.option("--brackets", type=int, default=None,
              help="HyperBand/BOHB brackets to run [default: one full iteration; ASHA gets as many trials].")
@click.option("--semantics", type=click.Choice(["ray", "reference"]), default="ray", show_default=True,
              help="Bracket shapes of Ray Tune or of the papers (Li et al.; HpBandSter).")
@click.option("--ray-pending", "ray_pending", type=int, default=None,
              help="Ray semantics: trials Ray Tune creates ahead of their start [default: 200 for "
                   "hyperband, a plain Tuner's BasicVariantGenerator; 1 for bohb, TuneBOHB]. Give 1 "
                   "for any other custom searcher, or the value of TUNE_MAX_PENDING_TRIALS_PG.")
@click.option("--seeds", type=int, default=10, show_default=True, help="Seeds per split.")
@seed_option
@click.option("--objective", type=click.Choice(["makespan", "deadline", "accuracy-time"]), default="makespan",
              show_default=True, help="Shortest search; best metric by --deadline; or accuracy-time: the "
                                      "fastest split whose predicted best metric is within --tolerance of the best.")
@click.option("--deadline", type=float, default=None, help="Seconds, with --objective deadline.")
@click.option("--batch-policy", type=click.Choice(["global", "per_gpu"]), default=None,
              help="per_gpu: the global batch grows with the GPUs per trial and curves are stretched with the "
                   "profile's noise scale [default: the profile's workload.batch_policy, else global].")
@click.option("--tolerance", type=float, default=0.01, show_default=True,
              help="Metric tolerance of --objective accuracy-time and of the epochs-to-target column.")
@click.option("--time-limit", "time_limit", default=None,
              help="Wall-time limit of one allocation (e.g. 24h, 1-00:00:00): the search runs as a chain of "
                   "allocations [default: none, one uninterrupted run].")
@click.option("--signal-lead", "signal_lead", default="300s", show_default=True,
              help="SIGTERM this long before the limit (sbatch --signal=B:TERM@LEAD): trials pause at their next epoch.")
@click.option("--grace", default="60s", show_default=True,
              help="Trials not paused this long after SIGTERM are killed and fall back to their checkpoint.")
@click.option("--requeue-wait", "requeue_wait", default=None,
              help="Queue wait between allocations: MEAN or MEAN,SPREAD (gamma), e.g. 30m or 30m,15m [default: 0].")
@click.option("--node-mtbf", "node_mtbf", default=None,
              help="Mean time between failures of one node, in hours: failures lose work back to the last checkpoint.")
@click.option("--checkpoint-every", "checkpoint_every", type=int, default=None,
              help="Also save a checkpoint after every K-th epoch (each save costs the profile's save time) "
                   "[default: checkpoints only at pauses].")
@click.option("--max-restarts", "max_restarts", type=int, default=3, show_default=True,
              help="Segments a trial may lose to node failures and restart from its checkpoint before it fails.")
@click.option("--allocation-start", "allocation_start", default=None,
              help="Seconds at each allocation's start before trials launch (the runner's own start: interpreter, "
                   "torch, plan; validate's report measures it), with --time-limit [default: 0].")
@click.option("--policies", default=None,
              help="Adaptive allocation beside the static splits, e.g. static,double,fill or double:1,2 "
                   "(static:G; double:G0[,S] RASDA's doubling, S defaults to --eta; fill: a rung's trials all run "
                   "at once) -> policies.csv, plan.json's policies section, occupancy_policies.png.")
@out_option("results/simulate")
@click.option("--jobs", type=int, default=None, help="Parallel processes [default: CPU count].")
@quiet_option
def simulate(budget, profile_path, curves_path, algorithms, gpus_per_trial, gpus_per_node, max_epochs, min_epochs,
             eta, trials, brackets, semantics, ray_pending, seeds, seed, objective, deadline, batch_policy,
             tolerance, time_limit, signal_lead, grace, requeue_wait, node_mtbf, checkpoint_every, max_restarts,
             allocation_start, policies, out, jobs, quiet):
    """Simulate every split of --budget GPUs and predict the fastest (plan.json, plots, records)."""
    from .setup import prepare

    began = time.perf_counter()
    plan_input = _one_line_errors(prepare)(budget=budget, profile_path=profile_path, curves_path=curves_path, algorithms=algorithms,
                         gpus_per_trial=gpus_per_trial, gpus_per_node=gpus_per_node, max_epochs=max_epochs,
                         min_epochs=min_epochs, eta=eta, trials=trials, brackets=brackets, semantics=semantics,
                         ray_pending=ray_pending, seeds=seeds, seed=seed, objective=objective, deadline=deadline,
                         out=out, jobs=jobs, batch_policy=batch_policy, tolerance=tolerance, time_limit=time_limit,
                         signal_lead=signal_lead, grace=grace, requeue_wait=requeue_wait, node_mtbf=node_mtbf,
                         checkpoint_every=checkpoint_every, max_restarts=max_restarts,
                         allocation_start=allocation_start)
    say = (lambda *a, **k: None) if quiet else (lambda text: click.echo(text, err=True))
    adaptive = []
    if policies is not None:
        from .policies import expand_policies
        from .policysweep import check_policies

        spec = plan_input.spec
        if spec.allocation:
            raise UserError("--policies with --time-limit, --requeue-wait, --node-mtbf or --checkpoint-every: "
                            "adaptive policies are not simulated as allocation chains yet; give one or the other")
        statics, adaptive = expand_policies(policies, spec.budget, spec.gpus_per_node, spec.eta, spec.splits)
        plan_input.notes.extend(check_policies(spec, statics, adaptive, plan_input.scaling))
    for note in plan_input.notes:
        say(f"note: {note}")
    from nasalloc.io import folder_lock

    lock = folder_lock(out).acquire()  # one sweep writes a folder at a time; the kernel drops it when we end
    spec = plan_input.spec
    say(f"simulating {len(spec.runs())} runs: {', '.join(spec.algorithms)} x {len(spec.splits)} splits "
        f"({', '.join(split_tick(g) for g in spec.splits)}) x {len(spec.seeds)} seeds on {spec.budget} GPUs, "
        f"{spec.gpus_per_node} per node, {plan_input.jobs} process(es)")

    from .report import summary_table, write_report
    from .sweep import run_sweep

    try:
        progress = None if quiet else _Progress()
        sweep = run_sweep(spec, plan_input.time_model, plan_input.table, plan_input.table.space, out,
                          jobs=plan_input.jobs, progress=progress, scaling=plan_input.scaling)
        if progress:
            progress.close()
        from .batchreport import annotate_plan, batch_table, plot_batch_scaling

        plan = write_report(out, spec, sweep, plan_input.profile, plan_input.table, objective, plan_input.notes,
                            annotate=lambda p: annotate_plan(p, plan_input.table, plan_input.scaling,
                                                             plan_input.tolerance), jobs=plan_input.jobs)
        if plan_input.scaling is not None and plan_input.scaling.active:
            plot_batch_scaling(out, plan, plan_input.table.metric_name)
        if adaptive:
            plan = _run_policies(plan_input, plan, sweep, adaptive, out, say, quiet)
    finally:
        lock.release()
    click.echo(summary_table(plan))
    if plan.get("allocation"):
        from .chainreport import chain_lines

        click.echo(chain_lines(plan))
    if adaptive:
        from .policysweep import policy_table

        click.echo(policy_table(plan))
    if plan_input.scaling is not None and plan_input.scaling.active:
        click.echo(batch_table(plan))
    for warning in plan["warnings"]:
        click.echo(f"warning: {warning}")
    click.echo(plan_input.source_line)
    elapsed = time.perf_counter() - began
    click.echo(f"simulated {sweep.simulated} run(s) ({sweep.epochs:,} trial-epochs; "
               f"{len(spec.runs()) - sweep.simulated} already in {out}) in {elapsed:.1f} s; wrote {out}/plan.json, "
               f"simulations.csv, events_*.jsonl, makespan.png, best_so_far.png, occupancy.png"
               + (", policies.csv, occupancy_policies.png" if adaptive else ""))


def _run_policies(plan_input, plan, sweep, adaptive, out, say, quiet):
    from .policysweep import add_to_plan, compare, plot_occupancy, run_policies

    spec = plan_input.spec
    say(f"simulating adaptive policies: {', '.join(p.name for p in adaptive)} x {len(spec.seeds)} seeds")

    def progress(done, total, row):
        if not quiet:
            click.echo(f"simulate: policy {done}/{total} {row['algorithm']} {row['policy']} seed {row['seed']}: "
                       f"makespan {duration(float(row['makespan_s']))}", err=True)

    rows, events = run_policies(spec, plan_input.time_model, plan_input.table, adaptive, out,
                                jobs=plan_input.jobs, progress=progress, scaling=plan_input.scaling)
    plan = add_to_plan(out, plan, compare(plan, sweep.rows, rows),
                       [n for n in plan_input.notes if "policy" in n])
    plot_occupancy(out, plan, sweep.events, events)
    return plan


def _one_line_errors(function):
    """Some libraries' messages (ConfigSpace) span lines: keep the first, as the CLI promises."""
    def wrapped(**kwargs):
        try:
            return function(**kwargs)
        except UserError as err:
            lines = str(err).strip().splitlines() or [""]
            if len(lines) > 1:
                raise UserError(lines[0]) from None
            raise
    return wrapped


class _Progress:
    """A bar on a terminal, else one line per finished run (on stderr)."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.began = time.perf_counter()

    def __call__(self, done: int, total: int, row: dict) -> None:
        elapsed = time.perf_counter() - self.began
        what = (f"{row['algorithm']} {split_tick(float(row['gpus_per_trial']))} GPU/trial seed {row['seed']}: "
                f"makespan {duration(float(row['makespan_s']))}")
        if self.tty:
            filled = int(30 * done / total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {elapsed:5.1f}s {what:<60}")
            sys.stderr.flush()
        else:
            sys.stderr.write(f"simulate: {done}/{total} {what}\n")

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
