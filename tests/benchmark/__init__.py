# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The benchmarks (not tests): harness.py is the plumbing, every other
module one measured scenario, run from the repository root as
``python -m tests.benchmark.<scenario> --help``"""
