# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the nightly dispatch order generation (not a test).

A database with dispatch_order activated alone (company and
``setup_dispatch_data`` of the module's test tools: the service
"Maintenance", the goods "Filter"), N running contracts created in bulk
through the pool, and ``sale.subscription.generate_dispatch_orders(D)``
timed in a cold child on a fresh copy.  Contract i (0-based): dispatch
mode ``key_date`` for even i, ``planning_date`` for odd i; monthly or
quarterly (alternating every 2 contracts) by the wizard
``sale.subscription.setup_dispatch``, lead time ``--lead-days``; one line
(Maintenance, 2 hours), one contract in four also two dispatch lines;
start dates spread over 28 days so that the first night creates one order
per contract; a yearly invoice recurrence (no invoice is due).

Cases: ``first night`` (N orders), ``second run`` (the same date again in
the same process: nothing), ``server pause`` (the first night
``--pause-days`` after D: every key date missed).  After each run the
child checks the key dates against ``relativedelta``, the lines, numbers,
parties and service addresses of the orders::

    python -m tests.benchmark.dispatch [-n 2000] [--backend sqlite]
        [--repeat 3] [--profile] [--write]
    TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\
        python -m tests.benchmark.dispatch --backend postgresql --write

``--profile`` adds one first-night run under cProfile on SQLite (not part
of the figures); ``--write`` replaces the section of the backend and size
(and the profile section) in doc/benchmark_dispatch.md, keeping the rest.
"""
import datetime as dt
import os
import shutil
import sys
import time
from collections import defaultdict

from . import harness as h

OUTPUT = os.path.join('doc', 'benchmark_dispatch.md')
DEFAULT_DATE = '2026-10-01'
# Records created or processed in one call while populating
SLICE = 500
MODES = ['key_date', 'planning_date']
PRESETS = ['monthly', 'quarterly']
SPREAD_DAYS = 28
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


def template(spec):
    "Create the database, activate dispatch_order, company and its data"
    from proteus import config as pconfig

    from trytond.modules.company.tests.tools import create_company
    from trytond.modules.dispatch_order.tests.tools import (
        setup_dispatch_data)

    start = time.monotonic()
    h.init_trytond(spec)
    name = spec['db']
    activated = h.create_database(name, ['dispatch_order'])

    config = pconfig.set_trytond(database=name, config_file=spec['config'])
    create_company(config=config)
    setup_dispatch_data(config=config)
    return {
        'seconds': time.monotonic() - start,
        'recurring_invoice': 'recurring_invoice' in activated,
        'modules': sorted(activated),
        }


def populate(spec):
    "Create N customers and N running contracts with dispatch settings"
    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n, lead_days = spec['db'], spec['n'], spec['lead_days']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Product = pool.get('product.product')
    Service = pool.get('sale.subscription.service')
    Subscription = pool.get('sale.subscription')
    RuleSet = pool.get('sale.subscription.recurrence.rule.set')
    Company = pool.get('company.company')

    with Transaction().start(db, 0, context=context) as transaction:
        company = Company(context['company'])
        service, = Service.search([('product.name', '=', "Maintenance")])
        filter_, = Product.search([('name', '=', "Filter")])
        yearly = RuleSet.find_or_create('yearly', 1)
        settings = [contract_settings(i, date, lead_days) for i in range(n)]

        ids = []
        for offset in range(0, n, SLICE):
            size = min(SLICE, n - offset)
            parties = h.create_parties(
                pool, offset + 1, size, invoice=False)
            values = []
            for i, party in enumerate(parties, offset):
                _, _, dispatch_lines, start_date = settings[i]
                value = h.contract_values(company, party, start_date, [{
                            'service': service.id,
                            'quantity': 2,
                            'unit': service.product.default_uom.id,
                            'start_date': start_date,
                            'description': "Annual maintenance of the heating",
                            }], invoice_recurrence=yearly.id,
                    description=f"Heating {offset + i + 1:05d}")
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
                h.run_wizard(pool, 'sale.subscription.setup_dispatch',
                    sub_ids, {'start': {
                            'preset': preset,
                            'interval': 1,
                            'months': [],
                            'dispatch_mode': mode,
                            'dispatch_lead_days': lead_days,
                            'start_date': None,
                            }})
            transaction.commit()
        configured = time.monotonic()

        h.start_contracts(
            pool, [ids[o:o + SLICE] for o in range(0, n, SLICE)])

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


def measure(spec):
    """Time generate_dispatch_orders(date) and a second run on the same
    date, check the orders after each"""
    db, lead_days = spec['db'], spec['lead_days']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    subscription_module = sys.modules[
        Subscription.generate_dispatch_orders.__module__]
    counter = h.QueryCounter()
    timers = h.Timers()
    timers.wrap(Subscription, '_generate_dispatch_orders_slice', 'slices')
    timers.wrap(Subscription, 'create_dispatch_orders', 'create')

    def run(profiler=None):
        "Like ir.cron: the method in a transaction with the company"
        result = {'rss_before_kib': h.rss_kib()}
        with h.measured(result, counter, timers):
            if profiler:
                profiler.enable()
            error = h.call_in_transaction(
                db, context, Subscription.generate_dispatch_orders, date)
            if profiler:
                profiler.disable()
        if error:
            result['error'] = error
        result['maxrss_kib'] = h.maxrss_kib()
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


# ---------------------------------------------------------------------------
# Driver side


def measure_backend(options, backend, date):
    "Build, fill and measure the databases of a backend"
    built = backend.build(template, {'db': backend.db_name('tpl')},
        options.timeout)
    if built['recurring_invoice']:
        sys.exit("recurring_invoice is activated: dispatch_order must be "
            "activated alone")
    spec = {'db': backend.db_name('filled', options.contracts),
        'n': options.contracts, 'date': date.isoformat(),
        'lead_days': options.lead_days}
    pop = backend.build(populate, spec, options.timeout * 2,
        copy_of=backend.db_name('tpl'))
    log_groups = pop['groups']
    h.log(f"{backend.name}: {options.contracts} contracts; {log_groups}")
    backend.drop(backend.db_name('tpl'))
    dates = {
        'night': date,
        'pause': date + dt.timedelta(days=options.pause_days),
        }
    measurements = [{'backend': backend.name, 'case': case, 'label': label,
            'date': dates[case].isoformat(), 'populate': pop,
            'runs': h.repeat_runs(measure, backend,
                dict(spec, date=dates[case].isoformat()), spec['db'],
                options.repeat, options.timeout, label=label)}
        for case, label in CASES]
    profile = None
    if options.profile and backend.name == 'sqlite':
        path = os.path.join(backend.workdir, 'profile.pstats')
        result, = h.repeat_runs(measure, backend, dict(spec, profile=path),
            spec['db'], 1, options.timeout, label="profile")
        if 'first' in result:
            profile = profile_summary(path, result)
            if options.profile_output:
                shutil.copy(path, options.profile_output)
    backend.drop(spec['db'])
    return measurements, pop, profile


# ---------------------------------------------------------------------------
# Report


def table_rows(measurements, n):
    "The Markdown table of the measurements"
    rows = []
    for m in measurements:
        runs = [r for r in m['runs'] if 'first' in r]
        if not runs:
            rows.append([m['label'], m['date'], n] + [''] * 15
                + ["**crashed**"])
            continue
        r = h.representative(m['runs'])
        if 'first' not in r:
            r = runs[0]
        first, state = r['first'], r['after_first']
        second = r.get('second', {})
        seconds, orders = first['seconds'], state['orders']
        rows.append([m['label'], m['date'], state['contracts'],
                state['due_contracts'], orders, state['order_lines'],
                f"{seconds:.2f}",
                h.spread([x['first']['seconds'] for x in runs]),
                f"{first['cpu_seconds']:.2f}",
                f"{orders / seconds:.1f}" if orders else '',
                f"{first['scan_seconds']:.2f}",
                f"{first['slice_seconds']:.2f}", first['queries'],
                f"{first['queries'] / orders:.1f}" if orders else '',
                f"{first['maxrss_kib'] / 1024:.0f}",
                h.fmt(second.get('seconds')), second.get('created', ''),
                second.get('queries', ''), h.status(r)])
    return h.table(["Case", "Night", "Contracts", "Due", "Orders created",
            "Order lines", "Time (s)", "Range (s)", "CPU (s)", "Orders/s",
            "Scan (s)", "Slices (s)", "Queries", "Queries/order",
            "Peak RSS (MiB)", "2nd run (s)", "2nd run created",
            "2nd run queries", "Result"], rows, 'll' + 'r' * 16 + 'l')


def results_section(session, backend, machine, measurements, pop):
    options = session.options
    lines = [f"## Results: {backend.label}, N = {options.contracts}", ""]
    lines += h.run_header(session)
    add = lines.append
    add(h.machine_line(machine))
    add("")
    groups = ', '.join(f"{c} {g}" for g, c in pop['groups'].items())
    add(f"{options.contracts} running contracts ({groups}; lead time "
        f"{options.lead_days} days; one in four with 2 dispatch lines), "
        f"created in {pop['seconds']:.0f} s. First night "
        f"{measurements[0]['date']}; server pause: first night "
        f"{options.pause_days} days later. Median of {options.repeat} runs, "
        "each in a fresh process on a fresh copy of the filled database "
        "(columns: see \"What is measured\").")
    add("")
    lines += table_rows(measurements, options.contracts)
    add("")
    lines += h.load_lines([r for m in measurements for r in m['runs']])
    for r in [r for m in measurements for r in m['runs']]:
        error = r.get('first', {}).get('error') or {}
        if error or 'crash' in r:
            lines += ["```", error.get('traceback') or r.get('crash', ''),
                "```", ""]
    for note in session.notes:
        lines += [note, ""]
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
    lines = [f"## Profile: {backend.label}, first night, "
        f"N = {options.contracts}", ""]
    add = lines.append
    add(f"One extra first-night run under cProfile (`{command}`), not "
        f"part of the figures above: {profile['orders']} orders in "
        f"{profile['seconds']:.2f} s with the profiler "
        f"({profile['profiled_total']:.2f} s of profiled time), "
        f"{profile['queries']} queries.")
    add("")
    add("Cumulative time of the steps (seconds, share of the run):")
    add("")
    lines += h.table(["Function", "Calls", "Cumulative (s)", "Share"], [
            [e['function'], e['calls'], f"{e['cumtime']:.2f}",
                f"{100 * e['cumtime'] / profile['profiled_total']:.0f} %"]
            for e in profile['cumulative']])
    add("")
    add("Top functions by own time:")
    add("")
    lines += h.table(["Function", "Calls", "Own (s)", "Cumulative (s)"], [
            [f"`{e['function']}`", e['calls'], f"{e['tottime']:.2f}",
                f"{e['cumtime']:.2f}"] for e in profile['top']])
    add("")
    return lines


def main(argv=None):
    parser = h.arguments("Benchmark the nightly dispatch order generation",
        OUTPUT, backend='sqlite', timeout=900)
    parser.add_argument('-n', '--contracts', type=int, default=2000,
        help="number of running contracts (default: 2000)")
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
    options = parser.parse_args(argv)
    date = dt.date.fromisoformat(options.date)
    everything = {}
    with h.Session(options, prefix='bench_dispatch') as session:
        for backend in session.backends:
            machine = h.machine_description(DISTRIBUTIONS, [backend])
            measurements, pop, profile = measure_backend(
                options, backend, date)
            session.notes = list(filter(None, [h.changed_note(machine)]))
            section = results_section(
                session, backend, machine, measurements, pop)
            print('\n'.join(section))
            sections = [(section, ('## Profile', '## Where the time goes'))]
            if profile:
                plines = profile_lines(
                    profile, backend, options, session.command)
                print('\n'.join(plines))
                sections.append((plines, ('## Where the time goes',)))
            for lines, before in sections if options.write else []:
                h.update_section(
                    options.output, lines, before=before, title=TITLE)
            everything[backend.name] = {'machine': machine,
                'populate': pop, 'measurements': measurements,
                'profile': profile}
    session.write_json(everything)
    return int(not all(r.get('ok') for data in everything.values()
            for m in data['measurements'] for r in m['runs']))


if __name__ == '__main__':
    sys.exit(main())
