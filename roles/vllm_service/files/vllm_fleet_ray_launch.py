"""A Ray cluster member's unit (vllm-fleet, docs/multinode.md): run by the vLLM environment's
Python, which holds Ray.

  head   --port P --members A,B,... --gpus G --address A --timeout S -- <vllm serve argv>
         starts the Ray head on A:P, waits until every member's address is among Ray's live nodes
         and the cluster has G GPUs, then runs vLLM with RAY_ADDRESS=A:P (as its child, passing a
         stop on: supervise): vLLM asks Ray for its placement only when every stage has somewhere
         to go.
  worker --head H:P --address A --timeout S
         waits until the head's port answers, then runs `ray start --address H:P --block`, and
         joins again whenever that exits (the head restarted) until the unit stops.

Both give up after S seconds with a message that names what is missing, and exit 1: the unit
fails (and systemd restarts it), rather than a start that waits for ever. The Ray processes live
in the unit's cgroup, so stopping the unit stops them. Not ExecStartPre=: systemd kills what an
ExecStartPre= command leaves running before ExecStart= starts.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

POLL_SECONDS = 2.0
# The stop grace of a vLLM that does not answer /health yet: it has no requests to finish, and while
# its engine waits for Ray it may not answer SIGTERM at all (seen on the test hosts), so the whole
# grace would only delay every stop and restart during a start.
STARTING_GRACE = 3.0
# Ray's token authentication (RAY_AUTH_MODE=token, which the unit sets) exists from this release:
# an older Ray ignores it and would leave its control plane open.
MIN_RAY = (2, 52)
# The signals that asked this process to stop (supervise's handler adds them).
STOPPING: list[int] = []


def log(message: str) -> None:
    print(f"vllm-fleet ray: {message}", flush=True)


def stop_now(_signum, _frame) -> None:
    """A stop before vLLM runs: nothing to finish. Exit at once and cleanly; the unit's KillMode=mixed
    then kills Ray's daemons. Not Ray's own handler (ray.init installs one that raises SystemExit and
    then disconnects from the GCS at exit), whose exit status fails the unit and whose wait is unbounded."""
    log("asked to stop before vLLM started")
    os._exit(0)


def stop_before_vllm() -> None:
    import signal

    signal.signal(signal.SIGTERM, stop_now)
    signal.signal(signal.SIGINT, stop_now)


def health_url(serve_argv: list[str]) -> str | None:
    """Where vLLM's /health answers once it serves, from its own --host/--port (vLLM's defaults:
    every address, 8000); None when it listens on a Unix socket."""
    host, port = "", "8000"
    for i, arg in enumerate(serve_argv):
        flag, sep, value = arg.partition("=")
        if not sep and i + 1 < len(serve_argv):
            value = serve_argv[i + 1]
        if flag == "--host":
            host = value
        elif flag == "--port":
            port = value
        elif flag == "--uds":
            return None
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/health" if ":" in host else f"http://{host}:{port}/health"


def answers(url: str | None, timeout: float = 2.0) -> bool:
    """Whether vLLM serves (its /health says 200); True when there is no URL to ask, so that the
    full grace applies."""
    if url is None:
        return True
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except Exception:  # refused, reset, timed out, an HTTP error: not serving
        return False


def ray_command() -> list[str]:
    # Ray's command line from this Python's own Ray (not a `ray` script on PATH, maybe another's).
    return [sys.executable, "-m", "ray.scripts.scripts"]


def missing_members(members: list[str], alive: list[str]) -> list[str]:
    """The members' addresses that are not among the live Ray nodes' addresses."""
    return [m for m in members if m not in alive]


def formed(members: list[str], gpus_needed: float, alive: list[str], gpus: float) -> str | None:
    """None when every member is a live node and the cluster has the GPUs; else what is missing."""
    missing = missing_members(members, alive)
    if missing:
        return f"{len(members) - len(missing)} of {len(members)} members joined; waiting for {', '.join(missing)}"
    if gpus < gpus_needed:
        return f"every member joined; {gpus:g} of {gpus_needed:g} GPUs in the cluster"
    return None


def port_open(address: str, timeout: float = 2.0) -> bool:
    host, _sep, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def run_head(args, serve_argv: list[str]) -> int:
    import subprocess

    started = subprocess.run(
        [
            *ray_command(),
            "start",
            "--head",
            "--node-ip-address",
            args.address,
            "--port",
            str(args.port),
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=False,
    )
    if started.returncode:
        log(f"`ray start --head` failed (exit {started.returncode})")
        return 1
    import ray

    gcs = f"{args.address}:{args.port}"
    members = [m for m in args.members.split(",") if m]
    # As the head's own node: left to itself Ray picks the address of the default route.
    ray.init(address=gcs, _node_ip_address=args.address, logging_level="ERROR", log_to_driver=False)
    stop_before_vllm()  # again: ray.init put its own handler in place
    deadline, said = time.monotonic() + args.timeout, None
    while True:
        alive = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
        gpus = float(ray.cluster_resources().get("GPU", 0))
        missing = formed(members, args.gpus, alive, gpus)
        if missing is None:
            break
        if missing != said:
            log(missing)
            said = missing
        if time.monotonic() > deadline:
            log(f"gave up after {args.timeout} s: {missing}")
            return 1
        time.sleep(POLL_SECONDS)
    ray.shutdown()
    log(f"cluster formed: {len(members)} members ({', '.join(members)}), {gpus:g} GPUs; starting vLLM")
    if not serve_argv:
        log("no vllm serve command after --")
        return 2
    os.environ["RAY_ADDRESS"] = gcs
    return serve(serve_argv, args.stop_grace)


def serve(serve_argv: list[str], grace: float) -> int:
    """vLLM as the head's child (supervise), with its exit status; a stop that was asked for is a
    clean exit whatever vLLM's own status (as systemd counts a main process its SIGTERM stopped):
    a vLLM killed after its grace, or one stopped while it started, does not fail the unit."""
    url = health_url(serve_argv)
    code = supervise(serve_argv, grace, serving=lambda: answers(url))
    if STOPPING:
        log(f"stopped (vLLM exited {code})")
        return 0
    return code


def supervise(argv: list[str], grace: float, serving=None) -> int:
    """Run vLLM as this process's child and exit with it. A stop (SIGTERM, SIGINT) is passed on to
    vLLM, which gets ``grace`` seconds to finish before it is killed: the unit's KillMode=mixed
    signals only this process, then kills what is left (Ray's daemons) once it exits. Not exec:
    vLLM still starting its engine may not answer SIGTERM at all (seen on the test hosts while its
    engine waited for Ray), and the stop would then last the unit's whole TimeoutStopSec.
    ``serving()`` is asked until it first says yes; a vLLM stopped before that gets STARTING_GRACE
    (asked before the stop: a vLLM told to stop no longer answers /health)."""
    import signal
    import subprocess

    child = subprocess.Popen(argv)
    stop_by: list[float] = []
    served = [serving is None]

    def forward(signum, _frame):
        STOPPING.append(signum)
        if not stop_by:
            given = grace if served[0] else min(grace, STARTING_GRACE)
            if given < grace:
                log(f"vLLM does not serve yet: it gets {given:g} s to stop")
            stop_by.append(time.monotonic() + given)
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        if not served[0] and not stop_by and serving():
            served[0] = True
        try:
            code = child.wait(timeout=1)
            break
        except subprocess.TimeoutExpired:
            if stop_by and time.monotonic() > stop_by[0]:
                log("vLLM did not stop within its grace after the signal: killing it")
                child.kill()
    return code if code >= 0 else 128 - code


def wait_for_head(args) -> bool:
    deadline, said = time.monotonic() + args.timeout, False
    while not port_open(args.head):
        if STOPPING:
            return False
        if not said:
            log(f"waiting for the head's Ray port {args.head}")
            said = True
        if time.monotonic() > deadline:
            log(f"gave up after {args.timeout} s: the head's Ray port {args.head} does not answer")
            return False
        time.sleep(POLL_SECONDS)
    return True


def run_worker(args) -> int:
    """Join the head's Ray, and join again when it goes (a head restarted: its raylet then exits
    here), within the same start of the unit: the probe takes a restart of the unit for a crash."""
    argv = [*ray_command(), "start", "--address", args.head, "--node-ip-address", args.address, "--block",
            "--disable-usage-stats"]  # fmt: skip
    while True:
        if not wait_for_head(args):
            return 0 if STOPPING else 1
        log(f"joining the Ray cluster at {args.head} as {args.address}")
        code = supervise(argv, 10)
        if STOPPING:
            return 0  # asked to stop: a clean stop, not a failed unit
        log(f"left the Ray cluster (ray exited {code}); joining again once the head answers")
        time.sleep(POLL_SECONDS)


def parse(argv: list[str]):
    serve: list[str] = []
    if "--" in argv:
        argv, serve = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(prog="vllm_fleet_ray_launch")
    roles = parser.add_subparsers(dest="role", required=True)
    head = roles.add_parser("head")
    head.add_argument("--port", type=int, required=True)
    head.add_argument("--members", required=True, help="every member's address, the head's first")
    head.add_argument("--gpus", type=float, default=0)
    head.add_argument("--stop-grace", type=float, default=30, help="seconds vLLM gets to stop on SIGTERM")
    worker = roles.add_parser("worker")
    worker.add_argument("--head", required=True, help="HEAD_ADDRESS:RAY_PORT")
    for sub in (head, worker):
        sub.add_argument("--address", required=True, help="this member's address on the members' network")
        sub.add_argument("--timeout", type=float, default=600)
    return parser.parse_args(argv), serve


def ray_too_old(version: str) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")[:2]) < MIN_RAY
    except ValueError:
        return True


def main(argv: list[str] | None = None) -> int:
    args, serve = parse(sys.argv[1:] if argv is None else argv)
    stop_before_vllm()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray_too_old(ray.__version__):
        log(f"Ray {ray.__version__} has no token authentication (needs {'.'.join(map(str, MIN_RAY))} or later)")
        return 1
    return run_head(args, serve) if args.role == "head" else run_worker(args)


if __name__ == "__main__":
    sys.exit(main())
