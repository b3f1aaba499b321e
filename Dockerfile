# corral's node image: corrald + corralctl. Two stages:
#   build    clang compiles the CO-RE BPF objects (bpf/vmlinux.h is committed, so no kernel
#            headers or BTF are needed here) and pip builds the wheel that carries them;
#   runtime  a slim Python with libbpf1 and that wheel. No compiler, no headers at run time.
#
#   docker build -t corral:0.1.0 .
#   docker run --rm --privileged --pid=host corral:0.1.0 probe
#
# corrald must run as root with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (deploy/daemonset.yaml
# says why each), the host's /sys/fs/bpf, /sys/fs/cgroup and /sys/kernel/security mounted, and
# the host PID namespace. It cannot run as non-root: loading BPF programs needs those
# capabilities in the initial user namespace.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make bpf
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir dist .

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/dist/ /wheels/
RUN python -m pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels
COPY config/corral.yaml /etc/corral/corral.yaml
LABEL org.opencontainers.image.title="corral" \
      org.opencontainers.image.description="corrald: learns AI agents' exec/open/connect behaviour and enforces it with BPF"
ENTRYPOINT ["corrald"]
CMD ["--config", "/etc/corral/corral.yaml"]
