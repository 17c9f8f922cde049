"""Shared by tracefleet's Python drivers (torch_driver.py, vllm_driver.py): the named model shapes and
the checks every job file gets. The agent writes this file, shapes.json and the driver side by side."""
import json
import os

MODES = ("decode", "prefill")
SHAPES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes.json")


def load_shapes():
    """The named shapes, {name: Hugging Face config dict}; empty when shapes.json is missing."""
    try:
        with open(SHAPES_FILE) as f:
            return {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    except OSError:
        return {}


def int_at_least(value, what, minimum):
    """`value` when it is an integer (not a bool) of at least `minimum`; else ValueError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, not {value!r}")
    return value


def read_job(path):
    """Reads a job file and checks what every driver needs: an object with `points` (each with an id, a
    mode, and a positive batch size and input length), `out_dir`, `model`, and step counts. Returns the
    job; raises ValueError with what is wrong (OSError when the file cannot be read)."""
    with open(path) as f:
        job = json.load(f)
    if not isinstance(job, dict):
        raise ValueError("the job file must hold an object")
    for key in ("points", "out_dir", "model"):
        if key not in job:
            raise ValueError(f"the job file has no {key!r}")
    if not isinstance(job["points"], list) or not job["points"]:
        raise ValueError("'points' must be a non-empty list")
    int_at_least(job.get("warmup_steps", 5), "'warmup_steps'", 0)
    int_at_least(job.get("profile_steps", 3), "'profile_steps'", 1)
    for p in job["points"]:
        if not isinstance(p, dict):
            raise ValueError(f"a point must be an object, not {p!r}")
        for key in ("point_id", "mode", "batch_size", "input_len"):
            if key not in p:
                raise ValueError(f"a point has no {key!r}: {p}")
        pid = p["point_id"]
        if p["mode"] not in MODES:
            raise ValueError(f"point {pid}: mode must be decode or prefill, not {p['mode']!r}")
        for key in ("batch_size", "input_len"):
            int_at_least(p[key], f"point {pid}: {key}", 1)
    return job
