"""A peer-neutral fake cluster that turns a scheduler into a decision stream.

``bench/peers/make_streams.py`` runs it (in a virtual environment of its own) around Ray Tune's
and HpBandSter's own scheduler classes and commits the streams as fixtures;
``tests/simulator/test_peer_streams.py`` runs the very same loop around nasalloc's schedulers
and requires the streams identical. So this module uses the standard library only: the peers'
environment does not have nasalloc's dependencies, and loads this file by path.

The cluster: ``slots`` slots; an epoch of trial ``t`` lasts 1, 2 or 3 time units (whole numbers,
so results often arrive at the same moment, which tests same-time ordering); the metric of each
epoch, whether it is NaN, and whether the epoch crashes the trial are drawn from
``random.Random`` seeded by a string of (seed, trial, epoch): the same in every environment.
Events at the same time are handled in the order they were scheduled.

An adapter wraps one scheduler:

* ``next()`` -> ``("s", trial, milestone)`` (start), ``("r", trial, milestone)`` (resume) or
  ``None`` (nothing to run now);
* ``result(trial, epoch, metric)`` -> ``"c"`` continue, ``"p"`` pause, ``"s"`` stop, or ``"j"``
  (HpBandSter: the job ended; it does not say whether the config goes on);
* ``failure(trial)``; ``finish()`` -> ``"done"``, or ``"hang"`` when trials are left that the
  peer will never run or end.

The stream is a list of short strings: ``s3@9`` (start trial 3, milestone 9), ``r3@27``,
``3:9c`` (trial 3 reported epoch 9, decision continue), ``f3`` (trial 3 crashed), ``done``.
"""

from __future__ import annotations

import heapq
import math
import random

DECISION_CODES = ("c", "p", "s", "j")


def metric(scenario: dict, trial: int, epoch: int) -> float:
    """A saturating curve with a level of its own per trial; ``grid`` rounds it (ties)."""
    seed = scenario["seed"]
    draw = random.Random(f"{seed}/m/{trial}/{epoch}")
    if draw.random() < scenario.get("nan_prob", 0.0):
        return math.nan
    level = random.Random(f"{seed}/q/{trial}").random()
    value = level * (1.0 - math.exp(-epoch / 4.0)) + draw.gauss(0.0, 0.02)
    grid = scenario.get("grid")
    if grid:
        value = round(value / grid) * grid
    return round(value, 6)


def duration(scenario: dict, trial: int, epoch: int) -> int:
    return random.Random(f"{scenario['seed']}/d/{trial}/{epoch}").choice((1, 2, 3))


def crashes(scenario: dict, trial: int, epoch: int) -> bool:
    probability = scenario.get("fail_prob", 0.0)
    return probability > 0 and random.Random(f"{scenario['seed']}/f/{trial}/{epoch}").random() \
        < probability


def run(adapter, scenario: dict, max_events: int = 200_000) -> list[str]:
    """Drive ``adapter`` on the scenario's cluster until nothing runs; returns the stream."""
    stream: list[str] = []
    free = scenario["slots"]
    heap: list[tuple[int, int, int]] = []
    epochs: dict[int, int] = {}
    now, seq = 0, 0

    def fill():
        nonlocal free, seq
        while free > 0:
            action = adapter.next()
            if action is None:
                return
            kind, trial, milestone = action
            stream.append(f"{kind}{trial}@{milestone}")
            epochs.setdefault(trial, 0)
            free -= 1
            seq += 1
            heapq.heappush(heap, (now + duration(scenario, trial, epochs[trial] + 1), seq, trial))

    fill()
    while heap:
        if len(stream) > max_events:
            raise RuntimeError(f"stream longer than {max_events} events: a loop?")
        now, _, trial = heapq.heappop(heap)
        epoch = epochs[trial] + 1
        if crashes(scenario, trial, epoch):
            adapter.failure(trial)
            stream.append(f"f{trial}")
            free += 1
        else:
            epochs[trial] = epoch
            decision = adapter.result(trial, epoch, metric(scenario, trial, epoch))
            if decision not in DECISION_CODES:
                raise RuntimeError(f"adapter answered {decision!r}")
            stream.append(f"{trial}:{epoch}{decision}")
            if decision == "c":
                seq += 1
                heapq.heappush(heap, (now + duration(scenario, trial, epoch + 1), seq, trial))
            else:
                free += 1
        fill()
    stream.append(adapter.finish())
    return stream
