#!/usr/bin/env python3
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the nightly dispatch order generation (not a test).

It builds a database with dispatch_order activated alone (company and
``setup_dispatch_data`` of the module's test tools: the service
"Maintenance", the goods "Filter"), creates N running contracts in bulk
through the pool and times ``sale.subscription.generate_dispatch_orders(D)``
(slices of 100 contracts, each in its own transaction that locks them).

The contracts, contract i (0-based):

* dispatch mode ``key_date`` for even i, ``planning_date`` for odd i;
* dispatch recurrence monthly or quarterly (alternating every 2 contracts),
  set by the wizard ``sale.subscription.setup_dispatch`` on a selection,
  as a user would, lead time ``--lead-days`` (default 14);
* one contract line (Maintenance, 2 hours); one contract in four also has
  two dispatch lines (Filter, Maintenance), which the orders get instead;
* start date D + lead - ((i // 4) % 28): spread over 28 days so that the
  first night D creates exactly one order for every contract (start dates
  from D - 13 to D + 14 with the default lead; some on the 29th to 31st,
  so month-end anchoring is exercised);
* a yearly invoice recurrence (core requires one without recurring_invoice)
  and no consumption recurrence: no invoice is ever due.

The cases, each timed in a fresh process (pool loaded, as the cron
process) on a fresh copy of the filled database:

* ``first night``: ``generate_dispatch_orders(D)``; N orders expected;
* ``second run``: the same date again right after, in the same process;
  it must create nothing;
* ``server pause``: the first night comes only ``--pause-days`` (default
  92) after D: every key date missed is due, i.e. 4 orders per monthly and
  2 per quarterly key-date contract, and 1 per planning-date contract
  (the next one depends on the planning of the first): 2 N orders.

After each run the worker checks, outside the timed part, that every
contract got exactly the key dates computed here independently
(``relativedelta``, which clamps to month ends like the module's
anchoring), each order the expected number of lines, a number (all
distinct), its contract's party and a service address, and that no
contract has a dispatch error.

Usage::

    python tests/benchmark_dispatch.py [-n 2000] [--backend sqlite]
        [--repeat 3] [--profile] [--write] [--output doc/benchmark_dispatch.md]
    TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\
        python tests/benchmark_dispatch.py --backend postgresql --write

SQLite uses file databases in a temporary directory.  PostgreSQL is used
with ``TRYTOND_DATABASE_URI`` (the role must be allowed to create
databases; they are named ``bench_dispatch_*`` and dropped at the end).
``--profile`` adds one first-night run under cProfile (not part of the
figures) and prints its top functions.  ``--write`` replaces the section
of the backend ("## Results: SQLite" or "## Results: PostgreSQL") and,
with ``--profile``, "## Profile" in the output file, keeping the rest.

The plumbing (worker processes, database copies, query counter) follows
tests/benchmark_nightly.py but is kept in this file so that the two
benchmarks can change independently.
"""
import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.abspath(__file__)
DEFAULT_OUTPUT = os.path.join('doc', 'benchmark_dispatch.md')
DEFAULT_DATE = '2026-10-01'
# Records created or processed in one call while populating
SLICE = 500
MODES = ['key_date', 'planning_date']
PRESETS = ['monthly', 'quarterly']
PRESET_MONTHS = {'monthly': 1, 'quarterly': 3}
SPREAD_DAYS = 28
BACKEND_LABELS = {'sqlite': 'SQLite', 'postgresql': 'PostgreSQL'}
CASES = [
    ('night', "first night"),
    ('pause', "server pause"),
    ]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
        flush=True)


# ---------------------------------------------------------------------------
# The data: the same rules on the worker side (to create and check) and in
# the report


def contract_settings(i, date, lead_days):
    "Mode, preset, with dispatch lines and start date of contract i"
    mode = MODES[i % 2]
    preset = PRESETS[(i // 2) % 2]
    dispatch_lines = (i // 4) % 4 == 3
    start = date + dt.timedelta(days=lead_days - (i // 4) % SPREAD_DAYS)
    return mode, preset, dispatch_lines, start


def expected_key_dates(start, mode, months, lead_days, date, end_date=None):
    """The key dates of a contract without orders due on date, computed
    independently of the module"""
    from dateutil.relativedelta import relativedelta
    until = date + dt.timedelta(days=lead_days)
    if end_date:
        until = min(until, end_date)
    if mode == 'planning_date':
        # Only the first one: the next depends on its planning date
        return [start] if start <= until else []
    dates, k = [], 0
    while True:
        # relativedelta keeps the day of the start or the month end
        key_date = start + relativedelta(months=k * months)
        if key_date > until:
            return dates
        dates.append(key_date)
        k += 1


# ---------------------------------------------------------------------------
# Worker side: runs in a subprocess with trytond configured by a file


def _rss_kib():
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def _maxrss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _init_trytond(spec):
    from trytond.config import config
    config.update_etc(spec['config'])


def _short_traceback(exception):
    return ''.join(traceback.format_exception(exception))[-6000:]


def worker_template(spec):
    "Create the database, activate dispatch_order, company and its data"
    from proteus import config as pconfig
    from sql import Table

    from trytond import backend
    from trytond.modules.company.tests.tools import create_company
    from trytond.modules.dispatch_order.tests.tools import (
        setup_dispatch_data)
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    start = time.monotonic()
    _init_trytond(spec)
    name = spec['db']
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
        Module.update_list()
        Module.activate(Module.search([('name', '=', 'dispatch_order')]))
        transaction.commit()
        ActivateUpgrade = pool.get('ir.module.activate_upgrade', type='wizard')
        session_id, _, _ = ActivateUpgrade.create()
        transaction.commit()
        ActivateUpgrade(session_id).transition_upgrade()
        ActivateUpgrade.delete(session_id)
        transaction.commit()
        activated = {m.name for m in Module.search(
                [('state', '=', 'activated')])}

    config = pconfig.set_trytond(database=name, config_file=spec['config'])
    create_company(config=config)
    setup_dispatch_data(config=config)
    return {
        'seconds': time.monotonic() - start,
        'recurring_invoice': 'recurring_invoice' in activated,
        'modules': sorted(activated),
        }


def _context(pool, db):
    from trytond.transaction import Transaction
    with Transaction().start(db, 0):
        Company = pool.get('company.company')
        company, = Company.search([])
        return {'company': company.id, 'language': 'en'}


def worker_populate(spec):
    "Create N customers and N running contracts with dispatch settings"
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    start = time.monotonic()
    _init_trytond(spec)
    db, n, lead_days = spec['db'], spec['n'], spec['lead_days']
    date = dt.date.fromisoformat(spec['date'])
    pool = Pool(db)
    pool.init()
    context = _context(pool, db)
    Party = pool.get('party.party')
    Product = pool.get('product.product')
    Service = pool.get('sale.subscription.service')
    Subscription = pool.get('sale.subscription')
    RuleSet = pool.get('sale.subscription.recurrence.rule.set')
    Company = pool.get('company.company')
    SetupDispatch = pool.get('sale.subscription.setup_dispatch', type='wizard')

    with Transaction().start(db, 0, context=context) as transaction:
        company = Company(context['company'])
        service, = Service.search([('product.name', '=', "Maintenance")])
        filter_, = Product.search([('name', '=', "Filter")])
        yearly = RuleSet.find_or_create('yearly', 1)
        settings = [contract_settings(i, date, lead_days) for i in range(n)]

        ids = []
        for offset in range(0, n, SLICE):
            size = min(SLICE, n - offset)
            parties = Party.create([{
                        'name': f"Customer {offset + i + 1:05d}",
                        'addresses': [('create', [{
                                        'street': f"Hauptstraße {i + 1}",
                                        'postal_code': '10115',
                                        'city': 'Berlin',
                                        }])],
                        } for i in range(size)])
            values = []
            for i, party in enumerate(parties, offset):
                _, _, dispatch_lines, start_date = settings[i]
                value = {
                    'company': company.id,
                    'party': party.id,
                    'invoice_address': party.addresses[0].id,
                    'currency': company.currency.id,
                    'start_date': start_date,
                    'invoice_recurrence': yearly.id,
                    'description': f"Heating {offset + i + 1:05d}",
                    'lines': [('create', [{
                                    'service': service.id,
                                    'quantity': 2,
                                    'unit': service.product.default_uom.id,
                                    'start_date': start_date,
                                    'description':
                                    "Annual maintenance of the heating",
                                    }])],
                    }
                if dispatch_lines:
                    value['dispatch_lines'] = [('create', [{
                                    'sequence': 1,
                                    'product': filter_.id,
                                    'quantity': 3,
                                    'unit': filter_.default_uom.id,
                                    'description': "Replace the filters",
                                    }, {
                                    'sequence': 2,
                                    'product': service.product.id,
                                    'quantity': 1,
                                    'unit': service.product.default_uom.id,
                                    'description': "Check the burner",
                                    }])]
                values.append(value)
            ids.extend(s.id for s in Subscription.create(values))
            transaction.commit()
        created = time.monotonic()

        # The dispatch settings by the wizard, as a user would set them on
        # a selection of contracts of the same rhythm
        for offset in range(0, n, SLICE):
            groups = defaultdict(list)
            for i in range(offset, min(offset + SLICE, n)):
                mode, preset, _, _ = settings[i]
                groups[(mode, preset)].append(ids[i])
            for (mode, preset), sub_ids in sorted(groups.items()):
                with Transaction().set_context(
                        active_model='sale.subscription',
                        active_id=sub_ids[0], active_ids=sub_ids):
                    session_id, _, _ = SetupDispatch.create()
                    SetupDispatch.execute(session_id, {
                            'start': {
                                'preset': preset,
                                'interval': 1,
                                'months': [],
                                'dispatch_mode': mode,
                                'dispatch_lead_days': lead_days,
                                'start_date': None,
                                },
                            }, 'apply')
                    SetupDispatch.delete(session_id)
            transaction.commit()
        configured = time.monotonic()

        for offset in range(0, n, SLICE):
            Subscription.quote(Subscription.browse(ids[offset:offset + SLICE]))
            transaction.commit()
        for offset in range(0, n, SLICE):
            Subscription.run(Subscription.browse(ids[offset:offset + SLICE]))
            transaction.commit()

        running = Subscription.search_count([
                ('state', '=', 'running'),
                ('dispatch_recurrence', '!=', None),
                ('dispatch_mode', '!=', None),
                ])
        by_group = defaultdict(int)
        for subscription in Subscription.search([]):
            by_group[(subscription.dispatch_mode,
                    subscription.dispatch_recurrence.name)] += 1
    if running != n:
        raise AssertionError(f"{running} running contracts, expected {n}")
    return {
        'seconds': time.monotonic() - start,
        'create_seconds': created - start,
        'wizard_seconds': configured - created,
        'groups': {f"{m} {p}": c for (m, p), c in sorted(by_group.items())},
        }


class _QueryCounter:
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


class _Timers:
    """Wall time spent in some class methods, measured by wrapping them in
    this process only (nested calls are counted by the outer one)"""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self._depth = defaultdict(int)

    def wrap_classmethod(self, cls, name, key):
        function = getattr(cls, name)
        timers = self

        def wrapper(cls_, *args, **kwargs):
            if timers._depth[key]:
                return function(*args, **kwargs)
            timers._depth[key] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timers.seconds[key] += time.perf_counter() - start
                timers.calls[key] += 1
                timers._depth[key] -= 1
        setattr(cls, name, classmethod(wrapper))

    def snapshot(self):
        return {'seconds': dict(self.seconds), 'calls': dict(self.calls)}

    def reset(self):
        self.seconds.clear()
        self.calls.clear()


def _state(pool, db, context, date, lead_days):
    """What the database holds after a run, checked against the key dates
    expected for a night on date of contracts without orders"""
    from sql.aggregate import Count

    from trytond.transaction import Transaction

    with Transaction().start(db, 0, context=context, readonly=True):
        Subscription = pool.get('sale.subscription')
        DispatchLine = pool.get('sale.subscription.dispatch.line')
        Order = pool.get('dispatch.order')
        OrderLine = pool.get('dispatch.order.line')
        cursor = Transaction().connection.cursor()
        order = Order.__table__()
        line = OrderLine.__table__()
        dline = DispatchLine.__table__()

        cursor.execute(*order.select(
                order.id, order.contract, order.key_date, order.number,
                order.party, order.service_address, order.state))
        orders = list(cursor)
        cursor.execute(*line.select(
                line.order, Count(line.id), group_by=[line.order]))
        lines = dict(cursor)
        cursor.execute(*dline.select(
                dline.subscription, Count(dline.id),
                group_by=[dline.subscription]))
        dispatch_lines = dict(cursor)
        contracts = Subscription.search([], order=[('id', 'ASC')])
        errors = sum(1 for c in contracts if c.dispatch_error)
        expected = {}
        for contract in contracts:
            rule, = contract.dispatch_recurrence.rules
            expected[contract.id] = expected_key_dates(
                contract.start_date, contract.dispatch_mode,
                rule.interval * (12 if rule.freq == 'yearly' else 1),
                contract.dispatch_lead_days, date, contract.end_date)
        parties = {c.id: c.party.id for c in contracts}

    def as_date(value):
        return (dt.date.fromisoformat(value) if isinstance(value, str)
            else value)

    got = defaultdict(list)
    problems = []
    numbers = set()
    wrong_lines = wrong_party = no_address = no_number = 0
    for id_, contract, key_date, number, party, address, state in orders:
        got[contract].append(as_date(key_date))
        if number in numbers or not number:
            no_number += 1
        numbers.add(number)
        if party != parties.get(contract):
            wrong_party += 1
        if not address:
            no_address += 1
        if lines.get(id_, 0) != (dispatch_lines.get(contract) or 1):
            wrong_lines += 1
    wrong_dates = sum(
        1 for c, dates in expected.items() if sorted(got[c]) != dates)
    expected_orders = sum(map(len, expected.values()))
    if len(orders) != expected_orders:
        problems.append(f"{len(orders)} orders, expected {expected_orders}")
    for count, text in [
            (wrong_dates, "contracts with other key dates than expected"),
            (wrong_lines, "orders with a wrong number of lines"),
            (wrong_party, "orders with another party than the contract"),
            (no_address, "orders without service address"),
            (no_number, "orders without a number or with a duplicate"),
            (errors, "contracts with a dispatch error"),
            ]:
        if count:
            problems.append(f"{count} {text}")
    return {
        'contracts': len(contracts),
        'orders': len(orders),
        'order_lines': sum(lines.values()),
        'expected_orders': expected_orders,
        'due_contracts': sum(1 for d in expected.values() if d),
        'problems': problems,
        }


def worker_measure(spec):
    """Time generate_dispatch_orders(date) and a second run on the same
    date, check the orders after each"""
    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    _init_trytond(spec)
    db, lead_days = spec['db'], spec['lead_days']
    date = dt.date.fromisoformat(spec['date'])
    pool = Pool(db)
    pool.init()
    context = _context(pool, db)
    Subscription = pool.get('sale.subscription')
    subscription_module = sys.modules[
        Subscription.generate_dispatch_orders.__module__]
    counter = _QueryCounter()
    counter.install(backend.name)
    timers = _Timers()
    timers.wrap_classmethod(
        Subscription, '_generate_dispatch_orders_slice', 'slices')
    timers.wrap_classmethod(Subscription, 'create_dispatch_orders', 'create')

    def run(profiler=None):
        "Like ir.cron: the method in a transaction with the company"
        timers.reset()
        result = {}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        queries = counter.count
        rss = _rss_kib()
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        try:
            with Transaction().start(db, 0, context=context) as transaction:
                Subscription.generate_dispatch_orders(date)
                transaction.commit()
        except Exception as exception:
            result['error'] = {'type': type(exception).__name__,
                'message': str(exception),
                'traceback': _short_traceback(exception)}
        finally:
            if profiler:
                profiler.disable()
        result['seconds'] = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        result['cpu_seconds'] = (after.ru_utime - usage.ru_utime
            + after.ru_stime - usage.ru_stime)
        result['queries'] = counter.count - queries
        result['rss_before_kib'] = rss
        result['maxrss_kib'] = _maxrss_kib()
        result['timers'] = timers.snapshot()
        slices = result['timers']['seconds'].get('slices', 0)
        result['scan_seconds'] = result['seconds'] - slices
        result['slice_seconds'] = slices
        return result

    profiler = None
    if spec.get('profile'):
        import cProfile
        profiler = cProfile.Profile()
    result = {'batch_size': getattr(subscription_module, 'BATCH_SIZE', None)}
    result['first'] = first = run(profiler)
    if profiler:
        profiler.dump_stats(spec['profile'])
    result['after_first'] = state = _state(pool, db, context, date, lead_days)
    problems = list(state['problems'])
    if first.get('error'):
        problems.insert(0, f"raised {first['error']['type']}")
    else:
        result['second'] = second = run()
        result['after_second'] = again = _state(
            pool, db, context, date, lead_days)
        created = again['orders'] - state['orders']
        second['created'] = created
        if second.get('error'):
            problems.append(f"second run raised {second['error']['type']}")
        if created:
            problems.append(f"second run created {created} orders")
        problems.extend(
            f"after the second run: {p}" for p in again['problems']
            if p not in state['problems'])
    result['problems'] = problems
    result['ok'] = not problems
    return result


WORKERS = {
    'template': worker_template,
    'populate': worker_populate,
    'measure': worker_measure,
    }


def worker_main(step, spec_file, result_file):
    with open(spec_file) as fp:
        spec = json.load(fp)
    try:
        result = WORKERS[step](spec)
    except Exception as exception:
        result = {'crash': _short_traceback(exception)}
        traceback.print_exc()
    with open(result_file, 'w') as fp:
        json.dump(result, fp, indent=1, default=str)
    return 0 if 'crash' not in result else 1


# ---------------------------------------------------------------------------
# Driver side


class Backend:
    "A database server (or SQLite directory) the benchmark runs on"

    def __init__(self, name, workdir, uri=None):
        self.name = name
        self.workdir = workdir
        self.prefix = f'bench_dispatch_{os.getpid()}'
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
    env = dict(os.environ)
    for key in list(env):
        if (key.startswith('TRYTOND_DATABASE')
                or key in {'TRYTOND_CONFIG', 'DB_NAME', 'DB_CACHE'}):
            del env[key]
    env['TRYTOND_CONFIG'] = backend.config
    env['PYTHONHASHSEED'] = '0'
    return env


def run_worker(backend, step, spec, timeout):
    """Run one step in its own process

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
            [sys.executable, SCRIPT, '--worker', step, spec_file,
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


def _machine_busy_seconds():
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


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def code_version():
    "The commit measured, and whether modules/ differs from it"
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
            capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ['git', 'status', '--porcelain', '--', 'modules'], cwd=ROOT,
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not dirty:
        return commit
    fingerprint = modules_fingerprint()
    return (commit + " with uncommitted changes in modules/ (diff sha256 "
        f"{fingerprint[1][:12] if fingerprint else '?'})")


def modules_fingerprint():
    "What identifies the code of modules/: its tree at HEAD and local edits"
    import hashlib
    try:
        tree = subprocess.run(
            ['git', 'rev-parse', 'HEAD:modules'], cwd=ROOT,
            capture_output=True, text=True, check=True).stdout.strip()
        diff = subprocess.run(
            ['git', 'diff', 'HEAD', '--', 'modules'], cwd=ROOT,
            capture_output=True, check=True).stdout
        untracked = subprocess.run(
            ['git', 'ls-files', '--others', '--exclude-standard', '-z',
                '--', 'modules'], cwd=ROOT,
            capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    digest = hashlib.sha256(diff)
    for name in sorted(filter(None, untracked.split(b'\0'))):
        digest.update(name)
        try:
            with open(os.path.join(ROOT, os.fsdecode(name)), 'rb') as fp:
                digest.update(fp.read())
        except OSError:
            pass
    return tree, digest.hexdigest()


def machine_description(backend):
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as fp:
            for line in fp:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in ['trytond', 'trytond_sale_subscription', 'proteus',
            'python-sql', 'python-dateutil']:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = '?'
    return {
        'code': code_version(),
        'cpu': model,
        'cores': os.cpu_count(),
        'os': platform.platform(),
        'python': platform.python_version(),
        'versions': versions,
        'backend': backend.version(),
        }


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def representative(runs):
    "The first failing run, else the run of median time"
    for run in runs:
        if not run.get('ok'):
            return run
    ordered = sorted(runs, key=lambda r: r['first']['seconds'])
    return ordered[(len(ordered) - 1) // 2]


def measure_backend(options, backend, date):
    "Build, fill and measure the databases of a backend"
    template = backend.db_name('tpl')
    built = run_worker(backend, 'template', {'db': template},
        options.timeout)
    backend.created.append(template)
    if 'crash' in built or 'timeout' in built:
        sys.exit(f"could not build the template {template}, "
            f"see {built['log']}")
    if built['recurring_invoice']:
        sys.exit("recurring_invoice is activated: dispatch_order must be "
            "activated alone")
    log(f"{backend.name}: template built in {built['seconds']:.0f} s "
        f"(modules: {', '.join(built['modules'])})")
    filled = backend.db_name('filled', options.contracts)
    backend.copy(template, filled)
    spec = {'db': filled, 'n': options.contracts, 'date': date.isoformat(),
        'lead_days': options.lead_days}
    pop = run_worker(backend, 'populate', spec, options.timeout * 2)
    if 'crash' in pop or 'timeout' in pop:
        sys.exit(f"could not create the contracts, see {pop['log']}")
    log(f"{backend.name}: {options.contracts} contracts in "
        f"{pop['seconds']:.0f} s (created {pop['create_seconds']:.0f} s, "
        f"wizard {pop['wizard_seconds']:.0f} s); {pop['groups']}")
    backend.drop(template)

    measurements = []
    dates = {
        'night': date,
        'pause': date + dt.timedelta(days=options.pause_days),
        }
    for case, label in CASES:
        runs = []
        for repeat in range(options.repeat):
            run_spec = dict(spec, date=dates[case].isoformat(),
                db=backend.db_name(case, repeat))
            backend.copy(filled, run_spec['db'])
            load = os.getloadavg()
            busy = _machine_busy_seconds()
            children = _children_cpu_seconds()
            wall = time.monotonic()
            result = run_worker(backend, 'measure', run_spec, options.timeout)
            result['load_before'] = load[0]
            result['load_after'] = os.getloadavg()[0]
            result['window_seconds'] = time.monotonic() - wall
            result['other_cpu_seconds'] = max(
                _machine_busy_seconds() - busy
                - (_children_cpu_seconds() - children), 0)
            backend.drop(run_spec['db'])
            runs.append(result)
            if 'first' in result:
                log(f"{backend.name} {label} run {repeat + 1}: "
                    f"{result['first']['seconds']:.2f} s, "
                    f"{result['after_first']['orders']} orders; 2nd run "
                    f"{result.get('second', {}).get('seconds', 0):.2f} s, "
                    f"ok={result['ok']} {'; '.join(result['problems'])}")
            else:
                result.setdefault('problems', ['no result'])
                result['ok'] = False
                log(f"{backend.name} {label} run {repeat + 1}: no result "
                    f"({result['log']})")
            if not result['ok']:
                break
        measurements.append({'backend': backend.name, 'case': case,
                'label': label, 'date': dates[case].isoformat(),
                'runs': runs, 'populate': pop})

    profile = None
    if options.profile and backend.name == 'sqlite':
        path = os.path.join(backend.workdir, f'profile-{backend.name}.pstats')
        run_spec = dict(spec, db=backend.db_name('profile'), profile=path)
        backend.copy(filled, run_spec['db'])
        result = run_worker(backend, 'measure', run_spec, options.timeout)
        backend.drop(run_spec['db'])
        if 'first' in result:
            profile = profile_summary(path, result)
            if options.profile_output:
                shutil.copy(path, options.profile_output)
        else:
            log(f"profiled run failed ({result['log']})")
    backend.drop(filled)
    return measurements, pop, profile


# ---------------------------------------------------------------------------
# Report


def _fmt(value, digits=2):
    return '' if value is None else f"{value:.{digits}f}"


def table_rows(measurements, n):
    "The Markdown table of the measurements"
    rows = [
        "| Case | Night | Contracts | Due | Orders created | Order lines "
        "| Time (s) | Range (s) | CPU (s) | Orders/s | Scan (s) "
        "| Slices (s) | Queries | Queries/order | Peak RSS (MiB) "
        "| 2nd run (s) | 2nd run created | 2nd run queries | Result |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
    for m in measurements:
        runs = [r for r in m['runs'] if 'first' in r]
        if not runs:
            rows.append(f"| {m['label']} | {m['date']} | {n} |"
                + " |" * 15 + " **crashed** |")
            continue
        r = representative(m['runs'])
        if 'first' not in r:
            r = runs[0]
        first, state = r['first'], r['after_first']
        second = r.get('second', {})
        times = [x['first']['seconds'] for x in runs]
        seconds = first['seconds']
        orders = state['orders']
        if r['ok']:
            result = "ok"
        else:
            result = "**WRONG**: " + "; ".join(r['problems'])
        rng = (f"{min(times):.2f}–{max(times):.2f} ({len(times)} runs)"
            if len(times) > 1 else "(1 run)")
        rows.append("| " + " | ".join([
                    m['label'], m['date'], str(state['contracts']),
                    str(state['due_contracts']), str(orders),
                    str(state['order_lines']),
                    f"{seconds:.2f}", rng, f"{first['cpu_seconds']:.2f}",
                    f"{orders / seconds:.1f}" if orders else '',
                    f"{first['scan_seconds']:.2f}",
                    f"{first['slice_seconds']:.2f}",
                    str(first['queries']),
                    f"{first['queries'] / orders:.1f}" if orders else '',
                    f"{first['maxrss_kib'] / 1024:.0f}",
                    _fmt(second.get('seconds')),
                    str(second.get('created', '')),
                    str(second.get('queries', '')),
                    result]) + " |")
    return rows


def results_section(backend, machine, measurements, pop, options,
        started, total, command):
    label = BACKEND_LABELS[backend.name]
    n = options.contracts
    lines = [f"## Results: {label}", ""]
    add = lines.append
    add(f"Run on {started:%Y-%m-%d %H:%M} (total {total / 60:.1f} min) "
        "with:")
    add("")
    add("```")
    add(command)
    add("```")
    add("")
    add(f"Code: commit {machine['code']}. {machine['cpu']}, "
        f"{machine['cores']} cores; {machine['os']}; Python "
        f"{machine['python']}; " + ", ".join(
            f"{k} {v}" for k, v in machine['versions'].items())
        + f"; {machine['backend']}.")
    add("")
    add(f"{n} running contracts ({', '.join(f'{c} {g}' for g, c in pop['groups'].items())}; "
        f"lead time {options.lead_days} days; one in four with 2 dispatch "
        f"lines), created in {pop['seconds']:.0f} s. First night "
        f"{measurements[0]['date']}; server pause: first night "
        f"{options.pause_days} days later. Median of "
        f"{options.repeat} runs, each in a fresh process on a fresh copy "
        "of the filled database; 'Scan' is the time before the first "
        "slice (searching the contracts and computing their dates), "
        "'Slices' the time in the slices (lock, create, commit); '2nd run' "
        "is the same date again right after, which must create nothing.")
    add("")
    lines.extend(table_rows(measurements, n))
    add("")
    runs = [r for m in measurements for r in m['runs']
        if 'window_seconds' in r]
    if runs:
        loads = [r['load_before'] for r in runs]
        other = [r['other_cpu_seconds'] / r['window_seconds'] for r in runs]
        add("Machine load: the 1-minute load average before the measured "
            f"runs was {min(loads):.2f} to {max(loads):.2f}; while they ran "
            f"the other processes used {min(other):.2f} to "
            f"{max(other):.2f} cores on average (the database server's "
            "share included on PostgreSQL).")
        add("")
    failures = [r for m in measurements for r in m['runs']
        if r.get('first', {}).get('error') or 'crash' in r]
    for r in failures:
        add("```")
        add((r.get('first', {}).get('error') or {}).get('traceback')
            or r.get('crash', ''))
        add("```")
        add("")
    return lines


PROFILE_FUNCTIONS = [
    # (label, file part, function name)
    ("generate_dispatch_orders", 'dispatch_order/subscription.py',
        'generate_dispatch_orders'),
    ("get_dispatch_dates (all calls)", 'dispatch_order/subscription.py',
        'get_dispatch_dates'),
    ("_dispatch_key_dates", 'dispatch_order/subscription.py',
        '_dispatch_key_dates'),
    ("_dispatch_planning_dates", 'dispatch_order/subscription.py',
        '_dispatch_planning_dates'),
    ("_get_key_dates (rrules)", 'dispatch_order/subscription.py',
        '_get_key_dates'),
    ("_generate_dispatch_orders_slice", 'dispatch_order/subscription.py',
        '_generate_dispatch_orders_slice'),
    ("create_dispatch_orders", 'dispatch_order/subscription.py',
        'create_dispatch_orders'),
    ("_get_dispatch_order", 'dispatch_order/subscription.py',
        '_get_dispatch_order'),
    ("get_service_address", 'dispatch_order/subscription.py',
        'get_service_address'),
    ("_get_dispatch_order_lines", 'dispatch_order/subscription.py',
        '_get_dispatch_order_lines'),
    ("Order.set_number", 'dispatch_order/dispatch.py', 'set_number'),
    ("ModelStorage.save (orders and lines)", 'model/modelstorage.py',
        'save'),
    ("ModelSQL.create", 'model/modelsql.py', 'create'),
    ("ModelStorage._validate", 'model/modelstorage.py', '_validate'),
    ("ModelSQL.read", 'model/modelsql.py', 'read'),
    ("ModelSQL.search", 'model/modelsql.py', 'search'),
    ("ModelSQL.write", 'model/modelsql.py', 'write'),
    ("Transaction.commit", 'trytond/transaction.py', 'commit'),
    ("cursor execute (SQL)", '', 'execute'),
    ]


def profile_summary(path, result):
    "The top functions of a cProfile dump"
    import pstats
    stats = pstats.Stats(path)
    entries = stats.stats
    total = result['first']['seconds']
    by_tottime = sorted(entries.items(), key=lambda e: e[1][2],
        reverse=True)[:15]

    def where(key):
        filename, line, name = key
        for marker in ['site-packages/', '/work/main/']:
            if marker in filename:
                filename = filename.split(marker, 1)[1]
        return f"{filename}:{line}({name})" if line else name

    top = [{'function': where(k), 'calls': v[1], 'tottime': v[2],
            'cumtime': v[3]} for k, v in by_tottime]
    cumulative = []
    for label, part, name in PROFILE_FUNCTIONS:
        matches = [(k, v) for k, v in entries.items()
            if k[2] == name and part in k[0]]
        if name == 'execute' and not part:
            # The driver's own: sqlite3 (C) or psycopg
            matches = [(k, v) for k, v in entries.items()
                if (k[0] == '~' and 'execute' in k[2] and 'Cursor' in k[2])
                or (k[2] == 'execute' and 'psycopg/cursor.py' in k[0])]
        if not matches:
            continue
        # Nested entries (e.g. save calling save) would count twice: keep
        # the largest cumulative time of the entries of that function
        calls = sum(v[1] for _, v in matches)
        cumtime = max(v[3] for _, v in matches)
        cumulative.append({'function': label, 'calls': calls,
                'cumtime': cumtime})
    return {
        'seconds': total,
        'profiled_total': stats.total_tt,
        'orders': result['after_first']['orders'],
        'queries': result['first']['queries'],
        'top': top,
        'cumulative': cumulative,
        'ok': result['ok'],
        }


def profile_lines(profile, backend, options, command):
    lines = [f"## Profile ({BACKEND_LABELS[backend]}, first night, "
        f"N = {options.contracts})", ""]
    add = lines.append
    add(f"One extra first-night run under cProfile (`{command}`), not "
        f"part of the figures above: {profile['orders']} orders in "
        f"{profile['seconds']:.2f} s with the profiler "
        f"({profile['profiled_total']:.2f} s of profiled time), "
        f"{profile['queries']} queries.")
    add("")
    add("Cumulative time of the steps (seconds, share of the run):")
    add("")
    add("| Function | Calls | Cumulative (s) | Share |")
    add("| --- | ---: | ---: | ---: |")
    for entry in profile['cumulative']:
        add(f"| {entry['function']} | {entry['calls']} "
            f"| {entry['cumtime']:.2f} "
            f"| {100 * entry['cumtime'] / profile['profiled_total']:.0f} % |")
    add("")
    add("Top functions by own time:")
    add("")
    add("| Function | Calls | Own (s) | Cumulative (s) |")
    add("| --- | ---: | ---: | ---: |")
    for entry in profile['top']:
        add(f"| `{entry['function']}` | {entry['calls']} "
            f"| {entry['tottime']:.2f} | {entry['cumtime']:.2f} |")
    add("")
    return lines


def _split_sections(text):
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


def update_section(path, heading_prefix, section, before='## Profile'):
    """Replace the section whose heading starts with heading_prefix by
    section, or insert it before the first section starting with before
    (else at the end)"""
    try:
        with open(path) as fp:
            text = fp.read()
    except FileNotFoundError:
        text = "# Benchmark of the nightly dispatch order generation\n\n"
    if not section.endswith('\n'):
        section += '\n'
    if not section.endswith('\n\n'):
        section += '\n'
    sections = _split_sections(text)
    heading = section.splitlines()[0]
    names = [name or '' for name, _ in sections]
    for index, name in enumerate(names):
        if name.startswith(heading_prefix):
            sections[index] = (heading, section)
            break
    else:
        for index, name in enumerate(names):
            if before and name.startswith(before):
                sections.insert(index, (heading, section))
                break
        else:
            last_name, last = sections[-1]
            if not last.endswith('\n\n'):
                sections[-1] = (last_name, last.rstrip('\n') + '\n\n')
            sections.append((heading, section))
    text = ''.join(text for _, text in sections).rstrip('\n') + '\n'
    with open(path, 'w') as fp:
        fp.write(text)


def command_line():
    "The command line that ran the benchmark, as it could be typed"
    import shlex
    words = ['python', os.path.relpath(SCRIPT, ROOT)] + sys.argv[1:]
    uri = os.environ.get('TRYTOND_DATABASE_URI')
    prefix = (f'TRYTOND_DATABASE_URI={shlex.quote(uri)} '
        if uri and uri.startswith('postgresql') else '')
    return prefix + ' '.join(shlex.quote(w) for w in words)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark the nightly dispatch order generation")
    parser.add_argument('-n', '--contracts', type=int, default=2000,
        help="number of running contracts (default: 2000)")
    parser.add_argument('--backend', default='sqlite',
        choices=['sqlite', 'postgresql', 'both'],
        help="PostgreSQL needs TRYTOND_DATABASE_URI (default: sqlite)")
    parser.add_argument('--repeat', type=int, default=3,
        help="runs of each case, each on a fresh copy of the database; the "
        "median is reported (default: 3)")
    parser.add_argument('--date', default=DEFAULT_DATE,
        help=f"the first night (default: {DEFAULT_DATE})")
    parser.add_argument('--lead-days', type=int, default=14,
        help="lead time of the contracts (default: 14)")
    parser.add_argument('--pause-days', type=int, default=92,
        help="days between the date of the contracts and the first night "
        "in the server pause case (default: 92)")
    parser.add_argument('--profile', action='store_true',
        help="one more first-night run under cProfile (SQLite only, not "
        "part of the figures)")
    parser.add_argument('--profile-output',
        help="with --profile: copy the pstats file there")
    parser.add_argument('--write', action='store_true',
        help="replace the results section of the backend (and the profile "
        "section) in the output file")
    parser.add_argument('--output', default=DEFAULT_OUTPUT,
        help=f"Markdown report for --write (default: {DEFAULT_OUTPUT})")
    parser.add_argument('--timeout', type=float, default=900,
        help="seconds after which a worker is killed (default: 900)")
    parser.add_argument('--keep', action='store_true',
        help="keep the temporary directory (and its logs)")
    parser.add_argument('--json', help="also write the raw results there")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(argv)
    output = options.output
    if not os.path.isabs(output):
        output = os.path.join(ROOT, output)
    uri = os.environ.get('TRYTOND_DATABASE_URI', '')
    names = (['sqlite', 'postgresql'] if options.backend == 'both'
        else [options.backend])
    if 'postgresql' in names and not uri.startswith('postgresql'):
        sys.exit("TRYTOND_DATABASE_URI must point to a PostgreSQL server, "
            "e.g. postgresql://postgres@127.0.0.1:5432/")
    date = dt.date.fromisoformat(options.date)
    command = command_line()
    workdir = tempfile.mkdtemp(prefix='turnus-bench-dispatch-')
    log(f"work directory {workdir}")
    everything = {}
    status = 0
    try:
        for name in names:
            started = dt.datetime.now()
            start = time.monotonic()
            backend = Backend(name, workdir, uri)
            try:
                machine = machine_description(backend)
                fingerprint = modules_fingerprint()
                measurements, pop, profile = measure_backend(
                    options, backend, date)
            finally:
                backend.drop_all()
            total = time.monotonic() - start
            section = results_section(backend, machine, measurements, pop,
                options, started, total, command)
            if modules_fingerprint() != fingerprint:
                section[-1:-1] = ["**modules/ changed during the run** "
                    f"({machine['code']} at the start, {code_version()} at "
                    "the end): the runs may have measured different "
                    "versions.", ""]
                log("modules/ changed during the run")
            print('\n'.join(section))
            if profile:
                plines = profile_lines(profile, name, options, command)
                print('\n'.join(plines))
            if options.write:
                update_section(output, f"## Results: {BACKEND_LABELS[name]}",
                    '\n'.join(section))
                if profile:
                    update_section(output, "## Profile", '\n'.join(plines),
                        before='## Observations')
                log(f"{output} updated")
            everything[name] = {'machine': machine, 'populate': pop,
                'measurements': measurements, 'profile': profile}
            if not all(r.get('ok') for m in measurements
                    for r in m['runs']):
                status = 1
    finally:
        if options.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if options.json:
        with open(options.json, 'w') as fp:
            json.dump(everything, fp, indent=1, default=str)
    return status


if __name__ == '__main__':
    if len(sys.argv) == 5 and sys.argv[1] == '--worker':
        sys.exit(worker_main(*sys.argv[2:]))
    sys.exit(main())
