# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The server side of the browser tests: a demo database, trytond, a mail sink

``BrowserServer.start()`` builds (or takes from the cache) a SQLite
database with both modules activated and the demo data of
``tests/demo_data.py`` loaded, copies it into a temporary directory, and
starts ``trytond`` on 127.0.0.1 with the web client of ``var/sao/package``
as its ``[web] root`` and an in-process SMTP sink as its ``[email] uri``.
``stop()`` ends all of it.  While the demo data is loaded, an in-process
WebDAV server (``DavSink``, files in var/browser/dav/) takes the uploads
of the demo's document store; the DATEV folder of the demo is
var/browser/datev/ (``DATEV_DIR``).

Nothing of trytond is imported here: the test process may run the
module tests with another configuration, so trytond runs in
subprocesses only, with the ``TRYTOND_*``/``DB_*`` variables of the test
runner removed from their environment.

Cache: the built database is kept in ``var/browser/db_cache/<fingerprint>``
(``BROWSER_DB_CACHE`` sets another directory; empty disables the cache).
The fingerprint hashes the files of ``modules/``, ``tests/demo_data.py``,
the build steps of this file, the installed Tryton versions and today's
date (the demo data is built relative to today).
"""
import asyncio
import contextlib
import datetime as dt
import glob
import hashlib
import importlib.metadata
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
VAR = os.path.join(ROOT, 'var', 'browser')
SAO_ROOT = os.path.join(ROOT, 'var', 'sao', 'package')
DEMO_DATA = os.path.join(ROOT, 'tests', 'demo_data.py')
DATABASE = 'demo'
ADMIN_LOGIN = 'admin'
ADMIN_PASSWORD = 'admin'
ADMIN_EMAIL = 'admin@example.com'
MODULES = ['recurring_invoice', 'dispatch_order', 'edocument_uncefact']
HOST = '127.0.0.1'
# the folder target of the demo's DATEV exports, the files of its
# document store (tests/demo_data.py: DEMO_DATEV_DIR, DEMO_DAV_PORT)
DATEV_DIR = os.path.join(VAR, 'datev')
DAV_ROOT = os.path.join(VAR, 'dav')


def log(message):
    print(f"[browser] {message}", file=sys.stderr, flush=True)


def bin_path(name):
    "The program name of the virtual environment running the tests"
    path = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(path, os.X_OK):
        return path
    return shutil.which(name)


def subprocess_env(**extra):
    """The environment for trytond's programs: without the variables of
    the test runner (TRYTOND_DATABASE_URI, DB_NAME, DB_CACHE, ...), which
    would override the configuration file"""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith('TRYTOND') and k not in {
            'DB_NAME', 'DB_CACHE', 'TRYTONPASSFILE'}}
    env.update(extra)
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def fingerprint(today=None):
    "Hash of everything the demo database depends on"
    today = today or dt.date.today()
    digest = hashlib.sha256()
    files = [DEMO_DATA]
    for dirpath, dirnames, filenames in os.walk(
            os.path.join(ROOT, 'modules')):
        dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
        files.extend(
            os.path.join(dirpath, f) for f in filenames
            if not f.endswith(('.pyc', '.pyo')))
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
    # how the database is built (not the rest of this file)
    digest.update(inspect.getsource(build_database).encode())
    digest.update(inspect.getsource(write_config).encode())
    digest.update(today.isoformat().encode())
    return digest.hexdigest()[:16]


class MailSink:
    "An SMTP server on 127.0.0.1 that keeps the envelopes of the mails"

    def __init__(self):
        self.port = None
        self.messages = []
        self._controller = None

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({
                'from': envelope.mail_from,
                'to': list(envelope.rcpt_tos),
                'size': len(envelope.content or b''),
                })
        return '250 OK'

    def start(self):
        from aiosmtpd.controller import Controller
        self.port = free_port()
        self._controller = Controller(
            self, hostname=HOST, port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self):
        if self._controller:
            try:
                self._controller.stop()
            except (AssertionError, RuntimeError, asyncio.CancelledError):
                pass
            self._controller = None


class DavSink:
    """A WebDAV server (wsgidav on cheroot, anonymous) on 127.0.0.1 that
    stores the uploads in root"""

    def __init__(self, root=DAV_ROOT):
        self.root = root
        self.port = None
        self._server = None
        self._thread = None

    def start(self):
        import threading

        from cheroot import wsgi
        from wsgidav.fs_dav_provider import FilesystemProvider
        from wsgidav.wsgidav_app import WsgiDAVApp
        os.makedirs(self.root, exist_ok=True)
        self.port = free_port()
        app = WsgiDAVApp({
                'host': HOST,
                'port': self.port,
                'provider_mapping': {'/': FilesystemProvider(self.root)},
                'simple_dc': {'user_mapping': {'*': True}},
                'http_authenticator': {
                    'domain_controller':
                        'wsgidav.dc.simple_dc.SimpleDomainController',
                    'accept_basic': True,
                    'accept_digest': False,
                    'default_to_digest': False,
                    },
                'verbose': 0,
                'logging': {'enable': False},
                'dir_browser': {'enable': False},
                'property_manager': True,
                'lock_storage': True,
                })
        self._server = wsgi.Server(
            (HOST, self.port), app, numthreads=4, timeout=5,
            shutdown_timeout=1)
        self._server.prepare()
        self._thread = threading.Thread(
            target=self._server.serve, name='dav-sink', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server:
            self._server.stop()
            self._thread.join(5)
            self._server = self._thread = None


def write_config(path, database_path, web_port=None, smtp_port=None):
    lines = [
        "# written by tests/browser/server.py",
        "[database]",
        "uri = sqlite://",
        f"path = {database_path}",
        "language = en",
        "",
        "[web]",
        f"listen = {HOST}:{web_port or free_port()}",
        f"root = {SAO_ROOT}",
        "",
        "[session]",
        "timeout = 28800",
        "",
        "[email]",
        f"uri = smtp://{HOST}:{smtp_port or 25}",
        "from = Turnus Browser Test <test@turnus.example>",
        "",
        ]
    with open(path, 'w') as fp:
        fp.write('\n'.join(lines))
    return path


def _run(args, logfile, env, what, timeout):
    with open(logfile, 'a') as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        start = time.monotonic()
        try:
            result = subprocess.run(
                args, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=ROOT, stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{what} took more than {timeout}s, see {logfile}")
        elapsed = time.monotonic() - start
        out.write(f"# {what}: exit {result.returncode} in {elapsed:.1f}s\n")
    if result.returncode:
        with open(logfile) as fp:
            tail = ''.join(fp.readlines()[-30:])
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}), see {logfile}:\n"
            f"{tail}")
    return elapsed


def build_database(directory, smtp_port, logfile):
    """Create the database DATABASE in directory: trytond-admin --all,
    activate the modules, load the demo data.  Returns the timings."""
    os.makedirs(directory, exist_ok=True)
    conf = write_config(
        os.path.join(directory, 'trytond.conf'), directory,
        smtp_port=smtp_port)
    db_file = os.path.join(directory, f'{DATABASE}.sqlite')
    # trytond's SQLite backend opens existing files only
    open(db_file, 'w').close()
    timings = {}
    with tempfile.NamedTemporaryFile('w', suffix='.pass') as passfile:
        passfile.write(ADMIN_PASSWORD + '\n')
        passfile.flush()
        env = subprocess_env(TRYTONPASSFILE=passfile.name)
        timings['trytond-admin --all'] = _run(
            [bin_path('trytond-admin'), '-c', conf, '-d', DATABASE,
                '--all', '--email', ADMIN_EMAIL],
            logfile, env, "trytond-admin --all", 600)
    env = subprocess_env()
    timings['activate modules'] = _run(
        [bin_path('trytond-admin'), '-c', conf, '-d', DATABASE,
            '-u', *MODULES, '--activate-dependencies'],
        logfile, env, "trytond-admin -u", 900)
    # the nightly runs of the demo upload to its document store and
    # export to its DATEV folder
    shutil.rmtree(DAV_ROOT, ignore_errors=True)
    dav = DavSink(DAV_ROOT).start()
    try:
        timings['demo data'] = _run(
            [sys.executable, DEMO_DATA, '-d', DATABASE, '-c', conf],
            logfile, subprocess_env(
                DEMO_DAV_PORT=str(dav.port), DEMO_DATEV_DIR=DATEV_DIR),
            "tests/demo_data.py", 900)
    finally:
        dav.stop()
    os.remove(conf)
    return timings


class BrowserServer:
    """The database, the mail sink and trytond of one test run"""

    def __init__(self):
        self.mail = MailSink()
        self.process = None
        self.workdir = None
        self.port = None
        self.url = None
        self.config = None
        self.server_log = None
        self.timings = {}
        self.database = DATABASE
        self.build_log = None
        # the admin's language as the demo data left it
        self.admin_language = None

    # ---------------------------------------------------------- database
    @staticmethod
    def cache_root():
        value = os.environ.get('BROWSER_DB_CACHE')
        if value is None:
            return os.path.join(VAR, 'db_cache')
        return value or None

    def _database(self, target):
        "Copy the demo database to target, building it when needed"
        cache_root = self.cache_root()
        key = fingerprint()
        cached = os.path.join(cache_root, key) if cache_root else None
        if cached and os.path.exists(os.path.join(cached, 'complete')):
            log(f"database from the cache {cached}")
            self.timings['database'] = 'cached'
            os.utime(cached)
            start = time.monotonic()
            shutil.copytree(cached, target, dirs_exist_ok=True)
            os.remove(os.path.join(target, 'complete'))
            self.timings['database copy'] = time.monotonic() - start
            return
        build = tempfile.mkdtemp(prefix='build-', dir=VAR)
        self.build_log = logfile = _logfile('build')
        with open(logfile, 'w') as fp:
            fp.write(f"# building the browser test database "
                f"{key} in {build}\n")
        log(f"building the demo database (log: {logfile})")
        start = time.monotonic()
        try:
            steps = build_database(build, self.mail.port, logfile)
            self.timings['database'] = time.monotonic() - start
            self.timings.update(steps)
            log("built in %.0fs (%s)" % (
                    self.timings['database'],
                    ', '.join(f'{k} {v:.0f}s' for k, v in steps.items())))
            with open(logfile, errors='replace') as fp:
                for line in fp:
                    # the summary tests/demo_data.py prints
                    if line.startswith(('demo data:', 'delivery:',
                                'dispatch:')):
                        log(line.rstrip())
            shutil.copytree(build, target, dirs_exist_ok=True)
            if cached:
                os.makedirs(cache_root, exist_ok=True)
                open(os.path.join(build, 'complete'), 'w').close()
                try:
                    # another run may have cached the same database
                    os.rename(build, cached)
                except OSError:
                    pass
                else:
                    _prune(cache_root, cached)
        finally:
            shutil.rmtree(build, ignore_errors=True)

    # ---------------------------------------------------------- server
    def start(self):
        attach = os.environ.get('BROWSER_SERVER_URL')
        if attach:
            return self.attach(attach)
        start = time.monotonic()
        os.makedirs(VAR, exist_ok=True)
        # the DATEV target of the demo data (transfers of the tests)
        os.makedirs(DATEV_DIR, exist_ok=True)
        self.mail.start()
        self.workdir = tempfile.mkdtemp(prefix='run-', dir=VAR)
        db_dir = os.path.join(self.workdir, 'db')
        self._database(db_dir)
        self.port = free_port()
        self.url = f'http://{HOST}:{self.port}/'
        self.config = write_config(
            os.path.join(self.workdir, 'trytond.conf'), db_dir,
            web_port=self.port, smtp_port=self.mail.port)
        self.server_log = _logfile('trytond')
        server_start = time.monotonic()
        with open(self.server_log, 'w') as out:
            self.process = subprocess.Popen(
                [bin_path('trytond'), '-c', self.config, '-d', DATABASE],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=subprocess_env(), cwd=ROOT, preexec_fn=_die_with_parent)
        self._wait_until_up(timeout=120)
        self.timings['trytond start'] = time.monotonic() - server_start
        self.timings['fixture'] = time.monotonic() - start
        log(f"trytond on {self.url} (pid {self.process.pid}, "
            f"log {self.server_log}) after {self.timings['fixture']:.0f}s")
        return self

    def attach(self, url):
        """Use a running trytond (BROWSER_SERVER_URL, e.g. the one of
        'make demo') instead of starting one: for working on the tests;
        they change its data"""
        self.url = url if url.endswith('/') else url + '/'
        self.database = os.environ.get('BROWSER_DATABASE') or DATABASE
        self.timings['fixture'] = 'attached'
        self.rpc('common.server.version', database=None)
        log(f"using the running server {self.url}, "
            f"database {self.database}")
        return self

    def _wait_until_up(self, timeout):
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"trytond exited with {self.process.returncode}, "
                    f"see {self.server_log}:\n{self.log_tail()}")
            try:
                version = self.rpc('common.server.version', database=None)
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return version
            except (OSError, urllib.error.URLError) as exception:
                last_error = exception
            time.sleep(0.2)
        raise RuntimeError(
            f"trytond does not answer on {self.url} after {timeout}s "
            f"({last_error}), see {self.server_log}")

    def log_tail(self, lines=30):
        try:
            with open(self.server_log) as fp:
                return ''.join(fp.readlines()[-lines:])
        except (OSError, TypeError):
            return ''

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        self.mail.stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ---------------------------------------------------------- JSON-RPC
    def rpc(self, method, *params, database=True, session=None):
        """Call method on the server (database=None: the database-less
        common.* calls); used by the tests to look up and check data"""
        if database is True:
            database = self.database
        url = self.url + (f'{database}/rpc/' if database else 'rpc/')
        data = json.dumps({
                'id': 0, 'method': method, 'params': list(params),
                }, default=_json_default).encode()
        request = urllib.request.Request(
            url, data=data, headers={'Content-Type': 'application/json'})
        if session:
            import base64
            token = base64.b64encode(
                f'{session[0]}:{session[1]}:{session[2]}'.encode()).decode()
            request.add_header('Authorization', f'Session {token}')
        with urllib.request.urlopen(request, timeout=60) as response:
            result = json.loads(response.read())
        if result.get('error'):
            raise RuntimeError(f"{method}: {result['error']}")
        return result.get('result')

    def login(self, login=ADMIN_LOGIN, password=ADMIN_PASSWORD):
        "A session (login, user id, key) for rpc()"
        user_id, key = self.rpc(
            'common.db.login', login, {'password': password}, 'en')[:2]
        return (login, user_id, key)

    def call(self, session, method, *params):
        "model.* call with session's context"
        return self.rpc(
            method, *params, session=session)


def _logfile(name, keep=5):
    """var/browser/NAME-PID.log (runs at the same time do not share a
    log); the older ones but keep are removed"""
    logs = sorted(
        glob.glob(os.path.join(VAR, f'{name}-*.log')), key=os.path.getmtime)
    for path in logs[:-keep]:
        with contextlib.suppress(OSError):
            os.remove(path)
    return os.path.join(VAR, f'{name}-{os.getpid()}.log')


def _die_with_parent():
    "In the child: get SIGTERM when the test process dies (Linux)"
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _prune(parent, keep, count=2):
    entries = [
        os.path.join(parent, e) for e in os.listdir(parent)
        if os.path.join(parent, e) != keep]
    entries = [e for e in entries if os.path.isdir(e)]
    entries.sort(key=os.path.getmtime, reverse=True)
    for entry in entries[count - 1:]:
        shutil.rmtree(entry, ignore_errors=True)


def requirements():
    """Return the missing requirements of the browser tests as a list of
    sentences (empty when everything is there)"""
    missing = []
    for path in (
            os.environ.get('BROWSER_CHROMIUM') or '/usr/bin/chromium',
            os.environ.get('BROWSER_CHROMEDRIVER')
            or '/usr/bin/chromedriver'):
        if not os.access(path, os.X_OK):
            missing.append(
                f"{path} missing (apt-get install chromium chromium-driver)")
    if not os.path.exists(os.path.join(SAO_ROOT, 'index.html')) or not (
            glob.glob(os.path.join(SAO_ROOT, 'dist', 'tryton-sao*.js'))):
        missing.append(f"the web client is missing in {SAO_ROOT} (make sao)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium is not installed (pip install selenium)")
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        missing.append("aiosmtpd is not installed (pip install aiosmtpd)")
    for name in ('trytond', 'trytond-admin'):
        if not bin_path(name):
            missing.append(f"{name} not found")
    return missing


def _json_default(value):
    "Tryton's JSON-RPC form of the dates in a request"
    if isinstance(value, dt.date):
        return {
            '__class__': 'date',
            'year': value.year, 'month': value.month, 'day': value.day}
    raise TypeError(f"{value!r} is not JSON serializable")


if __name__ == '__main__':
    # python tests/browser/server.py: start the test server and wait
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = BrowserServer()
    try:
        server.start()
        print(f"{server.url}#{DATABASE}  (admin/admin); Ctrl-C stops",
            flush=True)
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
