"""Start N local training workers for MultiWorkerMirroredStrategy, each with its TF_CONFIG.

    python scripts/launch_workers.py --workers 2 --timeout 3600 -- \\
        python scripts/train.py --config configs/bench.json --set train.strategy=multi_worker

Every worker runs the same command; worker 0 is the chief (it writes checkpoints and results). The cluster
listens on loopback ports only (127.0.0.1). When one worker fails, or the time limit passes, the others
are stopped. For several machines, set TF_CONFIG on each machine yourself (same ``cluster``, its own
``task.index``) and run the command there.

Exit codes: 0 every worker exited with 0; 1 a worker failed or was stopped (each worker's code is printed);
2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_tf_configs(workers: int) -> list[str]:
    """TF_CONFIG of each worker of a loopback cluster."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(workers)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(workers)]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)  # the worker's own session: the worker and its children
        process.wait()


def launch(command: list[str], workers: int, timeout: float, log_dir: Path | None = None,
           env: dict | None = None) -> list[int]:
    """Run ``command`` as ``workers`` workers of one cluster; returns their exit codes (-9 when stopped).

    Each worker's output goes to ``log_dir/worker_<i>.log`` when ``log_dir`` is given, else to this
    process' output.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    processes, logs = [], []
    for index, tf_config in enumerate(worker_tf_configs(workers)):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config}
        out = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(log_dir) / f"worker_{index}.log", "w")  # noqa: SIM115 (closed in finally)
            logs.append(out)
        processes.append(subprocess.Popen(command, env=worker_env, stdout=out, stderr=subprocess.STDOUT if out
                                          else None, start_new_session=True))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes):
            failed = any(p.poll() not in (None, 0) for p in processes)
            if failed or time.monotonic() > deadline:
                if not failed:
                    print(f"launch_workers: time limit of {timeout:.0f} s reached, stopping the workers",
                          file=sys.stderr)
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            _stop(p)
        for out in logs:
            out.close()
    return [p.returncode for p in processes]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/launch_workers.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2,
                        help="number of local workers (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=24 * 3600,
                        help="seconds before all are stopped (default: %(default)s, a day)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="write worker_<i>.log files here (default: the workers write to this "
                             "process' output)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command after --")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the worker command after --")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    codes = launch(command, args.workers, args.timeout, args.log_dir)
    for index, code in enumerate(codes):
        print(f"worker {index}: exit code {code}")
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
