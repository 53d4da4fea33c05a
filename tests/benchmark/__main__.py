# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The entry point of the measuring child processes:
``python -m tests.benchmark --worker module:function spec.json result.json``
"""
import sys

from .harness import worker_main

if __name__ == '__main__':
    if len(sys.argv) != 5 or sys.argv[1] != '--worker':
        sys.exit("usage: python -m tests.benchmark.<scenario> --help")
    sys.exit(worker_main(*sys.argv[2:]))
