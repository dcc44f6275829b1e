"""Our CIFAR trainer against the PyTorch peer on the same CPU, the ratio in one run.

    python -m benchmarks.vs_peer [--peer_python=PATH] [--precision=bf16|fp32|both] [--net=fast|full]
        [--steps=50] [--warmup=10] [--out=DIR] [--smoke]

For each precision, one after the other: the peer (../shared/peers/airbench_torch_cpu.py, airbench94
in PyTorch, in its own venv: --peer_python, else $PEER_PYTHON, else .venv-peer/bin/python; see
benchmarks/peer_torch.py), then our trainer's real train loop (trainers/recipes.py's cifar recipe of
that net), each on the same widths, batch, precision (bf16: our mixed_bfloat16 / torch's bf16
autocast) and lookahead, --warmup untimed steps then --steps timed ones. Reports ex/s of each and
ours/PyTorch.

  --net=fast  the fast recipe's net: widths 24,96,96, batch 256, no lookahead
  --net=full  airbench94's: widths 64,256,256, batch 1024, lookahead every 5 steps

Without the peer's venv, one line says how to make it and our side still runs (no ratio).
Report: benchmarks/reports/vs_peer/<net>/ (report.md, report.json, ex_per_sec.png).
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import peer_torch  # noqa: E402
from benchmarks.report import ROOT, grouped_bar_plot, machine_setup, write_report  # noqa: E402

PRECISIONS = {"bf16": "bf16", "fp32": "none"}  # ours' --mixed_precision for each

FLAGS = flags.FLAGS


def define_flags():
    """The command line, defined only when run as a program (the tests import this module beside
    others)."""
    flags.DEFINE_string(
        "peer_python",
        "",
        "The peer venv's python (default $PEER_PYTHON, else .venv-peer/bin/python).",
    )
    flags.DEFINE_enum("precision", "both", ["bf16", "fp32", "both"], "Precision(s) to compare.")
    flags.DEFINE_enum(
        "net",
        "fast",
        ["fast", "full"],
        "fast: 24,96,96 at batch 256; full: 64,256,256 at batch 1024.",
    )
    flags.DEFINE_integer(
        "steps", 50, "Timed steps of each side (a multiple of 5: whole lookahead cycles)."
    )
    flags.DEFINE_integer("warmup", 10, "Untimed steps of each side first.")
    flags.DEFINE_string("out", "", "Report folder (default benchmarks/reports/vs_peer/<net>).")
    flags.DEFINE_bool(
        "smoke", False, "Test size (the recipe's smoke variant, 3 steps): figures meaningless."
    )


def warmed_loop(exp, config, *, warmup: int, wrap_task=None):
    """(trainer, iterator) of the experiment's real train loop, compiled and run `warmup` steps, no
    outputs written; `wrap_task(task)` may change the task first (step_profile names its scopes)."""
    import framework
    from trainers.experiment import load_data, make_task, model_fn_for, optimizer_fn_for
    from trainers.time_budget import throwaway_loop

    strategy = framework.prepare_runtime(config)
    data, ds = load_data(exp, config.seed)
    task, policy = make_task(exp, config, ds.num_classes, ds.image_shape)
    if wrap_task is not None:
        wrap_task(task)
    model_shape = policy.output_shape(ds.image_shape) if policy is not None else ds.image_shape
    model_fn = model_fn_for(
        exp, config, ds.num_classes, model_shape, config.seed, train_images=data.train[0]
    )
    trainer, iterator = throwaway_loop(
        config=config,
        data=data,
        model_fn=model_fn,
        optimizer_fn=optimizer_fn_for(exp),
        task=task,
        strategy=strategy,
    )
    trainer.run_train(iterator, warmup)
    trainer.train_results()  # waits for the device
    return trainer, iterator


def ours_examples_per_sec(net: str, mixed_precision: str, *, steps: int, warmup: int, smoke: bool):
    """(examples/s of our real train loop over `steps` after `warmup`, exp, config) for recipe
    `net`."""
    from trainers import recipes

    exp, config = recipes.configs("cifar", net, smoke=smoke, mixed_precision=mixed_precision)
    trainer, iterator = warmed_loop(exp, config, warmup=warmup)
    start = time.perf_counter()
    trainer.run_train(iterator, steps)
    trainer.train_results()  # host-device sync point: the timed steps are done
    return steps * config.global_batch_size / (time.perf_counter() - start), exp, config


def main(argv):
    del argv
    if FLAGS.steps < 1 or FLAGS.warmup < 1:
        raise app.UsageError("--steps and --warmup must be >= 1")
    steps, warmup = (3, 1) if FLAGS.smoke else (FLAGS.steps, FLAGS.warmup)
    precisions = ["bf16", "fp32"] if FLAGS.precision == "both" else [FLAGS.precision]
    python = peer_torch.find_python(FLAGS.peer_python)
    skipped = "" if python else peer_torch.skip_line(FLAGS.peer_python)
    if skipped:
        print(skipped, flush=True)
    rows, summary, commands = [], {"net": FLAGS.net, "smoke": FLAGS.smoke, "peer": bool(python)}, []
    for precision in precisions:
        from trainers import recipes

        exp_planned, planned = recipes.configs(
            "cifar", FLAGS.net, smoke=FLAGS.smoke, mixed_precision=PRECISIONS[precision]
        )
        peer = None
        if python:  # first, before TensorFlow builds anything: each side has the machine alone
            peer = peer_torch.run_peer(
                python,
                widths=exp_planned.widths,
                batch=planned.global_batch_size,
                bf16=precision == "bf16",
                lookahead=bool(planned.lookahead_every),
                steps=steps,
                warmup=warmup,
            )
            commands.append(peer["command"])
            print(f"{precision}: PyTorch {peer['examples_per_sec']:,.0f} ex/s", flush=True)
        ours, exp, config = ours_examples_per_sec(
            FLAGS.net, PRECISIONS[precision], steps=steps, warmup=warmup, smoke=FLAGS.smoke
        )
        ratio = ours / peer["examples_per_sec"] if peer else None
        print(
            f"{precision}: ours {ours:,.0f} ex/s" + (f", ours/PyTorch {ratio:.2f}" if peer else ""),
            flush=True,
        )
        rows.append(
            {
                "precision": precision,
                "widths": ",".join(map(str, exp.widths)),
                "batch": config.global_batch_size,
                "lookahead": config.lookahead_every or "none",
                "steps": steps,
                "PyTorch ex/s": peer["examples_per_sec"] if peer else "skipped",
                "ours ex/s": ours,
                "ours/PyTorch": ratio if peer else "n/a",
            }
        )
        summary[f"{precision}_ours_examples_per_sec"] = ours
        if peer:
            summary[f"{precision}_peer_examples_per_sec"] = peer["examples_per_sec"]
            summary[f"{precision}_ratio"] = ratio
            summary["peer_torch"] = peer["torch"]
    out = FLAGS.out or os.path.join(ROOT, "benchmarks", "reports", "vs_peer", FLAGS.net)
    notes = (
        f"`python -m benchmarks.vs_peer --net={FLAGS.net} --precision={FLAGS.precision} "
        f"--steps={steps}`: per precision, the PyTorch peer then our trainer's train loop, "
        f"{warmup} untimed + {steps} timed steps each, same widths, batch, precision and "
        "lookahead."
        + (f"\n\n{skipped}" if skipped else "".join(f"\n\nPeer: `{c}`" for c in commands))
        + ("\n\nFigures from --smoke: meaningless." if FLAGS.smoke else "")
    )
    series = {"ours": [r["ours ex/s"] for r in rows]}
    if python:
        series["PyTorch"] = [r["PyTorch ex/s"] for r in rows]
    write_report(
        out,
        title=f"Ours vs PyTorch (airbench94), --net={FLAGS.net}",
        summary=summary,
        rows=rows,
        columns=[
            "precision",
            "widths",
            "batch",
            "lookahead",
            "steps",
            "PyTorch ex/s",
            "ours ex/s",
            "ours/PyTorch",
        ],
        setup={**machine_setup(), "warmup": warmup, "peer_python": python or "none"},
        notes=notes,
        plots={
            "ex_per_sec.png": grouped_bar_plot(
                [r["precision"] for r in rows], series, ylabel="examples/s", title="Training speed"
            )
        },
    )
    print(f"vs_peer report written to {out}", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
