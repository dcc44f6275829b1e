"""`pip install -e .` (issue 32.2): pyproject.toml's metadata against the pins of both TensorFlow
versions we run on, and a real editable install into a temporary venv, used from another folder."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = open(os.path.join(ROOT, "requirements.txt")).read()
# What tensorflow-tpu 2.20 brings itself, at its own versions: the TPU cells install us with
# --no-deps.
TENSORFLOWS_OWN = {"tensorflow", "tensorboard", "numpy"}


def project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def pins(lines) -> dict[str, str]:
    """name -> version of every `name==version` in the lines (comments skipped)."""
    found = {}
    for line in lines:
        for name, version in re.findall(
            r'"?([A-Za-z0-9_.-]+)==([0-9][^"\s\\]*)', line.split("#")[0]
        ):
            found[name.lower()] = version
    return found


def test_metadata_pins_are_requirements_txt_and_the_tpu_cells_skip_only_tensorflows_own():
    meta = project()
    assert meta["requires-python"] == ">=3.11"
    runtime, dev = pins(meta["dependencies"]), pins(meta["optional-dependencies"]["dev"])
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        required = pins(f)
    # TF 2.21: the metadata pins exactly requirements.txt (runtime + dev), as `pip install -e .`
    # gets them.
    assert {**runtime, **dev} == required
    assert runtime["tensorflow"] == "2.21.0" and "pytest" not in runtime
    # TF 2.20 on a TPU: tensorflow-tpu provides the module, not a `tensorflow` distribution, so the
    # cells install us with --no-deps and pin the rest themselves at our versions (TF's own come
    # with it).
    with open(os.path.join(ROOT, "WORKSPACE.md")) as f:
        blocks = f.read().split("```")
    cells = [b.replace("\\\n", " ") for b in blocks if "tensorflow-tpu==" in b]
    assert len(cells) == 2  # Colab, Kaggle
    for cell in cells:
        installs = [line for line in cell.splitlines() if re.search(r"pip install .*-e ", line)]
        assert installs and all("--no-deps" in line for line in installs), cell
        cell_pins = pins(cell.splitlines())
        assert cell_pins["tensorflow-tpu"].startswith("2.20.")
        ours = {n: v for n, v in runtime.items() if n not in TENSORFLOWS_OWN}
        assert {n: cell_pins[n] for n in ours if n in cell_pins} == {
            n: v for n, v in ours.items() if n in cell_pins
        }
        assert "keras" in cell_pins  # TF 2.20 would bring an older Keras than ours


@pytest.mark.cli
@pytest.mark.slow
def test_editable_install_runs_from_another_folder(tmp_path):
    """The checkout installed (-e) into a fresh venv that sees this venv's packages through a .pth
    file: --no-index --no-build-isolation downloads nothing. Then, from another folder, the
    trainer's smoke command and a notebook's import."""
    source, venv, elsewhere = tmp_path / "tfloops", tmp_path / "venv", tmp_path / "elsewhere"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in (n.decode() for n in tracked if n and not n.startswith(b"benchmarks/reports/")):
        if os.path.exists(
            os.path.join(ROOT, name)
        ):  # a file deleted but not yet committed is skipped
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), source / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with open(os.path.join(site, "parent_venv.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # On another TensorFlow than the pin (`make test TF=2.20`, as on a TPU) install as the TPU cells
    # do, with --no-deps: the pinned tensorflow==2.21.0 is not there to satisfy.
    pinned = f"tensorflow=={importlib.metadata.version('tensorflow')}" in REQUIREMENTS
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation",
         *([] if pinned else ["--no-deps"]), "-e", str(source)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere.mkdir()
    notebook = subprocess.run(
        [python, "-c", "from trainers import recipes; import framework, importlib.metadata as m; "
         "print(framework.__file__); print(m.version('tfloops')); print(recipes.__name__)"],
        cwd=elsewhere, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert notebook.returncode == 0, notebook.stderr[-3000:]
    where, version, _ = notebook.stdout.split()
    assert where == str(source / "framework" / "__init__.py") and version == project()["version"]
    smoke = subprocess.run(
        [python, "-m", "trainers.mnist", "--train_examples=256", "--test_examples=128",
         "--global_batch_size=64", "--epochs=1", "--model=mlp", "--widths=16", "--nopredictions",
         f"--model_dir={elsewhere / 'run'}"],
        cwd=elsewhere, capture_output=True, text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert (elsewhere / "run" / "result.json").exists()
