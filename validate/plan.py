"""Read a plan (``nasalloc.plan/1``, written by ``nasalloc simulate``) into validation tasks.

Strict: a missing file, bad JSON, a wrong schema or a missing field is a one-line UserError.
The plan carries the profile itself (``profile.content``) and the curves' path and sha256, so
the runner rebuilds the very config table the simulation sampled from (``TableSource``) and
the same scheduler (class, parameters, seed = the plan's first seed, whose event records the
plan keeps). The prediction of a split for that seed is simulated again here from the same
inputs (deterministic; the plan's mean over all seeds is reported beside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nasalloc.errors import UserError
from nasalloc.io import read_json

SCHEMA = "nasalloc.plan/1"
WHICH_NAMED = ("best", "worst")


def _get(data: dict, dotted: str, path: Path):
    value = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise UserError(f"plan {path} is missing field {dotted!r} (write it with nasalloc simulate)")
        value = value[part]
    return value


def _int(data: dict, dotted: str, path: Path, minimum: int = 1) -> int:
    value = _get(data, dotted, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise UserError(f"plan {path}: field {dotted!r} is {value!r}, expected a whole number >= {minimum}")
    return int(value)


def _split_value(summary, where: str, path: Path) -> float:
    value = summary.get("gpus_per_trial") if isinstance(summary, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"plan {path}: {where}.gpus_per_trial is {value!r}, expected a number > 0")
    return float(value)


@dataclass
class ChosenSplit:
    algorithm: str
    which: str                 # "best", "worst" or "g=<n>"
    gpus_per_trial: float
    predicted_mean_s: Optional[float]   # the plan's mean makespan over its seeds
    predicted_best_metric: Optional[float]
    parallel_trials: int
    policy: Optional[str] = None        # an adaptive allocation policy (gpus_per_trial: its smallest count)


def curves_of(plan_path: Path, shown: str) -> Optional[Path]:
    """The curves file a plan was simulated with (None: the embedded ones), found from here or
    beside the plan."""
    if shown.startswith("<embedded"):
        return None
    path = Path(shown)
    if not path.is_absolute() and not path.exists() and (plan_path.parent / path).exists():
        path = plan_path.parent / path
    if not path.exists():
        raise UserError(f"plan {plan_path}: its curves {shown} are not found (from here or beside the plan)")
    return path


class Plan:
    def __init__(self, path):
        self.path = Path(path)
        data = read_json(self.path, "plan")
        if not isinstance(data, dict):
            raise UserError(f"plan {self.path} must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise UserError(f"plan {self.path} has schema {data.get('schema')!r}, expected {SCHEMA!r}")
        self.data = data
        self.budget = _int(data, "budget", self.path)
        self.gpus_per_node = _int(data, "gpus_per_node", self.path)
        self.workload = _get(data, "workload", self.path)
        if not isinstance(self.workload, str) or not self.workload:
            raise UserError(f"plan {self.path}: field 'workload' is {self.workload!r}; validation needs a "
                            f"workload to train (simulate with curves that name one)")
        self.metric_name = str(_get(data, "metric.name", self.path))
        self.mode = str(_get(data, "metric.mode", self.path))
        self.profile = _get(data, "profile.content", self.path)
        self.curves_path = str(_get(data, "curves.path", self.path))
        self.curves_sha256 = str(_get(data, "curves.sha256", self.path))
        self.max_t = _int(data, "scheduler.max_t", self.path)
        if not isinstance(self.profile, dict):
            raise UserError(f"plan {self.path}: field 'profile.content' must be the profile object")
        if self.mode not in ("max", "min"):
            raise UserError(f"plan {self.path}: field 'metric.mode' is {self.mode!r}, expected 'max' or 'min'")
        self.algorithms = _get(data, "algorithms", self.path)
        if not isinstance(self.algorithms, dict) or not self.algorithms:
            raise UserError(f"plan {self.path}: field 'algorithms' is empty")
        for name, entry in self.algorithms.items():
            where = Path(f"{self.path} (algorithm {name})")
            for field in ("scheduler", "best", "worst", "splits", "events.seed"):
                _get(entry, field, where)
            if not isinstance(entry["scheduler"], dict) or not isinstance(entry["splits"], list) or not entry["splits"]:
                raise UserError(f"plan {where}: 'scheduler' must be an object and 'splits' a non-empty list")
            _int(entry, "events.seed", where, minimum=0)
            for label in WHICH_NAMED:
                _split_value(entry[label], label, where)
            for i, summary in enumerate(entry["splits"]):
                _split_value(summary, f"splits[{i}]", where)
        self._table = None
        self._time_model = None

    # -- inputs of the simulation ---------------------------------------------------------
    def table(self):
        """The simulation's config table (curves truncated to max_t), checked by sha256."""
        if self._table is None:
            from nasalloc.simulator.curvetable import load_curve_table

            path = curves_of(self.path, self.curves_path)
            table = load_curve_table(None if path is None else str(path), self.profile)
            if table.sha256 != self.curves_sha256:
                raise UserError(f"plan {self.path}: curves {self.curves_path} changed since the simulation (sha256 differs)")
            self._table = table.truncated(self.max_t)
        return self._table

    @property
    def workload_spec(self):
        """The plan's workload as the trainers must build it: with the batch policy it was
        profiled with (a per_gpu profile trains per_gpu), else just its name."""
        policy = (self.profile.get("workload") or {}).get("batch_policy")
        if policy in (None, "global"):
            return self.workload
        return {"name": self.workload, "options": {"batch_policy": policy}}

    def batch_scaling(self):
        """How the simulation turned curves into each split's (``per_gpu``: stretched for the
        global batch by the profile's noise scale), rebuilt from the plan's profile."""
        from nasalloc.simulator.batchscaling import scaling_from

        policy = (self.data.get("batch_scaling") or {}).get("policy")
        return scaling_from(self.profile, policy)[0]

    def time_model(self):
        if self._time_model is None:
            from nasalloc.simulator.timemodel import time_model_from_profile

            self._time_model = time_model_from_profile(self.profile, f"plan {self.path}: profile")
        return self._time_model

    def seed(self, algorithm: str) -> int:
        return int(self.algorithms[algorithm]["events"]["seed"])

    def scheduler_factory(self, algorithm: str):
        """A function returning a fresh scheduler exactly as the simulation built it."""
        from nasalloc.simulator.schedulers import make_scheduler
        from nasalloc.simulator.schedulers.sampling import TableSource

        table = self.table()
        source = TableSource(table.space, table.configs)
        params = dict(self.algorithms[algorithm]["scheduler"])
        name = params.pop("algorithm", algorithm)
        seed = self.seed(algorithm)
        factory = lambda: make_scheduler(name, source=source, seed=seed, **params)  # noqa: E731
        try:
            factory()  # a plan's bad scheduler parameters fail here, before anything runs
        except (TypeError, ValueError) as err:
            raise UserError(f"plan {self.path}: scheduler of {algorithm!r} cannot be built from {params} "
                            f"({type(err).__name__}: {err})") from None
        except UserError as err:
            raise UserError(f"plan {self.path}: scheduler of {algorithm!r}: {err}") from None
        return factory

    def simulate_command(self, budget: int, gpus_per_node: int, splits) -> str:
        """The ``nasalloc simulate`` command that makes this plan again for another cluster
        shape: the plan's profile, curves and search settings with ``budget``, nodes of
        ``gpus_per_node`` GPUs and the ``splits`` given."""
        import shlex

        scheduler = self.data.get("scheduler") or {}
        seeds = self.data.get("seeds") or [0]
        words = ["nasalloc", "simulate", "--budget", str(budget), "--gpus-per-node", str(gpus_per_node),
                 "--gpus-per-trial", ",".join(f"{g:g}" if g >= 1 else f"1/{round(1 / g)}" for g in splits)]
        profile = (self.data.get("profile") or {}).get("path")
        if profile and not str(profile).startswith("<"):
            words += ["--profile", str(profile)]
        if not self.curves_path.startswith("<"):
            words += ["--curves", self.curves_path]
        words += ["--algorithms", ",".join(self.algorithms)]
        for flag, key in (("--max-epochs", "max_t"), ("--min-epochs", "min_t"), ("--eta", "eta"),
                          ("--trials", "trials"), ("--brackets", "brackets"), ("--semantics", "semantics"),
                          ("--ray-pending", "ray_pending")):
            if scheduler.get(key) is not None:
                words += [flag, str(scheduler[key])]
        words += ["--seeds", str(len(seeds)), "--seed", str(seeds[0])]
        if self.data.get("objective") == "deadline" and self.data.get("deadline_s"):
            words += ["--objective", "deadline", "--deadline", f"{self.data['deadline_s']:g}"]
        batch = self.data.get("batch_scaling") or {}
        if batch.get("policy") == "per_gpu":
            words += ["--batch-policy", "per_gpu", "--tolerance", f"{batch.get('tolerance', 0.01):g}"]
        if self.data.get("objective") == "accuracy-time":
            words += ["--objective", "accuracy-time"]
        return shlex.join(words)

    # -- what to validate ----------------------------------------------------------------
    def choose(self, algorithms: Optional[str], which: str, policy: Optional[str] = None) -> list[ChosenSplit]:
        """The splits of ``--which`` (``best-static`` is ``best``; ``best-adaptive`` the plan's best
        adaptive policy, from ``simulate --policies``) and the adaptive ``policy``, per algorithm."""
        names = list(self.algorithms) if not algorithms else [a.strip() for a in algorithms.split(",") if a.strip()]
        for name in names:
            if name not in self.algorithms:
                raise UserError(f"--algorithms: {name!r} is not in the plan (it has {', '.join(self.algorithms)})")
        items = [w.strip() for w in str(which).split(",") if w.strip()]
        static = ",".join("best" if w == "best-static" else w for w in items if w != "best-adaptive")
        section = (self.data.get("policies") or {}).get("algorithms") or {}
        if "best-adaptive" in items and not section:
            raise UserError(f"--which best-adaptive: plan {self.path} has no adaptive policies; "
                            f"simulate it with --policies")
        chosen = []
        for name in names:
            entry = self.algorithms[name]
            splits = {float(s["gpus_per_trial"]): s for s in entry["splits"]}
            for label, g in (_parse_which(static, entry, splits) if static or not items else []):
                summary = splits.get(g) or entry.get(label, {})
                chosen.append(ChosenSplit(name, label, g, summary.get("makespan_s"), summary.get("best_metric"),
                                          int(summary.get("parallel_trials") or 0)))
            specs = ([section[name]["best_adaptive"]["policy"]] if "best-adaptive" in items and name in section
                     else []) + ([policy] if policy else [])
            for spec in dict.fromkeys(specs):
                chosen.append(self._policy_choice(name, spec, section.get(name, {})))
        return chosen

    def _policy_choice(self, name: str, spec: str, section: dict) -> ChosenSplit:
        from nasalloc.simulator.policies import parse_policy

        try:
            parsed = parse_policy(spec, self.budget, self.gpus_per_node, int((self.data.get("scheduler") or {}).get("eta", 3)))
        except UserError as err:
            raise UserError(str(err).replace("--policies:", "--policy:", 1)) from None
        if parsed.kind == "fill" and name == "asha":
            raise UserError("--policy fill is for synchronous brackets (hyperband, bohb), not asha; "
                            "give --algorithms hyperband,bohb")
        known = {p["policy"]: p for p in section.get("policies", [])}.get(parsed.name, {})
        return ChosenSplit(name, f"policy {parsed.name}", float(parsed.min_gpus), known.get("makespan_s"),
                           known.get("best_metric"), self.budget // parsed.min_gpus, policy=parsed.name)


def _parse_which(which: str, entry: dict, splits: dict) -> list[tuple]:
    items = [w.strip() for w in str(which).split(",") if w.strip()]
    if not items:
        raise UserError(f"--which {which!r} is empty (expected best,worst | all | a list of GPUs per trial)")
    if items == ["all"]:
        return _named(entry, [g for g in sorted(splits)])
    values = []
    for item in items:
        if item in WHICH_NAMED:
            values.append(float(entry[item]["gpus_per_trial"]))
            continue
        try:
            from fractions import Fraction

            g = float(Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--which: {item!r} is not best, worst, all or a number of GPUs per trial") from None
        if not math.isfinite(g) or not any(abs(g - s) < 1e-9 for s in splits):
            raise UserError(f"--which: {item} GPUs per trial was not simulated in the plan "
                            f"(it has {', '.join(format(s, 'g') for s in sorted(splits))})")
        values.append(min(splits, key=lambda s: abs(s - g)))
    return _named(entry, values)


def _named(entry: dict, values: list) -> list[tuple]:
    """(label, g) once per split: the plan's best and worst split keep those names."""
    names = {}
    for label in reversed(WHICH_NAMED):  # best wins where best and worst are the same split
        names[float(entry[label]["gpus_per_trial"])] = label
    out = []
    for g in dict.fromkeys(values):
        out.append((names.get(g, f"g={g:g}"), g))
    return out
