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
``--profile`` adds one first-night run under cProfile on SQLite (not
part of the figures) and prints its top functions.  ``--write`` replaces
the section of the backend and size (e.g. "## Results: SQLite, N = 2000")
and, with ``--profile``, the profile section in the output file, keeping
the rest.

The plumbing (worker processes, database copies, query counter, machine
and load description, Markdown sections) is tests/benchmark_common.py,
shared with tests/benchmark_nightly.py.
"""
import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict

from benchmark_common import (
    ROOT, Backend, QueryCounter, Timers, call_in_transaction, code_version,
    command_line, cpu_seconds, create_database, fmt, init_trytond, log,
    machine_description, maxrss_kib, modules_fingerprint, other_cores,
    representative, rss_kib, run_measured, run_script, run_worker,
    update_section, worker_pool)

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
TITLE = "# Benchmark of the nightly dispatch order generation"
DISTRIBUTIONS = ['trytond', 'trytond_sale_subscription', 'proteus',
    'python-sql', 'python-dateutil']
CASES = [
    ('night', "first night"),
    ('pause', "server pause"),
    ]


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


def worker_template(spec):
    "Create the database, activate dispatch_order, company and its data"
    from proteus import config as pconfig

    from trytond.modules.company.tests.tools import create_company
    from trytond.modules.dispatch_order.tests.tools import (
        setup_dispatch_data)

    start = time.monotonic()
    init_trytond(spec)
    name = spec['db']
    activated = create_database(name, ['dispatch_order'])

    config = pconfig.set_trytond(database=name, config_file=spec['config'])
    create_company(config=config)
    setup_dispatch_data(config=config)
    return {
        'seconds': time.monotonic() - start,
        'recurring_invoice': 'recurring_invoice' in activated,
        'modules': sorted(activated),
        }


def worker_populate(spec):
    "Create N customers and N running contracts with dispatch settings"
    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n, lead_days = spec['db'], spec['n'], spec['lead_days']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = worker_pool(spec)
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

    db, lead_days = spec['db'], spec['lead_days']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    subscription_module = sys.modules[
        Subscription.generate_dispatch_orders.__module__]
    counter = QueryCounter()
    counter.install(backend.name)
    timers = Timers()
    timers.wrap_classmethod(
        Subscription, '_generate_dispatch_orders_slice', 'slices')
    timers.wrap_classmethod(Subscription, 'create_dispatch_orders', 'create')

    def run(profiler=None):
        "Like ir.cron: the method in a transaction with the company"
        timers.reset()
        result = {}
        cpu = cpu_seconds()
        queries = counter.count
        rss = rss_kib()
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        error = call_in_transaction(
            db, context, Subscription.generate_dispatch_orders, date)
        if profiler:
            profiler.disable()
        if error:
            result['error'] = error
        result['seconds'] = time.perf_counter() - start
        result['cpu_seconds'] = cpu_seconds() - cpu
        result['queries'] = counter.count - queries
        result['rss_before_kib'] = rss
        result['maxrss_kib'] = maxrss_kib()
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


# ---------------------------------------------------------------------------
# Driver side


def measure_backend(options, backend, date):
    "Build, fill and measure the databases of a backend"
    template = backend.db_name('tpl')
    built = run_worker(SCRIPT, backend, 'template', {'db': template},
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
    pop = run_worker(SCRIPT, backend, 'populate', spec, options.timeout * 2)
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
            result = run_measured(
                SCRIPT, backend, 'measure', run_spec, options.timeout)
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
        result = run_worker(
            SCRIPT, backend, 'measure', run_spec, options.timeout)
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
                    fmt(second.get('seconds')),
                    str(second.get('created', '')),
                    str(second.get('queries', '')),
                    result]) + " |")
    return rows


def results_heading(backend_name, options):
    return (f"## Results: {BACKEND_LABELS[backend_name]}, "
        f"N = {options.contracts}")


def results_section(backend, machine, measurements, pop, options,
        started, total, command):
    n = options.contracts
    lines = [results_heading(backend.name, options), ""]
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
    groups = ', '.join(f"{c} {g}" for g, c in pop['groups'].items())
    add(f"{n} running contracts ({groups}; lead time {options.lead_days} "
        f"days; one in four with 2 dispatch lines), created in "
        f"{pop['seconds']:.0f} s. First night {measurements[0]['date']}; "
        f"server pause: first night {options.pause_days} days later. "
        f"Median of {options.repeat} runs, each in a fresh process on a "
        "fresh copy of the filled database (columns: see \"What is "
        "measured\").")
    add("")
    lines.extend(table_rows(measurements, n))
    add("")
    runs = [r for m in measurements for r in m['runs']
        if 'window_seconds' in r]
    if runs:
        loads = [r['load_before'] for r in runs]
        other = [other_cores(r) for r in runs]
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


def profile_heading(backend_name, options):
    return (f"## Profile: {BACKEND_LABELS[backend_name]}, first night, "
        f"N = {options.contracts}")


def profile_lines(profile, backend, options, command):
    lines = [profile_heading(backend, options), ""]
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
    command = command_line(SCRIPT)
    workdir = tempfile.mkdtemp(prefix='turnus-bench-dispatch-')
    log(f"work directory {workdir}")
    everything = {}
    status = 0
    try:
        for name in names:
            started = dt.datetime.now()
            start = time.monotonic()
            backend = Backend(name, workdir, uri, prefix='bench_dispatch')
            try:
                machine = machine_description(DISTRIBUTIONS)
                machine['backend'] = backend.version()
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
                update_section(output, '\n'.join(section),
                    before=('## Profile', '## Where the time goes'),
                    title=TITLE)
                if profile:
                    update_section(output, '\n'.join(plines),
                        before=('## Where the time goes',), title=TITLE)
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
    run_script(main, WORKERS)
