"""Where ONNX Runtime spends one evaluation of a bench model, per operator type: the peer's side
of `cargo run --release -p edgediff-runtime --example op_profile -- MODEL EVALS --threads N`.

usage: ort_profile.py MODEL.onnx [THREADS] [--nodes | --all-nodes]
(needs onnxruntime and numpy; target/pyenv has them)

ORT with every graph optimisation (as the benches run it), its profiler on: three warm-up runs,
then ten timed ones; each operator type's kernel time is summed over the profiler's
`*_kernel_time` events and divided by the runs. The profiler itself adds time, so the total is
above the benches' figure; compare shares and single layers, not totals. `--nodes` also lists
the 25 most expensive nodes, `--all-nodes` every node (to set beside op_profile's `--nodes`).
Inputs: `sample` ~ N(0, 1), `class_labels` 0 and any other integer input (the timestep) 500.
"""
import collections
import json
import os
import sys

import numpy as np
import onnxruntime as ort

WARM_UP, RUNS = 3, 10


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    path, threads = args[0], int(args[1]) if len(args) > 1 else 1
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: input_value(i) for i in session.get_inputs()}
    for _ in range(WARM_UP + RUNS):
        session.run(None, feeds)
    trace = session.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"]] += e["dur"]
    runs = [e["dur"] for e in events if e.get("name") == "model_run"][-RUNS:]
    evals = WARM_UP + RUNS
    print(f"{path}: {sum(runs) / len(runs) / 1000:.2f} ms per run with the profiler, {threads} thread(s)")
    for op, us in by_op.most_common():
        print(f"  {op:28s} {us / evals / 1000:8.3f} ms")
    if "--nodes" in sys.argv or "--all-nodes" in sys.argv:
        for node, us in by_node.most_common(None if "--all-nodes" in sys.argv else 25):
            print(f"  {us / evals:9.1f} us {node}")


def input_value(info):
    shape = [d if isinstance(d, int) else 1 for d in info.shape]
    if info.type == "tensor(float)":
        return np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}[info.type]
    return np.full(shape, 0 if info.name == "class_labels" else 500, dtype=dtype)


if __name__ == "__main__":
    main()
