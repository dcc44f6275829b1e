"""Metric learning with the vote-weighted triplet loss: `python -m trainers.triplet`.

    python -m trainers.triplet --dataset=mnist                     # triplets from MNIST classes
    python -m trainers.triplet --dataset=fec --fec_csv=F --fec_images=DIR   # Facial Expression Comparison

An embedding network (L2-normalised, scaled) is trained so that the pair of faces the annotators
found most similar is closer than either is to the odd one out. A triplet is three images in the
order of its source (the FEC CSV's face1..3) and the share of annotators who picked each as the odd
one out; class triplets take two images of one class and one of another (shares 0, 0, 1).
--triplet_loss=vote_weighted (the notebook's, default) sums the triplet loss of all three orderings,
each weighted by its share; top_vote keeps only the top-voted ordering (weighted by its share).
Triplet accuracy counts only triplets whose top share exceeds 0.5 (trainers/triplet_loss.py,
odd_one_hits).

The same command line as the image trainers (trainers/cli.py: --repeats, --sweep, --variants, the
run directory's record), its options in trainers/triplet_config.py, its run in
trainers/triplet_train.py.
"""  # noqa: E501

import dataclasses

import framework
from framework import ConfigError
from trainers import cli, recipes
from trainers.triplet_config import TripletConfig, check_run_dir

DEFAULTS = dict(
    epochs=3,
    global_batch_size=64,
    learning_rate=1e-3,
    lr_schedule="cosine",
    monitor="test_triplet_accuracy",
)


def run(triplet_config: TripletConfig, config: framework.TrainConfig) -> dict:
    """Trains the embedding; returns result.json's dict (the trainer's run function)."""
    from trainers import triplet_train  # lazy: keeps TF out of --help

    return triplet_train.train(triplet_config, config)


def run_triplet(config: framework.TrainConfig, **options) -> dict:
    """run(TripletConfig(**options), config), for a notebook: run_triplet(config, dataset="mnist")
    (or run(*recipes.configs("triplet", None, ...)))."""
    unknown = set(options) - {f.name for f in dataclasses.fields(TripletConfig)}
    if unknown:
        raise ConfigError(f"run_triplet: unknown option(s) {', '.join(sorted(unknown))}")
    return run(TripletConfig(**options), config)


recipes.register(
    "triplet",
    config=TripletConfig,
    run=run,
    defaults=DEFAULTS,
    check_run_dir=check_run_dir,
    metric="test_triplet_accuracy",
)

if __name__ == "__main__":
    cli.main("triplet")
