"""``python -m gateway_vm --config PATH``: run one gateway."""

from __future__ import annotations

import argparse
import sys

from gateway_vm.daemon import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway_vm", description="skyhop gateway daemon"
    )
    parser.add_argument(
        "--config", required=True, help="path of the GatewayConfig JSON (mode 0600)"
    )
    args = parser.parse_args(argv)
    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
