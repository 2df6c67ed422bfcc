"""Run a world as K hosts on this machine, through JAX's multi-controller runtime.

    python scripts/launch_local_hosts.py worlds/default.yaml --hosts 2 --devices-per-host 4 --steps 100

Starts K processes on 127.0.0.1, each with its own fake CPU devices, joined by
``jax.distributed.initialize``; together they run the world spread over all
K x devices-per-host devices and process 0 prints the ledger and the digest of the
final state as one JSON line, which equals the digest of the same run on one device
(``hca inspect --json``'s ``state_digest``). On a real cluster the same worker runs
under ``scripts/slurm_launch.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker(args: argparse.Namespace) -> int:
    """One host: join the others, run, and (process 0) report."""
    import jax

    import hca
    from hca.checkpoint import state_digest
    from hca.parallel import gather, initialize_hosts, make_mesh

    initialize_hosts(args.coordinator, args.hosts, args.process_id)
    world = hca.load_world(args.world)
    mesh = make_mesh(world, jax.device_count())
    simulation = hca.build(world, mesh)
    state = simulation.run(simulation.init(), args.steps)
    ledger = simulation.ledger(state)
    digest = state_digest(gather(state))
    if jax.process_index() == 0:
        print(json.dumps({
            "processes": jax.process_count(),
            "devices": jax.device_count(),
            "mesh": {name: int(size) for name, size in mesh.shape.items()} if mesh else {},
            "tick": ledger["tick"],
            "ledger": ledger["world"],
            "state_digest": digest,
        }), flush=True)
    return 0


def launch(args: argparse.Namespace) -> int:
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices_per_host}"
    ).strip()
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, args.world, "--steps", str(args.steps), "--hosts", str(args.hosts),
             "--coordinator", coordinator, "--process-id", str(index)],
            env=env,
            stdout=subprocess.PIPE if index else None,
            stderr=subprocess.DEVNULL if index else None,
        )
        for index in range(args.hosts)
    ]
    try:
        codes = [process.wait(timeout=args.timeout) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        print(f"hosts did not finish within {args.timeout} s", file=sys.stderr)
        return 1
    return max(codes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", help="world file (YAML)")
    parser.add_argument("--steps", type=int, default=100, help="ticks to run")
    parser.add_argument("--hosts", type=int, default=2, help="processes (hosts) to start")
    parser.add_argument("--devices-per-host", type=int, default=4, help="fake CPU devices per process")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before the hosts are killed")
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    return worker(args) if args.process_id is not None else launch(args)


if __name__ == "__main__":
    sys.exit(main())
