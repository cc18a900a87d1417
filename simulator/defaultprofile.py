"""Build the embedded default profile from published multi-GPU throughput figures.

Run once by a maintainer (the result is committed as ``nasalloc/data/default_profile.json``;
``nasalloc/data/default_profile.md`` explains it)::

    python -m nasalloc.simulator.defaultprofile ../shared/data/published_scaling.csv

The published rows used are copied into the profile (``published``), so nothing reads the CSV at
run time and :func:`build_default_profile` can be re-run on the embedded rows to check it.

How each number is derived (every assumption is also stated in the profile's ``assumptions``):

* reference config: ResNet-50 v1.5, TF32, DGX A100 80GB (NVIDIA DeepLearningExamples),
  938 img/s on 1 GPU and 7,248 img/s on 8 (strong scaling, one node).
* one epoch = ImageNet-1k training (1,281,167 images) + validation (50,000 images, assumed to
  cost a third of a training image each: forward pass only), so
  ``t_compute`` = epoch images / 938 and the all-reduce latency ``s0`` is what the 8-GPU figure
  leaves over perfect scaling: ``epoch / 7248 - t_compute / 8`` (``t_fixed = s1 = 0``,
  ``gamma = 1``: two points identify two parameters).
* ``inter_node``: how much costlier synchronisation gets across nodes, from the Transformer-XL
  rows. The intra-node synchronisation share ``f`` comes from Transformer-XL base weak scaling
  on 1..8 A100s (``f = 1 / efficiency_8 - 1``); the multi-node rows (Transformer-XL large on
  1, 2, 4, 8 DGX-2H nodes) give for k nodes a synchronisation time relative to one node of
  ``((1 + f) / efficiency_k - 1) / f``; ``inter_node`` is the mean over k.
* start-up, checkpoint save/load, epoch-time variability and co-location are not published:
  stated defaults (time slicing for co-location, i.e. no ``colocation`` entries).
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timezone
from pathlib import Path

IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_VAL_IMAGES = 50_000
EVAL_COST_PER_IMAGE = 1 / 3          # forward only, against forward + backward
GPUS_PER_NODE = 4                     # the cluster the default simulates (4 A100 per node)
STARTUP_S = 30.0                      # process launch + NCCL init + data-loader warm-up (assumed)
CHECKPOINT_SAVE_S = 2.0               # ~200 MB of weights + momentum to shared storage (assumed)
CHECKPOINT_LOAD_S = 2.0
EPOCH_CV = 0.02                       # run-to-run variation of epoch time (assumed)

RESNET = dict(model="ResNet-50 v1.5", system="DGX A100 80GB", precision="TF32")
TXL_BASE = dict(model="Transformer-XL base", system="DGX A100 40GB", precision="TF32")
TXL_LARGE = dict(model="Transformer-XL large", precision="AMP")


def _select(rows: list[dict], **match) -> dict[int, dict]:
    """Rows matching every ``match`` field (system by prefix), keyed by GPU count."""
    picked = {}
    for row in rows:
        if all(row[k] == v if k != "system" else row[k].startswith(v) for k, v in match.items()):
            picked[int(row["gpus"])] = row
    if not picked:
        raise ValueError(f"no published row matches {match}")
    return picked


def build_default_profile(rows: list[dict], created: str | None = None) -> dict:
    """The default profile from published rows (dicts with the CSV's columns)."""
    resnet = _select(rows, **RESNET)
    img1, img8 = float(resnet[1]["throughput"]), float(resnet[8]["throughput"])
    epoch_images = IMAGENET_TRAIN_IMAGES + IMAGENET_VAL_IMAGES * EVAL_COST_PER_IMAGE
    t_compute = epoch_images / img1
    s0 = epoch_images / img8 - t_compute / 8

    base = _select(rows, **TXL_BASE)
    f = float(base[1]["throughput"]) * 8 / float(base[8]["throughput"]) - 1
    large = {int(r["nodes"]): r for r in _select(rows, **TXL_LARGE, system="8x DGX-2H").values()}
    one_node = float(large[1]["throughput"])
    ratios = []
    for nodes in sorted(k for k in large if k > 1):
        efficiency = float(large[nodes]["throughput"]) / (nodes * one_node)
        ratios.append(((1 + f) / efficiency - 1) / f)
    inter_node = sum(ratios) / len(ratios)

    def measured(gpus: int, images_per_s: float) -> dict:
        epoch = t_compute / gpus + (s0 if gpus > 1 else 0.0)
        return {"gpus": gpus, "kind": "ddp", "nodes": 1, "repeat": 0,
                "epoch_seconds": [round(epoch, 3)], "samples_per_second": [images_per_s],
                "startup_s": STARTUP_S, "checkpoint_save_s": CHECKPOINT_SAVE_S,
                "checkpoint_load_s": CHECKPOINT_LOAD_S,
                "eval_s": round(IMAGENET_VAL_IMAGES * EVAL_COST_PER_IMAGE / images_per_s, 3)}

    used = [resnet[1], resnet[8], base[1], base[8], *large.values()]
    source = (f"Published figures from {resnet[1]['source']}: ResNet-50 v1.5 TF32 on "
              f"DGX A100 80GB, {img1:,.0f} img/s on 1 GPU and {img8:,.0f} img/s on 8; inter-node "
              f"synchronisation from Transformer-XL (PyTorch/LanguageModeling/Transformer-XL/README.md)")
    return {
        "schema": "nasalloc.profile/1",
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "hardware": {"device": "cuda", "device_names": ["NVIDIA A100 80GB"], "device_count": 8,
                     "gpus_per_node": GPUS_PER_NODE, "nodes": 1, "hostname": None},
        "software": {"python": None, "torch": None, "cuda": None, "nccl": None},
        "workload": {"name": "resnet50-imagenet", "config": {}, "batch_policy": "global", "global_batch": None,
                     "samples_per_epoch": IMAGENET_TRAIN_IMAGES, "synthetic_data": False},
        "measurements": [measured(1, img1), measured(8, img8)],
        "overheads": {"startup_s": STARTUP_S, "checkpoint_save_s": CHECKPOINT_SAVE_S,
                      "checkpoint_load_s": CHECKPOINT_LOAD_S,
                      "eval_s": round(IMAGENET_VAL_IMAGES * EVAL_COST_PER_IMAGE / img1, 3)},
        "variability": {"epoch_cv": EPOCH_CV},
        "model": {"t_fixed": 0.0, "t_compute": round(t_compute, 3), "s0": round(s0, 3), "s1": 0.0,
                  "gamma": 1.0, "inter_node": round(inter_node, 4), "colocation": {},
                  "fixed": ["t_fixed", "s1", "gamma"], "measured_min_gpus": 1, "measured_max_gpus": 8},
        "fit": {"kind": "published-two-point", "r2": None, "loo_rel_error": None,
                "points": [{"gpus": g, "measured_s": round(epoch_images / thr, 3),
                            "predicted_s": round(t_compute / g + (s0 if g > 1 else 0.0), 3)}
                           for g, thr in ((1, img1), (8, img8))]},
        "assumptions": [
            f"one epoch = ImageNet-1k: {IMAGENET_TRAIN_IMAGES:,} training images + {IMAGENET_VAL_IMAGES:,} "
            f"validation images at {EVAL_COST_PER_IMAGE:.2f} of a training image's cost (evaluation is inside the model)",
            "scaling model from two published points: t_fixed = s1 = 0, gamma = 1 (no compute/communication overlap)",
            f"inter_node = {inter_node:.3f}: mean over 2/4/8 nodes of the multi-node synchronisation cost relative to one "
            f"node, from Transformer-XL weak scaling (intra-node share f = {f:.4f} from Transformer-XL base on 1-8 A100)",
            f"{GPUS_PER_NODE} GPUs per node (the published 8-GPU point is one DGX A100; a trial of 8 GPUs spans 2 nodes here)",
            f"start-up {STARTUP_S:g} s per trial segment, checkpoint save {CHECKPOINT_SAVE_S:g} s and load "
            f"{CHECKPOINT_LOAD_S:g} s: not published, assumed",
            f"epoch-time coefficient of variation {EPOCH_CV:g}: not published, assumed",
            "co-location not published: trials sharing a GPU are time-sliced (k trials each k times slower)",
        ],
        "published": [{k: row[k] for k in ("source", "system", "model", "precision", "scaling", "batch_per_gpu",
                                           "gpus", "nodes", "throughput", "unit")} for row in used],
    }


def read_rows(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main(argv: list[str]) -> None:
    from nasalloc.io import atomic_write_json

    source = argv[0] if argv else "../shared/data/published_scaling.csv"
    target = Path(__file__).resolve().parent.parent / "nasalloc" / "data" / "default_profile.json"
    profile = build_default_profile(read_rows(source))
    atomic_write_json(target, profile)
    print(f"wrote {target} from {source}")


if __name__ == "__main__":
    main(sys.argv[1:])
