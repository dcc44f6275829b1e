"""Input pipeline versus step: the engine's per-loop measurement, and traces. (The input_vs_step
benchmark's report: tests/test_benchmarks.py.)"""

import os
import time

import numpy as np
import pytest
import tensorflow as tf

import framework
from tests import engine_helpers as h


def _slow_host_fn(batch, step, replica):
    """A deliberately slow pipeline: 20 ms of sleep per batch in the tf.data map."""
    images, labels = batch
    delay = tf.py_function(lambda: time.sleep(0.02) or np.float32(0), [], tf.float32)
    delay.set_shape([])
    return images + tf.cast(delay, images.dtype), labels


@pytest.mark.slow
def test_slow_pipeline_is_input_bound(monkeypatch):
    from framework import outputs

    lines = []
    monkeypatch.setattr(
        outputs.logging, "info", lambda msg, *args: lines.append(msg % args if args else msg)
    )
    data = h.mnist_data()
    data.host_fn = _slow_host_fn
    data.pipeline = dict(num_parallel_calls=1, prefetch=1)
    result = framework.train(
        h.config(train_steps=48), data, model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    # 20 ms of sleep in a ~22 ms step: about 0.9, when the loop that traced is left out (0.46 with
    # it).
    assert result["bound"] == "input-bound" and result["input_wait_fraction"] > 0.7, result
    # ... and the per-loop line says so after the first (tracing) loop.
    loop_lines = [line for line in lines if line.startswith("train |")]
    assert loop_lines and "(input-bound)" in loop_lines[-1], loop_lines


@pytest.mark.slow
def test_synthetic_data_is_step_bound():
    data = h.mnist_data(train=16384)
    data.synthetic = True
    # Batch 1024, loops of 16 steps, 4 batches per get_next: a get_next costs a fixed ~1 ms (several
    # on a busy machine), well under the 2.5% of a step the host CPU allows (one batch per get_next,
    # as synthetic data once forced, read 'partly input-bound' on a busy CI machine).
    result = framework.train(
        h.config(train_steps=48, global_batch_size=1024, steps_per_fetch=4),
        data,
        model_fn=h.mlp_fn(widths=(1024, 1024)),
        optimizer_fn=h.sgd,
        task=h.task(),
    )
    assert result["bound"] == "step-bound" and result["input_wait_fraction"] < 0.05, result


def test_synthetic_data_fetches_several_steps(caplog):
    caplog.set_level("INFO")
    data = h.mnist_data()
    data.synthetic = True
    result = framework.train(
        h.config(train_steps=32), data, model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    assert result["train_steps"] == 32 and np.isfinite(result["test_loss"]), result
    assert any(r.getMessage().endswith("steps_per_fetch: 16 (automatic)") for r in caplog.records)


def test_profile_steps_write_a_trace(tmp_path):
    cfg = h.config(model_dir=str(tmp_path), train_steps=40, profile_steps="16,24")
    framework.train(cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task())
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    traces = [
        os.path.join(root, f)
        for root, _, files in os.walk(tmp_path / "profile")
        for f in files
        if f.endswith(".xplane.pb")
    ]
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0, traces
    with open(traces[0], "rb") as f:
        space = xplane_pb2.XSpace.FromString(f.read())  # what TensorBoard's profile plugin reads
    events = {
        plane.event_metadata[event.metadata_id].name
        for plane in space.planes
        for line in plane.lines
        for event in line.events
    }
    assert "train_loop" in events, sorted(events)[:20]  # the traced window holds the compiled loop


def test_a_step_on_the_host_cpu_is_input_bound_at_half_the_wait():
    """Beside tf.data's threads on the same CPU the step itself slows, so the wait shows only part
    of the input's cost (framework/profiling.py has the measurement): 19% wait on a CPU is
    input-bound."""
    from framework import profiling

    assert profiling.classify(0.19) == "partly input-bound"
    assert profiling.classify(0.19, step_on_host_cpu=True) == "input-bound"
    assert profiling.classify(0.04, step_on_host_cpu=True) == "partly input-bound"
    assert profiling.classify(0.02, step_on_host_cpu=True) == "step-bound"
    assert profiling.step_on_host_cpu(tf.distribute.get_strategy()) == (
        not tf.config.list_physical_devices("GPU")
    )
