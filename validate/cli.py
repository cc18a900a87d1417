"""``nasalloc validate``: run the planned best and worst splits for real and report predicted
against measured.

For each chosen (algorithm, split) of the plan, the very scheduler of the simulation (class,
parameters, config table, seed) drives real DDP trials through an executor; then each
measured run is re-simulated with its measured costs, and the report separates time-model
error from scheduling error. Records go to ``--out/<algorithm>_g<g>/`` (events.jsonl,
trace.csv, state.json, checkpoints/, trials/ with each segment's logs); the report to ``--out``.

SIGINT/SIGTERM or ``--time-limit``: nothing new starts, running trials checkpoint at their
next epoch (killed after ``--grace`` seconds), the state is written and the command says how
to resume; exit status 130 (SIGINT), 143 (SIGTERM) or 124 (time limit). A second signal
aborts at once (trials in flight then re-run from their last checkpoint on --resume).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from nasalloc.options import out_option, quiet_option
from nasalloc.errors import UserError
from nasalloc.io import atomic_write_json, check_writable, folder_lock, read_json

INVOCATION = "validation.json"
MAX_REPEATS = 100
#: simulated runs of each split (fresh epoch-time noise) behind the predicted intervals of --repeats
PREDICTED_DRAWS = 40


@click.command("validate")
@click.option("--plan", "plan_path", required=True, type=str, help="plan.json written by nasalloc simulate.")
@click.option("--algorithms", default=None, help="Comma-separated subset of the plan's algorithms [default: all].")
@click.option("--which", default="best,worst", show_default=True,
              help="Splits to run: best,worst | all | a list of GPUs per trial (e.g. 0.5,2).")
@click.option("--policy", "policy", default=None,
              help="Also run this adaptive allocation policy (e.g. double:1,2; see simulate --policies): "
                   "trials change their number of ranks between rungs. --which best-adaptive runs the plan's best.")
@click.option("--executor", "executor_name", default="local", show_default=True,
              help="How trials run: local (processes here) | slurm (steps of the current allocation) | "
                   "ray (Ray Tune's own schedulers run the search; needs the ray extra).")
@out_option("results/validate")
@click.option("--resume", is_flag=True, help="Continue an interrupted validation in --out.")
@click.option("--time-limit", "time_limit", type=float, default=None,
              help="Seconds after this command started (its process: under sbatch's exec, the job's start); "
                   "then stop launching and checkpoint, as on SIGTERM.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="cuda: one GPU per rank (CUDA_VISIBLE_DEVICES); cpu: one-thread gloo ranks stand in for GPUs.")
@click.option("--grace", type=float, default=60.0, show_default=True,
              help="Seconds running trials get to reach an epoch end and checkpoint when stopping.")
@click.option("--trial-seeds", "trial_seeds", type=click.Choice(["recorded", "fresh"]), default="recorded",
              show_default=True,
              help="recorded: train each config with the seed its curve was recorded with, where the curves "
                   "carry one (column train_seed), so the run trains the curves the simulation read; fresh: "
                   "seeds from the plan's seed and the trial id.")
@click.option("--checkpoint-every", "checkpoint_every", type=int, default=None,
              help="Trials also save a checkpoint after every K-th epoch, so a lost step loses less "
                   "[default: checkpoints at pauses only].")
@click.option("--max-restarts", "max_restarts", type=int, default=0, show_default=True,
              help="Steps a trial may lose (a node failure, a killed step) and restart from its last checkpoint "
                   "before it is failed; the scheduler hears nothing of a restart (see docs/slurm.md).")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Runs of every chosen split, all with the plan's seed (the same search); N >= 2 reports "
                   "measured and predicted 95% intervals.")
@quiet_option
def validate(plan_path, algorithms, which, policy, executor_name, out, resume, time_limit, device, grace, trial_seeds,
             checkpoint_every, max_restarts, repeats, quiet):
    """Run the plan's best and worst splits for real with the same schedulers; report predicted vs measured."""
    from nasalloc.extras import require_torch

    require_torch("validate")
    from .plan import Plan

    if time_limit is not None and not time_limit > 0:
        raise UserError(f"--time-limit {time_limit!r} must be a number of seconds > 0")
    if not grace >= 0:
        raise UserError(f"--grace {grace!r} must be >= 0")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise UserError(f"--checkpoint-every {checkpoint_every!r}: expected a whole number >= 1")
    if max_restarts < 0:
        raise UserError(f"--max-restarts {max_restarts!r}: expected a whole number >= 0")
    restarts = {"checkpoint_every": checkpoint_every, "max_restarts": max_restarts}
    if executor_name == "ray" and (checkpoint_every or max_restarts):
        # Ray Tune checkpoints and restarts trials by its own rules: these would be ignored
        given = " ".join(f"{flag} {value}" for flag, value in (("--checkpoint-every", checkpoint_every),
                                                                  ("--max-restarts", max_restarts)) if value)
        raise UserError(f"{given}: the local and slurm executors' rules; "
                        "--executor ray leaves checkpoints and restarts to Ray Tune")
    if not 1 <= repeats <= MAX_REPEATS:
        raise UserError(f"--repeats {repeats!r} must be a whole number from 1 to {MAX_REPEATS}")
    plan = Plan(plan_path)
    chosen = plan.choose(algorithms, which, policy)
    if any(c.policy for c in chosen) and executor_name == "ray":
        raise UserError("--executor ray runs Ray Tune's own search: adaptive policies run with the local or "
                        "slurm executor")
    out = Path(out)
    check_writable(out, "--out")
    lock = folder_lock(out)
    lock.refuse_if_held()  # a run holding the folder is named before any advice about it
    _check_out(out, plan_path, algorithms, which, resume, trial_seeds, policy)
    plan.table()  # the curves must be there before anything runs
    for name in dict.fromkeys(c.algorithm for c in chosen):
        plan.scheduler_factory(name)  # and every scheduler must build
    from nasalloc.workloads.registry import load_workload

    load_workload(plan.workload_spec)  # the workload must load (with the batch policy it was profiled with)
    plan.time_model()  # and the profile give a time model

    from nasalloc.workloads.distributed import resolve_device

    from .executor import make_executor

    device = resolve_device(device)
    executor = make_executor(executor_name, device=device, gpus_per_node=plan.gpus_per_node)
    try:
        executor.check_plan(plan, chosen)
        if hasattr(executor, "check_budget"):
            executor.check_budget(plan.budget)
        # the plan's placement, or one that fits this allocation (or a message saying how to plan one)
        gpus_per_node, placement_note = executor.fit_plan(plan, [c.gpus_per_trial for c in chosen])
        predictions = [predict(plan, choice, gpus_per_node) for choice in chosen]
        lock.acquire()  # held for the run: one run writes a results folder at a time
        _check_out(out, plan_path, algorithms, which, resume, trial_seeds, policy)  # again, now that no other run can start
    except BaseException:
        lock.release()
        executor.close()
        raise
    try:
        _run_locked(plan, chosen, predictions, out, plan_path, algorithms, which, device, executor_name, executor,
                    resume, time_limit, grace, quiet, gpus_per_node, placement_note, repeats, trial_seeds, restarts,
                    policy)
    finally:
        lock.release()


def _run_locked(plan, chosen, predictions, out, plan_path, algorithms, which, device, executor_name, executor,
                resume, time_limit, grace, quiet, gpus_per_node, placement_note, repeats=1,
                trial_seeds="recorded", restarts=None, policy=None) -> None:
    """The run itself, once every input is checked and this process holds ``out``.

    With ``repeats`` N the splits run in rounds (run 1 of every split, then run 2, ...), so a
    drift of the machine's load spreads over all splits alike; each run owns its folder
    (SplitTask.dirname) and resumes on its own."""
    from .runner import SplitTask, Stopper

    atomic_write_json(out / INVOCATION, {"plan": str(Path(plan_path).resolve()), "plan_sha256": _sha256(plan_path),
                                         "algorithms": algorithms,
                                         "which": which, "device": device, "executor": executor_name,
                                         "repeats": repeats, "trial_seeds": trial_seeds, "policy": policy})
    row_seeds = plan.table().train_seeds if trial_seeds == "recorded" else None
    from .state import process_age_s

    stopper = Stopper(time_limit, elapsed_s=process_age_s())
    previous = _install_signals(stopper)
    say = (lambda text: None) if quiet else click.echo
    say(f"validating {len(chosen)} split(s) of {plan.path} on {device} ({executor_name} executor): "
        + ", ".join(f"{c.algorithm} {c.which}" + ("" if c.policy else f" g={c.gpus_per_trial:g}") for c in chosen)
        + (f", {repeats} runs each" if repeats > 1 else ""))
    if placement_note:
        click.echo(f"note: {placement_note}", err=True)
    results = []
    try:
        for repeat in range(1, repeats + 1):
            for choice, predicted in zip(chosen, predictions):
                task = SplitTask(algorithm=choice.algorithm, gpus_per_trial=choice.gpus_per_trial, budget=plan.budget,
                                 workload=plan.workload_spec, make_scheduler=plan.scheduler_factory(choice.algorithm),
                                 max_t=plan.max_t, seed=plan.seed(choice.algorithm), gpus_per_node=gpus_per_node,
                                 predicted_makespan_s=predicted.makespan_s, metric_name=plan.metric_name,
                                 mode=plan.mode, repeat=repeat, row_seeds=row_seeds, policy=choice.policy,
                                 **(restarts or {}))
                runner = executor.make_runner(task, out / task.dirname, device=device, stopper=stopper,
                                              quiet=quiet, grace_s=grace)
                outcome = runner.run(resume=resume)
                results.append((choice, task, predicted, outcome, runner.split))
                if not outcome.finished:
                    break
            if stopper.reason:
                break
    finally:
        executor.close()
        _restore_signals(previous)
    from .report import split_key

    draws = {split_key(c.algorithm, c.gpus_per_trial, c.policy): predict_draws(plan, c, gpus_per_node)
             for c in chosen} if repeats > 1 else None
    report = _report(plan, out, results, complete=stopper.reason is None, repeats=repeats, draws=draws)
    if repeats > 1:
        from .repeatreport import format_repeat_table as format_table
    else:
        from .report import format_table

    click.echo(format_table(report))
    from .chainreport import chain_lines

    for line in chain_lines(report):
        click.echo(line)
    for note in report["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"wrote {out / 'report.json'}, comparison.csv, comparison.png")
    if stopper.reason:
        command = ["nasalloc validate", f"--plan {plan_path}", f"--out {out}"]
        if algorithms:
            command.append(f"--algorithms {algorithms}")
        if which != "best,worst":
            command.append(f"--which {which}")
        if policy:
            command.append(f"--policy {policy}")
        if repeats > 1:
            command.append(f"--repeats {repeats}")
        click.echo(f"stopped ({stopper.reason}): state saved; continue with: {' '.join(command)} --resume", err=True)
        sys.exit(stopper.exit_code)


def predict(plan, choice, gpus_per_node=None, noise_seed=None):
    """The simulation of this split with the plan's seed (the run's direct prediction), placed on
    nodes of ``gpus_per_node`` GPUs (default: the plan's). ``noise_seed`` draws the epoch-time
    noise afresh (the scheduler keeps the plan's seed: the same search)."""
    from nasalloc.simulator.cluster import make_split
    from nasalloc.simulator.engine import simulate

    if getattr(choice, "policy", None):
        from nasalloc.simulator.adaptive import simulate_policy
        from nasalloc.simulator.policies import parse_policy

        seed = plan.seed(choice.algorithm)
        policy = parse_policy(choice.policy, plan.budget, gpus_per_node or plan.gpus_per_node, int((plan.data.get("scheduler") or {}).get("eta", 3)))
        return simulate_policy(plan.scheduler_factory(choice.algorithm)(), policy, plan.time_model(), plan.table(),
                               seed=seed if noise_seed is None else noise_seed, algorithm=choice.algorithm,
                               record_events=False, scaling=plan.batch_scaling())
    from nasalloc.simulator.batchscaling import stretched_table

    split = make_split(plan.budget, gpus_per_node or plan.gpus_per_node, choice.gpus_per_trial)
    seed = plan.seed(choice.algorithm)
    table = stretched_table(plan.table(), choice.gpus_per_trial, plan.batch_scaling())  # the plan's curves for g
    return simulate(plan.scheduler_factory(choice.algorithm)(), split, plan.time_model(), table,
                    seed=seed if noise_seed is None else noise_seed, algorithm=choice.algorithm, record_events=False)


def predict_draws(plan, choice, gpus_per_node=None, draws: int = PREDICTED_DRAWS) -> list:
    """Makespans of ``draws`` simulations of the plan's search on this split, each with fresh
    epoch-time noise (noise seeds 1_000_003 * k + the plan's seed, k = 1..draws)."""
    seed = plan.seed(choice.algorithm)
    return [predict(plan, choice, gpus_per_node, noise_seed=1_000_003 * k + seed).makespan_s
            for k in range(1, draws + 1)]


def _report(plan, out: Path, results: list, complete: bool, repeats: int = 1, draws=None) -> dict:
    from nasalloc.simulator.policies import parse_policy

    from .chainreport import chain_comparison, measured_chain, predicted_chain, resimulated_chain
    from .compare import decision_agreement, measure, resimulate
    from .report import comparison_row, write_report

    rows, notes = [], [_seeds_note(plan, results), _lr_rule_note(plan)]
    notes = [n for n in notes if n]
    for choice, task, predicted, outcome, split in results:
        run_dir = out / task.dirname
        measured = measure(run_dir, plan.mode)
        resim = None
        policy = parse_policy(choice.policy, plan.budget, split.gpus_per_node) if choice.policy else None
        if policy is not None and task.repeat == 1:
            notes.append(f"{choice.algorithm} policy {choice.policy}: trials changed their number of ranks between "
                         f"rungs (the same policy object the simulator asked); the re-simulation replays the policy with the epoch, "
                         f"start-up and save seconds measured at each number of ranks; the global batch policy "
                         f"keeps each step's global batch, so resized trials follow the same learning curve")
        if outcome.finished and measured.trials:
            resim = resimulate(task.make_scheduler, split, plan.table(), measured, run_dir, seed=task.seed,
                               algorithm=task.algorithm, policy=policy)
        row = comparison_row(algorithm=choice.algorithm, which=choice.which, gpus_per_trial=choice.gpus_per_trial,
                             parallel_trials=split.parallel_trials, status=outcome.reason,
                             predicted_makespan_s=predicted.makespan_s,
                             predicted_best_metric=predicted.best_metric, measured=measured, resim=resim,
                             run_dir=run_dir)
        row["predicted_mean_makespan_s"] = choice.predicted_mean_s
        if choice.policy:
            row["policy"] = choice.policy
            row["resizes"] = measured.resizes
            row["resimulated_resizes"] = getattr(resim, "resizes", None)
        if resim is not None:
            agreement = decision_agreement(run_dir, resim)
            if agreement is not None:
                row["same_last_epoch"], row["compared_trials"] = agreement
                if agreement[0] < agreement[1]:
                    notes.append(f"{task.label}: {agreement[1] - agreement[0]} of {agreement[1]} trial(s) ended at "
                                 "another epoch in the re-simulation than in the run (timing-dependent decisions, "
                                 "or a scheduler model that decides otherwise)")
        if repeats > 1:
            row["repeat"] = task.repeat
        rows.append(row)
        state = run_dir / "state.json"
        ran_by = read_json(state, "validation state") if state.exists() else {}
        chain = chain_comparison(predicted_chain(plan, choice, split.gpus_per_node), measured_chain(ran_by))
        if chain is not None:
            row["chain"] = chain
            if outcome.finished and not choice.policy:
                chain["resimulated"] = resimulated_chain(plan, task, split, measured, run_dir, chain)
        if ran_by.get("executor") == "ray":
            notes.append(f"{task.label}: Ray Tune {ran_by.get('ray')} ran the search with its own "
                         f"{ran_by.get('scheduler')} and {ran_by.get('searcher')}; the prediction and the "
                         "re-simulation are nasalloc's model of it (--semantics ray)")
        if measured.restarts:
            notes.append(f"{task.label}: interrupted and resumed; {measured.restarts} trial segment(s) re-ran from "
                         f"a checkpoint, which the measured makespan includes and the re-simulation does not")
        if measured.failed:
            notes.append(f"{task.label}: {measured.failed} trial(s) failed (the re-simulation has no failures)")
    if repeats > 1:
        from .repeatreport import write_repeat_report

        return write_repeat_report(out, rows, draws, repeats, plan_path=str(plan.path), complete=complete,
                                   notes=notes)
    return write_report(out, rows, plan_path=str(plan.path), complete=complete, notes=notes)


def _lr_rule_note(plan):
    """What the trainers did to the learning rate, when the global batch grew with the ranks."""
    from nasalloc.workloads.registry import load_workload

    if getattr(load_workload(plan.workload_spec), "batch_policy", "global") != "per_gpu":
        return None
    return ("batch policy per_gpu: a trial on n ranks trains with n times the config's batch, and its learning "
            "rate is the config's times n (SGD) or sqrt(n) (Adam), RASDA's rule; a trial resized between rungs "
            "restores its checkpoint and rescales the rate to its new number of ranks")


def _seeds_note(plan, results: list):
    """How the trials were seeded, when the curves' recorded seeds were used."""
    tasks = [task for _, task, _, _, _ in results]
    if not tasks or tasks[0].row_seeds is None:
        return None
    known = sum(seed is not None for seed in plan.table().train_seeds)
    if not known:
        return ("the curves carry no train_seed: trials trained with seeds from the plan's seed and their id, so "
                "their metrics differ from the curves the simulation read (another draw of each config)")
    return (f"trials trained with the seed their config's curve was recorded with ({known} of "
            f"{plan.table().rows} rows carry one): on one rank the run retrains the curves the simulation read; "
            "on more ranks or threads only up to floating-point differences, so decisions can still part")


def _check_out(out: Path, plan_path: str, algorithms, which, resume: bool, trial_seeds: str = "recorded",
               policy=None) -> None:
    previous = out / INVOCATION
    if resume:
        if not previous.exists():
            raise UserError(f"--resume: {out} holds no validation to resume (no {INVOCATION})")
        earlier = read_json(previous, "validation invocation")
        if Path(earlier.get("plan", "")) != Path(plan_path).resolve():
            raise UserError(f"--resume: {out} validates plan {earlier.get('plan')}, not {plan_path}")
        if earlier.get("plan_sha256") not in (None, _sha256(plan_path)):
            raise UserError(f"--resume: plan {plan_path} changed since this validation began; "
                            f"validate it into another --out")
        if earlier.get("trial_seeds", "fresh") != trial_seeds:
            raise UserError(f"--resume: {out} was validated with --trial-seeds {earlier.get('trial_seeds', 'fresh')}, "
                            f"not {trial_seeds}; pass the same")
        if earlier.get("policy") != policy:
            said = f"--policy {earlier['policy']}" if earlier.get("policy") else "no --policy"
            raise UserError(f"--resume: {out} was validated with {said}, not "
                            f"{f'--policy {policy}' if policy else 'none'}; pass the same")
    elif previous.exists():
        raise UserError(f"{out} holds an earlier validation; pass --resume to continue it or choose another --out")


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _install_signals(stopper) -> dict:
    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stopper.reason is not None:  # a second signal: stop now
            raise KeyboardInterrupt(name)
        stopper.request(f"interrupted ({name})", 128 + signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)

