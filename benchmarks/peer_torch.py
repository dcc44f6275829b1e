"""Runs the PyTorch peer script (../shared/peers/airbench_torch_cpu.py) under ITS OWN venv, timing
its steps and, if asked, profiling some of them with torch.profiler. Imports only the standard
library and torch:

    PEER_PYTHON benchmarks/peer_torch.py --out=peer.json --steps=50 [--warmup=5] [--profile] -- \\
        ../shared/peers/airbench_torch_cpu.py ../shared/datasets/cifar10_jpeg.npz --widths=24,96,96 --batch=256

The script itself is not changed: a global optimizer-step hook (torch.optim.optimizer's
`register_optimizer_step_post_hook`) stamps the time after every step, starts/stops the profiler at
step boundaries and ends the script after warmup + steps (before its test-set evaluation). out.json
holds {"steps", "batch", "seconds", "examples_per_sec"} of the timed steps and, with --profile,
"self_ms" per category (the same categories as benchmarks/step_profile.py) and per op ("ops").

The TensorFlow side (benchmarks.vs_peer, benchmarks.step_profile) imports this module for
`find_python` and `run_peer` only: torch is imported in the peer's process alone.
"""  # noqa: E501

import argparse
import json
import os
import re
import runpy
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_DIR = os.path.join(os.path.dirname(ROOT), "shared", "peers")
PEER_SCRIPT = os.path.join(PEERS_DIR, "airbench_torch_cpu.py")
PEER_DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "cifar10_jpeg.npz")
DEFAULT_VENV = os.path.join(ROOT, ".venv-peer")
HOW_TO_CREATE = (
    "python3.11 -m venv .venv-peer && .venv-peer/bin/pip install torch==2.13.0 numpy pillow"
)


def find_python(given: str = "") -> str | None:
    """The peer venv's python: `given`, else $PEER_PYTHON, else .venv-peer/ in the repository; None
    if absent."""
    path = given or os.environ.get("PEER_PYTHON") or os.path.join(DEFAULT_VENV, "bin", "python")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def skip_line(given: str = "") -> str:
    """The one line said when the peer's python is not there."""
    tried = given or os.environ.get("PEER_PYTHON") or os.path.join(DEFAULT_VENV, "bin", "python")
    return (
        f"PyTorch peer skipped: no python at {tried}. Create the peer venv in the repository "
        f"with `{HOW_TO_CREATE}` (../shared/peers/README.md), or give --peer_python=PATH "
        "or $PEER_PYTHON."
    )


def run_peer(
    python: str,
    *,
    widths,
    batch: int,
    bf16: bool,
    lookahead: bool,
    steps: int,
    warmup: int = 5,
    profile: bool = False,
    epochs: float = 10.0,
    data: str = PEER_DATA,
) -> dict:
    """The peer script on `widths` / `batch`, `warmup` + `steps` steps of its real loop (the LR
    schedule of `epochs`), in the peer's venv: this module's out.json. Raises RuntimeError with the
    output's tail."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peer.json")
        args = [
            python,
            os.path.abspath(__file__),
            f"--out={out}",
            f"--steps={steps}",
            f"--warmup={warmup}",
            *(["--profile"] if profile else []),
            "--",
            PEER_SCRIPT,
            data,
            f"--widths={','.join(map(str, widths))}",
            f"--batch={batch}",
            f"--epochs={epochs}",
            f"--bf16={int(bf16)}",
            f"--lookahead={int(lookahead)}",
        ]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode or not os.path.exists(out):
            raise RuntimeError(
                f"the peer failed (exit {proc.returncode}): {' '.join(args)}\n"
                f"{(proc.stdout + proc.stderr)[-2000:]}"
            )
        with open(out) as f:
            return {
                **json.load(f),
                "command": " ".join([python, "benchmarks/peer_torch.py", *args[3:]]),
            }


# (category, pattern on the aten op name); first match wins. PyTorch computes a convolution's input
# and filter gradients in one op (aten::convolution_backward), so its backward is not split.
TORCH_CATEGORIES = (
    ("conv backward (input + filter)", r"convolution_backward|conv.*backward"),
    ("conv forward", r"convolution|conv2d|_conv"),
    ("BatchNorm", r"batch_norm"),
    ("casts", r"^aten::(to|_to_copy|copy_)$"),
    ("activation", r"gelu|relu|silu|sigmoid|tanh"),
    ("pooling", r"pool"),
)
OPTIMIZER_SCOPE = "Optimizer.step"  # torch.optim records each step under this annotation


class _Done(Exception):
    """Raised from the hook after the last step wanted: skips the rest of the script."""


def categorize(name: str, under_optimizer: bool) -> str:
    if under_optimizer:
        return "optimizer update"
    for category, pattern in TORCH_CATEGORIES:
        if re.search(pattern, name):
            return category
    return "everything else"


def profile_summary(prof) -> dict:
    """Self CPU time (ms) per category and per op, over the profiled steps."""
    by_category, by_op = {}, {}
    for event in prof.events():
        if event.name.startswith(OPTIMIZER_SCOPE) or event.name.startswith("ProfilerStep"):
            continue  # annotations: their children carry the time
        parent, under = event.cpu_parent, False
        while parent is not None and not under:
            under, parent = parent.name.startswith(OPTIMIZER_SCOPE), parent.cpu_parent
        ms = event.self_cpu_time_total / 1000.0
        category = categorize(event.name, under)
        by_category[category] = by_category.get(category, 0.0) + ms
        by_op[event.name] = by_op.get(event.name, 0.0) + ms
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:25]
    return {"self_ms": by_category, "ops": [{"op": k, "self_ms": v} for k, v in top]}


def main():
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=50, help="timed (and profiled) steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (>= 1)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT ARGS...")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    batch = int(next((a.split("=", 1)[1] for a in script if a.startswith("--batch=")), 256))
    stamps, result = (
        [],
        {
            "steps": args.steps,
            "batch": batch,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    )
    prof = (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        if args.profile
        else None
    )

    def after_step(optimizer, *_):
        stamps.append(time.perf_counter())  # CPU tensors: the step is done when step() returns
        if len(stamps) == args.warmup and prof is not None:
            prof.start()
        if len(stamps) == args.warmup + args.steps:
            if prof is not None:
                prof.stop()
            raise _Done

    register_optimizer_step_post_hook(after_step)
    sys.argv = script
    try:
        runpy.run_path(script[0], run_name="__main__")
        raise SystemExit(
            f"peer_torch: the script ended after {len(stamps)} steps, before warmup + steps "
            f"({args.warmup + args.steps}): give it more --epochs"
        )
    except _Done:
        pass
    seconds = stamps[-1] - stamps[args.warmup - 1]
    result.update(seconds=seconds, examples_per_sec=args.steps * batch / seconds)
    if prof is not None:
        result.update(profile_summary(prof))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(
        f"peer_torch: {result['examples_per_sec']:.0f} ex/s over {args.steps} steps of batch "
        f"{batch}",
        flush=True,
    )


if __name__ == "__main__":
    main()
