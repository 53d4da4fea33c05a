#!/usr/bin/env python3
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the nightly recurring invoice generation (not a test).

For each backend and each size N it creates N running monthly contracts
(one line each, one customer each) that are all due on one date D, then
times the nightly run for D:

* ``turnus``: ``sale.subscription.generate_recurring_invoices(D)`` of the
  module recurring_invoice (slices of 100 contracts, one transaction each);
* ``core``: the path of Tryton's own sale_subscription, i.e. the cron
  methods ``sale.subscription.line|generate_consumption`` then
  ``sale.subscription|generate_invoice``, in a database where only
  sale_subscription is activated (recurring_invoice overrides
  generate_invoice).

Every measurement runs in its own process on its own copy of a database,
so the peak memory (``ru_maxrss``) is that of the measured run alone
(plus the loaded pool).  After the run it checks that exactly N invoices
were created and that a second run creates none.  A failing run (e.g. core
on SQLite from about 1,000 contracts: "Expression tree is too large") is
reported as such in the table.  The exit status is non-zero only when the
recurring_invoice run is wrong or fails.

Usage::

    python tests/benchmark_nightly.py [--sizes 200,2000]
        [--backend sqlite|postgresql|both] [--core|--no-core]
        [--output doc/benchmark.md] [--repeat 3] [--timeout 600]

SQLite uses file databases in a temporary directory.  PostgreSQL is used
when ``TRYTOND_DATABASE_URI`` points to a server, e.g.
``postgresql://postgres@127.0.0.1:5432/`` (the role must be allowed to
create databases; they are named ``bench_*`` and dropped at the end).
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
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.abspath(__file__)
DEFAULT_OUTPUT = os.path.join('doc', 'benchmark.md')
# Records created or processed in one call while populating
SLICE = 500
PRICE = 100
FLAVOURS = {
    'turnus': ['recurring_invoice'],
    'core': ['sale_subscription'],
    }
FLAVOUR_LABELS = {
    'turnus': "recurring_invoice `generate_recurring_invoices`",
    'core': "core sale_subscription `generate_consumption` + "
    "`generate_invoice`",
    }


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
        flush=True)


def due_date():
    "The date on which every contract is due: first day of last month"
    today = dt.date.today()
    first = today.replace(day=1)
    return (first - dt.timedelta(days=1)).replace(day=1)


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


def _create_database(spec):
    "Create the database and activate the modules of the flavour"
    from sql import Table

    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction

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
        Lang = pool.get('ir.lang')
        Module = pool.get('ir.module')
        language, = Lang.search([('code', '=', 'en')])
        language.translatable = True
        language.save()
        Module.update_list()
        modules = Module.search([('name', 'in', FLAVOURS[spec['flavour']])])
        Module.activate(modules)
        transaction.commit()
        ActivateUpgrade = pool.get('ir.module.activate_upgrade', type='wizard')
        session_id, _, _ = ActivateUpgrade.create()
        transaction.commit()
        ActivateUpgrade(session_id).transition_upgrade()
        ActivateUpgrade.delete(session_id)
        transaction.commit()


def _setup_company(spec):
    "Company, chart, tax and the subscription service, through proteus"
    from decimal import Decimal

    from proteus import Model
    from proteus import config as pconfig

    from trytond.modules.account.tests.tools import (
        create_chart, create_tax, get_accounts)
    from trytond.modules.company.tests.tools import create_company

    config = pconfig.set_trytond(
        database=spec['db'], config_file=spec['config'])
    create_company(config=config)
    create_chart(config=config)

    ProductCategory = Model.get('product.category')
    ProductTemplate = Model.get('product.template')
    Service = Model.get('sale.subscription.service')
    Uom = Model.get('product.uom')
    RuleSet = Model.get('sale.subscription.recurrence.rule.set')

    accounts = get_accounts()
    tax = create_tax(Decimal('.19'))
    tax.save()
    category = ProductCategory(name="Services")
    category.accounting = True
    category.account_revenue = accounts['revenue']
    category.customer_taxes.append(tax)
    category.save()

    unit, = Uom.find([('name', '=', "Unit")])
    template = ProductTemplate(name="Maintenance")
    template.default_uom = unit
    template.type = 'service'
    template.list_price = Decimal(PRICE)
    template.account_category = category
    template.save()
    product, = template.products
    service = Service(product=product)
    if spec['flavour'] == 'core':
        # Core has no recurrence wizard: the service gives the consumption
        # recurrence and the contract the invoice recurrence
        monthly = RuleSet(name="Monthly")
        # The rule set comes with an empty rule for a user
        rule = monthly.rules[0] if monthly.rules else monthly.rules.new()
        rule.freq = 'monthly'
        rule.interval = 1
        monthly.save()
        service.consumption_recurrence = monthly
    service.save()


def worker_template(spec):
    start = time.monotonic()
    _init_trytond(spec)
    _create_database(spec)
    _setup_company(spec)
    return {'seconds': time.monotonic() - start}


def _context(pool, db):
    from trytond.transaction import Transaction
    with Transaction().start(db, 0):
        Company = pool.get('company.company')
        company, = Company.search([])
        return {'company': company.id, 'language': 'en'}


def worker_populate(spec):
    "Create N customers and N running contracts due on spec['date']"
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    start = time.monotonic()
    _init_trytond(spec)
    db, n = spec['db'], spec['n']
    date = dt.date.fromisoformat(spec['date'])
    pool = Pool(db)
    pool.init()
    context = _context(pool, db)
    Party = pool.get('party.party')
    Product = pool.get('product.product')
    Service = pool.get('sale.subscription.service')
    Subscription = pool.get('sale.subscription')
    Company = pool.get('company.company')

    with Transaction().start(db, 0, context=context) as transaction:
        company = Company(context['company'])
        service, = Service.search([])
        product = service.product
        with Transaction().set_context(
                currency=company.currency.id, sale_date=date,
                uom=product.sale_uom.id):
            unit_price = Product.get_sale_price([product], 1)[product.id]
        line_values = {
            'service': service.id,
            'quantity': 1,
            'unit': product.sale_uom.id,
            'unit_price': unit_price,
            'start_date': date,
            }
        if service.consumption_recurrence:
            line_values['consumption_recurrence'] = (
                service.consumption_recurrence.id)

        ids = []
        for offset in range(0, n, SLICE):
            size = min(SLICE, n - offset)
            parties = Party.create([{
                        'name': f"Customer {offset + i + 1:05d}",
                        'addresses': [('create', [{
                                        'street': f"Hauptstraße {i + 1}",
                                        'postal_code': '10115',
                                        'city': 'Berlin',
                                        'invoice': True,
                                        }])],
                        } for i in range(size)])
            values = []
            for party in parties:
                value = {
                    'company': company.id,
                    'party': party.id,
                    'invoice_address': party.addresses[0].id,
                    'currency': company.currency.id,
                    'start_date': date,
                    'lines': [('create', [dict(line_values)])],
                    }
                if spec['flavour'] == 'core':
                    value['invoice_recurrence'] = (
                        service.consumption_recurrence.id)
                values.append(value)
            ids.extend(s.id for s in Subscription.create(values))
            transaction.commit()
        created = time.monotonic()

        if spec['flavour'] == 'turnus':
            # The recurrence wizard, as a user would run it on a selection
            SetupRecurrence = pool.get(
                'sale.subscription.setup_recurrence', type='wizard')
            for offset in range(0, n, SLICE):
                sub_ids = ids[offset:offset + SLICE]
                with Transaction().set_context(
                        active_model='sale.subscription',
                        active_id=sub_ids[0], active_ids=sub_ids):
                    session_id, _, _ = SetupRecurrence.create()
                    SetupRecurrence.execute(session_id, {
                            'start': {
                                'preset': 'monthly',
                                'interval': 1,
                                'months': [],
                                'invoice_timing': 'advance',
                                'catch_up': True,
                                'start_date': date,
                                },
                            }, 'apply')
                    SetupRecurrence.delete(session_id)
                transaction.commit()
        for offset in range(0, n, SLICE):
            subscriptions = Subscription.browse(ids[offset:offset + SLICE])
            Subscription.quote(subscriptions)
            transaction.commit()
        for offset in range(0, n, SLICE):
            subscriptions = Subscription.browse(ids[offset:offset + SLICE])
            Subscription.run(subscriptions)
            transaction.commit()

        due = Subscription.search_count([
                ('state', '=', 'running'),
                ('next_invoice_date', '=', date),
                ])
    if due != n:
        raise AssertionError(f"{due} contracts due on {date}, expected {n}")
    return {
        'seconds': time.monotonic() - start,
        'create_seconds': created - start,
        'due': due,
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


def _short_traceback(exception):
    lines = traceback.format_exception(exception)
    text = ''.join(lines)
    return text[-6000:]


def _count_state(pool, db, context, flavour):
    from trytond.transaction import Transaction
    with Transaction().start(db, 0, context=context, readonly=True):
        Invoice = pool.get('account.invoice')
        InvoiceLine = pool.get('account.invoice.line')
        InvoiceTax = pool.get('account.invoice.tax')
        Subscription = pool.get('sale.subscription')
        Consumption = pool.get('sale.subscription.line.consumption')
        result = {
            'invoices': Invoice.search_count([]),
            'invoice_lines': InvoiceLine.search_count(
                [('type', '=', 'line')]),
            'invoice_taxes': InvoiceTax.search_count([]),
            'consumptions_uninvoiced': Consumption.search_count(
                [('invoice_line', '=', None)]),
            'still_due': Subscription.search_count([
                    ('state', 'in', ['running', 'closed']),
                    ('next_invoice_date', '<=', context['date']),
                    ]),
            }
        if flavour == 'turnus':
            invoices = Invoice.search([('subscription', '!=', None)])
            result['invoiced_contracts'] = len(
                {i.subscription.id for i in invoices})
            result['invoice_errors'] = Subscription.search_count(
                [('invoice_error', '!=', None)])
        return result


def worker_measure(spec):
    """Time the nightly run for spec['date'], then check it and time a
    second run"""
    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    _init_trytond(spec)
    db, flavour, n = spec['db'], spec['flavour'], spec['n']
    date = dt.date.fromisoformat(spec['date'])
    pool = Pool(db)
    pool.init()
    context = _context(pool, db)
    Subscription = pool.get('sale.subscription')
    Line = pool.get('sale.subscription.line')
    counter = _QueryCounter()
    counter.install(backend.name)

    def nightly():
        "Return the steps' durations, the failing step and its error"
        steps, error = {}, None
        if flavour == 'turnus':
            calls = [('generate_recurring_invoices',
                    Subscription.generate_recurring_invoices)]
        else:
            calls = [
                ('generate_consumption', Line.generate_consumption),
                ('generate_invoice', Subscription.generate_invoice),
                ]
        for name, method in calls:
            # Like ir.cron: one transaction per cron method
            start = time.perf_counter()
            try:
                with Transaction().start(
                        db, 0, context=context) as transaction:
                    method(date)
                    transaction.commit()
            except Exception as exception:
                steps[name] = time.perf_counter() - start
                error = {'step': name, 'message': str(exception),
                    'type': type(exception).__name__,
                    'traceback': _short_traceback(exception)}
                break
            steps[name] = time.perf_counter() - start
        return steps, error

    rss_before = _rss_kib()
    queries_before = counter.count
    usage = resource.getrusage(resource.RUSAGE_SELF)
    steps, error = nightly()
    seconds = sum(steps.values())
    maxrss = _maxrss_kib()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    queries = counter.count - queries_before
    state_context = dict(context, date=date)
    result = {
        'seconds': seconds,
        'cpu_seconds': cpu,
        'steps': steps,
        'error': error,
        'rss_before_kib': rss_before,
        'maxrss_kib': maxrss,
        'queries': queries,
        }
    result['after_first'] = first = _count_state(
        pool, db, state_context, flavour)
    problems = []
    if error:
        problems.append(f"{error['step']} raised {error['type']}")
    else:
        if first['invoices'] != n:
            problems.append(f"{first['invoices']} invoices, expected {n}")
        if first['invoice_lines'] != n:
            problems.append(
                f"{first['invoice_lines']} invoice lines, expected {n}")
        if first['invoice_taxes'] != n:
            problems.append(
                f"{first['invoice_taxes']} invoice taxes, expected {n}")
        if first['still_due']:
            problems.append(f"{first['still_due']} contracts still due")
        if first['consumptions_uninvoiced']:
            problems.append(
                f"{first['consumptions_uninvoiced']} consumptions "
                "not invoiced")
        if flavour == 'turnus':
            if first['invoiced_contracts'] != n:
                problems.append(
                    f"{first['invoiced_contracts']} contracts invoiced, "
                    f"expected {n}")
            if first['invoice_errors']:
                problems.append(
                    f"{first['invoice_errors']} contracts with an "
                    "invoicing error")

        queries_before = counter.count
        second_steps, second_error = nightly()
        result['second_seconds'] = sum(second_steps.values())
        result['second_queries'] = counter.count - queries_before
        result['second_error'] = second_error
        result['after_second'] = second = _count_state(
            pool, db, state_context, flavour)
        if second_error:
            problems.append(
                f"second run: {second_error['step']} raised "
                f"{second_error['type']}")
        created = second['invoices'] - first['invoices']
        result['second_created'] = created
        if created:
            problems.append(f"second run created {created} invoices")
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
        self.prefix = f'bench_{os.getpid()}'
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
        if self.name == 'sqlite':
            return
        from psycopg import sql
        try:
            with self._admin_connection() as conn:
                for name in reversed(self.created):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                            sql.Identifier(name)))
        except Exception as exception:
            log(f"could not drop the databases: {exception}")

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
            f"shared_buffers={settings.get('shared_buffers')}, "
            f"fsync={settings.get('fsync')}, "
            f"synchronous_commit={settings.get('synchronous_commit')})")


def representative(runs):
    "The first failing run, else the run of median time"
    for run in runs:
        if not run.get('ok'):
            return run
    ordered = sorted(runs, key=lambda r: r['seconds'])
    return ordered[(len(ordered) - 1) // 2]


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


def machine_description(backends):
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
    for dist in ['trytond', 'trytond_sale_subscription', 'trytond_account',
            'trytond_account_invoice', 'proteus', 'python-sql']:
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
        'backends': {b.name: b.version() for b in backends},
        }


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
    return commit + (" with uncommitted changes in modules/" if dirty else "")


def _mib(kib):
    return kib / 1024 if kib else None


def write_report(path, machine, measurements, options, started, total):
    lines = []
    add = lines.append
    add("# Benchmark of the nightly recurring invoice generation")
    add("")
    add(f"Run on {started:%Y-%m-%d %H:%M} (total {total / 60:.1f} min) "
        "with:")
    add("")
    add("```")
    add(options['command'])
    add("```")
    add("")
    add(f"Code: commit {machine['code']}.")
    add("")
    add("## Machine")
    add("")
    add(f"- CPU: {machine['cpu']}, {machine['cores']} cores")
    if machine['memory_gib']:
        add(f"- RAM: {machine['memory_gib']:.1f} GiB")
    add(f"- OS: {machine['os']}")
    add(f"- Python {machine['python']}")
    add("- " + ", ".join(
            f"{k} {v}" for k, v in machine['versions'].items()))
    for name, version in machine['backends'].items():
        add(f"- {name}: {version}")
    add("")
    add("## Results")
    add("")
    add(f"N monthly contracts (one line, one customer each) all due on "
        f"{options['date']} ('in advance', so one invoice per contract). "
        "Time is the wall time of the nightly run for that date, in a "
        "fresh process with the pool loaded (each cron method in its own "
        "transaction), the median of the runs, each on a fresh copy of "
        "the filled database (a failing case is run once). Peak RSS is "
        "the ru_maxrss of that process after the run; growth is peak "
        "RSS minus the RSS just before the run. "
        "CPU is the user + system time of the Python process during "
        "the run (the database server's is not included), less sensitive "
        "than the wall time to other load on the machine. "
        "Queries are the SQL statements sent during the run. "
        "'2nd run' is the same run again, which must create nothing.")
    add("")
    add("| Backend | Path | N | Result | Time (s) | Range (s) | CPU (s) "
        "| Invoices/s | Peak RSS (MiB) | RSS growth (MiB) | Queries "
        "| Queries/invoice | 2nd run (s) | Details |")
    add("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | --- |")
    failures = []
    for m in measurements:
        r = m['result']
        path_label = 'recurring_invoice' if m['flavour'] == 'turnus' \
            else 'core sale_subscription'
        cells = [m['backend'], path_label, str(m['n'])]
        details = []
        if 'timeout' in r:
            cells += [f"**timeout** (> {r['timeout']} s)"] + [''] * 9
            failures.append((m, f"killed after {r['timeout']} s"))
        elif 'skipped' in r:
            cells += [f"not run: {r['skipped']}"] + [''] * 9
        elif 'crash' in r:
            cells += ["**crashed**"] + [''] * 9
            failures.append((m, r['crash']))
        else:
            if r.get('error'):
                status = f"**FAILED** ({r['error']['type']})"
                failures.append((m, r['error']['traceback']))
            elif r['ok']:
                status = "ok"
            else:
                status = "**WRONG**: " + "; ".join(r['problems'])
            invoices = r['after_first']['invoices']
            seconds = r['seconds']
            rate = (f"{invoices / seconds:.1f}"
                if invoices and seconds and not r.get('error') else '')
            growth = _mib(r['maxrss_kib'] - r['rss_before_kib'])
            times = sorted(run['seconds'] for run in m.get('runs', [r])
                if 'seconds' in run)
            spread = (f"{times[0]:.2f}–{times[-1]:.2f} ({len(times)} runs)"
                if len(times) > 1 else f"({len(times)} run)")
            cells += [
                status,
                f"{seconds:.2f}",
                spread,
                f"{r['cpu_seconds']:.2f}",
                rate,
                f"{_mib(r['maxrss_kib']):.0f}",
                f"{growth:.0f}" if growth is not None else '',
                str(r['queries']),
                f"{r['queries'] / invoices:.1f}" if invoices else '',
                (f"{r['second_seconds']:.2f}"
                    if 'second_seconds' in r else ''),
                ]
            if len(r['steps']) > 1 or r.get('error'):
                details.append(" + ".join(
                        f"{k} {v:.2f} s" for k, v in r['steps'].items()))
        if m.get('populate'):
            details.append(f"data setup {m['populate']:.0f} s")
        cells.append('; '.join(details))
        add("| " + " | ".join(cells) + " |")
    add("")
    if failures:
        add("### Failures")
        add("")
        for m, text in failures:
            add(f"{m['backend']}, {FLAVOUR_LABELS[m['flavour']]}, "
                f"N = {m['n']}:")
            add("")
            add("```")
            add(text.strip()[-3000:])
            add("```")
            add("")
    loads = [run['load_before'] for m in measurements
        for run in m.get('runs', []) if 'load_before' in run]
    if loads:
        add(f"The 1-minute load average just before the measured runs was "
            f"{min(loads):.2f} to {max(loads):.2f} "
            f"(the benchmark itself keeps one core busy).")
        add("")
    for note in options.get('notes', []):
        add(note)
        add("")
    add("## How to re-run")
    add("")
    add("From the repository root, with the modules installed in the "
        "virtual environment (e.g. `make venv`):")
    add("")
    add("```")
    add("python tests/benchmark_nightly.py --sizes 200,2000 --backend sqlite")
    add("TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\")
    add("    python tests/benchmark_nightly.py --sizes 200,2000 "
        "--backend both")
    add("```")
    add("")
    add("SQLite uses file databases in a temporary directory; PostgreSQL "
        "needs a role that may create databases (`bench_*`, dropped at the "
        "end). `--no-core` skips the core sale_subscription path, "
        "`--timeout` bounds each measurement (default 600 s) and "
        "`--output` sets this file. Each backend first builds two template "
        "databases (modules activated, company, chart, tax, one service) "
        "and copies them for every measurement; contracts are created in "
        "bulk through the pool (recurrence set by the wizard "
        "`sale.subscription.setup_recurrence` with catch up for "
        "recurring_invoice), then quoted and run. Only the nightly run is "
        "timed; `--repeat` sets the number of runs per case (default 3).")
    add("")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as fp:
        fp.write('\n'.join(lines))


def command_line():
    "The command line that ran the benchmark, as it could be typed"
    import shlex
    words = ['python', os.path.relpath(SCRIPT, ROOT)] + sys.argv[1:]
    uri = os.environ.get('TRYTOND_DATABASE_URI')
    prefix = f'TRYTOND_DATABASE_URI={shlex.quote(uri)} ' if uri else ''
    return prefix + ' '.join(shlex.quote(w) for w in words)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark the nightly recurring invoice generation")
    parser.add_argument('--sizes', default='200,2000',
        help="comma separated numbers of contracts (default: 200,2000)")
    parser.add_argument('--backend', default='both',
        choices=['sqlite', 'postgresql', 'both'],
        help="'both' skips PostgreSQL when TRYTOND_DATABASE_URI does not "
        "point to a PostgreSQL server")
    parser.add_argument('--core', dest='core', action='store_true',
        default=True, help="also measure core sale_subscription (default)")
    parser.add_argument('--no-core', dest='core', action='store_false')
    parser.add_argument('--output', default=DEFAULT_OUTPUT,
        help=f"Markdown report (default: {DEFAULT_OUTPUT})")
    parser.add_argument('--timeout', type=float, default=600,
        help="seconds after which a measurement is killed (default: 600)")
    parser.add_argument('--jobs', type=int, default=2,
        help="parallel processes to build and fill the databases "
        "(measurements always run alone; default: 2)")
    parser.add_argument('--repeat', type=int, default=3,
        help="measurements of each case, each on a fresh copy of the "
        "database; the median is reported (default: 3)")
    parser.add_argument('--keep', action='store_true',
        help="keep the temporary directory and databases")
    parser.add_argument('--json', help="also write the raw results there")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(argv)
    sizes = [int(s) for s in options.sizes.split(',') if s.strip()]
    output = options.output
    if not os.path.isabs(output):
        output = os.path.join(ROOT, output)
    flavours = ['turnus'] + (['core'] if options.core else [])
    notes = []

    names = (['sqlite', 'postgresql'] if options.backend == 'both'
        else [options.backend])
    uri = os.environ.get('TRYTOND_DATABASE_URI', '')
    if 'postgresql' in names and not uri.startswith('postgresql'):
        if options.backend == 'postgresql':
            sys.exit("TRYTOND_DATABASE_URI must point to a PostgreSQL server")
        names.remove('postgresql')
        notes.append("PostgreSQL was not measured: TRYTOND_DATABASE_URI "
            "did not point to a PostgreSQL server.")

    started = dt.datetime.now()
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix='turnus-bench-')
    log(f"work directory {workdir}")
    date = due_date().isoformat()
    backends = [Backend(name, workdir, uri) for name in names]
    measurements = []
    try:
        machine = machine_description(backends)
        for backend in backends:
            log(f"{backend.name}: building template databases")
            templates = {f: backend.db_name('tpl', f) for f in flavours}
            with ThreadPoolExecutor(options.jobs) as executor:
                futures = {f: executor.submit(
                        run_worker, backend, 'template',
                        {'db': templates[f], 'flavour': f},
                        options.timeout * 2) for f in flavours}
                built = {f: futures[f].result() for f in flavours}
            backend.created.extend(templates.values())
            for f, result in built.items():
                if 'crash' in result or 'timeout' in result:
                    sys.exit(f"could not build the template {templates[f]}, "
                        f"see {result['log']}")
                log(f"{backend.name}: template {f} built in "
                    f"{result['seconds']:.0f} s")

            todo = []
            for n in sizes:
                for f in flavours:
                    db = backend.db_name(f, n)
                    backend.copy(templates[f], db)
                    todo.append({'db': db, 'flavour': f, 'n': n,
                            'date': date})
            log(f"{backend.name}: creating the contracts")
            with ThreadPoolExecutor(options.jobs) as executor:
                populated = list(executor.map(
                        lambda spec: run_worker(
                            backend, 'populate', spec, options.timeout * 2),
                        todo))
            for spec, pop in zip(todo, populated):
                measurement = {'backend': backend.name,
                    'flavour': spec['flavour'], 'n': spec['n']}
                measurements.append(measurement)
                if 'crash' in pop or 'timeout' in pop:
                    measurement['result'] = {
                        'skipped': f"data setup failed ({pop['log']})"}
                    continue
                measurement['populate'] = pop['seconds']
                log(f"{backend.name}: {spec['db']} filled in "
                    f"{pop['seconds']:.0f} s; measuring")
                runs = []
                for repeat in range(options.repeat):
                    # Each run on a fresh copy of the filled database
                    run_spec = dict(spec, db=backend.db_name(
                            spec['flavour'], spec['n'], 'run', repeat))
                    backend.copy(spec['db'], run_spec['db'])
                    load = os.getloadavg()[0]
                    result = run_worker(
                        backend, 'measure', run_spec, options.timeout)
                    result['load_before'] = load
                    runs.append(result)
                    if 'seconds' in result:
                        log(f"{backend.name} {spec['flavour']} "
                            f"N={spec['n']} run {repeat + 1}: "
                            f"{result['seconds']:.2f} s, ok={result['ok']} "
                            f"{'; '.join(result['problems'])}")
                    else:
                        log(f"{backend.name} {spec['flavour']} "
                            f"N={spec['n']} run {repeat + 1}: no result")
                    backend.drop(run_spec['db'])
                    if not result.get('ok'):
                        # A failure repeats itself: do not wait for it
                        break
                measurement['runs'] = runs
                measurement['result'] = representative(runs)
    finally:
        if not options.keep:
            for backend in backends:
                backend.drop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")

    total = time.monotonic() - start
    write_report(output, machine, measurements,
        {'date': date, 'notes': notes, 'command': command_line()},
        started, total)
    if options.json:
        with open(options.json, 'w') as fp:
            json.dump({'machine': machine, 'measurements': measurements},
                fp, indent=1, default=str)
    log(f"report written to {output} ({total / 60:.1f} min)")
    # A failure of core is a finding, not an error of the benchmark
    failed = [m for m in measurements
        if m['flavour'] == 'turnus' and not m['result'].get('ok')]
    return 1 if failed else 0


if __name__ == '__main__':
    if len(sys.argv) == 5 and sys.argv[1] == '--worker':
        sys.exit(worker_main(*sys.argv[2:]))
    sys.exit(main())
