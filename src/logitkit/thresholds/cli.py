"""`logitkit thresholds` (placeholder until the capability lands)."""

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise ValueError("this verb is not available in this build yet")
