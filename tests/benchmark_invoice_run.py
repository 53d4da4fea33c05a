#!/usr/bin/env python3
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the manual invoice run, "Rechnungslauf" (not a test).

It builds once a database with recurring_invoice (company, chart, a 19 %
tax, a fiscal year with invoice sequences and periods), N customers with
an e-mail address and N posted customer invoices (one line, 100 EUR + tax)
dated in the days of last month; posting is not measured (core's queued
``print_invoice`` tasks are not run: the invoices have no report cache).
Then, each time in a fresh process on a fresh copy of that database:

* ``build``: a manual run over last month (``account.invoice.run``
  defaults: output e-mail, delivery preference respected, the module's
  template "Invoice") and ``Run.build``: N lines expected;
* ``execute``: ``Run.execute`` in a transaction, then the queue tasks it
  pushed (no ``[queue] worker``: run after the commit as at the end of a
  request, i.e. ``RunLine.deliver`` in slices of 50 lines with one
  ``soffice`` call each); checks: N mails at the aiosmtpd sink of the
  driver (one per invoice, to its customer, with the invoice's stored PDF),
  every line done, the run's ZIP with N PDFs, N ``ir.email``;
* ``second execute``: must send nothing and change no line.

Core's path in the same run (``--core-sample`` invoices, default 50, on
another fresh copy): per invoice, as a user mailing from the client, in its
own transaction: ``account.invoice`` report ``execute([id], {})`` with the
report action's output set to PDF (render + one ``soffice`` start with the
default profile, as core does), then ``ir.email.template.get`` of the same
template "Invoice" and ``ir.email.send`` (its report found in the cache),
committed (SMTP).  The workers get a private ``HOME`` so that core's
default LibreOffice profile is not shared with other processes.

Usage::

    python tests/benchmark_invoice_run.py --backend sqlite -n 200 --write
    TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:55600/ \\
        python tests/benchmark_invoice_run.py --backend postgresql \\
        -n 1000 --write

``--write`` replaces the section of the backend and N in
doc/benchmark_invoice_run.md (and "What is measured"), keeping the rest.
"""
import argparse
import datetime as dt
import hashlib
import importlib.metadata
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import zipfile
from collections import Counter

from benchmark_common import (
    ROOT, Backend, Timers, call_in_transaction, code_version, command_line,
    cpu_seconds, create_database, fmt, init_trytond, log,
    machine_description, maxrss_kib, median, modules_fingerprint,
    other_cores, run_measured, run_script, run_worker, update_section,
    worker_pool)
from benchmark_nightly import MailSink, check_mails, soffice_version

SCRIPT = os.path.abspath(__file__)
DEFAULT_OUTPUT = os.path.join('doc', 'benchmark_invoice_run.md')
TITLE = "# Benchmark of the manual invoice run (Rechnungslauf)"
BACKEND_LABELS = {'sqlite': 'SQLite', 'postgresql': 'PostgreSQL'}
DISTRIBUTIONS = ['trytond', 'trytond_account_invoice', 'proteus',
    'python-sql', 'relatorio', 'aiosmtpd']
MAIL_FROM = "rechnung@turnus-bench.example"
SLICE = 100


def period():
    "Last month: the invoice dates and the period of the run"
    first = dt.date.today().replace(day=1)
    last = first - dt.timedelta(days=1)
    return last.replace(day=1), last


def customer_email(number):
    return f"kunde{number:05d}@turnus-bench.example"


# ---------------------------------------------------------------------------
# Worker side


def worker_template(spec):
    "Database, company, chart, tax, fiscal year with invoice sequences"
    from decimal import Decimal

    from proteus import config as pconfig

    from trytond.modules.account.tests.tools import (
        create_chart, create_fiscalyear, create_tax)
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    from trytond.modules.company.tests.tools import create_company

    start = time.monotonic()
    init_trytond(spec)
    create_database(spec['db'], ['recurring_invoice'], translatable=True)
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


def worker_populate(spec):
    "N customers with an e-mail address, N posted invoices of last month"
    from decimal import Decimal

    from trytond.transaction import Transaction, TransactionError

    start = time.monotonic()
    db, n = spec['db'], spec['n']
    date_from, date_to = period()
    days = (date_to - date_from).days + 1
    pool, context = worker_pool(spec)
    Account = pool.get('account.account')
    Invoice = pool.get('account.invoice')
    Journal = pool.get('account.journal')
    Party = pool.get('party.party')
    Queue = pool.get('ir.queue')
    Tax = pool.get('account.tax')
    Company = pool.get('company.company')
    with Transaction().start(db, 0, context=context) as transaction:
        company = Company(context['company'])
        revenue, = Account.search([
                ('type.revenue', '=', True), ('closed', '!=', True)],
            limit=1)
        journal, = Journal.search([('type', '=', 'revenue')], limit=1)
        tax, = Tax.search([])
        ids = []
        for offset in range(0, n, SLICE):
            size = min(SLICE, n - offset)
            parties = Party.create([{
                        'name': f"Kunde {offset + i + 1:05d} GmbH",
                        'addresses': [('create', [{
                                        'street': f"Hauptstraße {i + 1}",
                                        'postal_code': '10115',
                                        'city': 'Berlin',
                                        'invoice': True,
                                        }])],
                        'contact_mechanisms': [('create', [{
                                        'type': 'email',
                                        'value': customer_email(
                                            offset + i + 1),
                                        }])],
                        } for i in range(size)])
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
        # Posting locks the sequence: start again with the lock (as the
        # dispatcher does)
        extras = {}
        while True:
            with Transaction().start(
                    db, 0, context=context, **extras) as transaction:
                try:
                    with Transaction().set_context(_skip_warnings=True):
                        Invoice.post(Invoice.browse(batch))
                except TransactionError as exception:
                    transaction.rollback()
                    exception.fix(extras)
                    continue
                transaction.commit()
                break
    with Transaction().start(db, 0, context=context) as transaction:
        # Core's print_invoice tasks: not run, the invoices keep no cache
        Transaction().tasks.clear()
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
        Run = pool.get('account.invoice.run')
        Invoice = pool.get('account.invoice')
        Email = pool.get('ir.email')
        run = Run(run_id)
        lines = Counter((line.channel, line.state) for line in run.lines)
        names = []
        pdfs = 0
        if run.zip_file:
            archive = zipfile.ZipFile(io.BytesIO(run.zip_file))
            names = archive.namelist()
            pdfs = sum(1 for name in names
                if archive.read(name).startswith(b'%PDF'))
        expected = {}
        for invoice in Invoice.search([('type', '=', 'out')]):
            cache = invoice.invoice_report_cache
            expected[invoice.number] = {
                'to': invoice.party.email,
                'sha256': (hashlib.sha256(cache).hexdigest()
                    if cache and invoice.invoice_report_format == 'pdf'
                    else None),
                'sent': bool(invoice.sent_date),
                }
        return {
            'state': run.state,
            'lines': {f'{c} {s}': v for (c, s), v in sorted(lines.items())},
            'done': lines[('email', 'done')],
            'zip_files': len(names),
            'zip_distinct': len(set(names)),
            'zip_pdfs': pdfs,
            'zip_kib': len(run.zip_file or b'') / 1024,
            'sent': sum(1 for e in expected.values() if e['sent']),
            'emails_logged': Email.search_count([]),
            'expected_mails': expected,
            }


def worker_measure(spec):
    "Time build, execute (with its queue tasks) and a second execute"
    import trytond.sendmail as sendmail
    from trytond.transaction import Transaction
    from trytond.worker import run_task

    db, n = spec['db'], spec['n']
    date_from, date_to = period()
    pool, context = worker_pool(spec)
    Run = pool.get('account.invoice.run')
    RunLine = pool.get('account.invoice.run.line')
    InvoiceReport = pool.get('account.invoice', type='report')
    invoice_pdf = sys.modules[InvoiceReport.render_pdf_cache.__module__]
    invoice_run = sys.modules[RunLine.deliver.__module__]
    timers = Timers()
    timers.wrap_classmethod(RunLine, 'deliver', 'deliver')
    timers.wrap_classmethod(InvoiceReport, 'render_pdf_cache', 'render')
    timers.wrap_function(invoice_pdf, '_run_soffice', 'soffice')
    timers.wrap_classmethod(RunLine, 'deliver_email', 'compose')
    timers.wrap_method(sendmail.SMTPDataManager, 'tpc_vote', 'smtp')
    timers.wrap_method(sendmail.SMTPDataManager, 'tpc_finish', 'smtp')
    timers.wrap_classmethod(Run, 'build_files', 'files')

    with Transaction().start(db, 0, context=context) as transaction:
        run, = Run.create([{'date_from': date_from, 'date_to': date_to}])
        run_id = run.id
        transaction.commit()

    def request(method):
        """method(runs) in a transaction as the client's button does, then
        the tasks it queued, as trytond runs them after the commit"""
        timers.reset()
        result = {'started_at': time.time()}
        cpu = cpu_seconds()
        children = cpu_seconds(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        error = call_in_transaction(
            db, context, lambda: method(Run.browse([run_id])))
        result['request_seconds'] = time.perf_counter() - start
        tasks = list(Transaction().tasks)
        Transaction().tasks.clear()
        for task_id in tasks:
            run_task(db, task_id)
        result['seconds'] = time.perf_counter() - start
        result['ended_at'] = time.time()
        result['tasks'] = len(tasks)
        result['error'] = error
        result['cpu_seconds'] = cpu_seconds() - cpu
        result['children_cpu_seconds'] = (
            cpu_seconds(resource.RUSAGE_CHILDREN) - children)
        result['timers'] = timers.snapshot()
        return result

    result = {'batch_sizes': {
            'delivery': invoice_run.DELIVERY_BATCH_SIZE,
            'pdf': invoice_pdf.PDF_BATCH_SIZE}}
    problems = result['problems'] = []
    result['build'] = request(Run.build)
    built = _run_state(pool, db, context, run_id)
    result['built_lines'] = built['lines']
    if built['lines'] != {'email pending': n}:
        problems.append(f"built lines {built['lines']}, expected "
            f"{n} email pending")
    result['first'] = request(Run.execute)
    # The peak of the process up to here: the checks read all PDFs too
    result['maxrss_kib'] = maxrss_kib()
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


def worker_core(spec):
    """Core's path for the first spec['sample'] invoices: report execute
    (PDF, one soffice start), then ir.email.send with the template, one
    transaction per invoice"""
    from trytond.transaction import Transaction

    db = spec['db']
    pool, context = worker_pool(spec)
    Invoice = pool.get('account.invoice')
    InvoiceReport = pool.get('account.invoice', type='report')
    ActionReport = pool.get('ir.action.report')
    ModelData = pool.get('ir.model.data')
    Email = pool.get('ir.email')
    Template = pool.get('ir.email.template')
    with Transaction().start(db, 0, context=context) as transaction:
        action = ActionReport(
            ModelData.get_id('account_invoice', 'report_invoice'))
        action.extension = 'pdf'
        action.save()
        template_id = ModelData.get_id(
            'recurring_invoice', 'email_template_invoice')
        ids = [i.id for i in Invoice.search([('state', '=', 'posted')],
                order=[('number', 'ASC')], limit=spec['sample'])]
        transaction.commit()
    render, mail, problems = [], [], []
    started_at = time.time()
    for id_ in ids:
        with Transaction().start(db, 0, context=context) as transaction:
            start = time.perf_counter()
            format_, content, _, _ = InvoiceReport.execute([id_], {})
            render.append(time.perf_counter() - start)
            if format_ != 'pdf' or not bytes(content).startswith(b'%PDF'):
                problems.append(f"invoice {id_} rendered as {format_}")
            start = time.perf_counter()
            invoice = Invoice(id_)
            values = Template(template_id).get(invoice)
            Email.send(
                to=', '.join(values.get('to', [])),
                subject=values.get('subject', ''),
                body=values.get('body', ''),
                record=(Invoice.__name__, id_),
                reports=values.get('reports'))
            transaction.commit()
            mail.append(time.perf_counter() - start)
    return {'render': render, 'mail': mail, 'invoices': len(ids),
        'started_at': started_at, 'ended_at': time.time(),
        'problems': problems}


WORKERS = {
    'template': worker_template,
    'populate': worker_populate,
    'measure': worker_measure,
    'core': worker_core,
    }


# ---------------------------------------------------------------------------
# Driver side


def _mails_in(messages, step):
    return [m for m in messages
        if step['started_at'] <= m[0] <= step['ended_at'] + 1]


def measure(options, backend):
    "Populate once, then the measured runs and core's sample"
    sink = MailSink().start()
    log(f"{backend.name}: SMTP sink on 127.0.0.1:{sink.port}")
    settings = [['email', 'uri', f'smtp://127.0.0.1:{sink.port}'],
        ['email', 'from', MAIL_FROM]]
    n = options.invoices
    try:
        filled = backend.db_name('filled', n)
        built = run_worker(SCRIPT, backend, 'template', {'db': filled},
            options.timeout)
        backend.created.append(filled)
        if 'crash' in built or 'timeout' in built:
            sys.exit(f"could not build {filled}, see {built['log']}")
        spec = {'db': filled, 'n': n, 'settings': settings}
        pop = run_worker(SCRIPT, backend, 'populate', spec, options.timeout)
        if 'crash' in pop or 'timeout' in pop:
            sys.exit(f"could not create the invoices, see {pop['log']}")
        log(f"{backend.name}: template {built['seconds']:.0f} s, "
            f"{n} posted invoices in {pop['seconds']:.0f} s")
        runs = []
        for repeat in range(options.repeat):
            run_spec = dict(spec, db=backend.db_name('run', n, repeat))
            backend.copy(filled, run_spec['db'])
            sink.take()
            result = run_measured(
                SCRIPT, backend, 'measure', run_spec, options.timeout)
            messages = sink.take()
            backend.drop(run_spec['db'])
            runs.append(result)
            if 'first' not in result:
                result.update(ok=False, problems=['no result'])
                log(f"run {repeat + 1}: no result ({result['log']})")
                break
            expected = result['after_first'].pop('expected_mails')
            first = _mails_in(messages, result['first'])
            result['mails'] = {
                'first': check_mails(first, expected),
                'second': len(_mails_in(messages, result['second'])),
                'total': len(messages),
                }
            mails = result['mails']
            if mails['first']['count'] != n:
                result['problems'].append(
                    f"{mails['first']['count']} mails, expected {n}")
            result['problems'].extend(mails['first']['problems'])
            if mails['second']:
                result['problems'].append(
                    f"second execute sent {mails['second']} mails")
            if mails['total'] != mails['first']['count'] + mails['second']:
                result['problems'].append(f"{mails['total']} mails in all")
            result['ok'] = not result['problems']
            log(f"{backend.name} N={n} run {repeat + 1}: build "
                f"{result['build']['seconds']:.2f} s, execute "
                f"{result['first']['seconds']:.2f} s, second "
                f"{result['second']['seconds']:.2f} s, mails "
                f"{mails['first']['count']}/{mails['second']}, "
                f"ok={result['ok']} {'; '.join(result['problems'])}")
            if not result['ok']:
                break
        core = None
        if options.core_sample:
            core_spec = dict(spec, db=backend.db_name('core', n),
                sample=options.core_sample)
            backend.copy(filled, core_spec['db'])
            sink.take()
            core = run_measured(
                SCRIPT, backend, 'core', core_spec, options.timeout)
            messages = sink.take()
            backend.drop(core_spec['db'])
            if 'render' in core:
                core['mails'] = len(messages)
                if len(messages) != core['invoices']:
                    core['problems'].append(f"core: {len(messages)} mails "
                        f"for {core['invoices']} invoices")
                log(f"core: {median(core['render']):.2f} s render + "
                    f"{median(core['mail']):.2f} s mail per invoice "
                    f"(median), {len(messages)} mails")
    finally:
        sink.stop()
    return {'populate': pop, 'template': built, 'runs': runs, 'core': core}


# ---------------------------------------------------------------------------
# Report


def _what_section(options):
    return "\n".join([
        "## What is measured",
        "",
        "`tests/benchmark_invoice_run.py` (see its docstring) fills one "
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
        "(`benchmark_common.Timers`); CPU Python is the measuring "
        "process's during the execute, CPU soffice that of its LibreOffice "
        "children; the peak RSS is the measuring process's from its start "
        "(pool loaded) to the end of the execute, before the checks.",
        ])


def results_heading(backend, n):
    return f"## Results: {BACKEND_LABELS[backend]}, N = {n}"


def results_section(backend, machine, data, options, started, total,
        command, notes):
    n = options.invoices
    runs = [r for r in data['runs'] if 'first' in r]
    ok = data['runs'] and all(r.get('ok') for r in data['runs'])
    lines = [results_heading(backend.name, n), ""]
    add = lines.append
    add(f"Run on {started:%Y-%m-%d %H:%M} (total {total / 60:.1f} min) "
        "with:")
    add("")
    add("```")
    add(command)
    add("```")
    add("")
    add(f"Code: commit {machine['code']}. {machine['cpu']}, "
        f"{machine['cores']} cores, {machine['memory_gib']:.1f} GiB; "
        f"{machine['os']}; Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine['versions'].items())
        + f"; {soffice_version()}; {machine['backend']}.")
    add("")
    add(f"{n} posted invoices created in {data['populate']['seconds']:.0f} s "
        f"(not measured). {len(runs)} measured run(s)"
        + (", median shown" if len(runs) > 1 else "") + ".")
    add("")

    def med(key, step='first'):
        return median([r[step][key] for r in runs])

    def med_timer(key, step='first'):
        return median([r[step]['timers']['seconds'].get(key, 0)
                for r in runs])

    core = data.get('core') or {}
    core_per = None
    if core.get('render'):
        core_per = median([a + b for a, b in zip(
                    core['render'], core['mail'])])
    add("| N | Backend | Result | Build (s) | Execute (s) | Range (s) "
        "| Invoices/s | Mails | 2nd execute (s) | 2nd mails "
        "| Core (s/invoice) | Ours (s/invoice) | Core / ours |")
    add("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: |")
    if runs:
        execute = med('seconds')
        times = sorted(r['first']['seconds'] for r in runs)
        spread = (f"{times[0]:.1f}–{times[-1]:.1f} ({len(times)} runs)"
            if len(times) > 1 else "(1 run)")
        status = "ok" if ok else "**WRONG**: " + "; ".join(
            p for r in data['runs'] for p in r.get('problems', []))[:300]
        ours = execute / n
        add("| " + " | ".join([
                    str(n), BACKEND_LABELS[backend.name], status,
                    fmt(med('seconds', 'build')), f"{execute:.1f}", spread,
                    f"{n / execute:.2f}",
                    str(median([r['mails']['first']['count'] for r in runs])),
                    fmt(med('seconds', 'second')),
                    str(max(r['mails']['second'] for r in runs)),
                    fmt(core_per), f"{ours:.3f}",
                    f"{core_per / ours:.1f}×" if core_per else '',
                    ]) + " |")
    else:
        add(f"| {n} | {BACKEND_LABELS[backend.name]} | **no result** |"
            + " |" * 10)
    add("")
    if runs:
        execute = med('seconds')
        render, soffice = med_timer('render'), med_timer('soffice')
        compose, smtp = med_timer('compose'), med_timer('smtp')
        files = med_timer('files')
        deliver = med_timer('deliver')
        r0 = runs[0]['first']['timers']['calls']
        rest = execute - render - compose - smtp - files
        add("Where the time of the execute goes (median of the runs, "
            "seconds and share):")
        add("")
        add("| Button (request) | Queue task | Rendering `render_pdf_cache` "
            "| of which `soffice` | Compose + `ir.email.send` "
            "| SMTP at commit | ZIP `build_files` | Rest (reads, saves, "
            "commits) | CPU Python | CPU soffice | Peak RSS (MiB) |")
        add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: |")

        def share(value):
            return f"{value:.1f} ({value / execute:.0%})"
        add("| " + " | ".join([
                    fmt(med('request_seconds')),
                    f"{deliver:.1f} ({r0.get('deliver', 0)} task)",
                    share(render) + f", {render / n:.3f}/invoice",
                    share(soffice) + f", {r0.get('soffice', 0)} starts",
                    share(compose) + f", {compose / n:.3f}/invoice",
                    share(smtp), share(files), share(rest),
                    fmt(med('cpu_seconds'), 1),
                    fmt(med('children_cpu_seconds'), 1),
                    f"{median([r['maxrss_kib'] for r in runs]) / 1024:.0f}",
                    ]) + " |")
        add("")
        add("Second execute: " + fmt(med('seconds', 'second'))
            + " s, of which ZIP " + fmt(med_timer('files', 'second'))
            + " s. ZIP of the run: "
            f"{runs[0]['after_first']['zip_kib'] / 1024:.1f} MiB, "
            f"mail attachment {runs[0]['mails']['first']['pdf_kib']:.0f} KiB"
            " on average.")
        add("")
    if core.get('render'):
        add(f"Core, {core['invoices']} invoices one at a time (s/invoice): "
            f"render median {median(core['render']):.2f} (mean "
            f"{sum(core['render']) / len(core['render']):.2f}, "
            f"{min(core['render']):.2f}–{max(core['render']):.2f}), "
            f"template + `ir.email.send` + SMTP median "
            f"{median(core['mail']):.3f}; {core['mails']} mails received"
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
    measured = [r for r in data['runs'] + [core] if r
        and 'window_seconds' in r]
    if measured:
        loads = [r['load_before'] for r in measured]
        other = [other_cores(r) for r in measured]
        add(f"Machine load ({os.cpu_count()} cores, shared): 1-minute load "
            f"average {min(loads):.2f}–{max(loads):.2f} before the measured "
            "processes; while they ran, the other processes used "
            + ", ".join(f"{o:.2f}" for o in other)
            + " cores on average (measured runs, then core's sample; the "
            "database server's share included on PostgreSQL).")
        add("")
    for note in notes:
        add(note)
        add("")
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark the manual invoice run")
    parser.add_argument('-n', '--invoices', type=int, default=1000)
    parser.add_argument('--backend', default='postgresql',
        choices=['sqlite', 'postgresql'],
        help="PostgreSQL needs TRYTOND_DATABASE_URI (default)")
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--core-sample', type=int, default=50,
        help="invoices core mails one at a time (0: skip)")
    parser.add_argument('--write', action='store_true',
        help="replace the sections in the output file")
    parser.add_argument('--output', default=DEFAULT_OUTPUT)
    parser.add_argument('--timeout', type=float, default=1800)
    parser.add_argument('--keep', action='store_true')
    parser.add_argument('--json', help="also write the raw results there")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(argv)
    output = options.output
    if not os.path.isabs(output):
        output = os.path.join(ROOT, output)
    uri = os.environ.get('TRYTOND_DATABASE_URI', '')
    if options.backend == 'postgresql' and not uri.startswith('postgresql'):
        sys.exit("TRYTOND_DATABASE_URI must point to a PostgreSQL server")
    command = command_line(SCRIPT)
    workdir = tempfile.mkdtemp(prefix='turnus-bench-run-')
    log(f"work directory {workdir}")
    started = dt.datetime.now()
    start = time.monotonic()
    backend = Backend(options.backend, workdir, uri, prefix='bench_run')
    # Core's soffice uses the default profile of $HOME: a private one for
    # the workers
    home = os.environ.get('HOME')
    os.environ['HOME'] = os.path.join(workdir, 'home')
    os.makedirs(os.environ['HOME'])
    notes = []
    try:
        machine = machine_description(DISTRIBUTIONS)
        machine['backend'] = backend.version()
        machine['versions']['aiosmtpd'] = importlib.metadata.version(
            'aiosmtpd')
        fingerprint = modules_fingerprint()
        data = measure(options, backend)
        if modules_fingerprint() != fingerprint:
            notes.append(f"**modules/ changed during the run** "
                f"({machine['code']} at the start, {code_version()} at the "
                "end): the runs may have measured different versions.")
    finally:
        backend.drop_all()
        if home is None:
            del os.environ['HOME']
        else:
            os.environ['HOME'] = home
        if options.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - start
    section = results_section(backend, machine, data, options, started,
        total, command, notes)
    print('\n'.join(section))
    if options.write:
        update_section(output, _what_section(options), title=TITLE)
        update_section(output, '\n'.join(section),
            before=('## Observations', '## How to re-run'), title=TITLE)
        log(f"{output} updated")
    if options.json:
        with open(options.json, 'w') as fp:
            json.dump(data, fp, indent=1, default=str)
    return 0 if data['runs'] and all(r.get('ok') for r in data['runs']) \
        else 1


if __name__ == '__main__':
    run_script(main, WORKERS)
