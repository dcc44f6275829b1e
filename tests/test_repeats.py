"""--variants and --sweep cells (parsed as flags, built by the recipes), and what a series
writes."""

import json

import pytest

from framework import ConfigError
from trainers import repeats

SMOKE_MLP = dict(model="mlp", train_examples=384, test_examples=256, eval_transforms=("flip_ud",))


@pytest.mark.slow
def test_variants_train_in_their_folders_and_are_compared(tmp_path, data_dir):
    rows = repeats.sweep(
        "mnist",
        None,
        variants="baseline:;deeper:widths=32,32 learning_rate=0.01",
        smoke=True,
        model_dir=str(tmp_path),
        **SMOKE_MLP,
    )
    assert [(r["variant"], r["options"], r["runs"]) for r in rows] == [
        ("baseline", "", 1),
        ("deeper", "widths=32,32 learning_rate=0.01", 1),
    ]
    results = {
        v: json.loads((tmp_path / v / "repeat_0" / "result.json").read_text())
        for v in ("baseline", "deeper")
    }
    record = json.loads((tmp_path / "deeper" / "repeat_0" / "run_config.json").read_text())[
        "config"
    ]
    assert (
        record["widths"] == [32, 32] and record["learning_rate"] == 0.01
    )  # the variant over the command line
    assert results["deeper"]["trainable_params"] == 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    assert results["baseline"]["trainable_params"] != results["deeper"]["trainable_params"]
    assert json.loads((tmp_path / "sweep.json").read_text()) == rows
    assert (
        "| variant | options | test accuracy (mean ± std) | runs |"
        in (tmp_path / "sweep.md").read_text()
    )
    # compare.* over the real runs: each variant a group, its statistics those of its result.json
    table = json.loads((tmp_path / "compare.json").read_text())
    for variant, result in results.items():
        stats = table["groups"][variant]["metrics"]
        assert stats["test_accuracy"]["mean"] == pytest.approx(result["test_accuracy"])
        assert stats["test_flip_ud_accuracy"]["max"] == pytest.approx(
            result["test_flip_ud_accuracy"]
        )
        assert stats["examples_per_sec"]["n"] == 1
    assert (tmp_path / "compare.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "deeper" / "repeats.json").read_text())
    assert summary["test_accuracies"] == [results["deeper"]["test_accuracy"]]
    # a series writes no per-repeat exports unless asked (--export, --predictions)
    assert not list(tmp_path.glob("*/repeat_0/model.keras")) and not list(
        tmp_path.glob("*/repeat_0/predictions.npz")
    )


def test_a_variant_with_adam_drops_the_cifar_recipes_momentum(tmp_path):
    cells = repeats.recipe_cells(
        "cifar",
        "fast",
        variants="sgd:;adam:optimizer=adam learning_rate=1e-3",
        smoke=True,
        model_dir=str(tmp_path),
    )
    sgd, adam = (cell.exp for cell in cells)
    assert (sgd.optimizer, sgd.momentum, sgd.nesterov) == ("sgd", 0.85, True)
    assert (adam.optimizer, adam.momentum, adam.nesterov) == (
        "adam",
        0.0,
        False,
    )  # dropped, as on the command line
    assert adam.widths == sgd.widths == (24, 96, 96) and cells[1].config.learning_rate == 1e-3
    assert cells[1].config.model_dir == str(tmp_path / "adam")
    with pytest.raises(
        ConfigError, match=r"variant 'adam': --momentum=0.9 does not apply to --optimizer=adam"
    ):
        repeats.recipe_cells(
            "cifar", "fast", variants="adam:optimizer=adam", momentum=0.9, model_dir=str(tmp_path)
        )


def test_grid_values_mean_what_they_mean_as_flags(tmp_path):
    cells = repeats.recipe_cells(
        "mnist", None, grid="activation=relu,gelu;widths=32", model="mlp", model_dir=str(tmp_path)
    )
    assert [(c.name, c.exp.activation, c.exp.widths) for c in cells] == [
        ("activation-relu_widths-32", "relu", (32,)),
        ("activation-gelu_widths-32", "gelu", (32,)),
    ]


@pytest.mark.parametrize(
    "variants,match",
    [
        ("baseline:;a:nosuch=1", r"--variants: variant 'a': Unknown command line flag 'nosuch'"),
        (
            "baseline:;a:learning_rate=fast",
            r"variant 'a': flag --learning_rate=fast: could not convert",
        ),
        ("a:widths=x", r"variant 'a': --widths=x: expected integers"),
        ("a:model=nonesuch", r"variant 'a': --model='nonesuch': unknown"),
        ("a:model_dir=/elsewhere", r"variant 'a': model_dir cannot be set per cell"),
        ("a:;a:epochs=2", r"'a' is given twice"),
        ("a b:epochs=2", r"'a b' is not a variant name"),
    ],
)
def test_a_bad_variant_fails_before_anything_is_written(tmp_path, variants, match):
    with pytest.raises(ConfigError, match=match):
        repeats.sweep("mnist", None, variants=variants, model_dir=str(tmp_path / "sweep"))
    assert not (tmp_path / "sweep").exists()


def test_sweep_or_variants_not_both(tmp_path):
    with pytest.raises(ConfigError, match="give one of them"):
        repeats.recipe_cells(
            "mnist", None, grid="epochs=1,2", variants="a:", model_dir=str(tmp_path)
        )


@pytest.mark.slow
def test_a_series_exports_only_when_asked(tmp_path, data_dir):
    from trainers import recipes

    exp, config = recipes.configs("mnist", None, smoke=True, model_dir=str(tmp_path), **SMOKE_MLP)
    summary = repeats.run_repeats(
        exp, config.replace(export=True), 2
    )  # export=True is TrainConfig's default
    assert not list(tmp_path.glob("repeat_*/model.keras")) and not list(
        tmp_path.glob("repeat_*/predictions.npz")
    )
    assert (
        len(set(summary["test_accuracies"])) == 2 and summary["metrics"]["test_accuracy"]["n"] == 2
    )
    assert 0.0 < summary["ensemble_logits_accuracy"] <= 1.0 and "ensemble_probs_accuracy" in summary
    repeats.run_repeats(
        exp, config, 1, exports={"export": True}
    )  # asked: the model is exported (resumes repeat_0)
    assert (tmp_path / "repeat_0" / "model.keras").exists() and not (
        tmp_path / "repeat_1" / "model.keras"
    ).exists()


def test_ensembles_follow_the_task():
    """Binary outputs are one logit (an argmax over one column would call every image class 0);
    regression outputs are averaged and scored by MAE."""
    import numpy as np

    labels = np.array([1, 0, 1, 0])
    outputs = np.array(
        [[[2.0], [-1.0], [-0.5], [0.2]], [[1.0], [-3.0], [1.5], [-2.0]]]
    )  # 2 repeats
    got = repeats.ensemble_metrics("binary", outputs, labels)
    assert got == {
        "ensemble_logits_accuracy": 1.0,
        "ensemble_probs_accuracy": 1.0,
    }  # means 1.5 -2 0.5 -0.9
    assert repeats.ensemble_metrics("regression", outputs, np.array([1.5, -2.0, 0.0, 0.0]))[
        "ensemble_mae"
    ] == pytest.approx((0.5 + 0.9) / 4)
    logits = np.array([[[3.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    assert (
        repeats.ensemble_metrics("classification", logits, np.array([0, 1]))[
            "ensemble_logits_accuracy"
        ]
        == 1.0
    )


@pytest.mark.slow
def test_binary_repeats_ensemble_beats_chance(tmp_path, data_dir):
    from trainers import recipes

    exp, config = recipes.configs(
        "mnist",
        None,
        model_dir=str(tmp_path),
        task="binary",
        classes=(3, 5),
        model="mlp",
        train_examples=2048,
        test_examples=512,
        epochs=1,
        export=False,
        predictions=False,
    )
    summary = repeats.run_repeats(exp, config, 2)
    assert min(summary["test_accuracies"]) > 0.8  # 3 against 5: chance 0.5
    assert summary["ensemble_logits_accuracy"] > 0.8 and summary["ensemble_probs_accuracy"] > 0.8
