"""The time budget's ladder: the rung chosen from a (fake) measured speed, when the ladder applies,
and one real run that trains the chosen rung's net for its epochs."""

import json
import logging

import pytest

from framework import ConfigError
from trainers import recipes, time_budget

LADDER = time_budget.LADDERS["airbench"]
FAST = (24, 96, 96)


def _choose(rate, minutes=11.0, steps_per_epoch=195):
    return time_budget.choose_rung(
        minutes,
        rate,
        ladder=LADDER,
        measured_widths=FAST,
        steps_per_epoch=steps_per_epoch,
        global_batch_size=256,
    )


def test_the_largest_rung_that_fits_is_chosen_from_the_measured_speed():
    # 1,607 ex/s (the fast recipe, bf16, Sapphire Rapids): 32,128,128 costs 1.66x the fast net per
    # example, 12 epochs of it 10.3 min; 48,192,192 (3.46x) x 14 would take 24.6 min.
    decision = _choose(1607.0)
    assert decision["widths"] == [32, 128, 128] and decision["train_steps"] == 12 * 195
    assert decision["estimated_minutes"] == pytest.approx(
        12 * 195 * 256 * 1.656 / 1607 / 60, rel=1e-3
    )
    assert decision["line"] == (
        "time budget: 11.0 min, measured 1,607 ex/s at 24,96,96 -> rung 32,128,128 x "
        "12 epochs, est. 10.3 min"
    )
    assert (
        _choose(1e5)["widths"] == [64, 256, 256] and _choose(1e5)["epochs"] == 16
    )  # past the top: the top
    # More than 10 epochs when the rung says so: the old cap (--epochs=10) no longer stops it.
    assert _choose(4000.0)["train_steps"] == 14 * 195
    speeds = (1100, 2000, 2635, 4000, 9000)
    rungs = [
        LADDER.index((tuple(_choose(r)["widths"]), round(_choose(r)["epochs"]))) for r in speeds
    ]
    assert rungs == sorted(rungs) == [0, 1, 2, 3, 4]  # a faster machine never gets a smaller rung


def test_a_slow_machine_trains_the_first_rung_as_long_as_fits():
    decision = _choose(600.0)  # the fast net alone: 10 epochs would take 13.9 min
    assert decision["widths"] == list(FAST) and decision["train_steps"] == int(11 * 60 * 600 / 256)
    assert decision["estimated_minutes"] <= 11.0 and "no rung fits" in decision["line"]


def test_a_rung_that_may_fit_is_timed_and_the_nets_between_are_interpolated():
    # Speeds measured on the 2-core Zen 5 EPYC: the wide nets cost far less than their FLOPs say.
    measured = {
        (32, 128, 128): 1700.0,
        (40, 160, 160): 1100.0,
        (48, 192, 192): 1000.0,
        (64, 256, 256): 550.0,
    }
    timed = []

    def measure(widths):
        timed.append(tuple(widths))
        return measured[tuple(widths)]

    def choose(rate):
        timed.clear()
        return time_budget.choose_rung(
            11.0,
            rate,
            ladder=LADDER,
            measured_widths=FAST,
            steps_per_epoch=195,
            global_batch_size=256,
            measure=measure,
        )

    # 2,059 ex/s: FLOPs alone say 40 x 12 takes 12.0 min (32 x 12 would be chosen); 48 x 14 might
    # fit and is timed (11.6 min: no), then 40 x 12 is (9.1 min: yes).
    decision = choose(2059.0)
    assert timed == [(48, 192, 192), (40, 160, 160)] and decision["widths"] == [40, 160, 160]
    assert decision["estimated_minutes"] == pytest.approx(12 * 195 * 256 / 1100 / 60, rel=1e-6)
    assert decision["line"] == (
        "time budget: 11.0 min, measured 2,059 ex/s at 24,96,96, 1,100 at 40,160,160, "
        "1,000 at 48,192,192 -> rung 40,160,160 x 12 epochs, est. 9.1 min"
    )
    assert decision["timed_rungs"] == {"40,160,160": 1100.0, "48,192,192": 1000.0}
    # 2,635 ex/s: 48 x 14 is timed and does not fit; 40 x 12 fits by FLOPs from the fast net (9.4
    # min): not timed, its estimate interpolated between the two nets timed.
    decision = choose(2635.0)
    assert timed == [(48, 192, 192)] and decision["widths"] == [40, 160, 160]
    assert (
        12 * 195 * 256 / 1100 / 60 * 0.7
        < decision["estimated_minutes"]
        < 12 * 195 * 256 / 2635 / 60 * 2.476
    )
    # Nothing worth timing: no wider rung could fit (900 ex/s), or the widest fits by FLOPs alone
    # (1e5).
    assert choose(900.0)["widths"] == list(FAST) and timed == []
    assert choose(1e5)["widths"] == [64, 256, 256] and timed == []
    # A net faster than its FLOPs say is taken on its measured speed (a GPU: width costs little).
    measured[(64, 256, 256)] = 3500.0
    assert choose(6000.0)["widths"] == [64, 256, 256] and timed == [(64, 256, 256)]


def test_conv_flops_counts_the_airbench_models_convolutions():
    from trainers import models

    widths = (8, 16, 24)
    model = models.build_model(
        "airbench", input_shape=(32, 32, 3), num_classes=10, widths=widths, seed=0
    )
    counted = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) != 4:
            continue
        _, height, width, _ = layer.output.shape
        counted += (
            2
            * height
            * width
            * int(kernel.shape[0] * kernel.shape[1] * kernel.shape[2] * kernel.shape[3])
        )
    assert counted == time_budget.conv_flops(widths)


def test_the_ladder_applies_only_when_neither_widths_nor_epochs_is_given():
    exp, _ = recipes.configs("cifar", "fast")
    assert exp.budget_ladder and exp.train_minutes == 11.0
    exp, _ = recipes.configs("cifar", "fast", widths=[32, 128, 128])
    assert not exp.budget_ladder and exp.train_minutes == 11.0  # the budget still picks the length
    exp, _ = recipes.configs("cifar", "fast", epochs=12)
    assert not exp.budget_ladder and exp.train_minutes == 0.0
    exp, _ = recipes.configs("cifar", "fast", train_minutes=5.0)
    assert exp.budget_ladder
    exp, _ = recipes.configs("cifar", "fast", model="resnet9")  # the recipe's ladder is airbench's
    assert not exp.budget_ladder
    assert not recipes.configs("cifar", "full")[0].budget_ladder
    with pytest.raises(ConfigError, match="--budget_ladder picks the widths and epochs"):
        recipes.configs("cifar", "fast", widths=[32, 128, 128], budget_ladder=True)
    with pytest.raises(ConfigError, match="--budget_ladder: no ladder for --model=cnn"):
        recipes.configs("mnist", budget_ladder=True)


@pytest.mark.slow
def test_a_budgeted_run_trains_the_chosen_rung(tmp_path, data_dir, monkeypatch, caplog):
    from trainers import models
    from trainers.experiment import run_experiment

    # 1 step per epoch of 16. A fake speed: 60 ex/s for the fast net, 30 for any wider one. In 0.11
    # minutes 40,160,160 x 12 may fit (cost as sqrt(FLOPs): 0.08 min) but not surely (by FLOPs: 0.13
    # min): it is timed on its own net, and fits (0.107 min); 48,192,192 x 14 would not (0.15 min
    # from it).
    fast_params = models.build_model(
        "airbench", input_shape=(32, 32, 3), num_classes=10, widths=FAST, seed=0
    ).count_params()
    monkeypatch.setattr(
        time_budget,
        "measure_examples_per_sec",
        lambda model_fn, **kwargs: 60.0 if model_fn().count_params() == fast_params else 30.0,
    )
    exp, config = recipes.configs(
        "cifar",
        "fast",
        smoke=True,
        train_examples=16,
        test_examples=32,
        global_batch_size=16,
        train_steps=0,
        train_minutes=0.11,
        steps_per_loop=2,
        tta=False,
        mixed_precision="none",
        model_dir=str(tmp_path),
    )
    assert (
        exp.budget_ladder and exp.widths == FAST and config.epochs == 1
    )  # the smoke's --epochs: not a cap
    with caplog.at_level(logging.INFO):
        result = run_experiment(exp, config)
    decided = json.loads((tmp_path / time_budget.BUDGET_FILE).read_text())
    assert (
        decided["widths"] == [40, 160, 160]
        and decided["train_steps"] == 12 == result["train_steps"]
    )
    assert (
        "at 24,96,96, 30 at 40,160,160 -> rung 40,160,160 x 12 epochs, est. 0.1 min" in caplog.text
    )
    wide = models.build_model(
        "airbench", input_shape=(32, 32, 3), num_classes=10, widths=(40, 160, 160), seed=0
    )
    assert result["trainable_params"] == sum(
        int(w.shape.num_elements()) for w in wide.trainable_weights
    )
    assert list(result["config"]["widths"]) == [40, 160, 160]
