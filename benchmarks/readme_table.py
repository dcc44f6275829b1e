"""The README's figures table, made from the committed reports: `python -m benchmarks.readme_table`.

Every row is read from one report.json under benchmarks/reports/ and names the CPU, the date and the
commit of that report, so the table never mixes a figure with a machine it was not measured on. The
table is written between the two marker lines of README.md (MARKERS) and nothing else in the file
changes. `make benchmarks` (benchmarks/regenerate.py) calls it after remaking the reports; `--check`
only says whether the README is up to date (exit 1 when it is not).
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS_DIR = os.path.join(ROOT, "benchmarks", "reports")
README = os.path.join(ROOT, "README.md")
MARKERS = ("<!-- figures:begin -->", "<!-- figures:end -->")
COLUMNS = ("what", "figure", "CPU", "date", "commit", "report")


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _loop_vs_fit(r: dict) -> str:
    return (
        f"{r['speedup_vs_fit_default']:.2f}x `fit`'s default, "
        f"{r['speedup_vs_fit_best']:.2f}x `fit`'s best ({r['fit_best_setting']})"
    )


def _fidelity(r: dict) -> str:
    return (
        f"ours {_pct(r['ours_mean'])} +- {_pct(r['ours_std'])}, PyTorch original "
        f"{_pct(r['peer_mean'])} +- {_pct(r['peer_std'])} ({r['seeds']} seeds each)"
    )


def _vs_peer(r: dict) -> str:
    return f"bf16 {r['bf16_ratio']:.2f}, fp32 {r['fp32_ratio']:.2f} (ours / PyTorch, ex/s)"


def _input_vs_step(r: dict) -> str:
    return (
        f"{r['bound']}-bound, {r['combined_examples_per_sec']:,.0f} ex/s "
        f"({r['mixed_precision']}, widths {tuple(r['widths'])})"
    )


def _soak(r: dict) -> str:
    return (
        f"{r['growth_second_half_mb']:.0f} MB RSS growth in the second half of "
        f"{r['minutes']:.0f} min ({r['steps']:,} steps)"
    )


# report folder under benchmarks/reports/ -> (what it measures, the figure from its report.json)
ROWS = {
    "loop_vs_fit/mlp": ("MNIST MLP 64-64, batch 32: our loop vs `fit`", _loop_vs_fit),
    "loop_vs_fit/cnn": ("MNIST CNN, batch 32: our loop vs `fit`", _loop_vs_fit),
    "loop_vs_fit/resnet9": ("ResNet-9, batch 32: our loop vs `fit`", _loop_vs_fit),
    "input_vs_step/cifar": ("CIFAR-10 fast recipe: input or step?", _input_vs_step),
    "vs_peer/fast": ("airbench fast net: speed against PyTorch", _vs_peer),
    "vs_peer/full": ("airbench94 full net: speed against PyTorch", _vs_peer),
    "fidelity/fast": ("airbench fast net, 10 epochs: test accuracy (TTA)", _fidelity),
    "fidelity/full": ("airbench94 full net, 10 epochs: test accuracy (TTA)", _fidelity),
    "soak": ("memory over a long run (MNIST MLP, checkpoints)", _soak),
}


def table(reports_dir: str = REPORTS_DIR) -> list[str]:
    """The table's lines (Markdown), one row per report of ROWS found under `reports_dir`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for name, (what, figure) in ROWS.items():
        path = os.path.join(reports_dir, name, "report.json")
        if not os.path.exists(path):
            print(f"warning: {path} is missing: its row is left out", file=sys.stderr)
            continue
        with open(path) as f:
            report = json.load(f)
        stamp = report["provenance"]
        link = f"[{name}](benchmarks/reports/{name}/report.md)"
        commit = stamp["commit"] + (" (uncommitted changes)" if stamp["dirty"] is True else "")
        cells = (what, figure(report), stamp["cpu"], stamp["date"].split()[0], commit, link)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rewrite(text: str, lines: list[str]) -> str:
    """`text` with what lies between the marker lines replaced by `lines`; ValueError without
    them."""
    begin, end = MARKERS
    rows = text.split("\n")
    starts = [i for i, row in enumerate(rows) if row.strip() == begin]
    ends = [i for i, row in enumerate(rows) if row.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"README.md needs one {begin} line, then one {end} line")
    return "\n".join(rows[: starts[0] + 1] + lines + rows[ends[0] :])


def update(readme: str = README, reports_dir: str = REPORTS_DIR) -> bool:
    """Rewrites the table in `readme` from the reports; True when it changed."""
    with open(readme) as f:
        old = f.read()
    new = rewrite(old, table(reports_dir))
    if new != old:
        with open(readme, "w") as f:
            f.write(new)
    return new != old


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.readme_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="only check that the table is current")
    parser.add_argument("--readme", default=README, help="the Markdown file with the markers")
    args = parser.parse_args(argv)
    try:
        if args.check:
            with open(args.readme) as f:
                text = f.read()
            if rewrite(text, table()) != text:
                sys.exit(
                    f"{args.readme}: the figures table is stale: python -m benchmarks.readme_table"
                )
            return
        changed = update(args.readme)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.readme}: figures table {'rewritten' if changed else 'already up to date'}")


if __name__ == "__main__":
    main()
