#!/usr/bin/env python3
"""The container action's entry point: the runner starts this as PID 1."""

import sys

from deployer.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
