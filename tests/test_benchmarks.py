"""Every benchmark report can still be made from the current code and says which commit made it.

The benchmarks run at smoke size (a few steps: the figures mean nothing); what is checked is that
each module runs, writes a report.json that loads with its figures, a report.md stamped with the
commit, and PNG plots that decode to an image of something.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import regenerate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One report of each benchmark module; soak goes through `python -m benchmarks.regenerate` itself.
SMOKE = ("loop_vs_fit/mlp", "input_vs_step/cifar", "input_vs_step/cifar_jpeg", "soak")


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _head():
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"  # a copy without .git


@pytest.fixture(scope="module")
def smoke_reports(tmp_path_factory, data_dir):
    """Each SMOKE report, the benchmarks started at once (each spends seconds importing
    TensorFlow)."""
    out = tmp_path_factory.mktemp("reports")
    heads = {_head()}
    commands = {
        name: regenerate.command(name, str(out), smoke=True) for name in SMOKE if name != "soak"
    }
    commands["soak"] = [
        sys.executable,
        "-m",
        "benchmarks.regenerate",
        "--smoke",
        "--only=soak",
        f"--out={out}",
    ]
    procs = {
        name: subprocess.Popen(
            args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, args in commands.items()
    }
    outputs = {name: proc.communicate(timeout=400)[0] for name, proc in procs.items()}
    heads.add(_head())  # another commit may land while they run: either is right
    return out, heads, {name: (procs[name].returncode, outputs[name]) for name in SMOKE}


def test_every_report_has_a_generator():
    assert regenerate.unmade_reports() == []  # a report folder nothing remakes would go stale
    for module, _, _ in regenerate.REPORTS.values():
        assert os.path.exists(os.path.join(ROOT, *module.split(".")) + ".py"), module


@pytest.mark.xdist_group(
    "benchmark_smoke"
)  # one worker runs the benchmarks once (make test runs 2 workers)
@pytest.mark.parametrize("name", SMOKE)
@pytest.mark.cli
def test_smoke_report_carries_the_commit_and_parses(name, smoke_reports):
    out, heads, runs = smoke_reports
    returncode, output = runs[name]
    assert returncode == 0, output[-3000:]
    folder = out / name
    report = json.loads((folder / "report.json").read_text())
    stamp = report["provenance"]
    assert stamp["commit"] in heads and isinstance(stamp["dirty"], bool), stamp
    assert stamp["cpu"] not in ("", "unknown") and re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC$", stamp["date"]
    )
    assert report["rows"] and report["setup"]["tensorflow"] == tf.__version__
    markdown = (folder / "report.md").read_text()
    assert f"Made from commit {stamp['commit']}" in markdown.splitlines()[2]
    assert "|---|" in markdown  # the table
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert plots
    for plot in plots:
        image = tf.io.decode_png((folder / plot).read_bytes()).numpy()
        assert min(image.shape[:2]) >= 200, (plot, image.shape)
        assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20, (
            plot
        )  # bars, axes, text: not blank
    figures = {
        "loop_vs_fit/mlp": (
            "ours_steps_per_sec",
            "fit_default_steps_per_sec",
            "fit_best_steps_per_sec",
        ),
        "input_vs_step/cifar": (
            "input_alone_examples_per_sec",
            "step_alone_examples_per_sec",
            "combined_examples_per_sec",
        ),
        "input_vs_step/cifar_jpeg": (
            "raw_decode_examples_per_sec",
            "input_alone_examples_per_sec",
            "delivered_to_raw_ratio",
            "step_alone_examples_per_sec",
            "combined_examples_per_sec",
        ),
        "soak": ("steps", "rss_end_mb"),
    }[name]
    for key in figures:
        assert report[key] > 0, (key, report)
    if name == "input_vs_step/cifar":  # the current CIFAR trainer: airbench's net, the CPU's recipe
        from trainers import recipes

        recipe = recipes.pick("cifar", "auto")  # fast on a CPU
        assert (report["model"], report["recipe"], report["smoke"]) == ("airbench", recipe, True)
        assert report["bound"] in ("input", "step") and report["efficiency"] > 0
        assert f"trainers.cifar --recipe={recipe}" in markdown.splitlines()[0]
    if name == "input_vs_step/cifar_jpeg":  # streamed JPEGs: the verdicts and every fix measured
        assert report["bound"] in ("input", "step") and report["engine_verdict"].endswith("-bound")
        settings = [row["setting"] for row in report["rows"]]
        for fix in (
            "num_parallel_calls=1",
            "no prefetch",
            "decoded once, in memory",
            "on device",
            "on host",
            "1 data worker",
            "2 data workers",
        ):
            assert any(fix in s for s in settings), (fix, settings)
        for row in report["rows"]:
            assert (
                row["input alone ex/s"] > 0
                and row["combined ex/s"] > 0
                and 0 <= row["input wait"] <= 1
            ), row


@pytest.fixture(scope="module")
def issue14_smokes(tmp_path_factory, data_dir):
    """benchmarks.step_profile (no peer) and benchmarks.vs_peer without a peer venv, at smoke size,
    at once."""
    out = tmp_path_factory.mktemp("issue14")
    commands = {
        "step_profile": ["benchmarks.step_profile", "--smoke", "--nopeer"],
        "vs_peer": [
            "benchmarks.vs_peer",
            "--smoke",
            "--precision=fp32",
            f"--peer_python={out}/no_python",
        ],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", *args, f"--out={out / name}"],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in commands.items()
    }
    outputs = {name: proc.communicate(timeout=400)[0] for name, proc in procs.items()}
    return out, {name: (procs[name].returncode, outputs[name]) for name in commands}


@pytest.mark.xdist_group("benchmark_smoke")
@pytest.mark.cli
def test_step_profile_names_where_the_step_goes(issue14_smokes):
    from benchmarks.step_profile import CATEGORIES

    out, runs = issue14_smokes
    returncode, output = runs["step_profile"]
    assert returncode == 0, output[-3000:]
    report = json.loads((out / "step_profile" / "report.json").read_text())
    shares = report["ours_shares"]
    assert list(shares) == list(CATEGORIES) and [r["category"] for r in report["rows"]] == list(
        CATEGORIES
    )
    assert sum(shares.values()) == pytest.approx(1.0) and report["ours_op_ms_per_step"] > 0
    # The rules find the airbench step's ops by their real names: each kind of op is there ...
    for category in (
        "conv forward",
        "conv backward-input",
        "conv backward-filter",
        "BatchNorm",
        "activation",
        "pooling",
        "optimizer update",
        "augmentation",
    ):
        assert shares[category] > 0, (category, shares)
    assert shares["everything else"] < 0.2, report[
        "everything_else_top"
    ]  # ... and little is left unnamed
    assert report["ours_examples_per_sec"] > 0 and report["smoke"] is True
    assert (out / "step_profile" / "shares.png").stat().st_size > 1000


@pytest.mark.xdist_group("benchmark_smoke")
@pytest.mark.cli
def test_vs_peer_without_the_peer_venv_says_how_and_still_measures_ours(issue14_smokes):
    out, runs = issue14_smokes
    returncode, output = runs["vs_peer"]
    assert returncode == 0, output[-3000:]
    skipped = [line for line in output.splitlines() if "PyTorch peer skipped" in line]
    assert len(skipped) == 1 and "python3.11 -m venv .venv-peer" in skipped[0], output[-2000:]
    report = json.loads((out / "vs_peer" / "report.json").read_text())
    (row,) = report["rows"]
    assert (
        row["ours ex/s"] > 0 and row["PyTorch ex/s"] == "skipped" and row["ours/PyTorch"] == "n/a"
    )
    assert report["peer"] is False and report["fp32_ours_examples_per_sec"] == row["ours ex/s"]


def test_onednn_verbose_summary_counts_primitives_by_isa_and_reorders():
    from benchmarks.step_profile import onednn_summary

    log = "\n".join(
        [
            "onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with float16, Intel DL Boost and "
            "bfloat16 support and Intel AMX",
            "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,"
            "src:bf16::blocked:acdb::f0,,alg:convolution_direct,mb256_ic24oc96_ih31oh31kh3,0.5",
            "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,"
            "src:bf16::blocked:acdb::f0,,alg:convolution_direct,mb256_ic24oc96_ih31oh31kh3,0.25",
            "onednn_verbose,v1,primitive,exec,cpu,pooling,jit:avx512_core_bf16,forward_training,src:bf16,,alg,desc,0.1",
            "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd "
            "dst:bf16,,,2x3,0.05",
            "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ab:f0,,,2568x12:12x24,2.0",
            "not a oneDNN line",
        ]
    )
    summary = onednn_summary(log, steps=2)
    assert summary["max_isa"].startswith("Intel AVX-512") and summary["reorders"] == 1
    assert summary["reorders_per_step"] == 0.5 and summary["total_ms"] == pytest.approx(2.9)
    assert summary["isa_ms"] == pytest.approx(
        {"avx10_1_512_amx": 0.75, "avx512_core_bf16": 0.1, "uni": 0.05, "(not named)": 2.0}
    )
    conv = summary["primitives"][1]
    assert (conv["kind"], conv["implementation"], conv["count"]) == (
        "convolution",
        "brg_conv_fwd",
        2,
    )


def test_step_profile_counts_onednn_rewrites_as_their_op():
    """Op types differ by CPU (an AVX2 EPYC ran Conv2DBackpropInput, a Zen 5
    _MklNativeConv2DBackpropInput)."""
    from benchmarks.step_profile import categorize

    for op, category in (
        ("Conv2DBackpropInput", "conv backward-input"),
        ("_MklNativeConv2DBackpropInput", "conv backward-input"),
        ("_MklNativeConv2DBackpropFilter", "conv backward-filter"),
        ("_MklNativeConv2DBackpropFilterWithBias", "conv backward-filter"),
        ("_MklNativeFusedConv2D", "conv forward"),
        ("_MklMatMul", "everything else"),
    ):
        assert categorize(op, "model/conv_1/") == category, op


@pytest.mark.cli
def test_notebook_experiments_run_each_command_and_tabulate_its_figure(tmp_path, data_dir):
    """Issue 17's table at smoke size: each command runs as typed, in its own process, and its
    figure is read from the run's result.json (a series' repeats.json, a variant's folder)."""
    proc = subprocess.run(
        regenerate.command("notebook_experiments", str(tmp_path), smoke=True),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "notebook_experiments" / "report.json").read_text())
    rows = {row["experiment"]: row for row in report["rows"]}
    assert list(rows) == ["variants", "transfer_stage1", "transfer_head"] and not report["failed"]
    assert re.fullmatch(
        r"baseline: 0\.\d{4}; more_layers: 0\.\d{4}; sigmoid_inside: 0\.\d{4}",
        rows["variants"]["figure"],
    ), rows["variants"]
    # The head trained on the 3-class folder from the CIFAR backbone: above 0, at most 1.
    accuracy = float(rows["transfer_head"]["figure"].split()[-1])
    assert 0 < accuracy <= 1 and "--init_from=" in rows["transfer_head"]["command"], rows[
        "transfer_head"
    ]
    for row in rows.values():
        assert (
            row["command"].startswith("`python -m trainers.") and "missing" not in row["figure"]
        ), row
    markdown = (tmp_path / "notebook_experiments" / "report.md").read_text()
    assert "| transfer_head |" in markdown and "SMOKE RUN" in markdown


@pytest.mark.cli
def test_fidelity_without_the_peer_venv_says_how(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fidelity",
            f"--peer_python={tmp_path}/no_python",
            f"--out={tmp_path}/out",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "PyTorch peer skipped: no python at" in proc.stdout, (
        proc.stdout + proc.stderr
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fidelity_runs_ours_with_the_peers_settings():
    from benchmarks import fidelity
    from framework import config_flags  # noqa: F401  (the flags' parser is the trainers')
    from trainers import recipes

    args = fidelity.ours_flags((24, 96, 96), 256, 10.0, seed=2)
    options = dict(
        arg[2:].split("=", 1) if "=" in arg else (arg[2:], "true")
        for arg in args
        if not arg.startswith("--no")
    )
    exp, config = recipes.configs(
        "cifar",
        "fast",
        widths=(24, 96, 96),
        global_batch_size=256,
        learning_rate=0.375,
        train_steps=int(options["train_steps"]),
        train_minutes=0.0,
        alternating_flip=True,
        augment=options["augment"],
        lookahead_every=5,
        tta=True,
        tta_translate=1,
        mixed_precision="bf16",
        seed=2,
    )
    assert (
        options["train_steps"] == "1950" and options["learning_rate"] == "0.375"
    )  # 10 x 195 steps, 1.5 at 1024
    assert exp.alternating_flip and exp.augment == "crop:padding=2" and config.lookahead_every == 5
    assert (
        config.lr_schedule,
        config.onecycle_start,
        config.onecycle_end,
        config.warmup_fraction,
    ) == ("onecycle", 0.2, 0.07, 0.23)  # the peer's triangle
    assert (
        exp.label_smoothing == 0.2 and exp.tta and exp.tta_translate == 1 and not exp.budget_ladder
    )


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--stream_seconds=0", r"--stream_seconds=0.0: must be > 0"),
        ("--limit_repeats=0", r"--limit_repeats=0: must be >= 1"),
        ("--folder_image_size=-1", r"--folder_image_size=-1: must be >= 0"),
    ],
)
@pytest.mark.cli
def test_input_vs_step_refuses_a_bad_value_before_measuring(tmp_path, flag, message):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.input_vs_step",
            "--case=folder",
            flag,
            f"--out={tmp_path}/out",
            f"--work_dir={tmp_path}/work",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and re.search(message, proc.stdout + proc.stderr), (
        proc.stdout + proc.stderr
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
