# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the lifecycle part of the nightly run (not a test).

The template of the flavour ``turnus`` of contracts.py (recurring_invoice,
company, chart, tax, one service), then per size N a copy with N running
contracts (one customer and one line each, a monthly recurrence) of
``term_months=12, renewal_months=12, notice_period=3,
notice_unit='month'``, created in bulk through the pool in slices, quoted
and run (running records the initial term: ``start_terms``).  Their start
dates (a seeded random draw, see ``start_dates``) make about half of the
terms end on or before the measured date D (a quarter of the contracts one
term to renew, a quarter two or three terms), and about a quarter of the
contracts have their notice deadline, after the renewal, within the
reminder days (30) of D.  Two users of group Recurring Invoicing with the
company besides admin.  Each line is set to consume on D (for core's
path).

Then, each in a cold child on a fresh copy of the filled database, with
the company in the context, each call in its own transaction as
``ir.cron`` runs it:

* ``turnus``: ``sale.subscription.renew_terms(D)`` (it renews in slices
  of 100, a transaction each), then ``remind_notice_deadlines(D)``, as the
  nightly ``generate_recurring_invoices`` calls them;
* ``core``: core sale_subscription's nightly
  ``sale.subscription.line.generate_consumption(D)`` on the same
  contracts: one consumption per line for D (core has no renewal; this
  core path touches every running contract each night).

Checked after each (a failed check makes the run **WRONG**): the renewal
terms created equal those computed in Python from the start dates with
``term_end`` of lifecycle.py, every contract's term end is the expected
one (after D) and its notice deadline the one of that term, the
notifications are the contracts due times the users of the group, once
per contract and user, every due contract has ``notice_reminded`` set;
core: one consumption per line dated D.  A second night on the same D
must create nothing.  The order of the paths alternates between the
runs.  It replaces its section of doc/benchmark.md::

    python -m tests.benchmark.lifecycle [--sizes 1000,10000]
        [--backend sqlite|postgresql|both] [--repeat 3] [--json FILE]
    python -m tests.benchmark.lifecycle --merge A.json B.json
"""
import contextlib
import datetime as dt
import json
import os
import random
import sys
import time
import types
from collections import Counter

from . import contracts
from . import harness as h
from .nightly import BEFORE, OUTPUT, TITLE

HEADING = "## Renewal and notice reminders"
RERUN = "## How to re-run"
DISTRIBUTIONS = ['trytond', 'trytond_sale_subscription', 'proteus',
    'python-sql', 'python-dateutil']
# Contracts created, quoted and run per call while populating (SQLite
# fails on saving 1,000 at once)
SLICE = 500
TERM_MONTHS = 12
RENEWAL_MONTHS = 12
NOTICE_PERIOD = 3
NOTICE_UNIT = 'month'
# Users of group Recurring Invoicing created besides admin
USERS = 2
SEED = 20261
# Terms to renew on D and their share of the contracts
RENEWALS = [(0, 50), (1, 25), (2, 15), (3, 10)]
# Share of the contracts whose notice deadline comes within the reminder
# days after the renewal
DUE_SHARE = 0.25
LABELS = {
    'turnus': "Turnus `renew_terms` + `remind_notice_deadlines`",
    'core': "core `sale.subscription.line.generate_consumption`",
    }


def start_dates(n, date, days=30):
    """The start dates of n contracts for date: for each a number of terms
    to renew (RENEWALS) and the end of its current term after the renewal,
    in a quarter of the contracts 3 months + 0 to days - 1 days after date
    (notice deadline within the reminder days), else 1 to 360 days after
    date outside that window; the start is that many terms before"""
    from dateutil.relativedelta import relativedelta
    rng = random.Random(SEED)
    counts = [c for c, share in RENEWALS for _ in range(share)]
    window = (date + relativedelta(months=NOTICE_PERIOD)
        - dt.timedelta(days=5),
        date + relativedelta(months=NOTICE_PERIOD)
        + dt.timedelta(days=days + 5))
    starts = []
    for _ in range(n):
        renewals = rng.choice(counts)
        if rng.random() < DUE_SHARE:
            end = (date + relativedelta(months=NOTICE_PERIOD)
                + dt.timedelta(days=rng.randrange(days)))
        else:
            while True:
                end = date + dt.timedelta(days=rng.randint(1, 360))
                if not window[0] <= end <= window[1]:
                    break
        starts.append(end + dt.timedelta(days=1)
            - relativedelta(months=TERM_MONTHS + renewals * RENEWAL_MONTHS))
    return starts


def expected_terms(start, date):
    """The end of the current term of a contract started on start after
    the renewal on date, and the number of renewal terms, with the
    functions of lifecycle.py"""
    from trytond.modules.recurring_invoice.lifecycle import term_end
    end, renewals = term_end(start, TERM_MONTHS), 0
    while end <= date:
        end = term_end(end + dt.timedelta(days=1), RENEWAL_MONTHS)
        renewals += 1
    return end, renewals


# ---------------------------------------------------------------------------
# Child steps


class Statements:
    """The SQL statements sent, by kind (verb and table) with the wall time
    spent in the cursor's execute: installed after harness.QueryCounter,
    on the same cursor class"""

    def __init__(self):
        import re

        from trytond import backend
        if backend.name == 'sqlite':
            from trytond.backend.sqlite.database import SQLiteCursor as cls
        else:
            from trytond.backend.postgresql.database import (
                LoggingCursor as cls)
        self.count = Counter()
        self.seconds = Counter()
        verb = re.compile(r'\s*(\w+)')
        table = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"(\w+)"')
        original = cls.execute
        statements = self

        def execute(cursor, *args, **kwargs):
            sql = str(args[0])
            key = ' '.join(m.group(1) if m else '?'
                for m in [verb.match(sql), table.search(sql)])
            start = time.perf_counter()
            try:
                return original(cursor, *args, **kwargs)
            finally:
                statements.count[key] += 1
                statements.seconds[key] += time.perf_counter() - start
        cls.execute = execute

    @contextlib.contextmanager
    def measured(self, result):
        "Fill result['statements'] with those of the with block"
        count, seconds = Counter(self.count), Counter(self.seconds)
        try:
            yield
        finally:
            result['statements'] = {key: [self.count[key] - count[key],
                    self.seconds[key] - seconds[key]]
                for key in self.count if self.count[key] - count[key]}


def populate(spec):
    """Create N customers and N running contracts with a term (start dates
    of start_dates), the users of the group, every line due to consume on
    spec['date']"""
    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n = spec['db'], spec['n']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Line = pool.get('sale.subscription.line')
    ModelData = pool.get('ir.model.data')
    Product = pool.get('product.product')
    RuleSet = pool.get('sale.subscription.recurrence.rule.set')
    Subscription = pool.get('sale.subscription')
    Term = pool.get('sale.subscription.term')
    User = pool.get('res.user')

    with Transaction().start(db, 0, context=context) as transaction:
        company = pool.get('company.company')(context['company'])
        service, = pool.get('sale.subscription.service').search([])
        product = service.product
        with Transaction().set_context(
                currency=company.currency.id, sale_date=date,
                uom=product.sale_uom.id):
            unit_price = Product.get_sale_price([product], 1)[product.id]
        monthly = RuleSet.find_or_create('monthly', 1)
        days = pool.get('sale.configuration')(1).notice_reminder_days
        starts = start_dates(n, date, days)
        transaction.commit()

        ids = []
        for offset in range(0, n, SLICE):
            parties = h.create_parties(pool, offset + 1,
                min(SLICE, n - offset))
            values = [h.contract_values(company, party, begin, [{
                            'service': service.id,
                            'quantity': 1,
                            'unit': product.sale_uom.id,
                            'unit_price': unit_price,
                            'start_date': begin,
                            'consumption_recurrence': monthly.id,
                            }],
                    invoice_recurrence=monthly.id,
                    term_months=TERM_MONTHS,
                    renewal_months=RENEWAL_MONTHS,
                    notice_period=NOTICE_PERIOD,
                    notice_unit=NOTICE_UNIT)
                for party, begin in zip(parties, starts[offset:])]
            ids.extend(s.id for s in Subscription.create(values))
            transaction.commit()
        slices = [ids[o:o + SLICE] for o in range(0, n, SLICE)]
        # Running records the initial term (start_terms)
        h.start_contracts(pool, slices)

        # Core's path: every line consumes on date
        line_ids = [l.id for l in Line.search([], order=[('id', 'ASC')])]
        for offset in range(0, len(line_ids), SLICE):
            Line.write(Line.browse(line_ids[offset:offset + SLICE]),
                {'next_consumption_date': date})
        transaction.commit()

        group = ModelData.get_id(
            'recurring_invoice', 'group_recurring_invoicing')
        User.create([{
                    'name': f"Invoicing {i}",
                    'login': f'invoicing{i}',
                    'groups': [('add', [group])],
                    'companies': [('add', [company.id])],
                    'company': company.id,
                    } for i in range(1, USERS + 1)])
        transaction.commit()

        running = Subscription.search_count([('state', '=', 'running')])
        initial = Term.search_count([('kind', '=', 'initial')])
        with_term = Subscription.search_count([
                ('state', '=', 'running'),
                ('term_end', '!=', None),
                ('notice_deadline', '!=', None),
                ])
        due_lines = Line.search_count([
                ('next_consumption_date', '=', date)])
        state = _contracts_state(pool, date)
    if running != n or initial != n or with_term != n or due_lines != n:
        raise AssertionError(f"{running} running contracts, {initial} "
            f"initial terms, {with_term} with term end and deadline, "
            f"{due_lines} lines consuming on {date}, expected {n}")
    return {'seconds': time.monotonic() - start, 'running': running,
        'to_renew': state['to_renew'], 'renewals': state['renewals'],
        'due': len(state['due']), 'users': len(state['users']),
        'by_renewals': state['by_renewals']}


def _users(pool, company):
    "The users group Recurring Invoicing notifies for company"
    Group = pool.get('res.group')
    ModelData = pool.get('ir.model.data')
    User = pool.get('res.user')
    group = Group(ModelData.get_id(
            'recurring_invoice', 'group_recurring_invoicing'))
    return [u.id for u in User.search([('groups', '=', group.id)])
        if not u.companies or company in map(int, u.companies)]


def _contracts_state(pool, date):
    """What the night for date must do, computed in Python from the start
    dates: the expected term end per contract, the contracts to renew, the
    renewal terms, the contracts whose notice deadline is due; and the
    users to notify"""
    from trytond.modules.recurring_invoice.lifecycle import notice_deadline
    from trytond.transaction import Transaction
    Configuration = pool.get('sale.configuration')
    Subscription = pool.get('sale.subscription')
    days = Configuration(1).notice_reminder_days or 0
    expected, renewals, due = {}, 0, []
    by_renewals = Counter()
    for subscription in Subscription.search(
            [('state', '=', 'running')], order=[('id', 'ASC')]):
        end, count = expected_terms(subscription.start_date, date)
        expected[subscription.id] = end
        renewals += count
        by_renewals[count] += 1
        deadline = notice_deadline(end, NOTICE_PERIOD, NOTICE_UNIT)
        if date <= deadline <= date + dt.timedelta(days=days):
            due.append(subscription.id)
    return {'expected': expected, 'to_renew': sum(
            v for k, v in by_renewals.items() if k),
        'renewals': renewals, 'due': due, 'days': days,
        'by_renewals': {str(k): v for k, v in sorted(by_renewals.items())},
        'users': _users(pool, Transaction().context['company'])}


def _lifecycle_state(pool, date):
    "What the database holds of terms, deadlines and notifications"
    Notification = pool.get('res.notification')
    Subscription = pool.get('sale.subscription')
    Term = pool.get('sale.subscription.term')
    subscriptions = Subscription.search(
        [('state', '=', 'running')], order=[('id', 'ASC')])
    notifications = Counter()
    for notification in Notification.search([]):
        notifications[notification.user.id] += 1
    return {
        'renewal_terms': Term.search_count([('kind', '=', 'renewal')]),
        'renewed': len({t.subscription.id for t in Term.search(
                        [('kind', '=', 'renewal')])}),
        'term_end': {s.id: s.term_end for s in subscriptions},
        'deadline': {s.id: s.notice_deadline for s in subscriptions},
        'reminded': {s.id: s.notice_reminded for s in subscriptions
            if s.notice_reminded},
        'notifications': sum(notifications.values()),
        'by_user': dict(notifications),
        }


def _lifecycle_problems(state, expected, date):
    "The differences between the database's state and the expected one"
    from trytond.modules.recurring_invoice.lifecycle import notice_deadline
    problems = []
    due, users = expected['due'], expected['users']
    if state['renewal_terms'] != expected['renewals']:
        problems.append(f"{state['renewal_terms']} renewal terms, expected "
            f"{expected['renewals']}")
    if state['renewed'] != expected['to_renew']:
        problems.append(f"{state['renewed']} contracts renewed, expected "
            f"{expected['to_renew']}")
    wrong = sum(state['term_end'].get(i) != end
        for i, end in expected['expected'].items())
    if wrong:
        problems.append(f"{wrong} contracts with another term end")
    ended = sum(not end or end <= date for end in state['term_end'].values())
    if ended:
        problems.append(f"{ended} contracts with their term ending on or "
            f"before {date}")
    deadlines = sum(state['deadline'][i] != notice_deadline(
            end, NOTICE_PERIOD, NOTICE_UNIT)
        for i, end in state['term_end'].items() if end)
    if deadlines:
        problems.append(f"{deadlines} contracts with another notice "
            "deadline than that of their term")
    if state['notifications'] != len(due) * len(users):
        problems.append(f"{state['notifications']} notifications, expected "
            f"{len(due)} due × {len(users)} users = {len(due) * len(users)}")
    if state['by_user'] and set(state['by_user']) != set(users):
        problems.append(f"notifications of users {sorted(state['by_user'])}"
            f", expected {sorted(users)}")
    if any(c != len(due) for c in state['by_user'].values()):
        problems.append(f"notifications per user {state['by_user']}, "
            f"expected {len(due)} each")
    reminded = state['reminded']
    if set(reminded) != set(due) or any(
            reminded[i] != state['deadline'][i] for i in reminded):
        problems.append(f"{len(reminded)} contracts reminded, expected the "
            f"{len(due)} due")
    return problems


def _wrap_write(timers, Subscription):
    """Time under 'writes' the write of the class that lifecycle.py's
    super().write calls (the writes of term_end, notice_deadline and
    notice_reminded), called with the pool's class"""
    mro = Subscription.__mro__
    module = Subscription.renew_terms.__module__
    index = next(i for i, klass in enumerate(mro)
        if klass.__module__ == module and '_renew_slice' in klass.__dict__)
    parent = next(klass for klass in mro[index + 1:]
        if 'write' in klass.__dict__)
    timed = timers._timed('writes', parent.__dict__['write'].__func__)
    parent.write = classmethod(timed)


def turnus(spec):
    """The lifecycle part of the night for spec['date']: renew_terms, then
    remind_notice_deadlines, each in a transaction as ir.cron does; then
    checked, and a second night"""
    from trytond.transaction import Transaction

    db, date = spec['db'], dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    counter = h.QueryCounter()
    statements = Statements()
    timers = h.Timers()
    timers.wrap(Subscription, '_renew_slice', 'renew slices')
    timers.wrap(pool.get('sale.subscription.term'), 'save', 'terms saved')
    timers.wrap(Subscription, 'update_notice_deadlines', 'notice deadlines')
    timers.wrap(pool.get('res.notification'), 'save', 'notifications saved')
    timers.wrap(sys.modules[Subscription.renew_terms.__module__], 'gettext',
        'gettext', 'function')
    _wrap_write(timers, Subscription)
    with Transaction().start(db, 0, context=context, readonly=True):
        expected = _contracts_state(pool, date)
        notifications = pool.get('res.notification').search_count([])
    if notifications:
        raise AssertionError(f"{notifications} notifications before")

    def night():
        result = {'steps': {}, 'error': None}
        with h.measured(result, counter):
            for name in ['renew_terms', 'remind_notice_deadlines']:
                step = result['steps'][name] = {}
                with h.measured(step, counter, timers), \
                        statements.measured(step):
                    step['error'] = h.call_in_transaction(db, context,
                        getattr(Subscription, name), date)
                if step['error'] and not result['error']:
                    result['error'] = dict(step['error'], step=name)
        return result

    rss_before = h.rss_kib()
    result = {'first': night(), 'rss_before_kib': rss_before,
        'maxrss_kib': h.maxrss_kib()}
    problems = result['problems'] = []
    if result['first']['error']:
        problems.append(f"{result['first']['error']['step']} raised "
            f"{result['first']['error']['type']}")
    with Transaction().start(db, 0, context=context, readonly=True):
        first = _lifecycle_state(pool, date)
    problems += _lifecycle_problems(first, expected, date)
    result['second'] = night()
    with Transaction().start(db, 0, context=context, readonly=True):
        second = _lifecycle_state(pool, date)
    if result['second']['error']:
        problems.append(f"second night: {result['second']['error']['step']}"
            f" raised {result['second']['error']['type']}")
    for key in ['renewal_terms', 'notifications', 'term_end', 'reminded']:
        if second[key] != first[key]:
            problems.append(f"the second night changed {key}")
    result['created'] = {'renewal_terms': first['renewal_terms'],
        'renewed': first['renewed'], 'notifications': first['notifications'],
        'second_terms': second['renewal_terms'] - first['renewal_terms'],
        'second_notifications': (
            second['notifications'] - first['notifications'])}
    result['expected'] = {'to_renew': expected['to_renew'],
        'renewals': expected['renewals'], 'due': len(expected['due']),
        'users': len(expected['users']), 'days': expected['days'],
        'by_renewals': expected['by_renewals']}
    return result


def core(spec):
    """Core's nightly generate_consumption for spec['date'] in a
    transaction; then checked (one consumption per line), and a second
    night"""
    from trytond import backend
    from trytond.transaction import Transaction

    db, n, date = spec['db'], spec['n'], dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Consumption = pool.get('sale.subscription.line.consumption')
    Line = pool.get('sale.subscription.line')
    counter = h.QueryCounter()
    statements = Statements()
    timers = h.Timers()
    timers.wrap(Consumption, 'save', 'consumptions saved')
    timers.wrap(Line, 'save', 'lines saved')

    def state():
        with Transaction().start(db, 0, context=context, readonly=True):
            return {
                'consumptions': Consumption.search_count([]),
                'on_date': Consumption.search_count([('date', '=', date)]),
                'lines': len({c.line.id for c in Consumption.search(
                                [('date', '=', date)])}),
                'due': Line.search_count([
                        ('next_consumption_date', '<=', date)]),
                }

    def night():
        result = {}
        with h.measured(result, counter, timers), \
                statements.measured(result):
            result['error'] = h.call_in_transaction(
                db, context, Line.generate_consumption, date)
        return result

    before = state()
    rss_before = h.rss_kib()
    result = {'first': night(), 'rss_before_kib': rss_before,
        'maxrss_kib': h.maxrss_kib()}
    problems = result['problems'] = []
    if result['first']['error']:
        problems.append(
            f"generate_consumption raised {result['first']['error']['type']}")
    first = state()
    created = first['consumptions'] - before['consumptions']
    if before['due'] != n:
        problems.append(f"{before['due']} lines due before, expected {n}")
    if created != n or first['on_date'] != n or first['lines'] != n:
        problems.append(f"{created} consumptions created for "
            f"{first['lines']} lines, expected one for each of {n}")
    if first['due']:
        problems.append(f"{first['due']} lines still due")
    result['second'] = night()
    second = state()
    if result['second']['error']:
        problems.append("second night: generate_consumption raised "
            f"{result['second']['error']['type']}")
    again = second['consumptions'] - first['consumptions']
    if again:
        with Transaction().start(db, 0, context=context, readonly=True):
            ahead = Consumption.search_count([('date', '>', date)])
        if backend.name == 'sqlite' and again == ahead == n:
            # Core's domain of next_consumption_date_delayed adds the delay
            # (a number of seconds on SQLite) to the date column: SQLite
            # compares the number with the date's text, always smaller
            result['consumed_ahead'] = ahead
        else:
            problems.append(f"the second night created {again} "
                f"consumptions ({ahead} after {date})")
    result['created'] = {'consumptions': created,
        'second_consumptions': again}
    return result


STEPS = {'turnus': turnus, 'core': core}


# ---------------------------------------------------------------------------
# Driver


def measure_date():
    "The night measured: today, as the cron runs it"
    return dt.date.today()


def run_backend(options, backend):
    """Build the template, then per size a filled copy and the runs of
    both paths on fresh copies of it, the order alternating"""
    measurements = []
    date = options.date.isoformat()
    template = {'db': backend.db_name('tpl', 'lifecycle'),
        'flavour': 'turnus', 'date': date}
    backend.build(contracts.template, template, options.timeout)
    for n in options.sizes:
        db = backend.db_name('lc', n)
        pop = backend.build(populate, dict(template, db=db, n=n),
            options.timeout * 2, copy_of=template['db'])
        h.log(f"{backend.name} N={n}: {pop['to_renew']} contracts to renew "
            f"({pop['renewals']} terms), {pop['due']} due × "
            f"{pop['users']} users")
        runs = {'turnus': [], 'core': []}
        for index in range(options.repeat):
            order = ['turnus', 'core'] if index % 2 == 0 else [
                'core', 'turnus']
            for path in order:
                spec = {'db': f"{db}_{path[0]}{index}", 'n': n, 'date': date}
                backend.copy(db, spec['db'])
                result = h.run_measured(
                    STEPS[path], backend, spec, options.timeout)
                backend.drop(spec['db'])
                if 'crash' in result or 'timeout' in result:
                    result.update(ok=False, problems=['no result'])
                else:
                    result['ok'] = not result['problems']
                result['order'] = order.index(path)
                runs[path].append(result)
                seconds = result.get('first', {}).get('seconds')
                h.log(f"{backend.name} {path} N={n} run {index + 1}: "
                    f"{h.fmt(seconds)} s ok={result['ok']} "
                    + '; '.join(result['problems'])
                    + (f" ({result['log']})" if not result['ok'] else ''))
            if not all(r[-1]['ok'] for r in runs.values()):
                break
        backend.drop(db)
        measurements.append({'backend': backend.name, 'n': n, 'date': date,
                'populate': pop, 'runs': runs,
                'result': {path: h.representative(
                        r, key=lambda r: r['first']['seconds'])
                    for path, r in runs.items()}})
    return measurements


def _median(runs, get):
    values = []
    for run in runs:
        try:
            values.append(get(run))
        except (KeyError, TypeError):
            pass
    return h.median(values)


def _step(run, name):
    return run['first']['steps'][name]


def _summary(m):
    "The medians of a measurement, by path"
    summary = {}
    for path, runs in m['runs'].items():
        done = [r for r in runs if 'first' in r]
        if not done:
            continue
        s = summary[path] = {
            'seconds': _median(done, lambda r: r['first']['seconds']),
            'cpu': _median(done, lambda r: r['first']['cpu_seconds']),
            'queries': _median(done, lambda r: r['first']['queries']),
            'second': _median(done, lambda r: r['second']['seconds']),
            'second_queries': _median(
                done, lambda r: r['second']['queries']),
            'maxrss': _median(done, lambda r: r['maxrss_kib']),
            'growth': _median(
                done, lambda r: r['maxrss_kib'] - r['rss_before_kib']),
            'times': [r['first']['seconds'] for r in done],
            'ok': all(r.get('ok') for r in runs),
            }
        if path == 'turnus':
            for name in ['renew_terms', 'remind_notice_deadlines']:
                s[name] = _median(done, lambda r: _step(r, name)['seconds'])
                s[name + '_queries'] = _median(
                    done, lambda r: _step(r, name)['queries'])
            s['timers'] = {name: {key: _median(done, lambda r: _step(
                            r, name)['timers']['seconds'].get(key, 0))
                    for key in _step(done[0], name)['timers']['seconds']}
                for name in ['renew_terms', 'remind_notice_deadlines']}
    return summary


def _created(result):
    created = result.get('created') or {}
    if 'consumptions' in created:
        return f"{created['consumptions']:,} consumptions"
    if 'renewal_terms' in created:
        return (f"{created['renewal_terms']:,} renewal terms of "
            f"{created['renewed']:,} contracts, {created['notifications']:,} "
            "notifications")
    return ''


def section(session, machine, measurements):
    "The lines of the section"
    lines = [HEADING, ""] + h.run_header(session)
    add = lines.append
    add(h.machine_line(machine))
    add("")
    dates = sorted({m['date'] for m in measurements})
    add("What is measured: the lifecycle part of the nightly run of "
        "modules/recurring_invoice/lifecycle.py, as "
        "`generate_recurring_invoices` calls it before and after the "
        "invoicing, for the night D = " + ", ".join(dates) + ": "
        "`sale.subscription.renew_terms(D)` (searches the running "
        "contracts whose term ends on or before D with `renewal_months > "
        "0` and renews them term after term up to D in slices of 100, a "
        "transaction each with the slice's records locked: "
        "`sale.subscription.term` records of kind renewal, `term_end` and "
        "`notice_deadline` moved), then "
        "`remind_notice_deadlines(D)` (one `res.notification` per contract "
        "whose notice deadline is within "
        "`sale.configuration.notice_reminder_days`, 30, of D, for each "
        "user of group Recurring Invoicing; `notice_reminded` set), each "
        "call in a transaction as `ir.cron` runs it, user root with the "
        "company in the context, in a cold process (pool loaded, not "
        "timed) on a fresh copy of the filled database.")
    add("")
    add("Populated (contracts created in bulk through the pool in slices "
        f"of {SLICE}, quoted and run, not timed): N running contracts "
        "(one customer and one line each, monthly recurrence) with "
        f"`term_months={TERM_MONTHS}, renewal_months={RENEWAL_MONTHS}, "
        f"notice_period={NOTICE_PERIOD}, notice_unit='{NOTICE_UNIT}'`; "
        "running them records the initial term (`start_terms`). The start "
        "dates are a seeded random draw: per contract the terms to renew "
        "on D (none for 50 %, one for 25 %, two for 15 %, three for 10 %: "
        "started 1 to 4 years before the end of the current term) and the "
        "end of its current term after the renewal (for 25 % three months "
        "+ 0 to 29 days after D, so that the notice deadline falls within "
        "the 30 reminder days, else 1 to 360 days after D outside that "
        f"window). Users of the group: admin and {USERS} users with the "
        "company, so every due contract makes "
        f"{USERS + 1} notifications. The exact counts per N are in the "
        "list below the table.")
    add("")
    add("Core path for the ratio: core Tryton has no renewal, so the "
        "comparison is core sale_subscription's nightly "
        "`sale.subscription.line.generate_consumption(D)` on the same "
        "contracts, every line set to consume on D (`next_consumption_date"
        " = D`, one consumption per line for the night, the next date "
        "moved a month on): a core path of the same shape (one search, "
        "per contract a little Python and new records, bulk create and "
        "write) that touches every running contract each night. Both paths "
        "run in each run on their own fresh copy, the order alternating "
        "(Turnus first in the odd-numbered runs).")
    add("")
    add("Checked after each night (a failed check makes the run "
        "**WRONG**): the renewal terms created equal those computed in "
        "Python from the start dates with `term_end` of lifecycle.py, so "
        "do the contracts renewed; every contract's term end is the "
        "expected one, after D, and its notice deadline that of its term; "
        "notifications = contracts due × users, as many per user, and "
        "`notice_reminded` set on exactly the due contracts; core: one "
        "consumption dated D per line, none due after. A second night on "
        "the same D (the next run of the cron) must create nothing. Time "
        "is the wall time of the calls, the median of the runs; CPU the "
        "measuring process's (not the database server's); queries the "
        "SQL statements it sent; peak RSS its ru_maxrss after the first "
        "night (pool loaded included), growth that minus its RSS just "
        "before.")
    add("")
    rows, notes = [], []
    for m in measurements:
        summary = _summary(m)
        n = m['n']
        ratio = None
        if 'turnus' in summary and 'core' in summary:
            ratio = summary['turnus']['seconds'] / summary['core']['seconds']
        for path in ['turnus', 'core']:
            r = m['result'].get(path) or {}
            s = summary.get(path)
            label = BACKENDS.get(m['backend'], m['backend'])
            if not s:
                rows.append([label, f"{n:,}", LABELS[path], "**" + (
                            f"timeout (> {r['timeout']} s)"
                            if 'timeout' in r else 'crashed') + "**"])
                continue
            rows.append([label, f"{n:,}", LABELS[path], h.status(r, 4),
                    f"{s['seconds']:.2f}", h.spread(s['times']),
                    f"{s['seconds'] / n * 1000:.2f}",
                    h.fmt(s.get('renew_terms')),
                    h.fmt(s.get('remind_notice_deadlines')),
                    f"{s['cpu']:.2f}", f"{s['queries']:.0f}",
                    f"{s['queries'] / n:.2f}",
                    f"{h.mib(s['maxrss']):.0f}",
                    f"{max(h.mib(s['growth']) or 0, 0):.0f}", _created(r),
                    f"{s['second']:.2f} ({s['second_queries']:.0f} q)"
                    + (f", {r['consumed_ahead']:,} consumed ahead (core "
                        "defect on SQLite, below)"
                        if r.get('consumed_ahead') else ''),
                    f"{ratio:.2f}×" if ratio and path == 'turnus' else ''])
        notes.append((m, summary))
    lines += h.table(["Backend", "N", "Path", "Result", "Time (s)",
            "Range (s)", "s / 1,000 contracts", "renew_terms (s)",
            "remind_notice_deadlines (s)", "CPU (s)", "Queries",
            "Queries / contract", "Peak RSS (MiB)", "RSS growth (MiB)",
            "Created", "2nd night (s)", "Ours / core"], rows,
        'lrllrrrrrrrrrrlrr')
    add("")
    for m, summary in notes:
        lines += _details(m, summary)
    add("")
    add("### Observations")
    add("")
    lines += observations(notes)
    add("")
    lines += h.load_lines([run for m in measurements
            for runs in m['runs'].values() for run in runs])
    for note in session.notes:
        lines += [note, ""]
    lines += ["Re-run only this section (it replaces itself in this file "
        "and keeps the rest):", "", "```",
        "TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\",
        "    python -m tests.benchmark.lifecycle --sizes 1000,10000 "
        "--backend both", "```", "",
        "`--repeat` sets the runs per case (default 3), `--date` the night "
        "D (default today), `--timeout` bounds each child (default 1800 s); "
        "`--json` writes the raw results, `--merge A.json B.json` writes "
        "the section from such files instead of measuring.", ""]
    return lines


BACKENDS = h.BACKEND_LABELS


def _statements(step, top=3):
    "The kinds of statements of most time in a step"
    items = sorted((step or {}).get('statements', {}).items(),
        key=lambda i: -i[1][1])[:top]
    return ", ".join(f"{key} {count:,}× {seconds:.2f} s"
        for key, (count, seconds) in items)


def _details(m, summary):
    "The line of a measurement: its data and where its time goes"
    pop = m['populate']
    t = summary.get('turnus')
    text = (f"- {BACKENDS.get(m['backend'], m['backend'])}, N = "
        f"{m['n']:,}: {pop['to_renew']:,} contracts to renew "
        f"({pop['renewals']:,} terms; contracts by terms to renew: "
        + ", ".join(f"{k}: {v:,}" for k, v in pop['by_renewals'].items())
        + f"), {pop['due']:,} due × {pop['users']} users; populated in "
        f"{pop['seconds']:.0f} s")
    if t:
        timers, reminding = (t['timers']['renew_terms'],
            t['timers']['remind_notice_deadlines'])
        steps = m['result']['turnus'].get('first', {}).get('steps', {})
        renew, remind = t['renew_terms'], t['remind_notice_deadlines']
        text += (f". renew_terms {renew:.2f} s "
            f"({t['renew_terms_queries']:.0f} queries, "
            f"{t['renew_terms_queries'] / max(pop['to_renew'], 1):.1f} "
            "per renewed contract), of which in `_renew_slice` "
            f"{timers.get('renew slices', 0):.2f} s: saving the terms "
            f"{timers.get('terms saved', 0):.2f} s, "
            "`update_notice_deadlines` "
            f"{timers.get('notice deadlines', 0):.2f} s, the contracts' "
            f"writes {timers.get('writes', 0):.2f} s; statements of most "
            f"time: {_statements(steps.get('renew_terms'))}. "
            f"remind_notice_deadlines {remind:.2f} s "
            f"({t['remind_notice_deadlines_queries']:.0f} queries), of "
            "which saving the notifications "
            f"{reminding.get('notifications saved', 0):.2f} s, "
            f"`gettext` {reminding.get('gettext', 0):.2f} s, the contracts' "
            f"writes {reminding.get('writes', 0):.2f} s; statements of most "
            f"time: {_statements(steps.get('remind_notice_deadlines'))}")
    c = m['result'].get('core', {})
    if c.get('first'):
        text += (f". Core: statements of most time: "
            f"{_statements(c['first'])}")
    return [text + "."]


def observations(notes):
    """Bullets from the figures: the ratio, where the time goes, the
    linearity, core's defect on SQLite"""
    by_backend = {}
    for m, summary in notes:
        by_backend.setdefault(m['backend'], []).append((m, summary))
    for measured in by_backend.values():
        measured.sort(key=lambda i: i[0]['n'])
    ratios, where, linear, ahead = [], [], [], []
    for backend, measured in by_backend.items():
        label = BACKENDS.get(backend, backend)
        for m, s in measured:
            if 'turnus' in s and 'core' in s:
                ours, theirs = s['turnus']['seconds'], s['core']['seconds']
                ratios.append(f"{label} {ours / theirs:.2f}× at N = "
                    f"{m['n']:,} ({ours:.2f} s against {theirs:.2f} s)")
            if any(r.get('consumed_ahead') for r in m['runs']['core']):
                ahead.append(f"{m['n']:,}")
        m, s = measured[-1]
        t = s.get('turnus')
        steps = m['result']['turnus'].get('first', {}).get('steps')
        if t and steps:
            renew, remind = t['renew_terms'], t['remind_notice_deadlines']
            update = 'UPDATE sale_subscription'
            written = steps['renew_terms'].get('statements', {}).get(
                update, [0, 0])
            reminded = steps['remind_notice_deadlines'].get(
                'statements', {}).get(update, [0, 0])
            w_renew = t['timers']['renew_terms'].get('writes', 0)
            w_remind = t['timers']['remind_notice_deadlines'].get(
                'writes', 0)
            where.append(f"{label}, N = {m['n']:,}: renew_terms "
                f"{renew:.2f} s ({renew / (renew + remind):.0%}), of which "
                f"{written[0]:,} UPDATEs for "
                f"{m['populate']['to_renew']:,} contracts {w_renew:.2f} s "
                f"({w_renew / renew:.0%}; {written[1]:.2f} s in the "
                f"cursor); remind_notice_deadlines {remind:.2f} s, of which "
                f"{reminded[0]:,} UPDATEs {w_remind:.2f} s "
                f"({w_remind / remind:.0%})")
        if len(measured) > 1:
            (m0, s0), (m1, s1) = measured[0], measured[-1]
            parts = []
            for path, key, name in [
                    ('turnus', 'renew_terms', "renew_terms"),
                    ('turnus', 'remind_notice_deadlines',
                        "remind_notice_deadlines"),
                    ('core', 'seconds', "core")]:
                a = s0.get(path, {}).get(key)
                b = s1.get(path, {}).get(key)
                if a and b:
                    a, b = a / m0['n'] * 1000, b / m1['n'] * 1000
                    parts.append(f"{name} {a:.2f} → {b:.2f} "
                        f"({(b / a - 1) * 100:+.0f} %)")
            if parts:
                linear.append(f"{label} " + ", ".join(parts))
    items = []
    if ratios:
        items.append("Ours / core: " + "; ".join(ratios) + ". Turnus "
            "renews about half and reminds about a quarter of the "
            "contracts (the others are only searched), core writes a "
            "consumption and the line of every contract.")
    if where:
        items.append("Where the time goes: " + "; ".join(where) + ". "
            "The writes go through `grouped_writes` (one UPDATE per "
            "distinct values in a slice): a renewed contract gets "
            "`term_end` and `notice_deadline` in one UPDATE (two before "
            "the change of f208970); in this population the new dates of "
            "a slice rarely repeat, so the count stays near one UPDATE "
            "per contract, a round trip each on PostgreSQL. Saving the "
            "terms and the notifications takes most of the rest.")
    if linear:
        items.append("Linearity from the smallest to the largest N, s per "
            "1,000 contracts: " + "; ".join(linear) + ". Renewal and "
            "reminders work in slices of 100 (the reminder's ids come "
            "from one SELECT, its texts are made once per language), so "
            "both stay about linear; core searches all lines at once and "
            "reads them again past the record cache.")
    if ahead:
        items.append("Core on SQLite consumes ahead every night (a defect "
            "of core, not counted as a failure here): its domain of "
            "`next_consumption_date_delayed` adds "
            "`Coalesce(consumption_delay, timedelta())` to the date column, "
            "which SQLite computes as a number ('2027-01-05' + 0.0 = "
            "2027.0), smaller than any date text, so every line with a "
            "recurrence is found each night and consumes its next period "
            "early: the second night made N consumptions dated after D at "
            "N = " + ", ".join(ahead) + ".")
    return [f"- {item}" for item in items]


def ensure_rerun_line(path):
    """Add the command of this scenario to the code block of the section
    "How to re-run" if it is not there"""
    if not os.path.exists(path):
        return
    with open(path) as fp:
        sections = h.split_sections(fp.read())
    for name, text in sections:
        if name != RERUN or 'tests.benchmark.lifecycle' in text:
            continue
        block = text.split('```')
        if len(block) < 3:
            return
        block[1] = block[1].rstrip('\n') + (
            "\npython -m tests.benchmark.lifecycle --sizes 1000,10000 "
            "--backend sqlite\n")
        h.update_section(path, '```'.join(block), before=BEFORE,
            title=TITLE)


def write(options, lines):
    h.update_section(options.output, lines, before=BEFORE, title=TITLE)
    ensure_rerun_line(options.output)


def ok(measurements):
    return int(not all(r.get('ok') for m in measurements
            for runs in m['runs'].values() for r in runs))


def merge(options):
    "The section of the runs of the --json files given to --merge"
    runs = []
    for path in options.merge:
        with open(path) as fp:
            runs.append(json.load(fp))
    measurements = [m for run in runs for m in run['measurements']]
    notes = [note for run in runs for note in run.get('notes', [])]
    if len({run['machine']['fingerprint'] for run in runs}) > 1:
        notes.append("**The runs measured different versions of modules/** "
            f"({', '.join(sorted({r['machine']['code'] for r in runs}))}).")
    machine = dict(runs[-1]['machine'])
    machine['backends'] = {k: v for run in runs
        for k, v in run['machine']['backends'].items()}
    session = types.SimpleNamespace(options=options, notes=notes,
        started=min(dt.datetime.fromisoformat(r['started']) for r in runs),
        command="\n".join(r['command'] for r in runs),
        total=lambda: sum(r['total'] for r in runs))
    write(options, section(session, machine, measurements))
    return ok(measurements)


def main(argv=None):
    parser = h.arguments("Benchmark the renewal of terms and the notice "
        "reminders of the nightly run", OUTPUT, timeout=1800)
    parser.add_argument('--sizes', default='1000,10000',
        help="comma separated numbers of contracts (default: 1000,10000)")
    parser.add_argument('--date', type=dt.date.fromisoformat,
        default=measure_date(),
        help="the night D, YYYY-MM-DD (default: today)")
    parser.add_argument('--no-write', dest='write', action='store_false',
        help="do not write the section (with --json, for --merge)")
    parser.add_argument('--merge', nargs='+', metavar='JSON',
        help="write the section from the --json files of earlier runs "
        "instead of measuring")
    options = parser.parse_args(argv)
    if options.merge:
        return merge(options)
    options.sizes = [int(s) for s in options.sizes.split(',') if s.strip()]
    with h.Session(options, prefix='bench_lc') as session:
        machine = h.machine_description(DISTRIBUTIONS, session.backends)
        measurements = [m for backend in session.backends
            for m in run_backend(options, backend)]
        session.notes.append(h.changed_note(machine))
    session.notes = list(filter(None, session.notes))
    if options.write:
        write(options, section(session, machine, measurements))
    session.write_json({'machine': machine, 'measurements': measurements,
            'notes': session.notes, 'command': session.command,
            'started': session.started.isoformat(),
            'total': session.total()})
    return ok(measurements)


if __name__ == '__main__':
    sys.exit(main())
