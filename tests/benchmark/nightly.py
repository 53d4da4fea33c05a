# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the nightly recurring invoice generation (not a test).

For each backend and size N: N monthly contracts due on one date D
(contracts.py), then the nightly run for D in a cold child process on a
fresh copy:

* ``turnus``: ``sale.subscription.generate_recurring_invoices(D)``;
* ``core``: Tryton's own sale_subscription, the cron methods
  ``sale.subscription.line|generate_consumption`` then
  ``sale.subscription|generate_invoice``, in a database with only
  sale_subscription activated.

It checks N invoices and that a second run creates none.  A failing run
(e.g. core on SQLite from about 1,000 contracts) is reported as such; the
exit status is non-zero only when recurring_invoice's run is wrong.  The
report is doc/benchmark.md, whose hand-written sections and those of the
other scenarios stay::

    python -m tests.benchmark.nightly [--sizes 200,2000] [--backend both]
        [--no-core] [--repeat 3] [--timeout 600] [--output doc/benchmark.md]
"""
import argparse
import datetime as dt
import os
import sys
import time

from . import harness as h
from .contracts import due_date, filled

TITLE = "# Benchmark of the nightly recurring invoice generation"
OUTPUT = os.path.join('doc', 'benchmark.md')
# The generated sections go before this one; the others stay
BEFORE = ('## How to re-run',)
DISTRIBUTIONS = ['trytond', 'trytond_sale_subscription', 'trytond_account',
    'trytond_account_invoice', 'proteus', 'python-sql']
LABELS = {
    'turnus': "recurring_invoice `generate_recurring_invoices`",
    'core': "core sale_subscription `generate_consumption` + "
    "`generate_invoice`",
    }


def _count_state(pool, db, context, flavour):
    from trytond.transaction import Transaction
    with Transaction().start(db, 0, context=context, readonly=True):
        Invoice = pool.get('account.invoice')
        Subscription = pool.get('sale.subscription')
        result = {
            'invoices': Invoice.search_count([]),
            'invoice_lines': pool.get('account.invoice.line').search_count(
                [('type', '=', 'line')]),
            'invoice_taxes': pool.get('account.invoice.tax').search_count(
                []),
            'consumptions_uninvoiced': pool.get(
                'sale.subscription.line.consumption').search_count(
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


def measure(spec):
    """Time the nightly run for spec['date'], then check it and time a
    second run"""
    db, flavour, n = spec['db'], spec['flavour'], spec['n']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    Line = pool.get('sale.subscription.line')
    counter = h.QueryCounter()
    if flavour == 'core':
        calls = [('generate_consumption', Line.generate_consumption),
            ('generate_invoice', Subscription.generate_invoice)]
    else:
        calls = [('generate_recurring_invoices',
                Subscription.generate_recurring_invoices)]

    def nightly():
        "Like ir.cron: one transaction per cron method"
        run = {'steps': {}, 'error': None}
        with h.measured(run, counter):
            for name, method in calls:
                start = time.perf_counter()
                run['error'] = h.call_in_transaction(
                    db, context, method, date)
                run['steps'][name] = time.perf_counter() - start
                if run['error']:
                    run['error']['step'] = name
                    break
        return run

    rss_before = h.rss_kib()
    result = nightly()
    result.update(rss_before_kib=rss_before, maxrss_kib=h.maxrss_kib())
    state_context = dict(context, date=date)
    first = result['after_first'] = _count_state(
        pool, db, state_context, flavour)
    problems = result['problems'] = []
    if result['error']:
        problems.append(
            f"{result['error']['step']} raised {result['error']['type']}")
        return result
    expected = {'invoices': n, 'invoice_lines': n, 'invoice_taxes': n,
        'still_due': 0, 'consumptions_uninvoiced': 0}
    if flavour == 'turnus':
        expected.update(invoiced_contracts=n, invoice_errors=0)
    problems.extend(f"{key} {first[key]}, expected {value}"
        for key, value in expected.items() if first[key] != value)
    second = nightly()
    result['second_seconds'] = second['seconds']
    result['second_queries'] = second['queries']
    result['second_error'] = second['error']
    again = result['after_second'] = _count_state(
        pool, db, state_context, flavour)
    if second['error']:
        problems.append(f"second run: {second['error']['step']} raised "
            f"{second['error']['type']}")
    result['second_created'] = again['invoices'] - first['invoices']
    if result['second_created']:
        problems.append(
            f"second run created {result['second_created']} invoices")
    return result


def row(m):
    "The cells of a measurement, and its failure text if any"
    r = m['result']
    cells = [m['backend'], 'recurring_invoice' if m['flavour'] == 'turnus'
        else 'core sale_subscription', m['n']]
    details, failure = [], None
    if 'timeout' in r:
        cells += [f"**timeout** (> {r['timeout']} s)"] + [''] * 9
        failure = f"killed after {r['timeout']} s"
    elif 'crash' in r:
        cells += ["**crashed**"] + [''] * 9
        failure = r['crash']
    else:
        if r.get('error'):
            result = f"**FAILED** ({r['error']['type']})"
            failure = r['error']['traceback']
        else:
            result = h.status(r)
        invoices, seconds = r['after_first']['invoices'], r['seconds']
        growth = h.mib(r['maxrss_kib'] - r['rss_before_kib'])
        cells += [
            result, f"{seconds:.2f}",
            h.spread([run['seconds'] for run in m['runs']
                    if 'seconds' in run]),
            f"{r['cpu_seconds']:.2f}",
            f"{invoices / seconds:.1f}"
            if invoices and seconds and not r.get('error') else '',
            f"{h.mib(r['maxrss_kib']):.0f}",
            f"{growth:.0f}" if growth is not None else '',
            r['queries'],
            f"{r['queries'] / invoices:.1f}" if invoices else '',
            h.fmt(r.get('second_seconds')),
            ]
        if len(r['steps']) > 1 or r.get('error'):
            details.append(" + ".join(
                    f"{k} {v:.2f} s" for k, v in r['steps'].items()))
    details.append(f"data setup {m['populate']:.0f} s")
    return cells + ['; '.join(details)], failure


def write_report(session, machine, measurements):
    "The whole file but the sections it keeps (hand-written, scenarios)"
    add = (lines := [TITLE, ""]).append
    lines += h.run_header(session)
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
        f"{due_date()} ('in advance', so one invoice per contract). "
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
    rows, failures = [], []
    for m in measurements:
        cells, failure = row(m)
        rows.append(cells)
        if failure:
            failures.append((m, failure))
    lines += h.table(["Backend", "Path", "N", "Result", "Time (s)",
            "Range (s)", "CPU (s)", "Invoices/s", "Peak RSS (MiB)",
            "RSS growth (MiB)", "Queries", "Queries/invoice", "2nd run (s)",
            "Details"], rows, 'llllrrrrrrrrrl')
    add("")
    if failures:
        add("### Failures")
        add("")
        for m, text in failures:
            lines += [f"{m['backend']}, {LABELS[m['flavour']]}, "
                f"N = {m['n']}:", "", "```", text.strip()[-3000:], "```", ""]
    lines += h.load_lines([run for m in measurements for run in m['runs']])
    for note in session.notes:
        lines += [note, ""]
    lines += [
        "## How to re-run", "",
        "From the repository root, with the modules installed in the "
        "virtual environment (e.g. `make venv`):", "", "```",
        "python -m tests.benchmark.nightly --sizes 200,2000 --backend sqlite",
        "TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\",
        "    python -m tests.benchmark.nightly --sizes 200,2000 "
        "--backend both", "```", "",
        "SQLite uses file databases in a temporary directory; PostgreSQL "
        "needs a role that may create databases (`bench_*`, dropped at the "
        "end). `--no-core` skips the core sale_subscription path, "
        "`--timeout` bounds each measurement (default 600 s) and "
        "`--output` sets this file. Each backend first builds two template "
        "databases (modules activated, company, chart, tax, one service) "
        "and copies them for every measurement; contracts are created in "
        "bulk through the pool (recurrence set by the wizard "
        "`sale.subscription.setup_recurrence` with catch up for "
        "recurring_invoice), then quoted and run. Only the nightly run is "
        "timed; `--repeat` sets the number of runs per case (default 3). "
        "The scenarios of the other sections of this file: "
        "`python -m tests.benchmark.delivery` and "
        "`python -m tests.benchmark.workers` (see their sections).", ""]
    path = session.options.output
    # Every section this run does not write stays, in its order
    kept = [text for name, text in h.split_sections(
            open(path).read() if os.path.exists(path) else '')
        if name not in {None, '## Machine', '## Results', '## How to re-run'}]
    with open(path, 'w') as fp:
        fp.write('\n'.join(lines))
    for section in kept:
        h.update_section(path, section, before=BEFORE, title=TITLE)


def main(argv=None):
    parser = h.arguments("Benchmark the nightly recurring invoice "
        "generation", OUTPUT)
    parser.add_argument('--sizes', default='200,2000',
        help="comma separated numbers of contracts (default: 200,2000)")
    parser.add_argument('--core', action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure core sale_subscription (default: yes)")
    options = parser.parse_args(argv)
    sizes = [int(s) for s in options.sizes.split(',') if s.strip()]
    flavours = ['turnus'] + (['core'] if options.core else [])
    measurements = []
    with h.Session(options) as session:
        machine = h.machine_description(DISTRIBUTIONS, session.backends)
        for backend in session.backends:
            for flavour in flavours:
                databases = filled(backend, flavour, sizes,
                    options.timeout * 2)
                for n, (db, pop) in databases.items():
                    runs = h.repeat_runs(measure, backend, {
                            'db': db, 'flavour': flavour, 'n': n,
                            'date': due_date().isoformat()}, db,
                        options.repeat, options.timeout,
                        label=f"{flavour} N={n}")
                    backend.drop(db)
                    measurements.append({'backend': backend.name,
                            'flavour': flavour, 'n': n, 'runs': runs,
                            'populate': pop['seconds'],
                            'result': h.representative(
                                runs, key=lambda r: r['seconds'])})
    measurements.sort(key=lambda m: (m['backend'] != 'sqlite', m['n'],
            m['flavour'] != 'turnus'))
    write_report(session, machine, measurements)
    session.write_json({'machine': machine, 'measurements': measurements})
    # A failure of core is a finding, not an error of the benchmark
    return int(any(not m['result'].get('ok') for m in measurements
            if m['flavour'] == 'turnus'))


if __name__ == '__main__':
    sys.exit(main())
