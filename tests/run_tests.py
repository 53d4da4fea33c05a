#!/usr/bin/env python3
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Run the test suite of Turnus.

Runs the unittest tests (test_*.py, including the scenario doctests that
they load) of the Tryton modules of this repository and the cross-module
tests in tests/test_*.py, then prints one summary line::

    N passed, N failed, N skipped

The exit status is non-zero when a test failed or raised an error, or when
no test ran at all.

Backend selection follows Tryton core (see a core module's tox.ini):

* ``TRYTOND_DATABASE_URI`` -- ``sqlite://`` (default) or e.g.
  ``postgresql://postgres@127.0.0.1:5432/``
* ``DB_NAME`` -- database name; default ``:memory:`` for SQLite and
  ``test`` for PostgreSQL
* ``DB_CACHE`` -- where trytond keeps copies of the databases with the
  modules activated, so that each combination of modules is activated
  only once.  Default: ``var/db_cache/<fingerprint>`` (SQLite) or
  ``var/db_cache_pg/<fingerprint>`` (PostgreSQL, pg_dump directory
  format; trytond falls back to template databases when pg_dump is not
  installed).  The fingerprint is a hash of the modules' files and the
  installed trytond versions, so a changed module never reuses a stale
  database.  Set ``DB_CACHE=`` (empty) to disable the cache.

Usage::

    python tests/run_tests.py [-v] [-f] [-k PATTERN] [SELECTOR ...]

A SELECTOR is a module name (``recurring_invoice``, ``dispatch_order``,
``tests`` for the top-level tests) or else a test name pattern (same as
``-k``: a substring of the test id or of a scenario file name, or a
fnmatch pattern with ``*``).
"""
import argparse
import glob
import hashlib
import importlib
import importlib.metadata
import os
import shutil
import sys
import time
import traceback
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(ROOT, 'tests')
MODULES = ['recurring_invoice', 'dispatch_order']
TOP_LEVEL = 'tests'
SLOWEST = int(os.environ.get('SLOWEST_TESTS', 25))


def _fingerprint():
    "Hash of everything that changes an activated test database"
    digest = hashlib.sha256()
    files = []
    for dirpath, dirnames, filenames in os.walk(
            os.path.join(ROOT, 'modules')):
        dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
        files.extend(
            os.path.join(dirpath, f) for f in filenames
            if not f.endswith(('.pyc', '.pyo')))
    files.extend(glob.glob(os.path.join(TESTS_DIR, '*.py')))
    for path in sorted(files):
        digest.update(os.path.relpath(path, ROOT).encode())
        try:
            with open(path, 'rb') as fp:
                digest.update(hashlib.sha256(fp.read()).digest())
        except OSError:
            pass
    versions = sorted(
        f'{dist.metadata["Name"]}={dist.version}'
        for dist in importlib.metadata.distributions()
        if (dist.metadata['Name'] or '').lower().replace('_', '-')
        .startswith(('trytond', 'proteus')))
    digest.update('\n'.join(versions).encode())
    return digest.hexdigest()[:16]


def _prune(parent, keep, count=3):
    "Remove the older cache directories of parent but keep count of them"
    try:
        entries = [
            os.path.join(parent, e) for e in os.listdir(parent)
            if os.path.join(parent, e) != keep]
    except FileNotFoundError:
        return
    entries = [e for e in entries if os.path.isdir(e)]
    entries.sort(key=os.path.getmtime, reverse=True)
    for entry in entries[count - 1:]:
        shutil.rmtree(entry, ignore_errors=True)


def _add_postgresql_bin():
    "Make pg_dump/pg_restore (used by trytond's DB_CACHE) findable"
    if shutil.which('pg_dump') and shutil.which('pg_restore'):
        return
    candidates = sorted(
        glob.glob('/usr/lib/postgresql/*/bin'),
        key=lambda p: int(p.split('/')[-2])
        if p.split('/')[-2].isdigit() else 0)
    if candidates:
        os.environ['PATH'] = (
            candidates[-1] + os.pathsep + os.environ.get('PATH', ''))


def setup_environment():
    "Set the variables trytond reads at import time"
    uri = os.environ.get('TRYTOND_DATABASE_URI') or 'sqlite://'
    os.environ['TRYTOND_DATABASE_URI'] = uri
    backend = uri.split(':', 1)[0].split('+', 1)[0]
    if not os.environ.get('DB_NAME'):
        os.environ['DB_NAME'] = ':memory:' if backend == 'sqlite' else 'test'
    if 'DB_CACHE' not in os.environ:
        if backend == 'sqlite':
            parent = os.path.join(ROOT, 'var', 'db_cache')
        else:
            parent = os.path.join(ROOT, 'var', 'db_cache_pg')
        cache = os.path.join(parent, _fingerprint())
        os.makedirs(cache, exist_ok=True)
        os.utime(cache)
        _prune(parent, cache)
        os.environ['DB_CACHE'] = cache
    if backend.startswith('postgres'):
        _add_postgresql_bin()
    # Network tests (e.g. VIES) must not depend on the outside world
    os.environ.setdefault('TEST_NETWORK', '0')
    # The test mail servers (aiosmtpd) start in a thread that a machine
    # busy with both test runs and LibreOffice may not schedule within
    # aiosmtpd's default of 5 s
    os.environ.setdefault('AIOSMTPD_CONTROLLER_TIMEOUT', '60')
    return backend


class _FailedLoad(unittest.TestCase):
    "A test standing for a test module that can not be imported"

    def __init__(self, name, trace):
        super().__init__('runTest')
        self._name = name
        self._trace = trace

    def id(self):
        return f'{self._name} (import)'

    def __str__(self):
        return self.id()

    def runTest(self):
        self.fail(f"Can not load {self._name}:\n{self._trace}")


def _load_package_tests(loader, package, pattern='test*.py'):
    """Load the tests of a package's tests sub-package

    unittest's discover can not be used: with an editable installation
    the module directory is not below the directory of trytond, so
    discover's "top level directory" can not map the files to the
    trytond.modules.* names.  The test modules are imported by their
    package name instead, which also runs their load_tests (scenarios).
    """
    suite = unittest.TestSuite()
    tests_package = f'{package}.tests'
    try:
        tests = importlib.import_module(tests_package)
    except Exception:
        suite.addTest(_FailedLoad(tests_package, traceback.format_exc()))
        return suite
    names = set()
    for directory in getattr(tests, '__path__', []):
        for path in glob.glob(os.path.join(directory, pattern)):
            names.add(os.path.splitext(os.path.basename(path))[0])
    for name in sorted(names):
        module_name = f'{tests_package}.{name}'
        try:
            module = importlib.import_module(module_name)
        except Exception:
            suite.addTest(_FailedLoad(module_name, traceback.format_exc()))
            continue
        suite.addTests(loader.loadTestsFromModule(module, pattern=pattern))
    return suite


def _load_top_level_tests(loader):
    if not glob.glob(os.path.join(TESTS_DIR, 'test_*.py')):
        return unittest.TestSuite()
    return loader.discover(
        TESTS_DIR, pattern='test_*.py', top_level_dir=TESTS_DIR)


class _Result(unittest.TextTestResult):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0
        self.durations = []

    def startTest(self, test):
        self._started = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.durations.append((time.monotonic() - self._started, test.id()))

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1

    def print_slowest(self, count=SLOWEST):
        "Print the slowest tests, to keep the suite's time in sight"
        if not self.durations:
            return
        print(f"slowest {min(count, len(self.durations))} tests "
            "(and test class set-ups):")
        for duration, name in sorted(self.durations, reverse=True)[:count]:
            print(f"  {duration:7.1f}s  {name}")


def _time_class_setups(suite, durations):
    """Record how long each test class's setUpClass takes: activating the
    modules of a ModuleTestCase or of a test class happens there, outside
    of any test"""
    default, originals = unittest.TestCase.setUpClass.__func__, {}
    for test in _iter_tests(suite):
        cls = type(test)
        setup = getattr(cls.setUpClass, '__func__', None)
        if setup is not None and setup is not default:
            originals.setdefault(cls, setup)

    def timed(setup):
        def setUpClass(cls):
            started = time.monotonic()
            try:
                setup(cls)
            finally:
                durations.append((time.monotonic() - started,
                        f'{cls.__module__}.{cls.__qualname__} (set-up)'))
        return classmethod(setUpClass)

    for cls, setup in originals.items():
        cls.setUpClass = timed(setup)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Run the Turnus test suite")
    parser.add_argument(
        'selectors', nargs='*', metavar='SELECTOR',
        help="module name (%s) or test name pattern" % ', '.join(
            MODULES + [TOP_LEVEL]))
    parser.add_argument(
        '-k', dest='patterns', action='append', default=[],
        metavar='PATTERN', help="only run tests matching the pattern")
    parser.add_argument(
        '-v', '--verbose', dest='verbosity', action='store_const',
        const=2, default=1, help="print each test")
    parser.add_argument(
        '-q', '--quiet', dest='verbosity', action='store_const', const=0)
    parser.add_argument(
        '-f', '--failfast', action='store_true',
        help="stop on the first failure")
    parser.add_argument(
        '-l', '--list', action='store_true',
        help="list the tests and exit")
    return parser.parse_args(argv)


def _iter_tests(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from _iter_tests(test)
        else:
            yield test


def main(argv=None):
    options = _parse_args(argv)
    backend = setup_environment()
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)

    selected, patterns = [], list(options.patterns)
    for selector in options.selectors:
        if selector in MODULES or selector == TOP_LEVEL:
            selected.append(selector)
        else:
            patterns.append(selector)
    if not selected:
        selected = MODULES + [TOP_LEVEL]

    loader = unittest.TestLoader()
    if patterns:
        loader.testNamePatterns = [
            p if '*' in p else f'*{p}*' for p in patterns]

    print(
        f"backend: {backend}, DB_NAME={os.environ['DB_NAME']}, "
        f"DB_CACHE={os.environ.get('DB_CACHE') or '(none)'}",
        flush=True)
    suite = unittest.TestSuite()
    for name in selected:
        if name == TOP_LEVEL:
            suite.addTests(_load_top_level_tests(loader))
        else:
            suite.addTests(
                _load_package_tests(loader, f'trytond.modules.{name}'))

    if options.list:
        try:
            for test in _iter_tests(suite):
                print(test.id())
            sys.stdout.flush()
        except BrokenPipeError:
            sys.stdout = None
        return 0

    runner = unittest.TextTestRunner(
        verbosity=options.verbosity, failfast=options.failfast,
        resultclass=_Result, stream=sys.stdout)
    setups = []
    _time_class_setups(suite, setups)
    start = time.monotonic()
    result = runner.run(suite)
    result.durations.extend(setups)
    elapsed = time.monotonic() - start

    failed = (
        len(result.failures) + len(result.errors)
        + len(result.unexpectedSuccesses))
    skipped = len(result.skipped)
    result.print_slowest()
    print(f"time: {elapsed:.1f}s")
    print(f"{result.passed} passed, {failed} failed, {skipped} skipped",
        flush=True)
    if failed:
        return 1
    if not result.testsRun:
        print("no test ran", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
