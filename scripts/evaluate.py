#!/usr/bin/env python
"""Evaluate a bundle on the MNIST test set: report.json, report.md and the PNG figures.

Same as ``sdrindex evaluate``; for example::

    .venv/bin/sdrindex build --out out/mnist --decoder
    .venv/bin/python scripts/evaluate.py out/mnist --out out/evaluation [--limit 1000]
"""

from __future__ import annotations

import sys

from sdrindex.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
