"""Run an hca command as K hosts on this machine, through JAX's multi-controller runtime.

    python scripts/launch_local_hosts.py --hosts 2 --devices-per-host 4 -- \\
        run worlds/default.yaml --steps 100 --out runs/two-hosts

Starts K processes on 127.0.0.1, each with its own fake CPU devices, each running
``hca <command> --coordinator 127.0.0.1:PORT --processes K --process-id I``; together
they run the world spread over all K x devices-per-host devices. The first process
writes the run directory and metrics and prints what ``hca run`` prints; every process
writes its part of each checkpoint, and the run resumes on any number of hosts and
devices (``hca run --resume``, here or on one process). Ctrl-C or SIGTERM is passed
to every process: the run stops at the same tick everywhere, with a checkpoint. On a
real cluster ``scripts/slurm_launch.sh`` starts the same command once per host.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2, help="processes (hosts) to start")
    parser.add_argument("--devices-per-host", type=int, default=4, help="fake CPU devices per process")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before the hosts are killed")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the hca command and its arguments (after --)")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the hca command to run after --, e.g. -- run WORLD.yaml --steps 100 --out RUN_DIR")
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices_per_host}"
    ).strip()
    logs = [tempfile.TemporaryFile() for _ in range(args.hosts)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "hca", *command, "--coordinator", coordinator, "--processes", str(args.hosts),
             "--process-id", str(index)],
            env=env,
            stdout=None if index == 0 else subprocess.DEVNULL,
            stderr=None if index == 0 else logs[index],
        )
        for index in range(args.hosts)
    ]

    def forward(number, frame):
        for process in processes:
            if process.poll() is None:
                process.send_signal(number)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, forward)
    try:
        codes = [process.wait(timeout=args.timeout) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        print(f"launch_local_hosts.py: hosts did not finish within {args.timeout} s", file=sys.stderr)
        return 1
    for index, (code, log) in enumerate(zip(codes, logs)):
        if index and code not in (0, codes[0]):
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            print(f"launch_local_hosts.py: process {index} exited with {code}:\n{tail}", file=sys.stderr)
    return max(codes, key=abs)


if __name__ == "__main__":
    sys.exit(main())
