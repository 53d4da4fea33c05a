# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The base of the browser tests: fixtures, skip rules, failure artifacts

``setUpModule``/``tearDownModule`` of tests/test_browser.py start and stop
the one server of a run (``start_server``/``stop_server``);
``BrowserTestCase`` gives each test class its own Chromium and each test
a fresh page, logged in.

Skip rules: on PostgreSQL runs (``TRYTOND_DATABASE_URI`` starting with
``postgresql``) the browser tests are skipped; so they are when chromium,
chromedriver, selenium or the web client (var/sao/package) are missing,
except with ``CI=true``, where a missing requirement is an error.
``BROWSER_TESTS=0`` skips them too.

When a test fails, a screenshot, the page's HTML and the browser's
console log are saved to var/browser/ and their paths are part of the
failure message, with the step that failed and the server's errors.
"""
import contextlib
import functools
import glob
import os
import sys
import time
import unittest

from . import server as server_module

try:
    from selenium.common.exceptions import WebDriverException
except ImportError:  # skipped (or an error in CI) by start_server
    WebDriverException = OSError

ARTIFACTS = server_module.VAR
_server = None
TIMINGS = []


def skip_reason():
    "Why the browser tests do not run here, or None"
    uri = (os.environ.get('TRYTOND_DATABASE_URI') or '').lower()
    if uri.startswith('postgres'):
        return ("the browser tests run on SQLite only "
            "(TRYTOND_DATABASE_URI is PostgreSQL)")
    if os.environ.get('BROWSER_TESTS', '') == '0':
        return "BROWSER_TESTS=0"
    return None


def in_ci():
    return os.environ.get('CI', '').lower() in {'true', '1', 'yes'}


def start_server():
    """setUpModule: skip or fail on missing requirements, then build the
    database and start trytond (stopped by a module cleanup, also when
    this fails half-way)"""
    global _server
    reason = skip_reason()
    if reason:
        raise unittest.SkipTest(reason)
    missing = server_module.requirements()
    if missing:
        message = "browser tests need: " + '; '.join(missing)
        if in_ci():
            raise RuntimeError(
                message + " (CI=true: an error, not a skip)")
        raise unittest.SkipTest(message)
    _remove_artifacts()
    _server = server_module.BrowserServer()
    unittest.addModuleCleanup(stop_server)
    _server.start()
    # The tests read English labels: the admin's language is set to
    # English here (what the demo data set is kept for the tests that
    # check it)
    session = _server.login()
    _server.admin_language = (_server.call(
            session, 'model.res.user.get_preferences', False, {})
        .get('language'))
    set_language(session, 'en')
    return _server


def _remove_artifacts():
    "Remove the screenshots and pages of failures of earlier runs"
    for pattern in ('*.png', '*.html', '*.console.txt'):
        for path in glob.glob(os.path.join(ARTIFACTS, pattern)):
            with contextlib.suppress(OSError):
                os.remove(path)


def server():
    if _server is None:
        raise unittest.SkipTest("the browser test server is not running")
    return _server


def set_language(session, code):
    server().call(
        session, 'model.res.user.set_preferences', {'language': code}, {})


def stop_server():
    global _server
    if _server is not None:
        timings = _server.timings
        if (_server.process is None and _server.url
                and _server.admin_language):
            # attached to a running server: give the admin its language
            # back
            with contextlib.suppress(Exception):
                set_language(_server.login(), _server.admin_language)
        _server.stop()
        _server = None
        _print_timings(timings)


def _print_timings(fixture):
    parts = []
    for key in ('fixture', 'database', 'trytond start'):
        value = fixture.get(key)
        if isinstance(value, float):
            parts.append(f"{key} {value:.1f}s")
        elif value:
            parts.append(f"{key} {value}")
    lines = ["browser tests: " + ', '.join(parts)]
    for name, elapsed in TIMINGS:
        lines.append(f"  {elapsed:6.1f}s  {name}")
    if TIMINGS:
        lines.append(f"  {sum(e for _, e in TIMINGS):6.1f}s  (tests)")
    print('\n[browser] ' + '\n[browser] '.join(lines), file=sys.stderr,
        flush=True)


def _message(exception):
    if isinstance(exception, WebDriverException):
        # without Selenium's stack of addresses
        return f"{type(exception).__name__}: {exception.msg}"
    if isinstance(exception, AssertionError):
        return str(exception)
    return f"{type(exception).__name__}: {exception}"


def _with_artifacts(method):
    "Save the page when the test fails and say where it is"
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except unittest.SkipTest:
            raise
        except Exception as exception:
            raise self.failure(exception) from exception
    return wrapper


class BrowserTestCase(unittest.TestCase):
    "One Chromium per class, a fresh page logged in per test"
    login = server_module.ADMIN_LOGIN
    password = server_module.ADMIN_PASSWORD
    maxDiff = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name.startswith('test') and callable(value):
                setattr(cls, name, _with_artifacts(value))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from .sao import Browser, Sao
        cls.server = server()
        start = time.monotonic()
        cls.browser = Browser()
        cls.addClassCleanup(cls.browser.quit)
        cls.sao = Sao(cls.browser.driver, cls.server.url, cls.server.database)
        cls.browser_start = time.monotonic() - start

    def setUp(self):
        super().setUp()
        self._started = time.monotonic()
        self._step = None
        self._log_offset = self._log_size()
        self.session = self.server.login()
        try:
            with self.step("open the web client, logged in"):
                self.fresh_page()
        except Exception as exception:
            raise self.failure(exception) from exception

    def tearDown(self):
        TIMINGS.append(
            (self.id().split('.', 1)[-1], time.monotonic() - self._started))
        super().tearDown()

    # ---------------------------------------------------------- helpers
    def fresh_page(self):
        """Load the web client again (no tab, no dialog) and log in if it
        asks for it"""
        sao = self.sao
        with contextlib.suppress(WebDriverException):
            sao.js("window.onbeforeunload = null;")
        sao.driver.get('about:blank')
        sao.open()
        state = sao.wait(lambda d: (
                'login' if sao.all_visible('.login-dialog')
                else 'menu' if sao.all_visible('#menu .treeview tbody tr')
                else None),
            "the login dialog or the menu")
        if state == 'login':
            sao.login(self.login, self.password)
        else:
            sao.wait_menu()
            sao.idle()

    @contextlib.contextmanager
    def step(self, name):
        "A named step of the test, reported when it fails"
        self._step = name
        yield
        self._step = None

    def rpc(self, method, *params):
        "A model method on the server as the test's user (for look-ups)"
        return self.server.call(self.session, method, *params)

    def search_read(self, model, domain, fields, order=None, limit=None):
        return self.rpc(
            f'model.{model}.search_read', domain, 0, limit, order, fields,
            {})

    def _log_size(self):
        try:
            return os.path.getsize(self.server.server_log)
        except (OSError, TypeError):
            return 0

    def server_errors(self):
        "The errors trytond logged during this test"
        try:
            with open(self.server.server_log, errors='replace') as fp:
                fp.seek(self._log_offset)
                text = fp.read()
        except (OSError, TypeError):
            return []
        lines = text.splitlines()
        errors = []
        for i, line in enumerate(lines):
            if ' ERROR ' in line or line.startswith('Traceback'):
                errors.extend(lines[i:i + 12])
        return errors[:40]

    def failure(self, exception):
        "An AssertionError telling what failed and where the page is"
        name = f"{type(self).__name__}.{self._testMethodName}"
        if self._step:
            name += '-' + self._step
        paths = self.sao.save_artifacts(ARTIFACTS, name)
        lines = []
        if self._step:
            lines.append(f"step failed: {self._step}")
        lines.append(_message(exception))
        with contextlib.suppress(WebDriverException):
            lines.append(f"page: {self.sao.driver.current_url}")
        messages = []
        with contextlib.suppress(WebDriverException):
            messages = self.sao.messages()
        if messages:
            lines.append("sao shows: " + ' | '.join(messages))
        lines.append("saved: " + (', '.join(paths) or '(nothing)'))
        if self.server.server_log:
            lines.append(f"trytond log: {self.server.server_log}")
        errors = self.server_errors()
        if errors:
            lines.append("trytond logged:\n    " + '\n    '.join(errors))
        message = '\n'.join(lines)
        print(f"\n[browser] {self.id()} failed:\n{message}",
            file=sys.stderr, flush=True)
        return AssertionError(message)
