"""The time budget's ladder: the rung chosen from a (fake) measured speed, when the ladder applies, and one
real run that trains the chosen rung's net for its epochs."""
import json
import logging

import pytest

from framework import ConfigError
from trainers import recipes, time_budget

LADDER = time_budget.LADDERS["airbench"]
FAST = (24, 96, 96)


def _choose(rate, minutes=11.0, steps_per_epoch=195):
    return time_budget.choose_rung(minutes, rate, ladder=LADDER, measured_widths=FAST,
                                   steps_per_epoch=steps_per_epoch, global_batch_size=256)


def test_the_largest_rung_that_fits_is_chosen_from_the_measured_speed():
    # 1,607 ex/s (the fast recipe, bf16, Sapphire Rapids): 32,128,128 costs 1.66x the fast net per example,
    # 12 epochs of it 10.3 min; 48,192,192 (3.46x) x 14 would take 24.6 min.
    decision = _choose(1607.0)
    assert decision["widths"] == [32, 128, 128] and decision["train_steps"] == 12 * 195
    assert decision["estimated_minutes"] == pytest.approx(12 * 195 * 256 * 1.656 / 1607 / 60, rel=1e-3)
    assert decision["line"] == ("time budget: 11.0 min, measured 1,607 ex/s at 24,96,96 -> rung 32,128,128 x "
                                "12 epochs, est. 10.3 min")
    assert _choose(1e5)["widths"] == [64, 256, 256] and _choose(1e5)["epochs"] == 16  # past the top: the top
    # More than 10 epochs when the rung says so: the old cap (--epochs=10) no longer stops it.
    assert _choose(4000.0)["train_steps"] == 14 * 195
    speeds = (1100, 2000, 2635, 4000, 9000)
    rungs = [LADDER.index((tuple(_choose(r)["widths"]), round(_choose(r)["epochs"]))) for r in speeds]
    assert rungs == sorted(rungs) == [0, 1, 2, 3, 4]  # a faster machine never gets a smaller rung


def test_a_slow_machine_trains_the_first_rung_as_long_as_fits():
    decision = _choose(600.0)  # the fast net alone: 10 epochs would take 13.9 min
    assert decision["widths"] == list(FAST) and decision["train_steps"] == int(11 * 60 * 600 / 256)
    assert decision["estimated_minutes"] <= 11.0 and "no rung fits" in decision["line"]


def test_conv_flops_counts_the_airbench_models_convolutions():
    from trainers import models
    widths = (8, 16, 24)
    model = models.build_model("airbench", input_shape=(32, 32, 3), num_classes=10, widths=widths, seed=0)
    counted = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) != 4:
            continue
        _, height, width, _ = layer.output.shape
        counted += 2 * height * width * int(kernel.shape[0] * kernel.shape[1] * kernel.shape[2] * kernel.shape[3])
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


def test_a_budgeted_run_trains_the_chosen_rung(tmp_path, data_dir, monkeypatch, caplog):
    from trainers import models
    from trainers.experiment import run_experiment
    # 1 step per epoch of 16; at a fake 60 ex/s, 0.11 minutes fit 32,128,128 x 12 (0.09 min) but not
    # 40,160,160 x 12 (0.14 min).
    monkeypatch.setattr(time_budget, "measure_examples_per_sec", lambda **kwargs: 60.0)
    exp, config = recipes.configs("cifar", "fast", smoke=True, train_examples=16, test_examples=32,
                                  global_batch_size=16, train_steps=0, train_minutes=0.11, steps_per_loop=2,
                                  tta=False, mixed_precision="none", model_dir=str(tmp_path))
    assert exp.budget_ladder and exp.widths == FAST and config.epochs == 1  # the smoke's --epochs: not a cap
    with caplog.at_level(logging.INFO):
        result = run_experiment(exp, config)
    decided = json.loads((tmp_path / time_budget.BUDGET_FILE).read_text())
    assert decided["widths"] == [32, 128, 128] and decided["train_steps"] == 12 == result["train_steps"]
    assert "-> rung 32,128,128 x 12 epochs, est. 0.1 min" in caplog.text
    wide = models.build_model("airbench", input_shape=(32, 32, 3), num_classes=10, widths=(32, 128, 128), seed=0)
    assert result["trainable_params"] == sum(int(w.shape.num_elements()) for w in wide.trainable_weights)
    assert list(result["config"]["widths"]) == [32, 128, 128]
