#!/usr/bin/python3
"""A tiny crictl for the integration tests: talks to containerd's CRI plugin (runtime.v1) as
the kubelet does. The messages come from lib/cri/runtime.proto, compiled with protoc into
$CRI_DIR (default: cri-client/ next to SOCKET, i.e. inside the test bed) on first use; calls
go through grpc's generic unary_unary, so no grpc code generator is needed.

usage: cri.py SOCKET COMMAND ARGS...
  version                          runtime name and version
  pull REF                         PullImage; prints the image id
  rmi REF                          RemoveImage
  image REF                        ImageStatus as JSON; exit 1 when CRI does not have REF
  runp NAME                        RunPodSandbox (host network); prints the sandbox id
  stopp ID | rmp ID                StopPodSandbox | RemovePodSandbox
  create POD_ID NAME IMAGE -- CMD...   CreateContainer; prints the container id
  start ID | rm ID                 StartContainer | RemoveContainer
  stop ID [TIMEOUT]                StopContainer (SIGKILL after TIMEOUT seconds, default 0)
  status ID                        ContainerStatus as JSON (state, exit_code, reason, log_path)
  logs ID                          the container's output, from its CRI log file
  exec ID -- CMD...                ExecSync: prints its stdout (stderr to stderr), exits with
                                   its exit code

Pods use the node's network and UTS namespaces (no CNI plugin needed; no hostname then), one
IPC namespace per pod and one PID namespace per container, cgroup parent $CRI_CGROUP_PARENT
(default: none), logs under $CRI_DIR/logs/NAME. Each pod's config is kept in $CRI_DIR/pods/ID.pb:
CreateContainer wants it again. A failed call prints "cri.py: METHOD: CODE: details" and exits
125. "pull" prints what PullImage answers: the image id on containerd.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "cri")
RPC_FAILED = 125


def load_messages(work):
    """Compiles runtime.proto into WORK/gen-<hash> (once; atomic rename, so concurrent callers
    never see half a directory) and imports it."""
    with open(os.path.join(PROTO_DIR, "runtime.proto"), "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:12]
    gen = os.path.join(work, "gen-" + key)
    if not os.path.exists(os.path.join(gen, "runtime_pb2.py")):
        os.makedirs(work, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=work, prefix=".gen-")
        subprocess.run(["protoc", "-I", PROTO_DIR, "--python_out", tmp, "runtime.proto"],
                       check=True)
        try:
            os.rename(tmp, gen)
        except OSError:  # another caller was first
            shutil.rmtree(tmp, ignore_errors=True)
    sys.path.insert(0, gen)
    import runtime_pb2  # pylint: disable=import-error,import-outside-toplevel
    return runtime_pb2


class Client:
    def __init__(self, socket, pb):
        self.pb = pb
        self.channel = grpc.insecure_channel("unix://" + socket)

    def call(self, service, method, request, timeout=120):
        response_type = getattr(self.pb, method + "Response")
        stub = self.channel.unary_unary("/runtime.v1.%s/%s" % (service, method),
                                        request_serializer=type(request).SerializeToString,
                                        response_deserializer=response_type.FromString)
        try:
            return stub(request, timeout=timeout)
        except grpc.RpcError as e:
            sys.stderr.write("cri.py: %s: %s: %s\n" % (method, e.code().name, e.details()))
            sys.exit(RPC_FAILED)

    def runtime(self, method, **fields):
        return self.call("RuntimeService", method, getattr(self.pb, method + "Request")(**fields))

    def image(self, method, timeout=120, **fields):
        return self.call("ImageService", method, getattr(self.pb, method + "Request")(**fields),
                         timeout=timeout)


def pod_config(pb, work, name):
    node = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
    logs = os.path.join(work, "logs", name)
    os.makedirs(logs, exist_ok=True)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=name + "-uid", namespace="dadi-test"),
        log_directory=logs,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=os.environ.get("CRI_CGROUP_PARENT", ""),
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=node)))


def split_command(args):
    """ARGS... -- CMD... -> (ARGS, CMD)."""
    if "--" not in args:
        sys.exit("cri.py: missing '--' before the command")
    i = args.index("--")
    return args[:i], args[i + 1:]


def log_lines(path):
    """A CRI log file ("TIME STREAM P|F TEXT" per line, P = partial) as the container wrote it."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 3)
            if len(parts) < 3:
                continue
            text = parts[3] if len(parts) > 3 else ""
            out.append(text if parts[2] == "P" else text + "\n")
    return "".join(out)


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    socket, command, args = argv[1], argv[2], argv[3:]
    work = os.environ.get("CRI_DIR") or os.path.join(os.path.dirname(socket), "cri-client")
    pb = load_messages(work)
    c = Client(socket, pb)

    if command == "version":
        r = c.runtime("Version", version="v1")
        print(r.runtime_name, r.runtime_version, r.runtime_api_version)
    elif command == "pull":
        print(c.image("PullImage", timeout=600, image=pb.ImageSpec(image=args[0])).image_ref)
    elif command == "rmi":
        c.image("RemoveImage", image=pb.ImageSpec(image=args[0]))
    elif command == "image":
        r = c.image("ImageStatus", image=pb.ImageSpec(image=args[0]))
        if not r.image.id:
            return 1
        print(json.dumps({"id": r.image.id, "repo_tags": list(r.image.repo_tags),
                          "repo_digests": list(r.image.repo_digests), "size": r.image.size}))
    elif command == "runp":
        config = pod_config(pb, work, args[0])
        pod = c.runtime("RunPodSandbox", config=config).pod_sandbox_id
        os.makedirs(os.path.join(work, "pods"), exist_ok=True)
        with open(os.path.join(work, "pods", pod + ".pb"), "wb") as f:
            f.write(config.SerializeToString())
        print(pod)
    elif command in ("stopp", "rmp"):
        method = "StopPodSandbox" if command == "stopp" else "RemovePodSandbox"
        c.runtime(method, pod_sandbox_id=args[0])
    elif command == "create":
        (pod, name, image), cmd = split_command(args)
        with open(os.path.join(work, "pods", pod + ".pb"), "rb") as f:
            sandbox = pb.PodSandboxConfig.FromString(f.read())
        node = sandbox.linux.security_context.namespace_options
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=image),
            command=cmd,
            log_path=name + ".log",
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=node)))
        print(c.runtime("CreateContainer", pod_sandbox_id=pod, config=config,
                        sandbox_config=sandbox).container_id)
    elif command in ("start", "rm"):
        method = "StartContainer" if command == "start" else "RemoveContainer"
        c.runtime(method, container_id=args[0])
    elif command == "stop":
        c.runtime("StopContainer", container_id=args[0],
                  timeout=int(args[1]) if len(args) > 1 else 0)
    elif command in ("status", "logs"):
        s = c.runtime("ContainerStatus", container_id=args[0]).status
        if command == "logs":
            sys.stdout.write(log_lines(s.log_path))
        else:
            print(json.dumps({"id": s.id, "state": pb.ContainerState.Name(s.state)[10:],
                              "exit_code": s.exit_code, "reason": s.reason,
                              "image_ref": s.image_ref, "log_path": s.log_path}))
    elif command == "exec":
        (cid,), cmd = split_command(args)
        r = c.runtime("ExecSync", container_id=cid, cmd=cmd, timeout=60)
        sys.stdout.buffer.write(r.stdout)
        sys.stderr.buffer.write(r.stderr)
        return r.exit_code
    else:
        sys.stderr.write("cri.py: unknown command %s\n%s" % (command, __doc__))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
