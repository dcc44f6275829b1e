"""Many `python -m trainers.X ...` commands for the price of one TensorFlow import.

A command that fails on a bad flag spends ~6 s importing TensorFlow and well under one doing its
work; the suite runs dozens. Here one driver process imports TensorFlow and Keras (no runtime
started), then forks a child per command that runs the module as `python -m` does (`runpy`,
`__main__`, its own argv, stdout and stderr to files), so exit codes and output are the commands'
own. A few tests still start real processes (test_run_record, test_trainers' image folder runs) so
the import path itself stays covered.
"""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_DRIVER = r"""
import json, os, runpy, sys, traceback
commands = json.load(open(sys.argv[1]))
from framework.tf_startup import import_tensorflow
import_tensorflow()  # the start-up lines hidden, as a trainer does; the runtime is not started
import keras  # noqa: F401
sys.stdout.flush(); sys.stderr.flush()
children = {}
for i, command in enumerate(commands):
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, command["stdout"]), (2, command["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = [command["module"].replace(".", "/") + ".py", *command["args"]]
        code = 0
        try:
            runpy.run_module(command["module"], run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
            if isinstance(exit.code, str):
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    children[pid] = i
codes = {}
while children:
    pid, status = os.wait()
    codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps([codes[i] for i in range(len(commands))]))
"""


def run_commands(commands: dict, env: dict | None = None, timeout: float = 600) -> dict:
    """{key: (module, args)} -> {key: (exit code, stdout, stderr)}, every command run at once, in
    `env` (default: this process's environment) with PYTHONPATH set to the checkout."""
    base = {**(os.environ if env is None else env), "PYTHONPATH": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        keys, specs = list(commands), []
        for i, key in enumerate(keys):
            module, args = commands[key]
            specs.append(
                {
                    "module": module,
                    "args": list(args),
                    "stdout": os.path.join(tmp, f"{i}.out"),
                    "stderr": os.path.join(tmp, f"{i}.err"),
                }
            )
        with open(os.path.join(tmp, "commands.json"), "w") as f:
            json.dump(specs, f)
        driver = subprocess.run(
            [sys.executable, "-c", _DRIVER, os.path.join(tmp, "commands.json")],
            cwd=ROOT,
            env=base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert driver.returncode == 0, driver.stderr[-3000:]
        codes = json.loads(driver.stdout.strip().splitlines()[-1])
        out = {}
        for i, key in enumerate(keys):
            with open(specs[i]["stdout"]) as o, open(specs[i]["stderr"]) as e:
                out[key] = (codes[i], o.read(), e.read())
        return out
