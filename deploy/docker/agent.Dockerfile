# The agent image: `agent` on top of a runtime image that has what the profiling workload needs (Python,
# CUDA, PyTorch and vLLM). The Python drivers are embedded in the binary. Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t tracefleet/agent:0.1.0 .
#   docker build -f deploy/docker/agent.Dockerfile --build-arg RUNTIME_IMAGE=nvcr.io/nvidia/pytorch:25.01-py3 .
# The agent is built on Debian bullseye (glibc 2.31) so that it runs on the older glibc of CUDA runtime
# images (Ubuntu 22.04: 2.35). It loads NVML (libnvidia-ml.so.1) at run time, from the NVIDIA container
# runtime's mounts; a static musl build could not load it.
ARG RUST_IMAGE=rust:1.95-bullseye
ARG RUNTIME_IMAGE=vllm/vllm-openai:v0.25.0

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin agent \
 && strip target/release/agent

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/agent /usr/local/bin/agent
# Unprivileged by default (the clock-locking overlay runs it as root); Hugging Face and torch caches go to
# HOME, a writable emptyDir in the DaemonSet. torch's compile cache asks for the user's name (getpass), which
# fails for a UID without a passwd entry: give 65532 one.
RUN echo 'tracefleet:x:65532:65532:tracefleet agent:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'tracefleet:x:65532:' >> /etc/group
ENV HOME=/tmp USER=tracefleet LOGNAME=tracefleet
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/agent"]
