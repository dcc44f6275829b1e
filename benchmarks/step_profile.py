"""Where a training step's time goes, by op type, ours and PyTorch's: a benchmark, not a test.

    python -m benchmarks.step_profile --trainer=cifar [--recipe=fast] [--steps=200] [--mixed_precision=bf16]
        [--onednn_verbose] [--nopeer | --peer_python=PATH] [--out=DIR] [--smoke]

1. Our trainer's real train loop (the recipe's net, batch, precision and augmentation;
   trainers/recipes.py) warms up, then --steps steps run under tf.profiler. The trace (the
   .xplane.pb the profiler writes; no TensorBoard plugin needed) gives each TensorFlow op's time on
   the executor's threads, summed into CATEGORIES by op type and name scope: conv forward /
   backward-input / backward-filter, BatchNorm, casts, activation, pooling, optimizer update,
   augmentation (the task's augmentation, run under a name scope here), everything else (its biggest
   op types are listed). Times are thread time per step, so on 2 cores they can add up to more than
   the step's wall time; the shares are of their sum.
2. --onednn_verbose: a few steps of `python -m trainers.<trainer>` with ONEDNN_VERBOSE=1 in a
   subprocess: oneDNN's primitives by kind, implementation and ISA (avx2, avx512_core_bf16,
   ..._amx), their time, and the layout reorders per step.
3. For cifar, the PyTorch peer (../shared/peers/airbench_torch_cpu.py, the same net, batch,
   precision and lookahead) under torch.profiler, in its own venv (benchmarks/peer_torch.py),
   grouped into the same categories (PyTorch's convolution backward is one op: input and filter
   gradients together).

Report: benchmarks/reports/step_profile/<trainer>_<recipe>_<precision>/ (report.md, report.json,
shares.png). Only the host CPU's ops are read: on a GPU the trace's device plane is not summarized
here.
"""  # noqa: E501

import collections
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import peer_torch  # noqa: E402
from benchmarks.report import ROOT, grouped_bar_plot, machine_setup, write_report  # noqa: E402
from framework.outputs import write_json  # noqa: E402

CATEGORIES = (
    "conv forward",
    "conv backward-input",
    "conv backward-filter",
    "BatchNorm",
    "casts",
    "activation",
    "pooling",
    "optimizer update",
    "augmentation",
    "everything else",
)
# (category, op types, pattern on the op's name scope); the first rule that matches wins.
_RULES = (
    ("augmentation", (), r"(^|/)augment(_\d+)?/"),
    (
        "conv backward-input",
        ("Conv2DBackpropInput", "Conv3DBackpropInputV2", "DepthwiseConv2dNativeBackpropInput"),
        None,
    ),
    (
        "conv backward-filter",
        (
            "Conv2DBackpropFilter",
            "Conv2DBackpropFilterWithBias",
            "Conv3DBackpropFilterV2",
            "DepthwiseConv2dNativeBackpropFilter",
        ),
        None,
    ),
    (
        "conv forward",
        (
            "Conv2D",
            "_FusedConv2D",
            "Conv3D",
            "DepthwiseConv2dNative",
            "_MklConv2D",
            "_MklNativeConv2D",
            "_MklNativeFusedConv2D",
        ),
        None,
    ),
    ("casts", ("Cast",), None),
    (
        "pooling",
        (
            "MaxPool",
            "MaxPoolGrad",
            "MaxPoolV2",
            "MaxPoolGradV2",
            "AvgPool",
            "AvgPoolGrad",
            "_MklNativeMaxPool",
            "_MklNativeMaxPoolGrad",
        ),
        None,
    ),
    (
        "BatchNorm",
        (
            "FusedBatchNorm",
            "FusedBatchNormV3",
            "FusedBatchNormGradV3",
            "_MklNativeFusedBatchNormV3",
            "_MklNativeFusedBatchNormGradV3",
        ),
        r"(^|/)[\w]*(bn|batch_norm|batchnorm|batch_normalization)\w*/",
    ),
    (
        "activation",
        (
            "Relu",
            "ReluGrad",
            "Relu6",
            "Elu",
            "EluGrad",
            "Selu",
            "Sigmoid",
            "SigmoidGrad",
            "Tanh",
            "TanhGrad",
            "Gelu",
            "Erf",
            "Erfc",
            "Softplus",
        ),
        r"(^|/)(\w*_act\d*|gelu|relu|activation\w*)(_\d+)?/",
    ),
    (
        "optimizer update",
        ("ResourceApplyGradientDescent", "ResourceApplyKerasMomentum", "ResourceApplyAdam"),
        r"^(sgd|adam\w*|lamb|rmsprop|lion|optimizer|lookahead)(_\d+)?/",
    ),
)
# Ops whose time is their callees' (which are counted themselves), not their own.
_CALLS = {
    "PartitionedCall",
    "StatefulPartitionedCall",
    "While",
    "StatelessWhile",
    "If",
    "StatelessIf",
    "Case",
}
_OP_EVENT = re.compile(
    r"^(.*[^:]):([A-Za-z_]\w*)$"
)  # "scope/name:OpType"; not "ExecutorState::Process"
# A call compiled by XLA (a jit_compile function such as trainers/activations.py's GELU) runs as one
# async op whose executable shows no TensorFlow op events: its time goes to the op's own name scope.
_ASYNC_OP, _XLA_RUN = "ExecutorState::ProcessAsync::Start", "CpuExecutable::ExecuteAsyncOnStream"
_LOOP_PREFIX = re.compile(
    r"(while/body/_\d+/|while/)"
)  # the compiled loop's frames around the step's ops
_PS_PER_MS = 1e9

FLAGS = flags.FLAGS


def define_flags():
    """The command line, defined only when run as a program (the tests import this module beside
    others)."""
    flags.DEFINE_enum(
        "trainer", "cifar", ["cifar", "mnist", "fashion_mnist"], "Trainer whose recipe to profile."
    )
    flags.DEFINE_string(
        "recipe", "auto", "The trainer's recipe (auto: full on a GPU/TPU, fast on a CPU)."
    )
    flags.DEFINE_integer("steps", 200, "Steps traced (after --warmup).")
    flags.DEFINE_integer(
        "warmup", 10, "Steps run first, untraced (tracing, oneDNN's primitive caches)."
    )
    flags.DEFINE_string(
        "mixed_precision",
        "",
        "Override the recipe's precision: none, bf16, fp16 ('' = the recipe's).",
    )
    flags.DEFINE_bool(
        "onednn_verbose",
        False,
        "Also run a few steps with ONEDNN_VERBOSE=1 and summarize the "
        "primitives by ISA and the reorders.",
    )
    flags.DEFINE_integer("onednn_steps", 6, "--onednn_verbose: training steps of that run.")
    flags.DEFINE_bool(
        "peer",
        True,
        "cifar: also profile the PyTorch peer (skipped with one line when its venv is absent).",
    )
    flags.DEFINE_string(
        "peer_python",
        "",
        "The peer venv's python (default $PEER_PYTHON, else .venv-peer/bin/python).",
    )
    flags.DEFINE_integer("peer_steps", 0, "Steps of the peer profiled (0 = --steps).")
    flags.DEFINE_string(
        "out",
        "",
        "Report folder (default benchmarks/reports/step_profile/<trainer>_<recipe>_<precision>).",
    )
    flags.DEFINE_bool(
        "smoke", False, "Test size (the recipe's smoke variant): figures meaningless."
    )


def categorize(op_type: str, scope: str) -> str:
    """The category of one TensorFlow op, from its type and its name scope (the loop frames
    stripped). oneDNN's rewrites of an op (`_MklNativeConv2DBackpropInput`, `_MklConv2D`) count as
    the op."""
    plain = re.sub(r"^_Mkl(Native)?", "", op_type)
    for category, types, pattern in _RULES:
        if (
            op_type in types
            or plain in types
            or (pattern and re.search(pattern, scope, re.IGNORECASE))
        ):
            return category
    return "everything else"


def op_times(logdir: str) -> tuple[dict, dict]:
    """({category: ms}, {"category / op type": ms}) of every op in the newest trace under `logdir`:
    each op's own time (ops nested in it on the same thread subtracted) on the host's executor
    threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(
        glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime
    )
    if not paths:
        raise FileNotFoundError(f"no .xplane.pb under {logdir}: the profiler wrote no trace")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    by_category, by_op = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith(
                "tf_Compute"
            ):  # tf_data_*: the input pipeline's own threads
                continue
            ops = []
            xla_runs = [
                (e.offset_ps, e.offset_ps + e.duration_ps)
                for e in line.events
                if _is_xla_run(plane.event_metadata[e.metadata_id].name)
            ]
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                match = _OP_EVENT.match(name)
                if match and match.group(2) not in _CALLS:
                    ops.append((event.offset_ps, event.duration_ps, match.group(2), match.group(1)))
                elif name == _ASYNC_OP and _holds(
                    event, xla_runs
                ):  # a call compiled by XLA: no op events inside
                    ops.append(
                        (event.offset_ps, event.duration_ps, "XLA function", _op_name(plane, event))
                    )
            ops.sort(key=lambda op: (op[0], -op[1]))
            own = [duration for _, duration, _, _ in ops]
            stack = []  # indices of the ops still open at this offset
            for i, (start, duration, _, _) in enumerate(ops):
                while stack and ops[stack[-1]][0] + ops[stack[-1]][1] <= start:
                    stack.pop()
                if stack:
                    own[stack[-1]] -= duration
                stack.append(i)
            for (_, _, op_type, scope), ps in zip(ops, own):
                category = categorize(op_type, _LOOP_PREFIX.sub("", scope))
                by_category[category] += ps / _PS_PER_MS
                by_op[f"{category} / {op_type}"] += ps / _PS_PER_MS
    return dict(by_category), dict(by_op)


def _is_xla_run(name: str) -> bool:
    """An event of an XLA executable running: TF 2.21 marks the whole run (_XLA_RUN); TF 2.20 shows
    only XLA CPU's thunks (`call`, `..._fusion.clone`, their `end: ...`), never TensorFlow op
    events."""
    if name == _XLA_RUN:
        return True
    if _OP_EVENT.match(name):
        return False
    return name == "call" or name.startswith("end: ") or "fusion" in name


def _holds(event, spans) -> bool:
    end = event.offset_ps + event.duration_ps
    return any(event.offset_ps <= start and stop <= end for start, stop in spans)


def _op_name(plane, event) -> str:
    """The op an executor event ran: its `name` stat (a string, or a reference to one)."""
    for stat in event.stats:
        if plane.stat_metadata[stat.metadata_id].name == "name":
            return stat.str_value or plane.stat_metadata[stat.ref_value].name
    return ""


def onednn_summary(log_text: str, steps: int) -> dict:
    """ONEDNN_VERBOSE=1 output -> {"max_isa", "primitives": [{kind, implementation, isa, count,
    ms}], "isa_ms", "reorders", "reorders_per_step"} (oneDNN 3's
    `onednn_verbose,[v1,][time,]primitive,exec,...`)."""
    max_isa, rows = "", collections.defaultdict(lambda: [0, 0.0])
    for line in log_text.splitlines():
        if not line.startswith("onednn_verbose"):
            continue
        fields = line.split(",")
        if "isa:" in line and "info" in fields:
            max_isa = line.split("isa:", 1)[1].strip()  # the rest of the line: the name has commas
        if "exec" not in fields:
            continue
        i = fields.index("exec")
        kind, impl = fields[i + 2], fields[i + 3]
        isa = impl.split(":", 1)[1] if ":" in impl else "(not named)"
        try:
            ms = float(fields[-1])
        except ValueError:
            ms = 0.0
        row = rows[(kind, impl.split(":", 1)[0] or kind, isa)]
        row[0] += 1
        row[1] += ms
    primitives = [
        {"kind": k, "implementation": impl, "isa": isa, "count": c, "ms": ms}
        for (k, impl, isa), (c, ms) in sorted(rows.items(), key=lambda kv: -kv[1][1])
    ]
    isa_ms = collections.Counter()
    for p in primitives:
        isa_ms[p["isa"]] += p["ms"]
    reorders = sum(p["count"] for p in primitives if p["kind"] == "reorder")
    return {
        "max_isa": max_isa,
        "primitives": primitives,
        "isa_ms": dict(isa_ms),
        "reorders": reorders,
        "reorders_per_step": reorders / max(1, steps),
        "total_ms": sum(p["ms"] for p in primitives),
    }


def run_onednn_verbose(
    trainer: str, recipe: str, steps: int, mixed_precision: str, smoke: bool
) -> dict:
    """A few steps of the trainer's command with ONEDNN_VERBOSE=1 (its own process: the variable is
    read when oneDNN starts), summarized."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable,
            "-m",
            f"trainers.{trainer}",
            *([f"--recipe={recipe}"] if recipe else []),
            f"--train_steps={steps}",
            "--steps_per_loop=1",
            "--train_minutes=0",
            "--test_examples=256",
            "--noexport",
            f"--model_dir={tmp}/run",
            *([f"--mixed_precision={mixed_precision}"] if mixed_precision else []),
            *(["--notta", "--tta_translate=0"] if trainer == "cifar" else []),
            *(["--train_examples=512", "--global_batch_size=64"] if smoke else []),
        ]
        env = {**os.environ, "ONEDNN_VERBOSE": "1", "PYTHONPATH": ROOT}
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(
                f"{' '.join(args[1:])} failed:\n{(proc.stdout + proc.stderr)[-2000:]}"
            )
    # Evaluation's few primitives are in the count too; the training steps dominate it.
    return {
        **onednn_summary(proc.stdout + proc.stderr, steps),
        "command": "ONEDNN_VERBOSE=1 python " + " ".join(args[1:]).replace(tmp, "TMP"),
    }


def profile_ours(
    trainer_name: str, recipe: str, *, steps: int, warmup: int, mixed_precision: str, smoke: bool
):
    """(our categories, per-op times, examples/s under the profiler, the recipe's exp and
    config)."""
    from benchmarks.vs_peer import warmed_loop
    from trainers import recipes

    options = {"mixed_precision": mixed_precision} if mixed_precision else {}
    exp, config = recipes.configs(trainer_name, recipe, smoke=smoke, **options)

    def name_augment_scope(task):
        if task.augment is not None:
            task.augment = _in_scope("augment", task.augment)

    trainer, iterator = warmed_loop(exp, config, warmup=warmup, wrap_task=name_augment_scope)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        trainer.run_train(iterator, steps)
        trainer.train_results()  # host-device sync point: the traced steps are done
        seconds = time.perf_counter() - start
        tf.profiler.experimental.stop()
        by_category, by_op = op_times(logdir)
    return by_category, by_op, steps * config.global_batch_size / seconds, exp, config


def _in_scope(name, fn):
    def scoped(*args, **kwargs):
        with tf.name_scope(name):
            return fn(*args, **kwargs)

    return scoped


def main(argv):
    del argv
    if FLAGS.steps < 1 or FLAGS.warmup < 1:
        raise app.UsageError("--steps and --warmup must be >= 1")
    steps, warmup = (4, 2) if FLAGS.smoke else (FLAGS.steps, FLAGS.warmup)
    from trainers import recipes

    recipe = recipes.pick(FLAGS.trainer, FLAGS.recipe) or "defaults"
    ours, by_op, ours_rate, exp, config = profile_ours(
        FLAGS.trainer,
        FLAGS.recipe,
        steps=steps,
        warmup=warmup,
        mixed_precision=FLAGS.mixed_precision,
        smoke=FLAGS.smoke,
    )
    precision = config.mixed_precision
    out = FLAGS.out or os.path.join(
        ROOT, "benchmarks", "reports", "step_profile", f"{FLAGS.trainer}_{recipe}_{precision}"
    )
    total = sum(ours.values()) or 1.0
    summary = {
        "trainer": FLAGS.trainer,
        "recipe": recipe,
        "mixed_precision": precision,
        "smoke": FLAGS.smoke,
        "steps": steps,
        "ours_examples_per_sec": ours_rate,
        "ours_op_ms_per_step": total / steps,
        "ours_shares": {c: ours.get(c, 0.0) / total for c in CATEGORIES},
    }
    peer, peer_note = None, ""
    if FLAGS.trainer == "cifar" and FLAGS.peer:
        python = peer_torch.find_python(FLAGS.peer_python)
        if python is None:
            peer_note = peer_torch.skip_line(FLAGS.peer_python)
            print(peer_note, flush=True)
        else:
            peer = peer_torch.run_peer(
                python,
                widths=exp.widths,
                batch=config.global_batch_size,
                bf16=precision == "bf16",
                lookahead=bool(config.lookahead_every),
                steps=2 if FLAGS.smoke else (FLAGS.peer_steps or steps),
                warmup=warmup,
                profile=True,
            )
            summary.update(
                peer_examples_per_sec=peer["examples_per_sec"],
                peer_torch=peer["torch"],
                peer_command=peer["command"],
            )
    rows = _rows(ours, steps, peer)
    summary["share_sum"] = sum(r["ours share"] for r in rows)
    if peer:
        peer_total = sum(peer["self_ms"].values()) or 1.0
        summary.update(
            peer_op_ms_per_step=peer_total / peer["steps"],
            peer_shares={c: v / peer_total for c, v in peer["self_ms"].items()},
        )
    onednn = None
    if FLAGS.onednn_verbose:
        onednn = run_onednn_verbose(
            FLAGS.trainer,
            recipe if recipe != "defaults" else "",
            2 if FLAGS.smoke else FLAGS.onednn_steps,
            FLAGS.mixed_precision,
            FLAGS.smoke,
        )
        summary["onednn"] = {
            k: v for k, v in onednn.items() if k != "primitives"
        }  # all of them: onednn.json
    everything_else = sorted(
        ((k.split(" / ", 1)[1], v) for k, v in by_op.items() if k.startswith("everything else")),
        key=lambda kv: -kv[1],
    )[:12]
    summary["everything_else_top"] = {k: v / steps for k, v in everything_else}
    columns = ["category", "ours ms/step", "ours share"] + (
        ["PyTorch ms/step", "PyTorch share"] if peer else []
    )
    precision_flag = f" --mixed_precision={FLAGS.mixed_precision}" if FLAGS.mixed_precision else ""
    notes = (
        f"`python -m benchmarks.step_profile --trainer={FLAGS.trainer} "
        f"--recipe={recipe}{precision_flag}`: "
        f"{steps} steps of our real train loop under tf.profiler ({ours_rate:,.0f} ex/s "
        f"while traced), batch {config.global_batch_size}, precision "
        f"{precision}{', widths ' + ','.join(map(str, exp.widths)) if exp.widths else ''}. "
        "ms/step is op time on the executor threads (2 cores: can exceed the wall time); "
        "shares are of the sum."
        + (
            f" PyTorch: {peer['steps']} steps under torch.profiler "
            f"({peer['examples_per_sec']:,.0f} ex/s), self CPU time per op."
            if peer
            else ""
        )
        + (f"\n\n{peer_note}" if peer_note else "")
        + ("\n\nFigures from --smoke: meaningless." if FLAGS.smoke else "")
    )
    series = {"ours": [r["ours share"] * 100 for r in rows]}
    if peer:
        series["PyTorch"] = [
            None if r.get("PyTorch share") in (None, "") else r["PyTorch share"] * 100 for r in rows
        ]
    write_report(
        out,
        title=f"Step profile: trainers.{FLAGS.trainer} --recipe={recipe}, {precision}",
        summary=summary,
        rows=rows,
        columns=columns,
        setup={**machine_setup(), "steps": steps, "warmup": warmup, "peer": bool(peer)},
        notes=notes,
        plots={
            "shares.png": grouped_bar_plot(
                [r["category"] for r in rows],
                series,
                ylabel="% of op time",
                title="Where the step's time goes",
            )
        },
    )
    _append_details(out, steps, everything_else, peer, onednn)
    if onednn:
        write_json(os.path.join(out, "onednn.json"), onednn)
    print(f"step profile written to {out}", flush=True)


def _rows(ours: dict, steps: int, peer: dict | None) -> list[dict]:
    total = sum(ours.values()) or 1.0
    peer_ms = dict(peer["self_ms"]) if peer else {}
    peer_total = sum(peer_ms.values()) or 1.0
    rows = []
    for category in CATEGORIES:
        row = {
            "category": category,
            "ours ms/step": ours.get(category, 0.0) / steps,
            "ours share": ours.get(category, 0.0) / total,
        }
        if peer:
            key = (
                "conv backward (input + filter)"
                if category.startswith("conv backward")
                else category
            )
            if category == "conv backward-filter":
                row.update({"PyTorch ms/step": "(in the row above)", "PyTorch share": ""})
            else:
                value = peer_ms.get(key, 0.0)
                row.update(
                    {"PyTorch ms/step": value / peer["steps"], "PyTorch share": value / peer_total}
                )
                if category == "conv backward-input":
                    row["category"] = "conv backward-input (PyTorch: input + filter, one op)"
        rows.append(row)
    return rows


def _append_details(out, steps, everything_else, peer, onednn) -> None:
    lines = [
        "",
        "## Inside 'everything else' (ours, ms/step)",
        "",
        "| op type | ms/step |",
        "|---|---|",
    ] + [f"| {k} | {v / steps:.3f} |" for k, v in everything_else]
    if peer:
        lines += [
            "",
            "## PyTorch's biggest ops (self CPU ms/step)",
            "",
            "| op | ms/step |",
            "|---|---|",
        ]
        lines += [
            f"| {op['op']} | {op['self_ms'] / peer['steps']:.3f} |" for op in peer["ops"][:15]
        ]
        lines += ["", f"PyTorch command: `{peer['command']}`"]
    if onednn:
        best = onednn["max_isa"] or "not printed"
        lines += [
            "",
            f"## oneDNN primitives (ONEDNN_VERBOSE=1, CPU's best ISA: {best})",
            "",
            f"`{onednn['command']}`",
            "",
            f"{onednn['reorders']} reorders ({onednn['reorders_per_step']:.1f} per training "
            f"step); all primitives {onednn['total_ms']:.0f} ms.",
            "",
            "| kind | implementation | ISA | count | ms |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['kind']} | {p['implementation']} | {p['isa']} | {p['count']} | {p['ms']:.1f} |"
            for p in onednn["primitives"][:25]
        ]
    with open(os.path.join(out, "report.md"), "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
