#!/usr/bin/env python3
"""tracefleet vLLM driver: exact controlled batching on vLLM's engine step API (vLLM 0.13 and newer).

Run by the agent as `python3 vllm_driver.py --job JOB.json` (or `--serve`, see below). One engine per job,
sized for the job's largest batch and longest prompt, with prefix caching and async scheduling off and the
engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so one `LLMEngine.step()` is one scheduled
forward. The job's points run in turn on that engine:

  decode:  add B requests of L random prompt tokens, step until every request has its first token (the
           prefill), step `warmup_steps` times, then profile exactly `profile_steps` decode steps;
  prefill: `warmup_steps` rounds of B fresh one-token requests, then, profiled, `profile_steps` rounds of B
           fresh requests, each prefilled in one step.

Every profiled window is one trace file per rank (vLLM's torch profiler, through `ProfilerConfig`; one
rank unless `tensor_parallel` > 1) holding `profile_steps` steps, each annotated by vLLM as
`execute_context_C(c)_generation_G(g)`; tracefleet splits the file by those annotations.

With CUDA graphs, a decode window starts with one more step of the same batch run eagerly: graphs are
turned off for that step only (the model runner's graph dispatcher answers "no graph" while the step runs,
set in every worker through `collective_rpc`), and the step runs inside a `tracefleet::eager_reference`
profiler range. The coordinator maps the kernels the graph steps replay onto that step's ops and leaves the
step itself out of the tables (see docs/analysis.md, "CUDA graphs"). Before a trace is announced, its annotations are checked: every profiled
step must be exactly B decodes (`execute_context_0(0)_generation_B(B)`) or B prefills of L tokens
(`execute_context_B(B*L)_generation_0(0)`); otherwise the point fails with the steps that ran. Then the
point's requests are dropped.

Models: a named shape (shapes.json beside this file: a config-only folder is written and the engine loads
random weights, `load_format="dummy"`; nothing is downloaded) or a local model folder with real weights.
No tokenizer is needed (`skip_tokenizer_init`, prompts as token ids).

Protocol: the torch driver's (one JSON object per line on stdout: point_started, trace, point_failed, log,
ready). vLLM and its libraries print to stdout too, so the protocol keeps the original stdout and
everything else printed goes to stderr. Exit status 0 when the job ran (some points may have failed),
2 for a bad job file, 1 when the engine could not be built or vLLM is missing or too old.

--serve imports vLLM first (11-14 s on a GPU host), says {"event": "ready"}, then reads the job file's
path from one line of stdin. --check validates the job file without vLLM. --verify-trace FILE checks a
trace's step annotations as a job would (--mode, --batch-size, --input-len, --steps). With
TRACEFLEET_ORACLE_DIR set, vLLM's own printout of torch's key_averages() table for each profiled window
(profiler_out_0.txt) is moved there as <sweep>/<point>.txt.
"""
import argparse
import glob
import gzip
import json
import os
import random
import re
import shutil
import sys
import time
import traceback

from driver_common import MODES, int_at_least, load_shapes, read_job

DTYPES = ("auto", "bfloat16", "float16")
# ProfilerConfig (the profiler settings this driver uses) arrived in vLLM 0.13; older versions configure
# the profiler through VLLM_TORCH_PROFILER_DIR, which this driver does not support.
MIN_VERSION = (0, 13)
# Largest prefill (tokens) a decode point's prompts are given in one step. A decode point only needs its
# prompts in the KV cache; a bigger budget costs the engine activation memory at start-up.
DECODE_PREFILL_BUDGET = 65536
STEP_RE = re.compile(r"execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")
# Kineto writes `"ph": "X", "cat": "user_annotation", "name": "..."`; the GPU-side copy of each annotation
# has category gpu_user_annotation and is not a separate step.
ANNOTATION_RE = re.compile(r'"cat":\s*"user_annotation",\s*"name":\s*"(execute_context_[^"]*)"')

_protocol = sys.stdout


def emit(event, **fields):
    print(json.dumps(dict(event=event, **fields)), file=_protocol, flush=True)


def keep_protocol_stdout():
    """Keeps the protocol on the original stdout and sends every other write to fd 1 to stderr: vLLM's
    logger, its key_averages printout and native libraries print to stdout."""
    global _protocol
    _protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def parse_args(argv):
    p = argparse.ArgumentParser(description="tracefleet vLLM driver")
    p.add_argument("--job", help="job file (JSON) written by the agent")
    p.add_argument("--serve", action="store_true", help="import vLLM, then read the job file's path from stdin")
    p.add_argument("--check", action="store_true", help="validate the job file and exit")
    p.add_argument("--verify-trace", metavar="FILE", help="check a trace's step annotations and exit")
    p.add_argument("--mode", choices=MODES, help="with --verify-trace")
    p.add_argument("--batch-size", type=int, help="with --verify-trace")
    p.add_argument("--input-len", type=int, help="with --verify-trace (prefill)")
    p.add_argument("--steps", type=int, help="with --verify-trace: profiled steps expected")
    args = p.parse_args(argv)
    if args.verify_trace:
        if args.mode is None or args.batch_size is None or args.steps is None:
            p.error("--verify-trace needs --mode, --batch-size and --steps (and --input-len for prefill)")
        if args.mode == "prefill" and args.input_len is None:
            p.error("--verify-trace of a prefill trace needs --input-len")
    elif not args.job and not args.serve:
        p.error("--job is required (or --serve, or --verify-trace)")
    return args


def load_job(path):
    """Reads and checks a job file; raises ValueError with what is wrong."""
    job = read_job(path)
    warm = job.get("warmup_steps", 5)
    steps = job.get("profile_steps", 3)
    tp = job.get("tensor_parallel") or 1
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ValueError(f"'tensor_parallel' must be a whole number of GPUs, at least 1, not {tp!r}")
    for p in job["points"]:
        pid = p["point_id"]
        if p["mode"] == "decode":
            # The first output token comes from the prefill; then warm-up and profiled steps one each (and
            # the eager reference step under CUDA graphs). A request that reaches output_len stops, and the
            # step after it would not hold B decodes. No output_len (or 0) means just enough.
            need = 1 + warm + steps + reference_steps(job)
            out = p.get("output_len") or need
            if isinstance(out, bool) or not isinstance(out, int) or out < need:
                raise ValueError(f"point {pid}: output_len {out!r} does not cover the prefill token, "
                                 f"{warm} warm-up and {steps} profiled steps (needs at least {need})")
            p["output_len"] = out
    model = job["model"]
    if not isinstance(model, str) or not model:
        raise ValueError("'model' must be a named shape or a local model folder")
    shapes = load_shapes()
    if not os.path.isdir(model) and model not in shapes:
        raise ValueError(f"unknown model {model!r}: a local model folder or one of {', '.join(sorted(shapes))}")
    if (job.get("dtype") or "auto") not in DTYPES:
        raise ValueError(f"'dtype' must be one of {', '.join(DTYPES)}, not {job['dtype']!r}")
    # 0 (or absent) means vLLM's default.
    util = job.get("gpu_memory_utilization") or 0
    if isinstance(util, bool) or not isinstance(util, (int, float)) or not 0 <= util <= 1:
        raise ValueError(f"'gpu_memory_utilization' must be in (0, 1], not {util!r}")
    mml = int_at_least(job.get("max_model_len") or 0, "'max_model_len'", 0)
    longest = longest_sequence(job, token_budget(job))
    if mml and mml < longest:
        raise ValueError(f"'max_model_len' {mml} is shorter than the job's longest sequence "
                         f"({longest} tokens: prompt plus output)")
    return job


def reference_steps(job):
    """Eager reference steps a decode window holds before its profiled steps: one under CUDA graphs."""
    return 1 if job.get("cuda_graphs") else 0


def token_budget(job):
    """The engine's max_num_batched_tokens: every prefill point's B x L in one step (exact prefills), a
    decode point's prompts up to DECODE_PREFILL_BUDGET tokens a step, and at least the longest request."""
    pts = job["points"]
    prefill = [p["batch_size"] * p["input_len"] for p in pts if p["mode"] == "prefill"]
    decode = [min(p["batch_size"] * p["input_len"], DECODE_PREFILL_BUDGET) for p in pts if p["mode"] == "decode"]
    longest = max(p["input_len"] + (p.get("output_len") or 0) + 1 for p in pts)
    return max(prefill + decode + [longest])


def output_tokens(p, budget):
    """max_tokens of a point's requests. A decode point whose prompts take k prefill steps starts decoding
    its first requests k - 1 steps before its last: those need k - 1 more tokens so that every request
    is still running in every profiled step."""
    if p["mode"] != "decode":
        return 1
    prefill_steps = -(-p["batch_size"] * p["input_len"] // budget)
    return p["output_len"] + prefill_steps - 1


def longest_sequence(job, budget):
    """Tokens of the longest request of the job: prompt plus output (one output token for a prefill)."""
    return max(p["input_len"] + output_tokens(p, budget) for p in job["points"])


def version_tuple(text):
    """`0.25.0` -> (0, 25, 0); `0.13.0rc1` -> (0, 13, 0); `0.11.1.dev12+g1234` -> (0, 11, 1)."""
    out = []
    for part in text.split("+")[0].split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def expected_step(mode, batch_size, input_len):
    """The annotation every profiled step of a point must carry: (context requests, context tokens,
    generation requests, generation tokens)."""
    if mode == "decode":
        return (0, 0, batch_size, batch_size)
    return (batch_size, batch_size * input_len, 0, 0)


def step_name(shape):
    return "execute_context_%d(%d)_generation_%d(%d)" % shape


def read_annotations(path):
    """The vLLM step annotations of a trace file (plain or gzip JSON), in file order."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return ANNOTATION_RE.findall(f.read())


def check_steps(names, mode, batch_size, input_len, steps):
    """None when `names` (a trace's step annotations) are exactly `steps` steps of the point's batch (the
    eager reference step included, when the window has one); otherwise what ran instead."""
    want = expected_step(mode, batch_size, input_len)
    what = f"{batch_size} decodes" if mode == "decode" else f"{batch_size} prefills of {input_len} tokens"
    if len(names) != steps:
        return (f"the trace holds {len(names)} annotated steps, not the {steps} profiled "
                f"({', '.join(names) or 'no execute_context_* annotations'})")
    for i, name in enumerate(names):
        m = STEP_RE.fullmatch(name)
        got = tuple(int(x) for x in m.groups()) if m else None
        if got != want:
            return f"profiled step {i + 1} of {steps} ran {name}, not {what} ({step_name(want)})"
    return None


def verify_trace(args):
    try:
        names = read_annotations(args.verify_trace)
    except (OSError, EOFError) as e:
        print(f"{args.verify_trace}: {e}", file=sys.stderr)
        return 2
    problem = check_steps(names, args.mode, args.batch_size, args.input_len or 0, args.steps)
    if problem:
        print(f"{args.verify_trace}: {problem}", file=sys.stderr)
        return 1
    emit("log", message=f"{args.verify_trace}: {args.steps} steps of {step_name(expected_step(args.mode, args.batch_size, args.input_len or 0))}")
    return 0


def configure_environment():
    """Settings vLLM reads from the environment, before it is imported."""
    # The engine core in this process: one LLMEngine.step() is one scheduled forward.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # Without FlashInfer installed, vLLM's sampler must not try it.
    import importlib.util
    if importlib.util.find_spec("flashinfer") is None:
        os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")


def import_vllm():
    """Imports vLLM; returns its version string. Raises RuntimeError for a missing or unsupported vLLM."""
    t0 = time.time()
    configure_environment()
    try:
        import vllm
    except ImportError as e:
        raise RuntimeError(f"vLLM is not installed in this Python ({sys.executable}): {e}") from e
    version = getattr(vllm, "__version__", "unknown")
    if version_tuple(version) < MIN_VERSION:
        raise RuntimeError(f"vLLM {version} is not supported: this driver needs vLLM "
                           f"{'.'.join(map(str, MIN_VERSION))} or newer (ProfilerConfig); 0.25.0 is the version run")
    import torch
    import vllm.engine.arg_utils  # noqa: F401  (the slow part: model registry, CUDA extensions)
    from vllm.v1.engine.llm_engine import LLMEngine  # noqa: F401
    emit("log", message=f"vllm {version}, torch {torch.__version__} imported in {time.time() - t0:.1f}s")
    return version


def model_folder(job, work_dir):
    """(folder, random weights?) for the job's model: a named shape becomes a config-only folder."""
    model = job["model"]
    if os.path.isdir(model):
        return os.path.abspath(model), False
    shape = load_shapes()[model]
    folder = os.path.join(work_dir, "models", model)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(shape, f, indent=1)
    return folder, True


def vocab_size(folder):
    """The model's vocabulary size, from its config.json (random prompt tokens are drawn below it)."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    n = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if not isinstance(n, int) or n < 1:
        raise RuntimeError(f"{path} gives no vocab_size: cannot draw prompt tokens")
    return n


def compilation_config(graph_sizes):
    """Eager (no compilation, no graphs), or full CUDA graphs for decode steps of exactly these batch
    sizes, still without torch.compile (vLLM's `mode`, called `level` in older versions)."""
    from vllm.config import CompilationConfig
    fields = getattr(CompilationConfig, "__dataclass_fields__", {})
    cfg = {"mode" if "mode" in fields else "level": 0}
    if graph_sizes:
        cfg.update(cudagraph_mode="FULL_DECODE_ONLY", cudagraph_capture_sizes=sorted(graph_sizes))
    return cfg


def build_engine(job, work_dir, prof_dir, oracle):
    from vllm import EngineArgs
    from vllm.config import ProfilerConfig
    from vllm.v1.engine.llm_engine import LLMEngine

    folder, dummy = model_folder(job, work_dir)
    points = job["points"]
    max_bs = max(int(p["batch_size"]) for p in points)
    budget = token_budget(job)
    max_len = int(job.get("max_model_len") or 0) or longest_sequence(job, budget)
    graphs = [int(p["batch_size"]) for p in points if p["mode"] == "decode"] if job.get("cuda_graphs") else []
    opts = job.get("profiler") or {}
    with_stack = bool(opts.get("with_stack")) or bool(opts.get("with_modules"))
    if opts.get("with_modules") and not opts.get("with_stack"):
        emit("log", message="vLLM's profiler has no with_modules; with_stack is on instead (it records module frames)")
    profiler = ProfilerConfig(
        profiler="torch",
        torch_profiler_dir=prof_dir,
        torch_profiler_record_shapes=bool(opts.get("record_shapes", True)),
        torch_profiler_with_stack=with_stack,
        # tracefleet compresses traces itself (zstd, in the agent)
        torch_profiler_use_gzip=False,
        # vLLM's key_averages() printout costs seconds per window; only for oracle comparisons
        torch_profiler_dump_cuda_time_total=oracle,
    )
    kwargs = dict(
        model=folder,
        load_format="dummy" if dummy else "auto",
        skip_tokenizer_init=True,
        dtype=job.get("dtype") or "auto",
        seed=0,
        max_model_len=max_len,
        max_num_seqs=max_bs,
        max_num_batched_tokens=budget,
        enable_prefix_caching=False,
        async_scheduling=False,
        enforce_eager=not graphs,
        tensor_parallel_size=int(job.get("tensor_parallel") or 1),
        compilation_config=compilation_config(graphs),
        profiler_config=profiler,
        disable_log_stats=True,
    )
    if job.get("gpu_memory_utilization"):
        kwargs["gpu_memory_utilization"] = float(job["gpu_memory_utilization"])
    t0 = time.time()
    engine = LLMEngine.from_engine_args(EngineArgs(**kwargs))
    cfg = getattr(engine, "vllm_config", None)
    blocks = getattr(getattr(cfg, "cache_config", None), "num_gpu_blocks", None)
    block_size = getattr(getattr(cfg, "cache_config", None), "block_size", None)
    capacity = blocks * block_size if blocks and block_size else None
    graph_mode = getattr(getattr(getattr(cfg, "compilation_config", None), "cudagraph_mode", None), "name", "?")
    if graphs and graph_mode == "NONE":
        # vLLM turns graphs off by itself in some configurations; a sweep asking for them must not run
        # eager under their name.
        raise RuntimeError("CUDA graphs were asked for, but vLLM runs this engine without them (cudagraph_mode NONE)")
    emit("log", message=(f"engine ready in {time.time() - t0:.1f}s: {job['model']} "
                         f"({'random weights' if dummy else 'weights from the folder'}), max_num_seqs {max_bs}, "
                         f"max_num_batched_tokens {budget}, max_model_len {max_len}, "
                         f"{'CUDA graphs (' + graph_mode + ') for ' + str(sorted(graphs)) if graphs else 'eager'}, "
                         f"tensor parallel {int(job.get('tensor_parallel') or 1)}, "
                         f"KV cache {capacity if capacity else 'unknown'} tokens"))
    return engine, folder, capacity, budget


class PointFailed(Exception):
    pass


EAGER_REFERENCE_MARK = "tracefleet::eager_reference"


def _eager_reference(worker, on):
    """Runs in every worker (`collective_rpc`). With `on`, the worker's next steps run without CUDA graphs
    (its model runner's graph dispatch answers "no graph", as for a batch larger than every captured size;
    the attention backend keeps the settings it has under graphs) inside a `tracefleet::eager_reference`
    profiler range; without, both are undone. Handles vLLM's V1 model runner (`cudagraph_dispatcher`) and
    its V2 runner (`cudagraph_manager`, the default in 0.25). Returns what was done, for the log."""
    import dataclasses
    import torch
    w = getattr(worker, "worker", worker)
    runner = getattr(w, "model_runner", None)
    dispatcher = getattr(runner, "cudagraph_dispatcher", None)
    manager = getattr(runner, "cudagraph_manager", None)
    target = dispatcher if dispatcher is not None else manager
    if target is None:
        raise RuntimeError(f"this vLLM's model runner ({type(runner).__module__}.{type(runner).__name__}) has "
                           "neither a cudagraph_dispatcher nor a cudagraph_manager: an eager reference step "
                           "cannot be run")
    if not on:
        for obj, name in ((target, "dispatch"), (w, "execute_model")):
            obj.__dict__.pop(name, None)
        return "graphs back on"
    from vllm.config import CUDAGraphMode
    dispatch = target.dispatch
    if dispatcher is not None:
        def no_graph(*args, **kwargs):
            _, descriptor = dispatch(*args, **kwargs)
            return CUDAGraphMode.NONE, descriptor
    else:
        def no_graph(*args, **kwargs):
            return dataclasses.replace(dispatch(*args, **kwargs), cg_mode=CUDAGraphMode.NONE)
    execute = w.execute_model

    def marked(*args, **kwargs):
        with torch.profiler.record_function(EAGER_REFERENCE_MARK):
            return execute(*args, **kwargs)

    target.dispatch = no_graph
    w.execute_model = marked
    return f"graphs off for the reference step ({type(target).__name__})"


def run_job(job, work_dir):
    """Runs the job's points; `work_dir` (the job file's folder, the job's own) takes vLLM's profiler
    output and the named shape's config folder, so that neither lands among the job's traces."""
    oracle_dir = os.environ.get("TRACEFLEET_ORACLE_DIR")
    out_root = os.path.abspath(job["out_dir"])
    prof_dir = os.path.join(work_dir, "vllm_profiles")
    shutil.rmtree(prof_dir, ignore_errors=True)
    os.makedirs(prof_dir)
    engine, folder, capacity, budget = build_engine(job, work_dir, prof_dir, bool(oracle_dir))
    vocab = vocab_size(folder)
    warm = int(job.get("warmup_steps", 5))
    steps = int(job.get("profile_steps", 3))
    tp = int(job.get("tensor_parallel") or 1)
    serial = 0
    # Every request of the current point, so that none of them can join the next point's steps.
    added = []

    def add(pid, bs, ilen, max_tokens, rng):
        nonlocal serial
        from vllm import SamplingParams
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, detokenize=False)
        for _ in range(bs):
            serial += 1
            rid = f"{pid}-{serial}"
            engine.add_request(rid, {"prompt_token_ids": [rng.randrange(vocab) for _ in range(ilen)]}, params)
            added.append(rid)

    def drop():
        """Ends every request of the point (aborted ones leave at once; finished ones have left)."""
        if added and engine.has_unfinished_requests():
            engine.abort_request(list(added))
        for _ in range(1000):
            if not engine.has_unfinished_requests():
                added.clear()
                return
            engine.step()
        raise RuntimeError("the engine still holds unfinished requests after aborting them and 1000 steps")

    def take_traces(pid, mode, bs, ilen, with_reference):
        """Checks the profiled window's steps in every rank's trace, then moves the traces into the point's
        folder (the last thing, so that only checked traces are ever among the job's files)."""
        found = sorted(glob.glob(os.path.join(prof_dir, "*.pt.trace.json*")))
        if len(found) != tp:
            raise PointFailed(f"vLLM's profiler wrote {len(found)} trace files, not one per rank ({tp}): {found}")
        for f in found:
            problem = check_steps(read_annotations(f), mode, bs, ilen, steps + (1 if with_reference else 0))
            if problem:
                raise PointFailed(f"{os.path.basename(f)}: {problem}: not controlled batching, so the point's "
                                  f"traces are dropped (the engine did not schedule the batch as one: KV cache, "
                                  f"token budget or sequence length; the engine's settings are in the log)")
        printout = os.path.join(prof_dir, "profiler_out_0.txt")
        if oracle_dir and os.path.exists(printout):
            into = os.path.join(oracle_dir, str(job.get("sweep_id") or "sweep"))
            os.makedirs(into, exist_ok=True)
            shutil.move(printout, os.path.join(into, f"{pid}.txt"))
        for extra in glob.glob(os.path.join(prof_dir, "profiler_out_*.txt")):
            os.remove(extra)
        folder_out = os.path.join(out_root, pid, mode, f"logs_{bs}")
        os.makedirs(folder_out, exist_ok=True)
        moved = []
        for f in found:
            dst = os.path.join(folder_out, os.path.basename(f))
            os.replace(f, dst)
            moved.append(dst)
        return moved

    points = job["points"]
    for i, pt in enumerate(points):
        pid, mode = pt["point_id"], pt["mode"]
        bs, ilen = int(pt["batch_size"]), int(pt["input_len"])
        rng = random.Random(f"{pid}")
        max_tokens = output_tokens(pt, budget)
        emit("point_started", point=pid)
        try:
            # Tokens a sequence holds at most before it is dropped: its prompt, the tokens decoded while the
            # others were still prefilling, the prefill's token, warm-up and profiled steps.
            with_reference = mode == "decode" and reference_steps(job) > 0
            held = ilen + (max_tokens - pt["output_len"] + 1 + warm + steps + reference_steps(job)
                           if mode == "decode" else 1)
            need = bs * held
            if capacity is not None and need > capacity:
                raise PointFailed(f"{bs} sequences of {ilen} prompt tokens and their output need {need} "
                                  f"KV-cache tokens; the engine has {capacity} (raise gpu_memory_utilization "
                                  f"or lower the batch)")
            if mode == "decode":
                add(pid, bs, ilen, max_tokens, rng)
                # The prefill: every request has its first token (one step when the budget holds B x L).
                started, prefill_steps = set(), 0
                while len(started) < bs:
                    outs = engine.step()
                    prefill_steps += 1
                    started.update(o.request_id for o in outs if o.outputs and o.outputs[0].token_ids)
                    if prefill_steps > bs + 8:
                        raise PointFailed(f"only {len(started)} of {bs} requests were prefilled after "
                                          f"{prefill_steps} steps")
                for _ in range(warm):
                    engine.step()
                start = time.time()
                engine.start_profile()
                if with_reference:
                    try:
                        engine.collective_rpc(_eager_reference, args=(True,))
                        engine.step()
                    finally:
                        # Undoing is harmless where nothing was done: a worker whose patch failed half-way
                        # is not left running eager inside the mark.
                        engine.collective_rpc(_eager_reference, args=(False,))
                for _ in range(steps):
                    engine.step()
                engine.stop_profile()
                end = time.time()
            else:
                for _ in range(warm):
                    add(pid, bs, ilen, 1, rng)
                    engine.step()
                    drop()
                start = time.time()
                engine.start_profile()
                for _ in range(steps):
                    add(pid, bs, ilen, 1, rng)
                    engine.step()
                    # Nothing is left after a one-step prefill of one-token requests; anything else steps
                    # on inside the window and the step check names it.
                    drop()
                engine.stop_profile()
                end = time.time()
            for path in take_traces(pid, mode, bs, ilen, with_reference):
                emit("trace", point=pid, path=path, step=0, steps=steps, start=start, end=end)
        except Exception as e:  # one point failing (out of memory, a batch that did not fit) does not stop the others
            tail = traceback.format_exc().strip().splitlines()[-6:]
            message = str(e) if isinstance(e, PointFailed) else f"{type(e).__name__}: {e}"
            emit("point_failed", point=pid, error=message, traceback="\n".join(tail))
            try:
                engine.stop_profile()
            except Exception:  # not profiling: nothing to stop
                pass
            for f in glob.glob(os.path.join(prof_dir, "*")):
                os.remove(f)
        try:
            drop()
        except Exception as e:
            # The engine cannot be used any more (a CUDA error, say): every point not run is reported.
            for q in points[i + 1:]:
                emit("point_failed", point=q["point_id"],
                     error=f"not run: the engine failed after point {pid}: {type(e).__name__}: {e}")
            raise


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.verify_trace:
        return verify_trace(args)
    keep_protocol_stdout()
    if args.serve:
        try:
            import_vllm()
        except Exception as e:
            print(f"vllm driver: {e}", file=sys.stderr)
            return 1
        emit("ready")
        line = sys.stdin.readline().strip()
        if not line:
            return 0
        args.job = line
    try:
        job = load_job(args.job)
    except (OSError, ValueError) as e:
        print(f"bad job file {args.job}: {e}", file=sys.stderr)
        return 2
    if args.check:
        emit("log", message=f"job file ok: {len(job['points'])} points")
        return 0
    try:
        if not args.serve:
            import_vllm()
        run_job(job, os.path.dirname(os.path.abspath(args.job)))
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
