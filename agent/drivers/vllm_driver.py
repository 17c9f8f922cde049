#!/usr/bin/env python3
"""tracefleet vLLM driver (targets vLLM 0.10-0.11, V1 engine; NOT yet run on a GPU by the project).

Runs each point through vLLM's offline LLM API: B requests of input_len random tokens submitted at once
with max_num_seqs >= B, ignore_eos, max_tokens = output_len, eager mode unless the job asks for CUDA
graphs, with vLLM's torch profiler around the engine steps (profiler_config / VLLM_TORCH_PROFILER_DIR).
vLLM writes one trace per profiling window with per-step annotations; tracefleet splits them by step.

Same protocol and exit codes as torch_driver.py; --check validates the job file without vLLM.
"""
import argparse
import glob
import json
import os
import sys
import traceback

MODES = ("decode", "prefill")


def emit(event, **fields):
    print(json.dumps(dict(event=event, **fields)), flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description="tracefleet vLLM driver")
    p.add_argument("--job", required=True)
    p.add_argument("--check", action="store_true")
    return p.parse_args(argv)


def load_job(path):
    with open(path) as f:
        job = json.load(f)
    if not isinstance(job, dict) or not job.get("points") or "out_dir" not in job:
        raise ValueError("the job file needs 'points' and 'out_dir'")
    if not job.get("model"):
        raise ValueError("the vllm backend needs a model (a local folder or a model name vLLM can open)")
    for p in job["points"]:
        if p.get("mode") not in MODES or int(p.get("batch_size", 0)) < 1 or int(p.get("input_len", 0)) < 1:
            raise ValueError(f"bad point {p}")
    return job


def vllm_version():
    import vllm
    return tuple(int(x) for x in vllm.__version__.split(".")[:2] if x.isdigit())


def run_job(job):
    import random
    out_root = job["out_dir"]
    version = vllm_version()
    if version < (0, 10):
        raise RuntimeError(f"vLLM {version} is older than the 0.10 this driver targets")
    from vllm import LLM, SamplingParams

    max_bs = max(int(p["batch_size"]) for p in job["points"])
    max_len = max(int(p["input_len"]) for p in job["points"]) + max(int(p.get("output_len", 1)) for p in job["points"]) + 8
    prof_dir = os.path.join(out_root, "_vllm_profiles")
    os.environ["VLLM_TORCH_PROFILER_DIR"] = prof_dir
    llm = LLM(model=job["model"], max_num_seqs=max_bs, max_model_len=max_len,
              enforce_eager=not job.get("cuda_graphs", False), enable_chunked_prefill=False)
    tok_vocab = llm.get_tokenizer().vocab_size
    for pt in job["points"]:
        pid, mode = pt["point_id"], pt["mode"]
        bs, ilen = int(pt["batch_size"]), int(pt["input_len"])
        olen = 1 if mode == "prefill" else max(int(pt.get("output_len", 16)), 2)
        emit("point_started", point=pid)
        try:
            prompts = [{"prompt_token_ids": [random.randrange(tok_vocab) for _ in range(ilen)]} for _ in range(bs)]
            params = SamplingParams(max_tokens=olen, ignore_eos=True, temperature=0.0)
            llm.generate(prompts, params)  # warm-up
            llm.start_profile()
            llm.generate(prompts, params)
            llm.stop_profile()
            folder = os.path.join(out_root, pid, mode, f"logs_{bs}")
            os.makedirs(folder, exist_ok=True)
            for i, f in enumerate(sorted(glob.glob(os.path.join(prof_dir, "*.pt.trace.json*")))):
                dst = os.path.join(folder, os.path.basename(f))
                os.replace(f, dst)
                emit("trace", point=pid, path=os.path.abspath(dst), step=i)
        except Exception as e:
            emit("point_failed", point=pid, error=f"{type(e).__name__}: {e}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
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
