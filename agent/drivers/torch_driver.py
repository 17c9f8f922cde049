#!/usr/bin/env python3
"""tracefleet torch driver: profiles a causal LM at controlled batch sizes on one GPU.

Run by the agent as `python3 torch_driver.py --job JOB.json`. The job file lists the points (mode,
batch size, input length), warm-up and profiled steps, profiler options, the model and the output
folder. The model is loaded once for all points. For a decode point, B sequences of input_len random
tokens are prefilled, decoded for warmup_steps, then each of profile_steps decode forwards runs inside
torch.profiler.profile and is exported as one Chrome trace; for a prefill point, each profiled forward is
a prefill of B x input_len tokens.

Protocol: one JSON object per line on stdout:
  {"event": "point_started", "point": ID}
  {"event": "trace", "point": ID, "path": ABSOLUTE_PATH, "step": N, "start": UNIX_S, "end": UNIX_S}
    (start/end: the profiled forward itself, launch to synchronize; the agent reads the GPU's clocks,
    temperature and power over that window)
  {"event": "point_failed", "point": ID, "error": TEXT}
  {"event": "log", "message": TEXT}
Everything else goes to stderr. Exit status 0 when the job ran (some points may have failed), 2 for a
bad job file, 1 when the model could not be built.

--serve imports torch and transformers first, says {"event": "ready"}, then reads the job file's path
from one line of stdin and runs it (the agent keeps one such process waiting per GPU, so a sweep does
not wait for Python's imports; end of input means the agent went away).

--check validates the job file and exits without touching a GPU. With TRACEFLEET_ORACLE_DIR set, torch's
own key_averages() of every profiled step is written there as JSON (for comparisons).
"""
import argparse
import json
import os
import sys
import time
import traceback

from driver_common import load_shapes, read_job

# Named shapes: configurations only (shapes.json beside this file, shared with the vLLM driver); weights
# are random, so nothing is downloaded.
# Keys of shapes.json that describe the file or the checkpoint, not the model's configuration.
SHAPE_META = ("architectures", "model_type", "torch_dtype")
SHAPES = load_shapes()
# Attention kernels. "flash" (the default) keeps torch's scaled_dot_product_attention on its FlashAttention
# backend (then memory-efficient, then math): serving engines use FlashAttention-style kernels, and the
# cuDNN backend that torch may otherwise pick builds a new execution plan for every new KV length, i.e. in
# every decode step, which puts milliseconds of plan building into each profiled step's CPU time.
ATTENTION = ("flash", "cudnn", "auto")


def emit(event, **fields):
    print(json.dumps(dict(event=event, **fields)), flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description="tracefleet torch driver")
    p.add_argument("--job", help="job file (JSON) written by the agent")
    p.add_argument("--serve", action="store_true",
                   help="import torch and transformers, then read the job file's path from stdin")
    p.add_argument("--check", action="store_true", help="validate the job file and exit")
    args = p.parse_args(argv)
    if not args.job and not args.serve:
        p.error("--job is required (or --serve)")
    return args


def warm_up_imports():
    """Imports what a job needs before the job is known (the slow part of starting: seconds)."""
    t0 = time.time()
    import torch  # noqa: F401
    import torch.profiler  # noqa: F401
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM  # noqa: F401  (loads the model modules)
    from transformers.cache_utils import DynamicCache  # noqa: F401
    emit("ready", seconds=round(time.time() - t0, 2))


def load_job(path):
    """Reads and checks a job file; raises ValueError with what is wrong."""
    job = read_job(path)
    model = job["model"] or "llama-3.2-1b"
    if not os.path.isdir(model) and model not in SHAPES:
        raise ValueError(f"unknown model {model!r}: a local model folder or one of {', '.join(SHAPES)}")
    if job.get("dtype", "bfloat16") not in ("bfloat16", "float16"):
        raise ValueError("'dtype' must be bfloat16 or float16")
    if job.get("attention", "flash") not in ATTENTION:
        raise ValueError(f"'attention' must be one of {', '.join(ATTENTION)}, not {job['attention']!r}")
    job["model"] = model
    return job


def build_model(job):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[job.get("dtype") or "bfloat16"]
    model = job["model"]
    if os.path.isdir(model):
        try:
            m = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            m = AutoModelForCausalLM.from_pretrained(model, torch_dtype=dtype)
        m = m.to("cuda")
    else:
        shape = {k: v for k, v in SHAPES[model].items() if k not in SHAPE_META}
        if SHAPES[model]["model_type"] == "llama":
            from transformers import LlamaConfig as Config, LlamaForCausalLM as Model
        else:
            from transformers import Qwen2Config as Config, Qwen2ForCausalLM as Model
        cfg = Config(**shape)
        cfg._attn_implementation = "sdpa"
        torch.manual_seed(0)
        torch.set_default_dtype(dtype)
        with torch.device("cuda"):
            m = Model(cfg)
        torch.set_default_dtype(torch.float32)
    m.eval()
    return m


def attention_context(name):
    """The SDPA backend restriction for `name` (a no-op context for "auto")."""
    import contextlib

    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "cudnn":
        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH])
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def run_job(job):
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers.cache_utils import DynamicCache

    t0 = time.time()
    model = build_model(job)
    vocab = model.config.vocab_size
    emit("log", message=f"model {job['model']} ready in {time.time() - t0:.1f}s on {torch.cuda.get_device_name(0)}")
    opts = job.get("profiler") or {}
    warm = int(job.get("warmup_steps", 5))
    steps = int(job.get("profile_steps", 3))
    oracle_dir = os.environ.get("TRACEFLEET_ORACLE_DIR")
    attention = job.get("attention") or "flash"

    def forward(**kw):
        # Logits of the last position only, as a serving engine computes them.
        try:
            return model(**kw, logits_to_keep=1)
        except TypeError:
            return model(**kw)

    # Inference as a serving engine runs it: no autograd bookkeeping at all.
    def prefill(bs, ilen):
        ids = torch.randint(0, vocab, (bs, ilen), device="cuda")
        with torch.inference_mode(), attention_context(attention):
            out = forward(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
        return out.logits[:, -1].argmax(-1), out.past_key_values

    def decode(tok, cache, pos):
        with torch.inference_mode(), attention_context(attention):
            out = forward(input_ids=tok[:, None], past_key_values=cache, use_cache=True,
                          cache_position=torch.tensor([pos], device="cuda"))
        return out.logits[:, -1].argmax(-1), out.past_key_values

    def profiled(fn, path):
        """Runs fn under the profiler, exports its trace; returns (fn's result, profiler, step window)."""
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                     record_shapes=bool(opts.get("record_shapes", True)),
                     with_stack=bool(opts.get("with_stack", False)),
                     with_modules=bool(opts.get("with_modules", False))) as p:
            start = time.time()
            r = fn()
            torch.cuda.synchronize()
            end = time.time()
        p.export_chrome_trace(path)
        return r, p, (start, end)

    def save_oracle(p, point, step):
        if not oracle_dir:
            return
        rows = [dict(key=e.key, count=e.count, cpu_time_total_us=e.cpu_time_total,
                     self_cpu_time_total_us=e.self_cpu_time_total,
                     device_time_total_us=getattr(e, "device_time_total", None),
                     self_device_time_total_us=getattr(e, "self_device_time_total", None))
                for e in p.key_averages()]
        os.makedirs(oracle_dir, exist_ok=True)
        with open(os.path.join(oracle_dir, f"{point}__{step}.json"), "w") as f:
            json.dump(rows, f)

    for pt in job["points"]:
        pid, mode = pt["point_id"], pt["mode"]
        bs, ilen = int(pt["batch_size"]), int(pt["input_len"])
        folder = os.path.join(job["out_dir"], pid, mode, f"logs_{bs}")
        os.makedirs(folder, exist_ok=True)
        emit("point_started", point=pid)
        try:
            if mode == "decode":
                tok, cache = prefill(bs, ilen)
                pos = ilen
                for _ in range(warm):
                    tok, cache = decode(tok, cache, pos)
                    pos += 1
                torch.cuda.synchronize()
                for s in range(steps):
                    path = os.path.join(folder, f"trace_{s}.json")
                    (tok, cache), p, (start, end) = profiled(lambda: decode(tok, cache, pos), path)
                    pos += 1
                    emit("trace", point=pid, path=os.path.abspath(path), step=s, start=start, end=end)
                    save_oracle(p, pid, s)
                del cache
            else:
                for _ in range(max(warm, 1)):
                    prefill(bs, ilen)
                torch.cuda.synchronize()
                for s in range(steps):
                    path = os.path.join(folder, f"trace_{s}.json")
                    _, p, (start, end) = profiled(lambda: prefill(bs, ilen), path)
                    emit("trace", point=pid, path=os.path.abspath(path), step=s, start=start, end=end)
                    save_oracle(p, pid, s)
        except Exception as e:  # one point failing (e.g. out of memory) does not stop the others
            tail = traceback.format_exc().strip().splitlines()[-6:]
            emit("point_failed", point=pid, error=f"{type(e).__name__}: {e}", traceback="\n".join(tail))
        finally:
            torch.cuda.empty_cache()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve:
        try:
            warm_up_imports()
        except Exception:
            traceback.print_exc()
            return 1
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
        run_job(job)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
