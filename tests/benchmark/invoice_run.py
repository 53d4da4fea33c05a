# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the manual invoice run, "Rechnungslauf" (not a test).

One database with recurring_invoice (company, chart, a 19 % tax, a fiscal
year), N customers with an e-mail address and N posted customer invoices
of last month (posting not measured, core's print_invoice tasks not run).
Then, each time in a cold child on a fresh copy: ``build`` (a run over
last month, N lines), ``execute`` (``Run.execute``, then the queue tasks it
pushed as trytond runs them without workers; N mails at the harness's
sink, every line done, the ZIP with N PDFs, N ``ir.email``) and a second
execute (no mail).  Core's path on ``--core-sample`` invoices
(delivery.core_one_by_one without posting).  The children get a private
``HOME`` (core's default LibreOffice profile)::

    python -m tests.benchmark.invoice_run --backend sqlite -n 200 --write
    TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:55600/ \\
        python -m tests.benchmark.invoice_run --backend postgresql \\
        -n 1000 --write

``--write`` replaces the section of the backend and N in
doc/benchmark_invoice_run.md (and "What is measured"), keeping the rest.
"""
import datetime as dt
import io
import os
import sys
import time
import zipfile
from collections import Counter

from . import harness as h
from .delivery import core_one_by_one

OUTPUT = os.path.join('doc', 'benchmark_invoice_run.md')
TITLE = "# Benchmark of the manual invoice run (Rechnungslauf)"
DISTRIBUTIONS = ['trytond', 'trytond_account_invoice', 'proteus',
    'python-sql', 'relatorio', 'aiosmtpd']
SLICE = 100


def period():
    "Last month: the invoice dates and the period of the run"
    first = dt.date.today().replace(day=1)
    last = first - dt.timedelta(days=1)
    return last.replace(day=1), last


def template(spec):
    "Database, company, chart, tax, fiscal year with invoice sequences"
    from decimal import Decimal

    from proteus import config as pconfig

    from trytond.modules.account.tests.tools import (
        create_chart, create_fiscalyear, create_tax)
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    from trytond.modules.company.tests.tools import create_company

    start = time.monotonic()
    h.init_trytond(spec)
    h.create_database(spec['db'], ['recurring_invoice'], translatable=True)
    config = pconfig.set_trytond(
        database=spec['db'], config_file=spec['config'])
    create_company(config=config)
    create_chart(config=config)
    create_tax(Decimal('.19')).save()
    date_from, _ = period()
    fiscalyear = set_fiscalyear_invoice_sequences(
        create_fiscalyear(today=(date_from, dt.date.today())))
    fiscalyear.click('create_period')
    return {'seconds': time.monotonic() - start}


def populate(spec):
    "N customers with an e-mail address, N posted invoices of last month"
    from decimal import Decimal

    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n = spec['db'], spec['n']
    date_from, date_to = period()
    days = (date_to - date_from).days + 1
    pool, context = h.worker_pool(spec)
    Invoice = pool.get('account.invoice')
    with Transaction().start(db, 0, context=context) as transaction:
        company = pool.get('company.company')(context['company'])
        revenue, = pool.get('account.account').search([
                ('type.revenue', '=', True), ('closed', '!=', True)],
            limit=1)
        journal, = pool.get('account.journal').search(
            [('type', '=', 'revenue')], limit=1)
        tax, = pool.get('account.tax').search([])
        ids = []
        for offset in range(0, n, SLICE):
            parties = h.create_parties(pool, offset + 1,
                min(SLICE, n - offset), name="Kunde {:05d} GmbH",
                email="kunde{:05d}@turnus-bench.example")
            invoices = Invoice.create([{
                        'type': 'out',
                        'company': company.id,
                        'currency': company.currency.id,
                        'party': party.id,
                        'invoice_address': party.addresses[0].id,
                        'account': party.account_receivable_used.id,
                        'journal': journal.id,
                        # In the order of posting: numbers follow dates
                        'invoice_date': date_from + dt.timedelta(
                            days=(offset + i) * days // n),
                        'lines': [('create', [{
                                        'type': 'line',
                                        'account': revenue.id,
                                        'description': "Wartung Heizung",
                                        'quantity': 1,
                                        'unit_price': Decimal('100'),
                                        'taxes': [('add', [tax.id])],
                                        }])],
                        } for i, party in enumerate(parties)])
            Invoice.update_taxes(invoices)
            ids.append([i.id for i in invoices])
            transaction.commit()
    for batch in ids:
        # Posting locks the sequence: started again with the lock
        h.as_request(db, context, lambda: Invoice.post(Invoice.browse(batch)))
    with Transaction().start(db, 0, context=context) as transaction:
        # Core's print_invoice tasks: not run, the invoices keep no cache
        Transaction().tasks.clear()
        Queue = pool.get('ir.queue')
        Queue.delete(Queue.search([]))
        transaction.commit()
        posted = Invoice.search_count([('state', '=', 'posted')])
    if posted != n:
        raise AssertionError(f"{posted} posted invoices, expected {n}")
    return {'seconds': time.monotonic() - start, 'posted': posted}


def _run_state(pool, db, context, run_id):
    "What the run left: lines, ZIP, invoices sent, e-mails, expected mails"
    from trytond.transaction import Transaction
    with Transaction().start(db, 0, context=context, readonly=True):
        run = pool.get('account.invoice.run')(run_id)
        lines = Counter((line.channel, line.state) for line in run.lines)
        names, pdfs = [], 0
        if run.zip_file:
            archive = zipfile.ZipFile(io.BytesIO(run.zip_file))
            names = archive.namelist()
            pdfs = sum(1 for name in names
                if archive.read(name).startswith(b'%PDF'))
        expected = h.expected_mails(pool.get('account.invoice').search(
                [('type', '=', 'out')]))
        return {
            'state': run.state,
            'lines': {f'{c} {s}': v for (c, s), v in sorted(lines.items())},
            'done': lines[('email', 'done')],
            'zip_files': len(names),
            'zip_distinct': len(set(names)),
            'zip_pdfs': pdfs,
            'zip_kib': len(run.zip_file or b'') / 1024,
            'sent': sum(1 for e in expected.values() if e['sent']),
            'emails_logged': pool.get('ir.email').search_count([]),
            'expected_mails': expected,
            }


def measure(spec):
    "Time build, execute (with its queue tasks) and a second execute"
    db, n = spec['db'], spec['n']
    date_from, date_to = period()
    pool, context = h.worker_pool(spec)
    Run = pool.get('account.invoice.run')
    RunLine = pool.get('account.invoice.run.line')
    invoice_run = sys.modules[RunLine.deliver.__module__]
    timers = h.Timers()
    timers.wrap(RunLine, 'deliver', 'deliver')
    invoice_pdf = timers.wrap_delivery(pool)
    timers.wrap(Run, 'build_files', 'files')
    run_id = None

    def create():
        nonlocal run_id
        run, = Run.create([{'date_from': date_from, 'date_to': date_to}])
        run_id = run.id
    h.call_in_transaction(db, context, create)

    def request(method):
        """method(runs) in a transaction as the client's button does, then
        the tasks it queued, as trytond runs them after the commit"""
        result = {}
        with h.measured(result, timers=timers):
            start = time.perf_counter()
            result['error'] = h.call_in_transaction(
                db, context, lambda: method(Run.browse([run_id])))
            result['request_seconds'] = time.perf_counter() - start
            result['tasks'] = h.run_queued_tasks(db)
        return result

    result = {'batch_sizes': {'delivery': invoice_run.DELIVERY_BATCH_SIZE,
            'pdf': getattr(invoice_pdf, 'PDF_BATCH_SIZE', None)}}
    problems = result['problems'] = []
    result['build'] = request(Run.build)
    built = _run_state(pool, db, context, run_id)
    result['built_lines'] = built['lines']
    if built['lines'] != {'email pending': n}:
        problems.append(f"built lines {built['lines']}, expected "
            f"{n} email pending")
    result['first'] = request(Run.execute)
    # The peak of the process up to here: the checks read all PDFs too
    result['maxrss_kib'] = h.maxrss_kib()
    state1 = result['after_first'] = _run_state(pool, db, context, run_id)
    result['second'] = request(Run.execute)
    state2 = result['after_second'] = _run_state(pool, db, context, run_id)
    for label, step in [('build', 'build'), ('execute', 'first'),
            ('second execute', 'second')]:
        if result[step]['error']:
            problems.append(
                f"{label} raised {result[step]['error']['type']}")
    if state1['state'] != 'executed' or state1['done'] != n:
        problems.append(f"after execute: run {state1['state']}, lines "
            f"{state1['lines']}, expected {n} done")
    if not (state1['zip_files'] == state1['zip_distinct']
            == state1['zip_pdfs'] == n):
        problems.append(f"ZIP: {state1['zip_files']} files "
            f"({state1['zip_distinct']} names, {state1['zip_pdfs']} PDFs), "
            f"expected {n}")
    if state1['sent'] != n or state1['emails_logged'] != n:
        problems.append(f"{state1['sent']} invoices sent, "
            f"{state1['emails_logged']} ir.email, expected {n}")
    for key in ['lines', 'emails_logged', 'sent', 'zip_files']:
        if state2[key] != state1[key]:
            problems.append(f"second execute: {key} {state1[key]} -> "
                f"{state2[key]}")
    state2.pop('expected_mails')
    return result


def core(spec):
    "Core's path for the first spec['sample'] invoices, one at a time"
    from trytond.transaction import Transaction
    pool, context = h.worker_pool(spec)
    with Transaction().start(spec['db'], 0, context=context):
        ids = [i.id for i in pool.get('account.invoice').search(
                [('state', '=', 'posted')], order=[('number', 'ASC')],
                limit=spec['sample'])]
    return core_one_by_one(pool, spec['db'], context, ids)


def check_mails(result, sink, n):
    "The driver's check of the mails of a measured run"
    messages = sink.take()
    expected = result['after_first'].pop('expected_mails')
    mails = result['mails'] = {
        'first': h.check_mails(h.mails_in(messages, result['first'], 1),
            expected),
        'second': len(h.mails_in(messages, result['second'], 1)),
        'total': len(messages),
        }
    if mails['first']['count'] != n:
        result['problems'].append(
            f"{mails['first']['count']} mails, expected {n}")
    result['problems'].extend(mails['first']['problems'])
    if mails['second']:
        result['problems'].append(
            f"second execute sent {mails['second']} mails")
    if mails['total'] != mails['first']['count'] + mails['second']:
        result['problems'].append(f"{mails['total']} mails in all")


def measure_backend(options, backend):
    "Populate once, then the measured runs and core's sample"
    n = options.invoices
    with h.MailSink() as sink:
        spec = {'db': backend.db_name('filled', n), 'n': n,
            'settings': sink.settings}
        built = backend.build(template, spec, options.timeout)
        pop = backend.build(populate, spec, options.timeout)
        sink.take()
        runs = h.repeat_runs(measure, backend, spec, spec['db'],
            options.repeat, options.timeout,
            lambda r: check_mails(r, sink, n), f"N={n}")
        result = None
        if options.core_sample:
            result, = h.repeat_runs(core, backend, dict(
                    spec, sample=options.core_sample), spec['db'], 1,
                options.timeout, label="core")
            if 'render' in result:
                result['mails'] = len(sink.take())
                if result['mails'] != result['invoices']:
                    result['problems'].append(f"core: {result['mails']} "
                        f"mails for {result['invoices']} invoices")
    return {'populate': pop, 'template': built, 'runs': runs, 'core': result}


def what_section(options):
    return "\n".join([
        "## What is measured",
        "",
        "`python -m tests.benchmark.invoice_run` (see its docstring) fills "
        "one "
        "database per backend: company, chart, a 19 % tax, a fiscal year "
        "with invoice sequences and periods, N customers with an e-mail "
        "address (one domain) and N posted customer invoices (one line, "
        "100 EUR + 19 %) dated in the days of last month. Posting is not "
        "measured; core's queued `print_invoice` tasks are not run, so the "
        "invoices have no report cache and both paths render them from the "
        "template. No `[queue] worker` is configured.",
        "",
        "Each measured run is a fresh process (pool loaded) on a fresh copy "
        "of that database, user root with the company in the context:",
        "",
        "- **Build**: a manual run over last month with the defaults "
        "(output e-mail, delivery preference respected: all customers want "
        "e-mail; the module's template \"Invoice\"), then `Run.build` in a "
        "transaction: N lines.",
        "- **Execute**: `Run.execute` in a transaction, then, after the "
        "commit, the queue tasks it pushed, as trytond runs them at the end "
        "of a request without workers: `RunLine.deliver` in slices of "
        "50 lines (one transaction each: `render_pdf_cache` with one "
        "`soffice` call, `ir.email.send` per invoice, SMTP at the commit "
        "to an aiosmtpd sink on 127.0.0.1 in the driver process), then the "
        "run's ZIP. Checked: exactly N mails, one per invoice, to its "
        "customer, with one PDF identical (SHA-256) to the stored report; "
        "all lines done; the ZIP holds N distinct PDFs; N `ir.email`; "
        "N invoices marked sent.",
        "- **Second execute**: the same button again: it must send no "
        "mail and change no line (it only rebuilds the ZIP).",
        "- **Core**: on another fresh copy, the first "
        f"{options.core_sample} invoices one at a time as a user mails "
        "them from the client, one transaction each: `account.invoice` "
        "report `execute([id], {})` with the report action's output set to "
        "PDF (relatorio + one `soffice` start per invoice, core's default "
        "profile), then `ir.email.template.get` (same template) and "
        "`ir.email.send` (the report comes from the cache just stored), "
        "committed (SMTP). Per invoice: render + mail; the ratio is core "
        "per invoice / our execute per invoice.",
        "",
        "The workers get a private `HOME`, so core's default LibreOffice "
        "profile is not shared with other processes of the machine. Time "
        "splits come from wrapping methods in the measuring process "
        "(`tests/benchmark/harness.py`, `Timers`); CPU Python is the "
        "measuring "
        "process's during the execute, CPU soffice that of its LibreOffice "
        "children; the peak RSS is the measuring process's from its start "
        "(pool loaded) to the end of the execute, before the checks.",
        ])


def results_section(session, backend, machine, data):
    n = session.options.invoices
    runs = [r for r in data['runs'] if 'first' in r]
    ok = data['runs'] and all(r.get('ok') for r in data['runs'])
    lines = [f"## Results: {backend.label}, N = {n}", ""]
    lines += h.run_header(session)
    add = lines.append
    add(h.machine_line(machine, h.soffice_version()))
    add("")
    add(f"{n} posted invoices created in {data['populate']['seconds']:.0f} s "
        f"(not measured). {len(runs)} measured run(s)"
        + (", median shown" if len(runs) > 1 else "") + ".")
    add("")

    def med(key, step='first'):
        return h.median([r[step][key] for r in runs])

    def med_timer(key, step='first'):
        return h.median([r[step]['timers']['seconds'].get(key, 0)
                for r in runs])

    core = data.get('core') or {}
    core_per = None
    if core.get('render'):
        core_per = h.median([a + b for a, b in zip(
                    core['render'], core['mail'])])
    row = [n, backend.label, "**no result**"]
    if runs:
        execute = med('seconds')
        ours = execute / n
        row = [n, backend.label, "ok" if ok else "**WRONG**: " + "; ".join(
                p for r in data['runs'] for p in r.get('problems', []))[:300],
            h.fmt(med('seconds', 'build')), f"{execute:.1f}",
            h.spread([r['first']['seconds'] for r in runs], 1),
            f"{n / execute:.2f}",
            h.median([r['mails']['first']['count'] for r in runs]),
            h.fmt(med('seconds', 'second')),
            max(r['mails']['second'] for r in runs),
            h.fmt(core_per), f"{ours:.3f}",
            f"{core_per / ours:.1f}×" if core_per else '']
    lines += h.table(["N", "Backend", "Result", "Build (s)", "Execute (s)",
            "Range (s)", "Invoices/s", "Mails", "2nd execute (s)",
            "2nd mails", "Core (s/invoice)", "Ours (s/invoice)",
            "Core / ours"], [row], 'rll' + 'r' * 10)
    add("")
    if runs:
        render, soffice = med_timer('render'), med_timer('soffice')
        compose, smtp = med_timer('compose'), med_timer('smtp')
        files = med_timer('files')
        calls = runs[0]['first']['timers']['calls']
        rest = execute - render - compose - smtp - files

        def share(value):
            return f"{value:.1f} ({value / execute:.0%})"
        add("Where the time of the execute goes (median of the runs, "
            "seconds and share):")
        add("")
        lines += h.table(["Button (request)", "Queue task",
                "Rendering `render_pdf_cache`", "of which `soffice`",
                "Compose + `ir.email.send`", "SMTP at commit",
                "ZIP `build_files`", "Rest (reads, saves, commits)",
                "CPU Python", "CPU soffice", "Peak RSS (MiB)"], [[
                    h.fmt(med('request_seconds')),
                    f"{med_timer('deliver'):.1f} "
                    f"({calls.get('deliver', 0)} task)",
                    share(render) + f", {render / n:.3f}/invoice",
                    share(soffice) + f", {calls.get('soffice', 0)} starts",
                    share(compose) + f", {compose / n:.3f}/invoice",
                    share(smtp), share(files), share(rest),
                    h.fmt(med('cpu_seconds'), 1),
                    h.fmt(med('children_cpu_seconds'), 1),
                    f"{h.median([r['maxrss_kib'] for r in runs]) / 1024:.0f}",
                    ]], 'r' * 11)
        add("")
        add("Second execute: " + h.fmt(med('seconds', 'second'))
            + " s, of which ZIP " + h.fmt(med_timer('files', 'second'))
            + " s. ZIP of the run: "
            f"{runs[0]['after_first']['zip_kib'] / 1024:.1f} MiB, "
            f"mail attachment {runs[0]['mails']['first']['pdf_kib']:.0f} KiB"
            " on average.")
        add("")
    if core.get('render'):
        render = core['render']
        add(f"Core, {core['invoices']} invoices one at a time (s/invoice): "
            f"render median {h.median(render):.2f} (mean "
            f"{sum(render) / len(render):.2f}, "
            f"{min(render):.2f}–{max(render):.2f}), "
            f"template + `ir.email.send` + SMTP median "
            f"{h.median(core['mail']):.3f}; {core['mails']} mails received"
            + ("" if not core['problems']
                else "; **" + "; ".join(core['problems']) + "**") + ".")
        if runs:
            add(f"Ours in the same run: rendering "
                f"{med_timer('render') / n:.3f} s/invoice, composing and "
                f"sending {(med_timer('compose') + med_timer('smtp')) / n:.3f}"
                " s/invoice.")
        add("")
    elif core:
        add(f"Core's sample failed: see {core.get('log')}.")
        add("")
    lines += h.load_lines(data['runs'] + ([core] if core else []))
    for note in session.notes:
        lines += [note, ""]
    return lines


def main(argv=None):
    parser = h.arguments("Benchmark the manual invoice run", OUTPUT,
        backend='postgresql', backends=['sqlite', 'postgresql'],
        timeout=1800)
    parser.add_argument('-n', '--invoices', type=int, default=1000)
    parser.add_argument('--core-sample', type=int, default=50,
        help="invoices core mails one at a time (0: skip)")
    parser.add_argument('--write', action='store_true',
        help="replace the sections in the output file")
    options = parser.parse_args(argv)
    # Core's soffice uses the default profile of $HOME: a private one for
    # the children
    home = os.environ.get('HOME')
    with h.Session(options, prefix='bench_run') as session:
        backend, = session.backends
        os.environ['HOME'] = os.path.join(session.workdir, 'home')
        os.makedirs(os.environ['HOME'])
        try:
            machine = h.machine_description(DISTRIBUTIONS, session.backends)
            data = measure_backend(options, backend)
            session.notes.append(h.changed_note(machine))
        finally:
            os.environ.pop('HOME')
            if home is not None:
                os.environ['HOME'] = home
    session.notes = list(filter(None, session.notes))
    section = results_section(session, backend, machine, data)
    print('\n'.join(section))
    if options.write:
        h.update_section(options.output, what_section(options), title=TITLE)
        h.update_section(options.output, section,
            before=('## Observations', '## How to re-run'), title=TITLE)
    session.write_json(data)
    return int(not (data['runs'] and all(r.get('ok') for r in data['runs'])))


if __name__ == '__main__':
    sys.exit(main())
