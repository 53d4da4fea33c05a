# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The plumbing of the benchmarks (not a test)

* child side (a cold process per measurement, trytond configured by a
  file): configuration, a database with modules activated, the pool and
  company context, memory, CPU, query counter, timers of methods;
* driver side: the backends (SQLite directory or PostgreSQL server: a
  template database per data set, a fresh copy per measurement), the
  child processes with the load of the machine around them, the peak
  RSS of process trees (PeakRSS), the SMTP sink, the machine and the
  code measured;
* report: medians, Markdown tables and the ``## `` sections of a doc
  file (replace or insert one, keep the rest).

A scenario module names its child steps as plain functions ``f(spec) ->
dict`` and runs them with ``run_worker(f, backend, spec, timeout)``: the
child is ``python -m tests.benchmark --worker module:f spec result``.
"""
import argparse
import contextlib
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
MAIL_FROM = "rechnung@turnus-bench.example"
BACKEND_LABELS = {'sqlite': 'SQLite', 'postgresql': 'PostgreSQL'}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
        flush=True)


# ---------------------------------------------------------------------------
# Child side


def proc_status_kib(key, pid='self'):
    "A field of /proc/<pid>/status in KiB (VmRSS, VmHWM), None if gone"
    try:
        with open(f'/proc/{pid}/status') as fp:
            for line in fp:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return 0


def rss_kib():
    "The resident size of this process now"
    return proc_status_kib('VmRSS') or 0


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
    # Settings of this process only, e.g. the SMTP server of the mail sink
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


def worker_pool(spec):
    """Configure trytond and load the pool of spec['db'] (as the cron
    process does before its first call): the pool and the context of the
    cron user with the (only) company"""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    init_trytond(spec)
    pool = Pool(spec['db'])
    pool.init()
    with Transaction().start(spec['db'], 0):
        company, = pool.get('company.company').search([])
        return pool, {'company': company.id, 'language': 'en'}


def create_parties(pool, first, count, name="Customer {:05d}", email=None,
        invoice=True):
    """Create count customers numbered from first (1-based), each with an
    address in Berlin (an invoice address if invoice) and an e-mail
    address if email (a format of the number)"""
    values = []
    for i, number in enumerate(range(first, first + count)):
        address = {'street': f"Hauptstraße {i + 1}", 'postal_code': '10115',
            'city': 'Berlin'}
        if invoice:
            address['invoice'] = True
        value = {'name': name.format(number),
            'addresses': [('create', [address])]}
        if email:
            value['contact_mechanisms'] = [('create', [{
                            'type': 'email', 'value': email.format(number)}])]
        values.append(value)
    return pool.get('party.party').create(values)


def contract_values(company, party, start_date, lines, **values):
    "The values to create a contract of party with lines"
    return dict({
            'company': company.id,
            'party': party.id,
            'invoice_address': party.addresses[0].id,
            'currency': company.currency.id,
            'start_date': start_date,
            'lines': [('create', lines)],
            }, **values)


def run_wizard(pool, name, ids, data, button='apply',
        model='sale.subscription'):
    "Run the wizard name on the selection ids of model as a user would"
    from trytond.transaction import Transaction
    Wizard = pool.get(name, type='wizard')
    with Transaction().set_context(
            active_model=model, active_id=ids[0], active_ids=ids):
        session_id, _, _ = Wizard.create()
        Wizard.execute(session_id, data, button)
        Wizard.delete(session_id)


def start_contracts(pool, slices):
    "Quote, then run the contracts, a transaction per slice of ids"
    from trytond.transaction import Transaction
    Subscription = pool.get('sale.subscription')
    for method in [Subscription.quote, Subscription.run]:
        for ids in slices:
            method(Subscription.browse(ids))
            Transaction().commit()


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


def as_request(db, context, function):
    """function() in a transaction, committed, started again with the
    locks it asks for (TransactionError) as trytond's dispatcher does"""
    from trytond.transaction import Transaction, TransactionError
    extras = {}
    while True:
        with Transaction().start(
                db, 0, context=context, **extras) as transaction:
            try:
                with Transaction().set_context(_skip_warnings=True):
                    function()
            except TransactionError as exception:
                transaction.rollback()
                exception.fix(extras)
                continue
            transaction.commit()
            return


def run_queued_tasks(db):
    """Run the tasks the last transaction queued, as trytond does after the
    commit without workers: their number"""
    from trytond.transaction import Transaction
    from trytond.worker import run_task
    tasks = list(Transaction().tasks)
    Transaction().tasks.clear()
    for task_id in tasks:
        run_task(db, task_id)
    return len(tasks)


class QueryCounter:
    "Count the SQL statements sent by trytond (cheap: no logging)"

    def __init__(self):
        from trytond import backend
        self.count = 0
        counter = self
        if backend.name == 'sqlite':
            import sqlite3

            from trytond.backend.sqlite.database import SQLiteCursor
            original = sqlite3.Cursor.execute
            cls = SQLiteCursor
        else:
            from trytond.backend.postgresql.database import LoggingCursor
            cls = LoggingCursor
            original = LoggingCursor.execute

        log = os.environ.get('BENCH_SQL_LOG')

        def execute(self, *args, **kwargs):
            counter.count += 1
            if log:
                with open(log, 'a') as fp:
                    sql = str(args[0])
                    fp.write(sql[:300].replace('\n', ' ') + '\n')
                    trace = os.environ.get('BENCH_SQL_TRACE')
                    if trace and trace in sql:
                        import traceback
                        fp.write(''.join(traceback.format_stack(limit=14)))
            return original(self, *args, **kwargs)
        cls.execute = execute


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

    def wrap(self, owner, name, key, kind='classmethod'):
        """Time owner.name under key: kind 'classmethod' (of a pool
        class), 'method' or 'function' (of a module)"""
        timed = self._timed(key, getattr(owner, name))
        if kind == 'classmethod':
            def call(cls_, *args, **kwargs):
                return timed(*args, **kwargs)
            setattr(owner, name, classmethod(call))
        else:
            setattr(owner, name, timed)

    def wrap_delivery(self, pool):
        """The timers of the delivery of invoices: render (and its
        soffice), compose, smtp; return the module invoice_pdf"""
        import trytond.sendmail as sendmail
        InvoiceReport = pool.get('account.invoice', type='report')
        RunLine = pool.get('account.invoice.run.line')
        invoice_pdf = sys.modules[InvoiceReport.render_pdf_cache.__module__]
        self.wrap(InvoiceReport, 'render_pdf_cache', 'render')
        if hasattr(invoice_pdf, '_run_soffice'):
            self.wrap(invoice_pdf, '_run_soffice', 'soffice', 'function')
        self.wrap(RunLine, 'deliver_email', 'compose')
        self.wrap(sendmail.SMTPDataManager, 'tpc_vote', 'smtp', 'method')
        self.wrap(sendmail.SMTPDataManager, 'tpc_finish', 'smtp', 'method')
        return invoice_pdf

    def snapshot(self):
        return {'seconds': dict(self.seconds), 'calls': dict(self.calls)}

    def reset(self):
        self.seconds.clear()
        self.calls.clear()


@contextlib.contextmanager
def measured(result, counter=None, timers=None):
    """Fill result with the wall and CPU seconds (own and of the children:
    soffice), the queries and timers of the with block"""
    if timers:
        timers.reset()
    queries = counter.count if counter else 0
    cpu = cpu_seconds()
    children = cpu_seconds(resource.RUSAGE_CHILDREN)
    result['started_at'] = time.time()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result['seconds'] = time.perf_counter() - start
        result['ended_at'] = time.time()
        result['cpu_seconds'] = cpu_seconds() - cpu
        result['children_cpu_seconds'] = (
            cpu_seconds(resource.RUSAGE_CHILDREN) - children)
        if counter:
            result['queries'] = counter.count - queries
        if timers:
            result['timers'] = timers.snapshot()


def worker_main(step, spec_file, result_file):
    """Run the function step ('module:name') on the spec of spec_file, write
    its result (or the traceback as 'crash') to result_file"""
    with open(spec_file) as fp:
        spec = json.load(fp)
    module, name = step.split(':')
    try:
        result = getattr(importlib.import_module(module), name)(spec)
    except Exception as exception:
        result = {'crash': short_traceback(exception)}
        traceback.print_exc()
    with open(result_file, 'w') as fp:
        json.dump(result, fp, indent=1, default=str)
    return 0 if 'crash' not in result else 1


# ---------------------------------------------------------------------------
# Driver side


class Backend:
    "A database server (or SQLite directory) a benchmark runs on"

    def __init__(self, name, workdir, uri=None, prefix='bench'):
        self.name = name
        self.label = BACKEND_LABELS[name]
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
        self.config = self.write_config(f'trytond-{name}.conf')

    def write_config(self, filename, extra=''):
        "A trytond configuration file of this backend, with extra lines"
        path = os.path.join(self.workdir, filename)
        with open(path, 'w') as fp:
            fp.write(f"[database]\nuri = {self.uri}\n")
            if self.path:
                fp.write(f"path = {self.path}\n")
            fp.write("language = en\n" + extra)
        return path

    def db_name(self, *parts):
        return '_'.join([self.prefix] + [str(p) for p in parts])

    def _admin(self, *statements):
        import psycopg
        from psycopg import sql
        parsed = urllib.parse.urlparse(self.uri)
        for admin_db in ['postgres', 'template1']:
            try:
                conn = psycopg.connect(urllib.parse.urlunparse(
                        parsed._replace(path='/' + admin_db)),
                    autocommit=True)
                break
            except psycopg.OperationalError:
                if admin_db == 'template1':
                    raise
        with conn:
            return [conn.execute(sql.SQL(s).format(
                        *map(sql.Identifier, args))).fetchone()
                if s.startswith('SHOW') else conn.execute(sql.SQL(s).format(
                        *map(sql.Identifier, args)))
                for s, *args in statements]

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
            self._admin(("DROP DATABASE IF EXISTS {}", name),
                ("CREATE DATABASE {} TEMPLATE {}", name, template))

    def drop(self, name):
        "Drop database name to save space"
        if self.name == 'sqlite':
            for suffix in ['.sqlite', '.sqlite-wal', '.sqlite-shm']:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.path, name + suffix))
        else:
            self._admin(("DROP DATABASE IF EXISTS {}", name))
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
        import psycopg
        names = ['server_version', 'shared_buffers', 'fsync',
            'synchronous_commit']
        values = dict(zip(names, (row[0] for row in self._admin(
                        *((f"SHOW {name}",) for name in names)))))
        return (f"PostgreSQL {values.pop('server_version').split()[0]} "
            f"(psycopg {psycopg.__version__}, "
            + ", ".join(f"{k}={v}" for k, v in values.items()) + ")")

    def build(self, function, spec, timeout, copy_of=None):
        """Run the data set-up function in a child on database spec['db']
        (a copy of copy_of if given); exit if it fails"""
        if copy_of:
            self.copy(copy_of, spec['db'])
        else:
            self.created.append(spec['db'])
        result = run_worker(function, self, spec, timeout)
        if 'crash' in result or 'timeout' in result:
            sys.exit(f"{self.name}: could not build {spec['db']} with "
                f"{function.__name__}, see {result['log']}")
        log(f"{self.name}: {spec['db']} built in {result['seconds']:.0f} s")
        return result


def worker_env(backend):
    "The environment of a child: trytond configured by the backend's file"
    env = dict(os.environ)
    for key in list(env):
        if (key.startswith('TRYTOND_DATABASE')
                or key in {'TRYTOND_CONFIG', 'DB_NAME', 'DB_CACHE'}):
            del env[key]
    env['TRYTOND_CONFIG'] = backend.config
    env['PYTHONHASHSEED'] = '0'
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [ROOT, env.get('PYTHONPATH')]))
    return env


def step_name(function):
    "'module:name' of a step function (also of a module run as __main__)"
    module = sys.modules[function.__module__]
    spec = getattr(module, '__spec__', None)
    return f"{spec.name if spec else module.__name__}:{function.__name__}"


def run_worker(function, backend, spec, timeout):
    """Run function(spec) in a cold child process; return its result,
    with 'seconds_wall', 'timeout' or 'crash'"""
    tag = f"{function.__name__}-{spec['db']}"
    spec_file = os.path.join(backend.workdir, tag + '.spec.json')
    result_file = os.path.join(backend.workdir, tag + '.result.json')
    log_file = os.path.join(backend.workdir, tag + '.log')
    with open(spec_file, 'w') as fp:
        # The backend's configuration, unless spec has its own
        json.dump({'config': backend.config, **spec}, fp)
    start = time.monotonic()
    with open(log_file, 'w') as log_fp:
        process = subprocess.Popen(
            [sys.executable, '-m', 'tests.benchmark', '--worker',
                step_name(function), spec_file, result_file],
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


@contextlib.contextmanager
def machine_load(result):
    """Fill result with the load of the machine around the with block: the
    1-minute load average before and after, the CPU seconds of the whole
    machine and of the waited-for children"""
    load = os.getloadavg()[0]
    busy = machine_busy_seconds()
    children = cpu_seconds(resource.RUSAGE_CHILDREN)
    wall = time.monotonic()
    try:
        yield result
    finally:
        result['load_before'] = load
        result['load_after'] = os.getloadavg()[0]
        result['window_seconds'] = time.monotonic() - wall
        result['machine_cpu_seconds'] = machine_busy_seconds() - busy
        result['worker_cpu_seconds'] = (
            cpu_seconds(resource.RUSAGE_CHILDREN) - children)


def run_measured(function, backend, spec, timeout):
    "run_worker with the load of the machine around it"
    load = {}
    with machine_load(load):
        result = run_worker(function, backend, spec, timeout)
    result.update(load)
    return result


class PeakRSS:
    """Poll the peak resident size (VmHWM) of processes and of every
    process of their sessions (the workers' pool processes, soffice)"""

    def __init__(self, interval=0.2):
        self.interval = interval
        self.roots = {}
        self.peaks = {}
        self.cpu = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, pid, label):
        self.roots[pid] = label

    def _scan(self):
        processes = {}
        for name in os.listdir('/proc'):
            with contextlib.suppress(OSError, ValueError):
                with open(f'/proc/{int(name)}/stat') as fp:
                    stat = fp.read()
                fields = stat[stat.rindex(')') + 2:].split()
                processes[int(name)] = (
                    stat[stat.index('(') + 1:stat.rindex(')')],
                    int(fields[1]), int(fields[3]), fields[11:13])
        for pid, (comm, ppid, session, ticks) in processes.items():
            # A root, in a root's session or below one (soffice may start
            # a session of its own)
            ancestor, label = pid, None
            for _ in range(10):
                label = self.roots.get(ancestor) or self.roots.get(
                    processes.get(ancestor, ('', 0, 0))[2])
                if label or ancestor not in processes:
                    break
                ancestor = processes[ancestor][1]
            peak = label and proc_status_kib('VmHWM', pid)
            if peak:
                key = (label, pid, comm)
                self.peaks[key] = max(self.peaks.get(key, 0), peak)
                if pid not in self.roots:
                    # Not waited for by the driver: utime + stime
                    self.cpu[pid] = sum(map(int, ticks)) / os.sysconf(
                        'SC_CLK_TCK')

    def _run(self):
        while not self._stop.wait(self.interval):
            self._scan()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *args):
        self._stop.set()
        self._thread.join()

    def by_label(self):
        "{label: [(comm, peak KiB)]}, largest first"
        result = {}
        for (label, _, comm), peak in sorted(
                self.peaks.items(), key=lambda item: -item[1]):
            result.setdefault(label, []).append((comm, peak))
        return result


def other_cores(run):
    "The cores used by other processes while the child ran, on average"
    other = run['machine_cpu_seconds'] - run['worker_cpu_seconds']
    return max(other, 0) / run['window_seconds']


def repeat_runs(function, backend, spec, source, repeat, timeout,
        check=None, label=''):
    """function in a child on a fresh copy of database source, repeat
    times (stop at the first failure); check(result) may add problems
    (the driver's checks, e.g. of the mails), 'ok' is set after.
    Return the results"""
    runs = []
    for index in range(repeat):
        run_spec = dict(spec, db=f"{source}_r{index}")
        backend.copy(source, run_spec['db'])
        result = run_measured(function, backend, run_spec, timeout)
        backend.drop(run_spec['db'])
        if 'crash' in result or 'timeout' in result:
            result.update(ok=False, problems=['no result'])
        else:
            result.setdefault('problems', [])
            if check:
                check(result)
            result['ok'] = not result['problems']
        runs.append(result)
        log(f"{backend.name} {label} run {index + 1}: ok={result['ok']} "
            + '; '.join(result['problems'])
            + (f" ({result['log']})" if not result['ok'] else ''))
        if not result['ok']:
            # A failure repeats itself: do not wait for it
            break
    return runs


class MailSink:
    """An SMTP server on 127.0.0.1 (aiosmtpd, in a thread of the driver, so
    it takes no time from the measured process) that keeps what it gets"""

    def __init__(self):
        import socket
        with socket.socket() as free:
            free.bind(('127.0.0.1', 0))
            self.port = free.getsockname()[1]
        self.messages = []
        self.controller = None
        self.settings = [['email', 'uri', f'smtp://127.0.0.1:{self.port}'],
            ['email', 'from', MAIL_FROM]]

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (time.time(), list(envelope.rcpt_tos), envelope.content))
        return '250 OK'

    def __enter__(self):
        from aiosmtpd.controller import Controller
        self.controller = Controller(self, hostname='127.0.0.1',
            port=self.port)
        self.controller.start()
        log(f"SMTP sink on 127.0.0.1:{self.port}")
        return self

    def __exit__(self, *args):
        self.controller.stop()

    def take(self):
        "Return the messages received so far and forget them"
        messages, self.messages = self.messages, []
        return messages


def mails_in(messages, step, margin=0):
    "The messages received while step (started_at, ended_at) ran"
    return [m for m in messages
        if step['started_at'] <= m[0] <= step['ended_at'] + margin]


def expected_mails(invoices):
    """What the mail of each numbered invoice must be: to its party, with
    its stored PDF"""
    import hashlib
    expected = {}
    for invoice in invoices:
        cache = invoice.invoice_report_cache
        if invoice.number:
            expected[invoice.number] = {
                'to': invoice.party.email,
                'sha256': (hashlib.sha256(cache).hexdigest()
                    if cache and invoice.invoice_report_format == 'pdf'
                    else None),
                'sent': bool(getattr(invoice, 'sent_date', None)),
                }
    return expected


def check_mails(messages, expected):
    """Check mails against the invoices they should deliver: one per
    invoice, to its party, with the invoice's stored PDF attached (no PDF
    check when expected gives no sha256)"""
    import hashlib
    import io
    import re
    from email import message_from_bytes, policy

    from pypdf import PdfReader

    problems = []
    seen = defaultdict(int)
    pages = defaultdict(int)
    sizes = []
    for _, rcpt_tos, content in messages:
        message = message_from_bytes(content, policy=policy.default)
        match = re.match(r'Invoice (\S+)', message['Subject'] or '')
        number = match.group(1) if match else None
        if number not in expected:
            problems.append(f"mail for no invoice: {message['Subject']!r}")
            continue
        seen[number] += 1
        want = expected[number]
        if rcpt_tos != [want['to']]:
            problems.append(f"invoice {number} mailed to {rcpt_tos}, "
                f"expected {want['to']}")
        pdfs = [a for a in message.iter_attachments()
            if (a.get_filename() or '').endswith('.pdf')]
        if len(pdfs) != 1 or len(list(message.iter_attachments())) != 1:
            problems.append(f"invoice {number}: {len(pdfs)} PDF attached")
            continue
        data = pdfs[0].get_content()
        sizes.append(len(data))
        if not data.startswith(b'%PDF'):
            problems.append(f"invoice {number}: attachment is no PDF")
            continue
        if hashlib.sha256(data).hexdigest() != want['sha256']:
            problems.append(
                f"invoice {number}: PDF differs from the stored report")
        try:
            pages[len(PdfReader(io.BytesIO(data)).pages)] += 1
        except Exception as exception:
            problems.append(f"invoice {number}: unreadable PDF "
                f"({exception})")
    twice = [k for k, v in seen.items() if v > 1]
    missing = len(set(expected) - set(seen))
    if twice:
        problems.append(f"{len(twice)} invoices mailed more than once")
    if missing:
        problems.append(f"{missing} invoices not mailed")
    return {
        'count': len(messages),
        'invoices_mailed': len(seen),
        'pages': dict(pages),
        'pdf_kib': sum(sizes) / len(sizes) / 1024 if sizes else None,
        'problems': problems[:20],
        }


def soffice_version():
    try:
        output = subprocess.run(['soffice', '--version'],
            capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return ' '.join(output.split()[:2]) or "soffice (unknown version)"


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
        commit, dirty = (subprocess.run(
                ['git'] + args, cwd=ROOT, capture_output=True, text=True,
                check=True).stdout.strip() for args in [
                ['rev-parse', '--short', 'HEAD'],
                ['status', '--porcelain', '--'] + CODE_PATHSPECS])
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
            with contextlib.suppress(OSError), open(path, 'rb') as fp:
                digest.update(fp.read())
    return digest.hexdigest()


def machine_description(distributions, backends=()):
    """The code measured, the processor, memory, system, Python, the
    versions of distributions and of the backends"""
    model = platform.processor() or platform.machine()
    memory = None
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as fp:
        for line in fp:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    with contextlib.suppress(OSError), open('/proc/meminfo') as fp:
        for line in fp:
            if line.startswith('MemTotal:'):
                memory = int(line.split()[1]) / 1024 / 1024
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = '?'
    return {
        'code': code_version(),
        'fingerprint': modules_fingerprint(),
        'cpu': model,
        'cores': os.cpu_count(),
        'memory_gib': memory,
        'os': platform.platform(),
        'python': platform.python_version(),
        'versions': versions,
        'backends': {b.name: b.version() for b in backends},
        }


def changed_note(machine):
    "A note if modules/ changed since machine_description, else None"
    if modules_fingerprint() == machine['fingerprint']:
        return None
    log("modules/ changed during the run")
    return (f"**modules/ changed during the run** (commit {machine['code']} "
        f"at the start, {code_version()} at the end): the runs may have "
        "measured different versions.")


# ---------------------------------------------------------------------------
# Options and session


def arguments(description, output, backend='both', backends=(
            'sqlite', 'postgresql', 'both'), timeout=600, repeat=3):
    "A parser with the options every scenario has"
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--backend', default=backend, choices=backends,
        help="PostgreSQL needs TRYTOND_DATABASE_URI; 'both' skips it when "
        f"that does not point to a PostgreSQL server (default: {backend})")
    parser.add_argument('--output', default=output,
        help=f"Markdown report (default: {output})")
    parser.add_argument('--timeout', type=float, default=timeout,
        help=f"seconds after which a child is killed (default: {timeout})")
    parser.add_argument('--repeat', type=int, default=repeat,
        help="measurements of each case, each on a fresh copy of the "
        f"database; the median is reported (default: {repeat})")
    parser.add_argument('--keep', action='store_true',
        help="keep the temporary directory (logs) and databases")
    parser.add_argument('--json', help="also write the raw results there")
    return parser


class Session:
    """The run of a scenario: options, work directory, backends, start
    time, notes; on exit the databases and directory are removed"""

    def __init__(self, options, prefix='bench', uri=None):
        self.options = options
        self.notes = []
        self.started = dt.datetime.now()
        self.start = time.monotonic()
        self.command = command_line()
        if not os.path.isabs(options.output):
            options.output = os.path.join(ROOT, options.output)
        uri = os.environ.get('TRYTOND_DATABASE_URI', '')
        names = (['sqlite', 'postgresql'] if options.backend == 'both'
            else [options.backend])
        if 'postgresql' in names and not uri.startswith('postgresql'):
            if options.backend != 'both':
                sys.exit("TRYTOND_DATABASE_URI must point to a PostgreSQL "
                    "server, e.g. postgresql://postgres@127.0.0.1:5432/")
            names.remove('postgresql')
            self.notes.append("PostgreSQL was not measured: "
                "TRYTOND_DATABASE_URI did not point to a PostgreSQL server.")
        self.workdir = tempfile.mkdtemp(prefix=f'turnus-{prefix}-')
        log(f"work directory {self.workdir}")
        self.backends = [Backend(name, self.workdir, uri, prefix)
            for name in names]

    def __enter__(self):
        return self

    def __exit__(self, *args):
        if self.options.keep:
            log(f"kept {self.workdir}")
            return
        for backend in self.backends:
            backend.drop_all()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def total(self):
        return time.monotonic() - self.start

    def write_json(self, data):
        if self.options.json:
            with open(self.options.json, 'w') as fp:
                json.dump(data, fp, indent=1, default=str)


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


def mib(kib):
    return kib / 1024 if kib else None


def plural(count, word):
    return f"{count} {word}" + ('' if count == 1 else 's')


def spread(times, digits=2):
    "The range of the times of the runs"
    times = sorted(times)
    if len(times) > 1:
        return (f"{times[0]:.{digits}f}–{times[-1]:.{digits}f} "
            f"({len(times)} runs)")
    return f"({len(times)} run)"


def status(result, limit=None):
    problems = result.get('problems', [])[:limit]
    return "ok" if result.get('ok') else "**WRONG**: " + "; ".join(problems)


def table(header, rows, align=None):
    """A Markdown table: header cells, rows of cells; align a string of
    'l' and 'r' per column (default: first left, others right)"""
    align = align or 'l' + 'r' * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
        "| " + " | ".join('---' if a == 'l' else '---:' for a in align)
        + " |"]
    for row in rows:
        row = list(row) + [''] * (len(header) - len(row))
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return lines


def command_line():
    """The command line that ran the scenario, as it could be typed (with
    the PostgreSQL server it used)"""
    main = sys.modules['__main__']
    spec = getattr(main, '__spec__', None)
    words = (['python', '-m', spec.name] if spec
        else ['python', os.path.relpath(sys.argv[0], ROOT)]) + sys.argv[1:]
    uri = os.environ.get('TRYTOND_DATABASE_URI')
    prefix = (f'TRYTOND_DATABASE_URI={shlex.quote(uri)} '
        if uri and uri.startswith('postgresql') else '')
    return prefix + ' '.join(shlex.quote(w) for w in words)


def run_header(session):
    "The first lines of a section: when, how long, the command"
    return [f"Run on {session.started:%Y-%m-%d %H:%M} "
        f"(total {session.total() / 60:.1f} min) with:", "", "```",
        session.command, "```", ""]


def machine_line(machine, *extra):
    "The machine, code and versions in one paragraph"
    memory = (f", {machine['memory_gib']:.1f} GiB"
        if machine['memory_gib'] else '')
    return (f"Code: commit {machine['code']}. {machine['cpu']}, "
        f"{machine['cores']} cores{memory}; {machine['os']}; Python "
        f"{machine['python']}; " + ", ".join(
            f"{k} {v}" for k, v in machine['versions'].items())
        + "".join(f"; {e}" for e in extra)
        + "".join(f"; {v}" for v in machine['backends'].values()) + ".")


def load_lines(runs):
    "The load of the machine around the measured runs"
    runs = [r for r in runs if r.get('window_seconds')]
    if not runs:
        return []
    window = sum(r['window_seconds'] for r in runs)
    other = sum(other_cores(r) * r['window_seconds'] for r in runs)

    def span(key):
        values = [r[key] for r in runs]
        return f"{min(values):.2f} to {max(values):.2f}"
    return [f"Machine load: the 1-minute load average was "
        f"{span('load_before')} just before the measured runs and "
        f"{span('load_after')} just after them; while they ran "
        f"({window:.0f} s in all) the other processes of the machine used "
        f"{other / window:.2f} of the {os.cpu_count()} cores on average "
        "(the database server's share included on PostgreSQL); per run: "
        + ", ".join(f"{other_cores(r):.2f}" for r in runs) + ".", ""]


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


def update_section(path, section, before=(), title="# Benchmark"):
    """Replace the section of path with the heading of section (its first
    line), or insert it before the first section whose heading starts with
    one of before (else at the end); a missing file starts with title"""
    if isinstance(section, list):
        section = '\n'.join(section)
    try:
        with open(path) as fp:
            text = fp.read()
    except FileNotFoundError:
        text = title + "\n\n"
    section = section.rstrip('\n') + '\n\n'
    sections = split_sections(text)
    heading = section.splitlines()[0]
    names = [name or '' for name, _ in sections]
    if heading in names:
        sections[names.index(heading)] = (heading, section)
    else:
        for index, name in enumerate(names):
            if before and name.startswith(tuple(before)):
                sections.insert(index, (heading, section))
                break
        else:
            last_name, last = sections[-1]
            sections[-1] = (last_name, last.rstrip('\n') + '\n\n')
            sections.append((heading, section))
    text = ''.join(text for _, text in sections).rstrip('\n') + '\n'
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as fp:
        fp.write(text)
    log(f"{path}: section {heading[3:]!r} written")
