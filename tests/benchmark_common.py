# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The plumbing shared by the benchmarks (not a test)

tests/benchmark_nightly.py and tests/benchmark_dispatch.py import it (the
scripts' folder is the first entry of sys.path, also in their worker
processes):

* worker side: trytond configuration, a database with modules activated,
  memory of the process, query counter, timers of class methods, the
  ``--worker`` entry point;
* driver side: the database server or SQLite directory (``Backend``:
  copies, drops, version), worker processes, the load of the machine
  around a run, the machine and the code measured;
* report: medians, numbers, the command line, the ``## `` sections of a
  Markdown file (read one, replace or insert one, keep the rest).
"""
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
import urllib.parse
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
        flush=True)


# ---------------------------------------------------------------------------
# Worker side: runs in a subprocess with trytond configured by a file


def rss_kib():
    "The resident size of this process now"
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def maxrss_kib():
    "The peak resident size of this process"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds(who=resource.RUSAGE_SELF):
    "User + system time of this process (or of its waited-for children)"
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def init_trytond(spec):
    "Configure trytond from spec['config'] and spec['settings']"
    from trytond.config import config
    config.update_etc(spec['config'])
    # Settings of this process only, e.g. the SMTP server of a mail sink
    for section, option, value in spec.get('settings', []):
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, option, value)


def short_traceback(exception):
    return ''.join(traceback.format_exception(exception))[-6000:]


def error_details(exception):
    "What a result keeps of an exception"
    return {'type': type(exception).__name__, 'message': str(exception),
        'traceback': short_traceback(exception)}


def create_database(name, modules, translatable=False):
    """Create the database name (dropped first if it exists), activate
    modules and return the names of the activated modules"""
    from sql import Table

    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    database = backend.Database()
    database.connect()
    connection = database.get_connection(autocommit=True)
    try:
        if name in database.list():
            database.drop(connection, name)
        database.create(connection, name)
    finally:
        database.put_connection(connection)
        database.close()

    database = backend.Database(name)
    connection = database.get_connection()
    try:
        with connection.cursor() as cursor:
            database.init()
            ir_configuration = Table('ir_configuration')
            cursor.execute(*ir_configuration.insert(
                    [ir_configuration.language], [['en']]))
        connection.commit()
    finally:
        database.put_connection(connection)

    pool = Pool(name)
    pool.init(update=['res', 'ir'], lang=['en'])
    with Transaction().start(name, 0) as transaction:
        Module = pool.get('ir.module')
        if translatable:
            Lang = pool.get('ir.lang')
            language, = Lang.search([('code', '=', 'en')])
            language.translatable = True
            language.save()
        Module.update_list()
        Module.activate(Module.search([('name', 'in', modules)]))
        transaction.commit()
        ActivateUpgrade = pool.get('ir.module.activate_upgrade', type='wizard')
        session_id, _, _ = ActivateUpgrade.create()
        transaction.commit()
        ActivateUpgrade(session_id).transition_upgrade()
        ActivateUpgrade.delete(session_id)
        transaction.commit()
        return {m.name for m in Module.search([('state', '=', 'activated')])}


def company_context(pool, db):
    "The context of the cron user with the (only) company"
    from trytond.transaction import Transaction
    with Transaction().start(db, 0):
        Company = pool.get('company.company')
        company, = Company.search([])
        return {'company': company.id, 'language': 'en'}


def worker_pool(spec):
    """Configure trytond and load the pool of spec['db'] (as the cron
    process does before its first call): the pool and the context of the
    company"""
    from trytond.pool import Pool
    init_trytond(spec)
    pool = Pool(spec['db'])
    pool.init()
    return pool, company_context(pool, spec['db'])


def call_in_transaction(db, context, method, *args):
    """Like ir.cron: method(*args) in a transaction with context, then
    commit; return error_details of what it raised, or None"""
    from trytond.transaction import Transaction
    try:
        with Transaction().start(db, 0, context=context) as transaction:
            method(*args)
            transaction.commit()
    except Exception as exception:
        return error_details(exception)
    return None


class QueryCounter:
    "Count the SQL statements sent by trytond (cheap: no logging)"

    def __init__(self):
        self.count = 0

    def install(self, backend_name):
        counter = self
        if backend_name == 'sqlite':
            import sqlite3

            from trytond.backend.sqlite.database import SQLiteCursor

            def execute(self, *args, **kwargs):
                counter.count += 1
                return sqlite3.Cursor.execute(self, *args, **kwargs)
            SQLiteCursor.execute = execute
        else:
            from trytond.backend.postgresql.database import LoggingCursor
            original = LoggingCursor.execute

            def execute(self, *args, **kwargs):
                counter.count += 1
                return original(self, *args, **kwargs)
            LoggingCursor.execute = execute


class Timers:
    """Wall time spent in some functions, measured by wrapping them in
    this process only (a benchmark may; the tests must not)"""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self._depth = defaultdict(int)

    def _timed(self, key, function):
        timers = self

        def wrapper(*args, **kwargs):
            if timers._depth[key]:
                # Nested call: counted by the outer one
                return function(*args, **kwargs)
            timers._depth[key] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timers.seconds[key] += time.perf_counter() - start
                timers.calls[key] += 1
                timers._depth[key] -= 1
        return wrapper

    def wrap_classmethod(self, cls, name, key):
        wrapped = self._timed(key, getattr(cls, name))
        setattr(cls, name, classmethod(
                lambda cls_, *args, **kwargs: wrapped(*args, **kwargs)))

    def wrap_function(self, module, name, key):
        setattr(module, name, self._timed(key, getattr(module, name)))

    def wrap_method(self, cls, name, key):
        setattr(cls, name, self._timed(key, getattr(cls, name)))

    def snapshot(self):
        return {'seconds': dict(self.seconds), 'calls': dict(self.calls)}

    def reset(self):
        self.seconds.clear()
        self.calls.clear()


def worker_main(workers, step, spec_file, result_file):
    """Run workers[step] on the spec of spec_file, write its result (or
    the traceback as 'crash') to result_file"""
    with open(spec_file) as fp:
        spec = json.load(fp)
    try:
        result = workers[step](spec)
    except Exception as exception:
        result = {'crash': short_traceback(exception)}
        traceback.print_exc()
    with open(result_file, 'w') as fp:
        json.dump(result, fp, indent=1, default=str)
    return 0 if 'crash' not in result else 1


def run_script(main, workers):
    """The entry point of a benchmark script: a step of workers when
    called as ``script --worker step spec_file result_file``, else main()"""
    if len(sys.argv) == 5 and sys.argv[1] == '--worker':
        sys.exit(worker_main(workers, *sys.argv[2:]))
    sys.exit(main())


# ---------------------------------------------------------------------------
# Driver side


class Backend:
    "A database server (or SQLite directory) a benchmark runs on"

    def __init__(self, name, workdir, uri=None, prefix='bench'):
        self.name = name
        self.workdir = workdir
        self.prefix = f'{prefix}_{os.getpid()}'
        self.created = []
        if name == 'sqlite':
            self.path = os.path.join(workdir, 'sqlite')
            os.makedirs(self.path, exist_ok=True)
            self.uri = 'sqlite://'
        else:
            self.path = None
            parsed = urllib.parse.urlparse(uri)
            self.uri = urllib.parse.urlunparse(parsed._replace(path='/'))
        self.config = os.path.join(workdir, f'trytond-{name}.conf')
        with open(self.config, 'w') as fp:
            fp.write("[database]\n")
            fp.write(f"uri = {self.uri}\n")
            if self.path:
                fp.write(f"path = {self.path}\n")
            fp.write("language = en\n")

    def db_name(self, *parts):
        return '_'.join([self.prefix] + [str(p) for p in parts])

    def _admin_connection(self):
        import psycopg
        parsed = urllib.parse.urlparse(self.uri)
        for admin_db in ['postgres', 'template1']:
            try:
                return psycopg.connect(
                    urllib.parse.urlunparse(
                        parsed._replace(path='/' + admin_db)),
                    autocommit=True)
            except psycopg.OperationalError:
                if admin_db == 'template1':
                    raise

    def copy(self, template, name):
        "Create database name as a copy of database template"
        self.created.append(name)
        if self.name == 'sqlite':
            import sqlite3
            # The backup API also copies what is still in the WAL file
            source = sqlite3.connect(
                os.path.join(self.path, template + '.sqlite'))
            target = sqlite3.connect(
                os.path.join(self.path, name + '.sqlite'))
            with target:
                source.backup(target)
            source.close()
            target.close()
        else:
            from psycopg import sql
            with self._admin_connection() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                        sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)))

    def drop(self, name):
        "Drop database name to save space"
        if self.name == 'sqlite':
            for suffix in ['.sqlite', '.sqlite-wal', '.sqlite-shm']:
                try:
                    os.remove(os.path.join(self.path, name + suffix))
                except FileNotFoundError:
                    pass
        else:
            from psycopg import sql
            with self._admin_connection() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                        sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def drop_all(self):
        for name in reversed(list(self.created)):
            try:
                self.drop(name)
            except Exception as exception:
                log(f"could not drop {name}: {exception}")

    def version(self):
        if self.name == 'sqlite':
            import sqlite3
            return f"SQLite {sqlite3.sqlite_version}"
        with self._admin_connection() as conn:
            version, = conn.execute("SHOW server_version").fetchone()
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in [
                    'shared_buffers', 'fsync', 'synchronous_commit']}
        import psycopg
        return (f"PostgreSQL {version.split()[0]} "
            f"(psycopg {psycopg.__version__}, "
            f"shared_buffers={settings['shared_buffers']}, "
            f"fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']})")


def worker_env(backend):
    "The environment of a worker: trytond configured by the backend's file"
    env = dict(os.environ)
    for key in list(env):
        if (key.startswith('TRYTOND_DATABASE')
                or key in {'TRYTOND_CONFIG', 'DB_NAME', 'DB_CACHE'}):
            del env[key]
    env['TRYTOND_CONFIG'] = backend.config
    env['PYTHONHASHSEED'] = '0'
    return env


def run_worker(script, backend, step, spec, timeout):
    """Run one step of script in its own process (``script --worker step
    spec_file result_file``)

    Return its result, with 'seconds_wall', 'timeout' or 'crash'."""
    tag = f"{step}-{spec['db']}"
    spec_file = os.path.join(backend.workdir, tag + '.spec.json')
    result_file = os.path.join(backend.workdir, tag + '.result.json')
    log_file = os.path.join(backend.workdir, tag + '.log')
    spec = dict(spec, config=backend.config)
    with open(spec_file, 'w') as fp:
        json.dump(spec, fp)
    start = time.monotonic()
    with open(log_file, 'w') as log_fp:
        process = subprocess.Popen(
            [sys.executable, script, '--worker', step, spec_file,
                result_file],
            stdout=log_fp, stderr=subprocess.STDOUT,
            env=worker_env(backend), cwd=backend.workdir)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return {'timeout': timeout, 'log': log_file}
    try:
        with open(result_file) as fp:
            result = json.load(fp)
    except (OSError, ValueError):
        with open(log_file) as fp:
            result = {'crash': fp.read()[-6000:]}
    result['seconds_wall'] = time.monotonic() - start
    result['log'] = log_file
    if 'crash' in result:
        log(f"{tag} failed:\n{result['crash']}")
    return result


def machine_busy_seconds():
    "CPU seconds all the processors spent busy since boot"
    try:
        with open('/proc/stat') as fp:
            fields = fp.readline().split()
    except OSError:
        return 0
    # user nice system idle iowait irq softirq steal
    values = [int(v) for v in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf('SC_CLK_TCK')


def run_measured(script, backend, step, spec, timeout):
    """run_worker with the load of the machine around it: the 1-minute
    load average before and after, the CPU seconds of the whole machine
    and of the worker (and its children) during the run"""
    load = os.getloadavg()[0]
    busy = machine_busy_seconds()
    children = cpu_seconds(resource.RUSAGE_CHILDREN)
    wall = time.monotonic()
    result = run_worker(script, backend, step, spec, timeout)
    result['load_before'] = load
    result['load_after'] = os.getloadavg()[0]
    result['window_seconds'] = time.monotonic() - wall
    result['machine_cpu_seconds'] = machine_busy_seconds() - busy
    result['worker_cpu_seconds'] = (
        cpu_seconds(resource.RUSAGE_CHILDREN) - children)
    return result


def other_cores(run):
    "The cores used by other processes while the worker ran, on average"
    other = run['machine_cpu_seconds'] - run['worker_cpu_seconds']
    return max(other, 0) / run['window_seconds']


# What identifies the code measured (reports, translations and tests
# change often and do not run in the nightly generation)
CODE_SUFFIXES = ('.py', '.xml', '.cfg')
CODE_PATHSPECS = [
    'modules/*.py', 'modules/*.xml', 'modules/*.cfg',
    ':(exclude)modules/*/tests/*']


def code_version():
    """The commit measured, and whether the code of modules/ (tests
    excluded) differs from it"""
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
            capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ['git', 'status', '--porcelain', '--'] + CODE_PATHSPECS,
            cwd=ROOT,
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not dirty:
        return commit
    return (commit + " with uncommitted changes in the code of modules/ "
        f"(fingerprint {modules_fingerprint()[:12]})")


def modules_fingerprint():
    """A hash of the code that runs: the Python, XML and cfg files of
    modules/ without their tests (not reports, translations, icons)"""
    import hashlib
    digest = hashlib.sha256()
    base = os.path.join(ROOT, 'modules')
    for directory, dirnames, filenames in sorted(os.walk(base)):
        dirnames[:] = sorted(
            d for d in dirnames if d not in {'tests', '__pycache__'})
        for filename in sorted(filenames):
            if not filename.endswith(CODE_SUFFIXES):
                continue
            path = os.path.join(directory, filename)
            digest.update(os.path.relpath(path, base).encode())
            try:
                with open(path, 'rb') as fp:
                    digest.update(fp.read())
            except OSError:
                pass
    return digest.hexdigest()


def machine_description(distributions):
    """The code measured, the processor, memory, system, Python and the
    versions of distributions"""
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as fp:
            for line in fp:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    memory = None
    try:
        with open('/proc/meminfo') as fp:
            for line in fp:
                if line.startswith('MemTotal:'):
                    memory = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = '?'
    return {
        'code': code_version(),
        'cpu': model,
        'cores': os.cpu_count(),
        'memory_gib': memory,
        'os': platform.platform(),
        'python': platform.python_version(),
        'versions': versions,
        }


# ---------------------------------------------------------------------------
# Report


def median(values):
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def representative(runs, key=lambda r: r['first']['seconds']):
    "The first failing run, else the run of median key"
    for run in runs:
        if not run.get('ok'):
            return run
    ordered = sorted(runs, key=key)
    return ordered[(len(ordered) - 1) // 2] if ordered else {}


def fmt(value, digits=2):
    return '' if value is None else f"{value:.{digits}f}"


def command_line(script):
    """The command line that ran the benchmark script, as it could be
    typed (with the PostgreSQL server it used)"""
    import shlex
    words = ['python', os.path.relpath(script, ROOT)] + sys.argv[1:]
    uri = os.environ.get('TRYTOND_DATABASE_URI')
    prefix = (f'TRYTOND_DATABASE_URI={shlex.quote(uri)} '
        if uri and uri.startswith('postgresql') else '')
    return prefix + ' '.join(shlex.quote(w) for w in words)


def split_sections(text):
    "Split a Markdown text at its '## ' headings: [(heading, text)]"
    sections = []
    heading, current = None, []
    for line in text.splitlines(keepends=True):
        if line.startswith('## '):
            sections.append((heading, ''.join(current)))
            heading, current = line.rstrip('\n'), []
        current.append(line)
    sections.append((heading, ''.join(current)))
    return sections


def read_section(path, heading):
    "The text of the section heading (its line included) in path, or None"
    try:
        with open(path) as fp:
            text = fp.read()
    except FileNotFoundError:
        return None
    for name, section in split_sections(text):
        if name == heading:
            return section
    return None


def update_section(path, section, before=(), title="# Benchmark"):
    """Replace the section of path with the heading of section (its first
    line), or insert it before the first section whose heading starts with
    one of before (else at the end); a missing file starts with title"""
    try:
        with open(path) as fp:
            text = fp.read()
    except FileNotFoundError:
        text = title + "\n\n"
    section = section.rstrip('\n') + '\n\n'
    sections = split_sections(text)
    heading = section.splitlines()[0]
    names = [name or '' for name, _ in sections]
    for index, name in enumerate(names):
        if name == heading:
            sections[index] = (heading, section)
            break
    else:
        for index, name in enumerate(names):
            if before and name.startswith(tuple(before)):
                sections.insert(index, (heading, section))
                break
        else:
            last_name, last = sections[-1]
            if not last.endswith('\n\n'):
                sections[-1] = (last_name, last.rstrip('\n') + '\n\n')
            sections.append((heading, section))
    text = ''.join(text for _, text in sections).rstrip('\n') + '\n'
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as fp:
        fp.write(text)
