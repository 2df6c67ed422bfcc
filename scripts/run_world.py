"""Run a world from Python and print its ledger: the API that scripts use.

    python scripts/run_world.py worlds/default.yaml --steps 500 --seed 3
"""

from __future__ import annotations

import argparse
import sys

import hca


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", help="world file (YAML)")
    parser.add_argument("--steps", type=int, default=500, help="ticks to run")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: the file's)")
    parser.add_argument("--every", type=int, default=100, help="ticks between ledger lines")
    args = parser.parse_args()

    try:
        world = hca.load_world(args.world, seed=args.seed)
    except hca.WorldFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    simulation = hca.build(world)
    state = simulation.init()
    print(f"{'tick':>8} {'free':>12} {'organisms':>10} {'injected':>12} {'dissipated':>12}  balanced")
    done = 0
    while True:
        ledger = simulation.ledger(state)
        world_ledger = ledger["world"]
        print(
            f"{ledger['tick']:>8} {world_ledger['free']:>12,} {world_ledger['organisms']:>10,} "
            f"{world_ledger['injected']:>12,} {world_ledger['dissipated']:>12,}  {world_ledger['balanced']}"
        )
        if done >= args.steps:
            break
        chunk = min(args.every, args.steps - done)
        state = simulation.run(state, chunk)  # donates `state`: keep only the returned one
        done += chunk
    return 0


if __name__ == "__main__":
    sys.exit(main())
