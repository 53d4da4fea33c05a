# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of a price revision (not a test).

The template of the flavour ``turnus`` of contracts.py (recurring_invoice,
company, chart, tax, one service), then per size N a copy with N running
contracts (one customer and one line each, a monthly recurrence) started
on S, twelve months before the revision date D, created in bulk through
the pool in slices, quoted and run.  The unit prices are a seeded random
draw of 20.00 to 200.00 in steps of 0.50 (361 distinct prices).  No
invoice exists: nothing is posted on or after D, no draft to bill again.

Then, each in a cold child on a fresh copy of the filled database, with
the company in the context, user root:

* ``turnus``: one run of the wizard ``sale.subscription.revise_prices``
  on all N contracts as the web client does it: create and open the
  session (not timed), then the button Preview
  (``execute(session, {'start': …}, 'preview')``: ``default_preview``,
  i.e. ``get_price_changes`` + ``check_price_revision`` and the yearly
  difference per line) and the button Revise (``execute(session,
  {'preview': the N preview lines as the client sends them back},
  'revise')``: ``transition_revise`` → ``revise_prices(…, notify=False)``),
  each in its own transaction, committed; 3 % from D, 2 digits;
* ``core``: core's way without Turnus: ``sale.subscription.line.write`` of
  the new unit prices (old price × 1.03 rounded to 2 digits) grouped by
  equal new price, in slices (``grouped_slice``), in one transaction, on
  the same lines.

Checked after each (a failed check makes the run **WRONG**): the preview
lists every line with its old and new price; every line has a price
history row at D with the new price (of the revision) and one at its start
with the old price, and no other; one ``sale.subscription.price_revision``
(D, percentage, 3); the ``unit_price`` of every line is the new price;
core: every line's ``unit_price`` is the new price.  A second revision on
the same date must be refused (``PriceRevisionError``, by the wizard's
preview and by ``revise_prices``) and change nothing.  The order of the
paths alternates between the runs.  It replaces its section of
doc/benchmark.md::

    python -m tests.benchmark.price [--sizes 1000,10000]
        [--backend sqlite|postgresql|both] [--repeat 3] [--json FILE]
    python -m tests.benchmark.price --merge A.json B.json
"""
import datetime as dt
import json
import os
import random
import sys
import time
import types
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal

from . import contracts
from . import harness as h
from .lifecycle import Statements, _statements
from .nightly import BEFORE, OUTPUT, TITLE

HEADING = "## Price revision"
RERUN = "## How to re-run"
DISTRIBUTIONS = ['trytond', 'trytond_sale_subscription', 'proteus',
    'python-sql', 'python-dateutil']
# Contracts created, quoted and run per call while populating
SLICE = 500
SEED = 20262
# The unit prices drawn: 20.00 to 200.00 in steps of 0.50
PRICES = (2000, 20001, 50)
# The revision: 3 %, rounded to 2 digits
PERCENT = Decimal(3)
DIGITS = 2
# Months between the start of the contracts and the revision
MONTHS = 12
WIZARD = 'sale.subscription.revise_prices'
LABELS = {
    'turnus': "Turnus wizard Revise Prices (preview + revise)",
    'core': "core `sale.subscription.line.write` by new price",
    }


def unit_prices(n):
    "The unit prices of n lines: a seeded draw"
    rng = random.Random(SEED)
    return [Decimal(rng.randrange(*PRICES)) / 100 for _ in range(n)]


def new_price(old):
    "The price of old after the revision, as core's path computes it"
    return (old * (1 + PERCENT / 100)).quantize(
        Decimal(1).scaleb(-DIGITS), rounding=ROUND_HALF_EVEN)


def start_date(date):
    "The start of the contracts: MONTHS before the revision date"
    from dateutil.relativedelta import relativedelta
    return date - relativedelta(months=MONTHS)


# ---------------------------------------------------------------------------
# Child steps


def populate(spec):
    """Create N customers and N running monthly contracts started on
    start_date(D), one line each at the prices of unit_prices"""
    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n = spec['db'], spec['n']
    date = dt.date.fromisoformat(spec['date'])
    begin = start_date(date)
    pool, context = h.worker_pool(spec)
    RuleSet = pool.get('sale.subscription.recurrence.rule.set')
    Subscription = pool.get('sale.subscription')

    with Transaction().start(db, 0, context=context) as transaction:
        company = pool.get('company.company')(context['company'])
        service, = pool.get('sale.subscription.service').search([])
        product = service.product
        monthly = RuleSet.find_or_create('monthly', 1)
        prices = unit_prices(n)
        transaction.commit()

        ids = []
        for offset in range(0, n, SLICE):
            parties = h.create_parties(pool, offset + 1,
                min(SLICE, n - offset))
            values = [h.contract_values(company, party, begin, [{
                            'service': service.id,
                            'quantity': 1,
                            'unit': product.sale_uom.id,
                            'unit_price': price,
                            'start_date': begin,
                            'consumption_recurrence': monthly.id,
                            }],
                    invoice_recurrence=monthly.id)
                for party, price in zip(parties, prices[offset:])]
            ids.extend(s.id for s in Subscription.create(values))
            transaction.commit()
        slices = [ids[o:o + SLICE] for o in range(0, n, SLICE)]
        h.start_contracts(pool, slices)

        running = Subscription.search_count([('state', '=', 'running')])
        lines = [price for price, _ in _lines(pool).values()]
        histories = pool.get('sale.subscription.line.price').search_count(
            [])
        invoices = pool.get('account.invoice').search_count([])
    distinct = len(set(lines))
    if running != n or len(lines) != n or histories or invoices:
        raise AssertionError(f"{running} running contracts, {len(lines)} "
            f"lines, {histories} price history rows, {invoices} invoices, "
            f"expected {n}, {n}, 0, 0")
    return {'seconds': time.monotonic() - start, 'running': running,
        'lines': len(lines), 'distinct_prices': distinct,
        'new_distinct_prices': len({new_price(p) for p in lines}),
        'start': begin.isoformat()}


def _decimal(value):
    "A Numeric column's value as Decimal, whatever the backend returns"
    return value if value is None or isinstance(value, Decimal) else (
        Decimal(str(value)))


def _date(value):
    "A Date column's value as date, whatever the backend returns"
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _select(Model, *names):
    """The rows of the columns names of Model's table, by SQL: browsing
    tens of thousands of records would cost more than the measure (every
    instance checks the ids of its browse list in trytond 8.0)"""
    from trytond.transaction import Transaction
    table = Model.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(
            *(getattr(table, n) for n in names), order_by=[table.id]))
    return cursor.fetchall()


def _lines(pool):
    "{line id: (unit price, start date)} of every line"
    return {id_: (_decimal(price), _date(start))
        for id_, price, start in _select(pool.get(
                'sale.subscription.line'), 'id', 'unit_price', 'start_date')}


def _price_state(pool):
    """What the database holds of the revisions, the price history and the
    unit prices of the lines"""
    history = defaultdict(dict)
    rows = _select(pool.get('sale.subscription.line.price'),
        'line', 'date', 'unit_price', 'revision')
    for line, date, price, revision in rows:
        history[line][_date(date)] = (_decimal(price), revision)
    return {
        'revisions': [{'id': id_, 'date': _date(date), 'method': method,
                'value': _decimal(value)}
            for id_, date, method, value in _select(
                pool.get('sale.subscription.price_revision'),
                'id', 'date', 'method', 'value')],
        'rows': len(rows),
        'history': dict(history),
        'lines': _lines(pool),
        }


def _revision_problems(state, before, date):
    """The differences between the state after the revision and the
    expected one from before ({line: (old price, start)})"""
    problems = []
    revisions = state['revisions']
    if len(revisions) != 1:
        problems.append(f"{len(revisions)} price revisions, expected 1")
    elif (revisions[0]['date'] != date
            or revisions[0]['method'] != 'percentage'
            or revisions[0]['value'] != PERCENT):
        problems.append(f"revision {revisions[0]}, expected {date} "
            f"percentage {PERCENT}")
    revision = revisions[0]['id'] if revisions else None
    if state['rows'] != 2 * len(before):
        problems.append(f"{state['rows']} price history rows, expected "
            f"{2 * len(before)}")
    history = state['history']
    missing_new = missing_old = wrong_price = 0
    for line, (old, start) in before.items():
        rows = history.get(line, {})
        if rows.get(date) != (new_price(old), revision):
            missing_new += 1
        if rows.get(start) != (old, None):
            missing_old += 1
        if state['lines'].get(line, (None,))[0] != new_price(old):
            wrong_price += 1
    if missing_new:
        problems.append(f"{missing_new} lines without the row at {date} "
            "with the new price of the revision")
    if missing_old:
        problems.append(f"{missing_old} lines without the row at their "
            "start with the old price")
    if wrong_price:
        problems.append(f"{wrong_price} lines whose unit price is not the "
            "new price")
    if set(state['lines']) != set(before):
        problems.append("the lines changed")
    return problems


def _preview_problems(preview, before):
    "The differences between the preview lines and the expected changes"
    problems = []
    lines = {l['line']: l for l in preview}
    if len(preview) != len(before) or set(lines) != set(before):
        problems.append(f"the preview lists {len(preview)} lines "
            f"({len(lines)} distinct), expected {len(before)}")
    wrong = sum(1 for line, (old, _) in before.items()
        if line in lines and (lines[line]['old_price'] != old
            or lines[line]['new_price'] != new_price(old)))
    if wrong:
        problems.append(f"{wrong} preview lines with other prices")
    return problems


def _request(db, context, function):
    """function() in a transaction with context, committed, as trytond's
    dispatcher runs an RPC call: (its result, error_details or None)"""
    from trytond.transaction import Transaction
    try:
        with Transaction().start(db, 0, context=context) as transaction:
            result = function()
            transaction.commit()
    except Exception as exception:
        return None, h.error_details(exception)
    return result, None


def _client_lines(lines):
    """The preview lines as the client sends them back with the button
    Revise: the values of each record of the One2Many, a negative id"""
    return [dict(line, id=-i) for i, line in enumerate(lines, 1)]


def turnus(spec):
    """A run of the wizard Revise Prices on all contracts: preview, then
    revise, each in a transaction as the web client's calls; then checked,
    and a second revision on the same date refused"""
    from trytond.transaction import Transaction

    db, date = spec['db'], dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Line = pool.get('sale.subscription.line')
    LinePrice = pool.get('sale.subscription.line.price')
    RevisePrices = pool.get(WIZARD, type='wizard')
    Subscription = pool.get('sale.subscription')
    counter = h.QueryCounter()
    statements = Statements()
    timers = h.Timers()
    timers.wrap(Subscription, 'get_price_changes', 'get_price_changes')
    timers.wrap(Subscription, 'check_price_revision', 'check_price_revision')
    timers.wrap(Subscription, 'revise_prices', 'revise_prices')
    timers.wrap(Subscription, 'rebill_drafts', 'rebill_drafts')
    timers.wrap(Subscription, 'log', 'log records')
    timers.wrap(LinePrice, 'save', 'prices saved')
    timers.wrap(Line, 'write', 'lines written')
    timers.wrap(RevisePrices, 'default_preview', 'default_preview', 'method')
    timers.wrap(RevisePrices, '_save', 'session saved', 'method')
    timers.wrap(Transaction, 'commit', 'commit', 'method')

    with Transaction().start(db, 0, context=context, readonly=True):
        before = _lines(pool)
        ids = [id_ for id_, state in _select(Subscription, 'id', 'state')
            if state == 'running']
        revisions = pool.get(
            'sale.subscription.price_revision').search_count([])
    if revisions:
        raise AssertionError(f"{revisions} revisions before")
    # The context of the client's calls from the list of contracts
    wizard_context = dict(context, active_model='sale.subscription',
        active_id=ids[0], active_ids=ids)
    start_values = {'id': -1, 'date': date, 'method': 'percentage',
        'value': PERCENT, 'index': None, 'notify': False, 'digits': DIGITS}

    def run():
        "One run of the wizard: open, preview, revise, close"
        result = {'steps': {}, 'error': None}

        def call(name, function):
            step = result['steps'][name] = {}
            with h.measured(step, counter, timers), \
                    statements.measured(step):
                value, step['error'] = _request(
                    db, wizard_context, function)
            if step['error'] and not result['error']:
                result['error'] = dict(step['error'], step=name)
            return value

        opened = call('open', RevisePrices.create)
        if not opened:
            return result, None
        session_id = opened[0]
        call('start', lambda: RevisePrices.execute(session_id, {}, 'start'))
        preview = call('preview', lambda: RevisePrices.execute(
                session_id, {'start': start_values}, 'preview'))
        lines = None
        if preview:
            lines = preview['view']['defaults']['lines']
            call('revise', lambda: RevisePrices.execute(session_id,
                    {'preview': {'lines': _client_lines(lines)}}, 'revise'))
        call('close', lambda: RevisePrices.delete(session_id))
        result['seconds'] = sum(result['steps'][name]['seconds']
            for name in ['preview', 'revise'] if name in result['steps'])
        result['queries'] = sum(result['steps'][name]['queries']
            for name in ['preview', 'revise'] if name in result['steps'])
        return result, lines

    rss_before = h.rss_kib()
    first, preview = run()
    result = {'first': first, 'rss_before_kib': rss_before,
        'maxrss_kib': h.maxrss_kib()}
    problems = result['problems'] = []
    if first['error']:
        problems.append(f"{first['error']['step']} raised "
            f"{first['error']['type']}: {first['error']['message'][:200]}")
    if preview is not None:
        problems += _preview_problems(preview, before)
    with Transaction().start(db, 0, context=context, readonly=True):
        state = _price_state(pool)
    problems += _revision_problems(state, before, date)

    # A second revision on the same date: the wizard's preview refuses it,
    # so does revise_prices
    second, _ = run()
    result['second_wizard'] = {
        'error': second['error'], 'seconds': second['steps'].get(
            'preview', {}).get('seconds')}
    if not second['error'] or second['error']['step'] != 'preview' or (
            second['error']['type'] != 'PriceRevisionError'):
        problems.append("the second preview on the same date was not "
            "refused with PriceRevisionError: "
            + (f"{second['error']['step']} raised "
                f"{second['error']['type']}" if second['error'] else
                "no error"))

    def revise_again():
        # The lines as a script would take them, contract by contract
        lines = [l for s in Subscription.browse(ids) for l in s.lines]
        Subscription.revise_prices(lines, date, 'percentage', value=PERCENT,
            digits=DIGITS, notify=False)
    again = result['second'] = {}
    with h.measured(again, counter, timers), statements.measured(again):
        _, again['error'] = _request(db, context, revise_again)
    if not again['error'] or again['error']['type'] != 'PriceRevisionError':
        problems.append("the second revise_prices on the same date was not "
            "refused with PriceRevisionError: " + (
                again['error']['type'] if again['error'] else "no error"))
    with Transaction().start(db, 0, context=context, readonly=True):
        after = _price_state(pool)
    for key in ['revisions', 'rows', 'history', 'lines']:
        if after[key] != state[key]:
            problems.append(f"the second revision changed {key}")
    result['created'] = {'revisions': len(state['revisions']),
        'rows': state['rows'],
        'preview_lines': len(preview) if preview is not None else None}
    return result


def core(spec):
    """Core's way: write the new unit prices of the lines, grouped by new
    price, in slices, in one transaction; then checked"""
    from trytond import backend
    from trytond.tools import grouped_slice
    from trytond.transaction import Transaction

    db = spec['db']
    pool, context = h.worker_pool(spec)
    Line = pool.get('sale.subscription.line')
    counter = h.QueryCounter()
    statements = Statements()
    timers = h.Timers()
    timers.wrap(Line, 'write', 'lines written')

    with Transaction().start(db, 0, context=context, readonly=True):
        before = _lines(pool)

    def revise():
        lines = Line.search([], order=[('id', 'ASC')])
        by_price = defaultdict(list)
        for line in lines:
            by_price[new_price(line.unit_price)].append(line)
        to_write = []
        for price, price_lines in by_price.items():
            for sub_lines in grouped_slice(
                    price_lines, backend.MAX_QUERY_PARAMS):
                to_write.extend([list(sub_lines), {'unit_price': price}])
        Line.write(*to_write)

    rss_before = h.rss_kib()
    first = {}
    with h.measured(first, counter, timers), statements.measured(first):
        _, first['error'] = _request(db, context, revise)
    result = {'first': first, 'rss_before_kib': rss_before,
        'maxrss_kib': h.maxrss_kib()}
    problems = result['problems'] = []
    if first['error']:
        problems.append(f"the write raised {first['error']['type']}")
    with Transaction().start(db, 0, context=context, readonly=True):
        after = _lines(pool)
    wrong = sum(1 for line, (old, _) in before.items()
        if after.get(line, (None,))[0] != new_price(old))
    if wrong:
        problems.append(f"{wrong} lines whose unit price is not the new "
            "price")
    result['created'] = {'written': len(before) - wrong}
    return result


STEPS = {'turnus': turnus, 'core': core}


# ---------------------------------------------------------------------------
# Driver


def measure_date():
    """The revision date D: the first day of the month that is at least
    the default notice (price_notice_days, 42) after today, so that the
    wizard asks for no confirmation"""
    earliest = dt.date.today() + dt.timedelta(days=42)
    if earliest.day == 1:
        return earliest
    return (earliest.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def run_backend(options, backend):
    """Build the template, then per size a filled copy and the runs of
    both paths on fresh copies of it, the order alternating"""
    measurements = []
    date = options.date.isoformat()
    template = {'db': backend.db_name('tpl', 'price'),
        'flavour': 'turnus', 'date': date}
    backend.build(contracts.template, template, options.timeout)
    for n in options.sizes:
        db = backend.db_name('pr', n)
        pop = backend.build(populate, dict(template, db=db, n=n),
            options.timeout * 2, copy_of=template['db'])
        h.log(f"{backend.name} N={n}: {pop['distinct_prices']} distinct "
            f"prices, {pop['new_distinct_prices']} new ones")
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


TURNUS_STEPS = ['preview', 'revise']


def _step(run, name):
    return run['first']['steps'][name]


def _summary(m):
    "The medians of a measurement, by path"
    summary = {}
    for path, runs in m['runs'].items():
        done = [r for r in runs if r.get('first', {}).get('seconds')]
        if not done:
            continue
        s = summary[path] = {
            'seconds': _median(done, lambda r: r['first']['seconds']),
            'queries': _median(done, lambda r: r['first']['queries']),
            'maxrss': _median(done, lambda r: r['maxrss_kib']),
            'growth': _median(
                done, lambda r: r['maxrss_kib'] - r['rss_before_kib']),
            'times': [r['first']['seconds'] for r in done],
            'ok': all(r.get('ok') for r in runs),
            }
        if path == 'core':
            s['cpu'] = _median(done, lambda r: r['first']['cpu_seconds'])
            s['timers'] = {key: _median(done, lambda r: r['first'][
                        'timers']['seconds'].get(key, 0))
                for key in done[0]['first']['timers']['seconds']}
            continue
        s['cpu'] = _median(done, lambda r: sum(
                _step(r, name)['cpu_seconds'] for name in TURNUS_STEPS))
        s['second'] = _median(done, lambda r: r['second']['seconds'])
        s['second_queries'] = _median(done, lambda r: r['second']['queries'])
        s['second_preview'] = _median(
            done, lambda r: r['second_wizard']['seconds'])
        for name in TURNUS_STEPS + ['open', 'start', 'close']:
            s[name] = _median(done, lambda r: _step(r, name)['seconds'])
            s[name + '_queries'] = _median(
                done, lambda r: _step(r, name)['queries'])
        s['timers'] = {name: {key: _median(done, lambda r: _step(
                        r, name)['timers']['seconds'].get(key, 0))
                for key in _step(done[0], name)['timers']['seconds']}
            for name in TURNUS_STEPS}
    return summary


def _created(result):
    created = result.get('created') or {}
    if 'written' in created:
        return f"{created['written']:,} unit prices"
    if 'rows' in created:
        return (f"{created['revisions']:,} revision, {created['rows']:,} "
            "price history rows")
    return ''


BACKENDS = h.BACKEND_LABELS


def section(session, machine, measurements):
    "The lines of the section"
    lines = [HEADING, ""] + h.run_header(session)
    add = lines.append
    add(h.machine_line(machine))
    add("")
    dates = sorted({m['date'] for m in measurements})
    starts = sorted({m['populate']['start'] for m in measurements})
    add("What is measured: a price revision of modules/recurring_invoice/"
        f"price.py, {PERCENT} % from D = " + ", ".join(dates) + " rounded "
        f"to {DIGITS} digits, on all N running contracts, as staff run it "
        "from the list of contracts in the web client: one run of the "
        "wizard `sale.subscription.revise_prices` with `active_ids` of the "
        "N contracts, through the pool as trytond's dispatcher calls it "
        "(user root, the company in the context, in a cold process, pool "
        "loaded, not timed, on a fresh copy of the filled database). Its "
        "session is created and opened first (`create`, `execute(…, "
        "'start')`: not timed). **Preview** is the button Preview: "
        "`execute(session, {'start': …}, 'preview')`, whose "
        "`default_preview` calls `get_price_changes` + "
        "`check_price_revision` (`_changes`) and counts the line's "
        "periods in the year from D for the difference per year, and the "
        "session saved. **Revise** is the button Revise: `execute(session, "
        "{'preview': {'lines': …}}, 'revise')` with the N preview lines "
        "sent back as the client does (the values of each record of the "
        "One2Many), whose `transition_revise` calls `revise_prices(lines, "
        "D, 'percentage', 3, digits=2, notify=False)` (again "
        "`get_price_changes` + `check_price_revision`, one "
        "`sale.subscription.price_revision`, two `sale.subscription.line."
        "price` rows per line saved in slices of 100, the lines' "
        "`unit_price` written grouped by price, `rebill_drafts`), then the "
        "wizard's log of the N contracts. Each button is one transaction, "
        "committed (the commit is in the time); the total is Preview + "
        "Revise.")
    add("")
    add("Populated (contracts created in bulk through the pool in slices "
        f"of {SLICE}, quoted and run, not timed): N running contracts "
        "(one customer and one line each, quantity 1, monthly consumption "
        "and invoice recurrence) started on S = " + ", ".join(starts)
        + f", {MONTHS} months before D; unit prices a seeded random draw "
        "of 20.00 to 200.00 in steps of 0.50 (361 distinct prices, as "
        "many new ones). No invoice: nothing posted on or after D, no "
        "draft to bill again.")
    add("")
    add("Core path for the ratio: core Tryton has no price revision; "
        "without Turnus staff would write the new unit prices: "
        "`sale.subscription.line.write` of old price × 1.03 rounded to 2 "
        "digits on the same lines, grouped by equal new price, in slices "
        "of `grouped_slice(…, backend.MAX_QUERY_PARAMS)`, one write call, "
        "in one transaction with the search of the lines (no history, no "
        "preview, no check). Both paths run in each run on their own "
        "fresh copy, the order alternating (Turnus first in the "
        "odd-numbered runs).")
    add("")
    add("Checked after each (a failed check makes the run **WRONG**): the "
        "preview lists every line once with its old and new price; every "
        "line has a price history row at D with the new price and the "
        "revision and one at its start with the old price, no other; one "
        "`sale.subscription.price_revision` (D, percentage, 3); the "
        "`unit_price` of every line is the new price; core: every line's "
        "`unit_price` is the new price. A second revision on the same "
        "date must be refused with `PriceRevisionError`, both by the "
        "wizard's Preview and by `revise_prices` called directly, and "
        "change nothing (\"2nd revision\": the time `revise_prices` takes "
        "to refuse, called on the lines of the contracts read contract by "
        "contract, `[l for s in contracts for l in s.lines]`, as a script "
        "would; the wizard reads them in slices and its refusing Preview "
        "is in the list below the table). Time is the wall time of the "
        "calls, the median of the runs; CPU the measuring process's (not "
        "the database server's); queries the SQL statements it sent; peak "
        "RSS its ru_maxrss after the first run (pool loaded included), growth "
        "that minus its RSS just before.")
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
                    h.fmt(s.get('preview')), h.fmt(s.get('revise')),
                    f"{s['cpu']:.2f}", f"{s['queries']:.0f}",
                    f"{s['queries'] / n:.2f}",
                    f"{h.mib(s['maxrss']):.0f}",
                    f"{max(h.mib(s['growth']) or 0, 0):.0f}", _created(r),
                    f"{s['second']:.2f} ({s['second_queries']:.0f} q)"
                    if 'second' in s else '',
                    f"{ratio:.2f}×" if ratio and path == 'turnus' else ''])
        notes.append((m, summary))
    lines += h.table(["Backend", "N", "Path", "Result", "Time (s)",
            "Range (s)", "s / 1,000 lines", "Preview (s)", "Revise (s)",
            "CPU (s)", "Queries", "Queries / line", "Peak RSS (MiB)",
            "RSS growth (MiB)", "Written", "2nd revision (s)",
            "Ours / core"], rows, 'lrllrrrrrrrrrrlrr')
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
        "    python -m tests.benchmark.price --sizes 1000,10000 "
        "--backend both", "```", "",
        "`--repeat` sets the runs per case (default 3), `--date` the "
        "revision date D (default the first of the month at least 42 days "
        "from today), `--timeout` bounds each child (default 1800 s); "
        "`--json` writes the raw results, `--merge A.json B.json` writes "
        "the section from such files instead of measuring.", ""]
    return lines


def _details(m, summary):
    "The line of a measurement: its data and where its time goes"
    pop = m['populate']
    t = summary.get('turnus')
    text = (f"- {BACKENDS.get(m['backend'], m['backend'])}, N = "
        f"{m['n']:,}: {pop['lines']:,} lines at {pop['distinct_prices']} "
        f"distinct prices ({pop['new_distinct_prices']} new ones); "
        f"populated in {pop['seconds']:.0f} s")
    if t:
        steps = m['result']['turnus'].get('first', {}).get('steps', {})
        p, r = t['timers']['preview'], t['timers']['revise']
        text += (f". Preview {t['preview']:.2f} s ({t['preview_queries']:.0f}"
            " queries): `default_preview` "
            f"{p.get('default_preview', 0):.2f} s, of which "
            f"`get_price_changes` {p.get('get_price_changes', 0):.2f} s and "
            f"`check_price_revision` {p.get('check_price_revision', 0):.2f} "
            f"s; the session saved {p.get('session saved', 0):.2f} s; "
            f"statements of most time: {_statements(steps.get('preview'))}. "
            f"Revise {t['revise']:.2f} s ({t['revise_queries']:.0f} "
            f"queries): `revise_prices` {r.get('revise_prices', 0):.2f} s, "
            f"of which `get_price_changes` "
            f"{r.get('get_price_changes', 0):.2f} s, "
            f"`check_price_revision` {r.get('check_price_revision', 0):.2f} "
            f"s, the history rows saved {r.get('prices saved', 0):.2f} s, "
            f"the lines written {r.get('lines written', 0):.2f} s, "
            f"`rebill_drafts` {r.get('rebill_drafts', 0):.2f} s; the "
            f"wizard's log {r.get('log records', 0):.2f} s, the session "
            f"saved {r.get('session saved', 0):.2f} s, the commit "
            f"{r.get('commit', 0):.2f} s; statements of most time: "
            f"{_statements(steps.get('revise'))}. Not timed: open "
            f"{t['open'] + t['start']:.2f} s, close {t['close']:.2f} s; the "
            f"second wizard's Preview refused in {t['second_preview']:.2f} s")
    c = m['result'].get('core', {})
    if c.get('first'):
        written = summary['core']['timers'].get('lines written', 0)
        text += (f". Core: the write {written:.2f} s; "
            f"statements of most time: {_statements(c['first'])}")
    return [text + "."]


def observations(notes):
    "Bullets from the figures: the ratio, where the time goes, linearity"
    by_backend = {}
    for m, summary in notes:
        by_backend.setdefault(m['backend'], []).append((m, summary))
    for measured in by_backend.values():
        measured.sort(key=lambda i: i[0]['n'])
    ratios, where, linear = [], [], []
    for backend, measured in by_backend.items():
        label = BACKENDS.get(backend, backend)
        for m, s in measured:
            if 'turnus' in s and 'core' in s:
                ours, theirs = s['turnus']['seconds'], s['core']['seconds']
                ratios.append(f"{label} {ours / theirs:.1f}× at N = "
                    f"{m['n']:,} ({ours:.2f} s against {theirs:.2f} s)")
        m, s = measured[-1]
        t = s.get('turnus')
        steps = m['result']['turnus'].get('first', {}).get('steps')
        if t and steps:
            total = t['preview'] + t['revise']
            r = t['timers']['revise']
            checks = (t['timers']['preview'].get('check_price_revision', 0)
                + r.get('check_price_revision', 0))
            invoice = sum(steps[name].get('statements', {}).get(
                    'SELECT account_invoice_line', [0, 0])[0]
                for name in TURNUS_STEPS)
            update = steps['revise'].get('statements', {}).get(
                'UPDATE sale_subscription_line', [0, 0])
            where.append(f"{label}, N = {m['n']:,}: Preview "
                f"{t['preview']:.2f} s ({t['preview'] / total:.0%}), Revise "
                f"{t['revise']:.2f} s, of which the history rows "
                f"{r.get('prices saved', 0):.2f} s, the lines' write "
                f"{r.get('lines written', 0):.2f} s ({update[0]:,} "
                f"UPDATEs), `check_price_revision` in both "
                f"{checks:.2f} s "
                f"and `rebill_drafts` {r.get('rebill_drafts', 0):.2f} s "
                f"({invoice:,} SELECTs of account_invoice_line in the two "
                "steps)")
        if len(measured) > 1:
            (m0, s0), (m1, s1) = measured[0], measured[-1]
            parts = []
            for path, key, name in [
                    ('turnus', 'preview', "Preview"),
                    ('turnus', 'revise', "Revise"),
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
            "computes every change twice (Preview and Revise each call "
            "`get_price_changes` and `check_price_revision`), keeps two "
            "history rows per line and logs the wizard on every contract; "
            "core only writes the unit prices.")
    if where:
        items.append("Where the time goes: " + "; ".join(where) + ".")
    if linear:
        items.append("Linearity from the smallest to the largest N, s per "
            "1,000 lines: " + "; ".join(linear) + ".")
    return [f"- {item}" for item in items]


def ensure_rerun_line(path):
    """Add the command of this scenario to the code block of the section
    "How to re-run" if it is not there"""
    if not os.path.exists(path):
        return
    with open(path) as fp:
        sections = h.split_sections(fp.read())
    for name, text in sections:
        if name != RERUN or 'tests.benchmark.price' in text:
            continue
        block = text.split('```')
        if len(block) < 3:
            return
        block[1] = block[1].rstrip('\n') + (
            "\npython -m tests.benchmark.price --sizes 1000,10000 "
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
    notes += options.note or []
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
    parser = h.arguments("Benchmark a price revision of all contracts "
        "(wizard Revise Prices) against core's write of the unit prices",
        OUTPUT, timeout=1800)
    parser.add_argument('--sizes', default='1000,10000',
        help="comma separated numbers of contracts (default: 1000,10000)")
    parser.add_argument('--date', type=dt.date.fromisoformat,
        default=measure_date(),
        help="the revision date D, YYYY-MM-DD (default: the first of the "
        "month at least 42 days from today)")
    parser.add_argument('--no-write', dest='write', action='store_false',
        help="do not write the section (with --json, for --merge)")
    parser.add_argument('--merge', nargs='+', metavar='JSON',
        help="write the section from the --json files of earlier runs "
        "instead of measuring")
    parser.add_argument('--note', action='append', metavar='TEXT',
        help="with --merge: a paragraph added below the figures (e.g. "
        "earlier figures of other code)")
    options = parser.parse_args(argv)
    if options.merge:
        return merge(options)
    options.sizes = [int(s) for s in options.sizes.split(',') if s.strip()]
    with h.Session(options, prefix='bench_pr') as session:
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
