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

With ``--delivery`` it measures instead the night with e-mail delivery,
end to end (section "Nightly run with e-mail delivery" of the report, which
replaces itself there and keeps the rest of the file): N contracts with
automatic delivery by e-mail (one delivery setting each, the module's
template, customers with an e-mail address, a fiscal year to post in); the
night is ``generate_recurring_invoices(D)``, which generates, posts, renders
the PDFs with ``render_pdf_cache`` and e-mails them through trytond's
``[email] uri`` to an SMTP sink (aiosmtpd) that the driver runs on
127.0.0.1.  The measuring process times generation, posting, rendering
(and its ``soffice`` part), composing and SMTP by wrapping those methods
(in this benchmark process only); the sink checks N mails, one per invoice,
each with the invoice's stored PDF, and none in a second night.  After the
first run the same process renders the first ``--core-pdf`` invoices again
as core does, one ``InvoiceReport.execute`` per invoice with the report
action's output format PDF, and with ``render_pdf_cache`` for comparison.
A last run has the converter down (``[recurring_invoice] soffice =
/nonexistent/soffice``) and must end within ``--down-timeout`` with the
lines failed and a reason.  Measured without queue workers (the delivery
runs in the cron process).

Usage::

    python tests/benchmark_nightly.py [--sizes 200,2000]
        [--backend sqlite|postgresql|both] [--core|--no-core]
        [--output doc/benchmark.md] [--repeat 3] [--timeout 600]
    python tests/benchmark_nightly.py --delivery [--sizes 200]
        [--backend sqlite|postgresql|both] [--repeat 3] [--core-pdf 30]
        [--down-timeout 120]

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
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from benchmark_common import (
    ROOT, Backend, QueryCounter, Timers, call_in_transaction, code_version,
    command_line, cpu_seconds, create_database, fmt, init_trytond, log,
    maxrss_kib, median, modules_fingerprint, other_cores, read_section,
    representative, rss_kib, run_measured, run_script, run_worker,
    update_section, worker_pool)
from benchmark_common import machine_description as common_machine_description

SCRIPT = os.path.abspath(__file__)
DEFAULT_OUTPUT = os.path.join('doc', 'benchmark.md')
# Records created or processed in one call while populating
SLICE = 500
PRICE = 100
FLAVOURS = {
    'turnus': ['recurring_invoice'],
    'core': ['sale_subscription'],
    # recurring_invoice with a fiscal year and automatic e-mail delivery
    'delivery': ['recurring_invoice'],
    }
FLAVOUR_LABELS = {
    'turnus': "recurring_invoice `generate_recurring_invoices`",
    'core': "core sale_subscription `generate_consumption` + "
    "`generate_invoice`",
    'delivery': "recurring_invoice `generate_recurring_invoices` with "
    "e-mail delivery",
    }
DELIVERY_HEADING = "## Nightly run with e-mail delivery"
# Sections of the report that a run of the nightly benchmark keeps, in
# their order: written by hand, or by the delivery benchmark
KEPT_HEADINGS = ['## Summary', '## Larger runs', DELIVERY_HEADING]
TITLE = "# Benchmark of the nightly recurring invoice generation"
# The generated sections go before this one (else at the end)
BEFORE = ('## How to re-run',)
DISTRIBUTIONS = ['trytond', 'trytond_sale_subscription', 'trytond_account',
    'trytond_account_invoice', 'proteus', 'python-sql']
MAIL_FROM = "rechnung@turnus-bench.example"
# Targets of the issue for 200 contracts on 2 cores
TARGET_RENDER_PER_INVOICE = 0.15
TARGET_NIGHT_200 = 60


def due_date():
    "The date on which every contract is due: first day of last month"
    today = dt.date.today()
    first = today.replace(day=1)
    return (first - dt.timedelta(days=1)).replace(day=1)


# ---------------------------------------------------------------------------
# Worker side: runs in a subprocess with trytond configured by a file


def _create_database(spec):
    "Create the database and activate the modules of the flavour"
    create_database(spec['db'], FLAVOURS[spec['flavour']], translatable=True)


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

    if spec['flavour'] == 'delivery':
        _setup_delivery(spec)


def _setup_delivery(spec):
    "A fiscal year around the due date to post, and automatic delivery on"
    from proteus import Model

    from trytond.modules.account.tests.tools import create_fiscalyear
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)

    date = dt.date.fromisoformat(spec['date'])
    # Automatic posting dates the invoices of past periods today
    today = dt.date.today()
    fiscalyear = set_fiscalyear_invoice_sequences(
        create_fiscalyear(today=(min(date, today), max(date, today))))
    fiscalyear.click('create_period')
    Configuration = Model.get('sale.configuration')
    configuration = Configuration(1)
    configuration.automatic_delivery = True
    configuration.save()


def customer_email(number):
    "The e-mail address of customer number (1-based)"
    return f"customer{number:05d}@example.com"


def worker_template(spec):
    start = time.monotonic()
    init_trytond(spec)
    _create_database(spec)
    _setup_company(spec)
    return {'seconds': time.monotonic() - start}


def worker_populate(spec):
    "Create N customers and N running contracts due on spec['date']"
    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n = spec['db'], spec['n']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = worker_pool(spec)
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
            party_values = [{
                    'name': f"Customer {offset + i + 1:05d}",
                    'addresses': [('create', [{
                                    'street': f"Hauptstraße {i + 1}",
                                    'postal_code': '10115',
                                    'city': 'Berlin',
                                    'invoice': True,
                                    }])],
                    } for i in range(size)]
            if spec['flavour'] == 'delivery':
                for i, value in enumerate(party_values):
                    value['contact_mechanisms'] = [('create', [{
                                    'type': 'email',
                                    'value': customer_email(offset + i + 1),
                                    }])]
            parties = Party.create(party_values)
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

        if spec['flavour'] in {'turnus', 'delivery'}:
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
        if spec['flavour'] == 'delivery':
            _setup_contract_deliveries(pool, ids)
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
        # core's sale_subscription has no delivery settings
        automatic = Subscription.search_count([
                ('automatic_delivery', '=', True),
                ('standard_delivery', '!=', None),
                ]) if spec['flavour'] == 'delivery' else None
    if due != n:
        raise AssertionError(f"{due} contracts due on {date}, expected {n}")
    if spec['flavour'] == 'delivery' and automatic != n:
        raise AssertionError(
            f"{automatic} contracts with automatic delivery, expected {n}")
    return {
        'seconds': time.monotonic() - start,
        'create_seconds': created - start,
        'due': due,
        }


def _setup_contract_deliveries(pool, ids):
    """Give each contract its own standard delivery (post, e-mail with the
    template of the module) and switch its automatic delivery on"""
    from trytond.transaction import Transaction

    Delivery = pool.get('sale.subscription.delivery')
    ModelData = pool.get('ir.model.data')
    Subscription = pool.get('sale.subscription')
    template_id = ModelData.get_id(
        'recurring_invoice', 'email_template_invoice')
    for offset in range(0, len(ids), SLICE):
        sub_ids = ids[offset:offset + SLICE]
        deliveries = Delivery.create([{
                    'kind': 'standard',
                    'post': True,
                    'channels': ['email'],
                    'email_template': template_id,
                    } for _ in sub_ids])
        args = []
        for sub_id, delivery in zip(sub_ids, deliveries):
            args.extend([Subscription.browse([sub_id]), {
                        'standard_delivery': delivery.id,
                        'automatic_delivery': True,
                        }])
        # Switching automatic delivery on asks for confirmation
        with Transaction().set_context(_skip_warnings=True):
            Subscription.write(*args)


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

    db, flavour, n = spec['db'], spec['flavour'], spec['n']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    Line = pool.get('sale.subscription.line')
    counter = QueryCounter()
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
            error = call_in_transaction(db, context, method, date)
            steps[name] = time.perf_counter() - start
            if error:
                error['step'] = name
                break
        return steps, error

    rss_before = rss_kib()
    queries_before = counter.count
    cpu_before = cpu_seconds()
    steps, error = nightly()
    seconds = sum(steps.values())
    maxrss = maxrss_kib()
    cpu = cpu_seconds() - cpu_before
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


def _delivery_state(pool, db, context):
    "What the nightly runs left: invoices, protocol lines, e-mails"
    import hashlib

    from trytond.transaction import Transaction
    with Transaction().start(db, 0, context=context, readonly=True):
        Invoice = pool.get('account.invoice')
        Run = pool.get('account.invoice.run')
        RunLine = pool.get('account.invoice.run.line')
        Email = pool.get('ir.email')
        Subscription = pool.get('sale.subscription')
        invoices = Invoice.search(
            [('subscription', '!=', None)], order=[('id', 'ASC')])
        lines = RunLine.search([], order=[('id', 'ASC')])
        states = defaultdict(int)
        formats = defaultdict(int)
        expected = {}
        for invoice in invoices:
            states[invoice.state] += 1
            formats[str(invoice.invoice_report_format)] += 1
            cache = invoice.invoice_report_cache
            if invoice.number:
                # What the mail of the invoice must be: to its party, with
                # the stored PDF
                expected[invoice.number] = {
                    'to': invoice.party.email,
                    'sha256': (hashlib.sha256(cache).hexdigest()
                        if cache and invoice.invoice_report_format == 'pdf'
                        else None),
                    }
        line_states = defaultdict(int)
        reasons = defaultdict(int)
        for line in lines:
            line_states[line.state] += 1
            if line.state == 'failed':
                reasons[line.message or ''] += 1
        return {
            'invoices': len(invoices),
            'invoice_states': dict(states),
            'report_formats': dict(formats),
            'invoiced_contracts': len({i.subscription.id for i in invoices}),
            'invoice_errors': Subscription.search_count(
                [('invoice_error', '!=', None)]),
            'runs': Run.search_count([]),
            'run_lines': len(lines),
            'line_states': dict(line_states),
            'failure_reasons': dict(reasons),
            'emails_logged': Email.search_count([]),
            'expected_mails': expected,
            }


def worker_delivery(spec):
    """Time the nightly run with e-mail delivery for spec['date'] (the mails
    go to the SMTP sink of the driver), check it and time a second run;
    then time core's rendering of the first spec['core_pdf'] invoices one
    report at a time, and recurring_invoice's of the same invoices"""
    import trytond.sendmail as sendmail
    from trytond import backend
    from trytond.transaction import Transaction
    from trytond.worker import run_task

    db, n = spec['db'], spec['n']
    down = spec.get('converter_down', False)
    date = dt.date.fromisoformat(spec['date'])
    pool, context = worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    Invoice = pool.get('account.invoice')
    InvoiceReport = pool.get('account.invoice', type='report')
    RunLine = pool.get('account.invoice.run.line')
    invoice_pdf = sys.modules[InvoiceReport.render_pdf_cache.__module__]
    invoice_run = sys.modules[RunLine.deliver.__module__]
    batch_sizes = {
        'delivery': getattr(invoice_run, 'DELIVERY_BATCH_SIZE', None),
        'pdf': getattr(invoice_pdf, 'PDF_BATCH_SIZE', None),
        }
    counter = QueryCounter()
    counter.install(backend.name)

    timers = Timers()
    timers.wrap_classmethod(
        Subscription, 'deliver_recurring_invoices', 'delivery')
    timers.wrap_classmethod(Invoice, 'post', 'post')
    timers.wrap_classmethod(InvoiceReport, 'render_pdf_cache', 'render')
    timers.wrap_function(invoice_pdf, '_run_soffice', 'soffice')
    timers.wrap_classmethod(RunLine, 'deliver_email', 'compose')
    timers.wrap_method(sendmail.SMTPDataManager, 'tpc_vote', 'smtp')
    timers.wrap_method(sendmail.SMTPDataManager, 'tpc_finish', 'smtp')

    def night():
        "Like ir.cron: the method in a transaction, then the queued tasks"
        timers.reset()
        result = {'started_at': time.time()}
        cpu = cpu_seconds()
        children = cpu_seconds(resource.RUSAGE_CHILDREN)
        queries = counter.count
        start = time.perf_counter()
        error = call_in_transaction(
            db, context, Subscription.generate_recurring_invoices, date)
        if error:
            result['error'] = error
        result['seconds'] = time.perf_counter() - start
        # Core's print_invoice queued at posting (finds the PDF stored)
        tasks = list(Transaction().tasks)
        Transaction().tasks.clear()
        for task_id in tasks:
            run_task(db, task_id)
        result['tasks'] = len(tasks)
        result['tasks_seconds'] = time.perf_counter() - start - result[
            'seconds']
        result['ended_at'] = time.time()
        result['cpu_seconds'] = cpu_seconds() - cpu
        result['children_cpu_seconds'] = (
            cpu_seconds(resource.RUSAGE_CHILDREN) - children)
        result['queries'] = counter.count - queries
        result['timers'] = timers.snapshot()
        return result

    rss_before = rss_kib()
    first = night()
    result = {
        'first': first,
        'batch_sizes': batch_sizes,
        'rss_before_kib': rss_before,
        'maxrss_kib': maxrss_kib(),
        }
    state_context = dict(context, date=date)
    result['after_first'] = state1 = _delivery_state(pool, db, state_context)
    problems = []
    if first.get('error'):
        problems.append(f"the run raised {first['error']['type']}")
    if state1['invoices'] != n:
        problems.append(f"{state1['invoices']} invoices, expected {n}")
    if state1['invoice_errors']:
        problems.append(
            f"{state1['invoice_errors']} contracts with an invoicing error")
    if state1['invoice_states'].get('posted', 0) != n:
        problems.append(f"posted: {state1['invoice_states']}, expected {n}")
    if state1['runs'] != 1 or state1['run_lines'] != n:
        problems.append(f"{state1['runs']} runs with {state1['run_lines']} "
            f"lines, expected 1 with {n}")
    if down:
        if state1['line_states'].get('failed', 0) != n:
            problems.append(
                f"lines {state1['line_states']}, expected {n} failed")
        if not all(state1['failure_reasons']):
            problems.append("failed lines without a reason")
    else:
        if state1['line_states'].get('done', 0) != n:
            problems.append(
                f"lines {state1['line_states']}, expected {n} done")
        if state1['report_formats'].get('pdf', 0) != n:
            problems.append(
                f"report formats {state1['report_formats']}, "
                f"expected {n} PDF")
        if state1['emails_logged'] != n:
            problems.append(
                f"{state1['emails_logged']} e-mails logged, expected {n}")

    # Again for the same date: creates and sends nothing (it retries the
    # failed lines when the converter is down)
    second = night()
    result['second'] = second
    result['after_second'] = state2 = _delivery_state(
        pool, db, state_context)
    if second.get('error'):
        problems.append(f"second run raised {second['error']['type']}")
    for key in ['invoices', 'runs', 'run_lines', 'emails_logged']:
        if state2[key] != state1[key]:
            problems.append(f"second run: {key} {state1[key]} -> "
                f"{state2[key]}")
    if state2['line_states'] != state1['line_states']:
        problems.append(f"second run: lines {state1['line_states']} -> "
            f"{state2['line_states']}")

    if not down and spec.get('core_pdf') and not problems:
        result['render_compare'] = _compare_rendering(
            pool, db, context, spec['core_pdf'], timers)
        problems.extend(result['render_compare'].pop('problems'))
    result['problems'] = problems
    result['ok'] = not problems
    return result


def _compare_rendering(pool, db, context, count, timers):
    """Render the PDF of the first count invoices of the night again, with
    their cache emptied: by render_pdf_cache (one soffice call), then as
    core does, one InvoiceReport.execute per invoice with the report action's
    output format set to PDF (one soffice start each).  Rolled back."""
    from trytond.transaction import Transaction

    Invoice = pool.get('account.invoice')
    InvoiceReport = pool.get('account.invoice', type='report')
    ActionReport = pool.get('ir.action.report')
    ModelData = pool.get('ir.model.data')
    problems = []
    result = {}
    with Transaction().start(db, 0, context=context) as transaction:
        invoices = Invoice.search([
                ('subscription', '!=', None),
                ('state', '=', 'posted'),
                ], order=[('id', 'ASC')], limit=count)
        ids = [i.id for i in invoices]
        result['invoices'] = len(ids)

        def clear():
            Invoice.write(Invoice.browse(ids), {
                    'invoice_report_cache': None,
                    'invoice_report_format': None,
                    })

        def check(label):
            bad = [i.id for i in Invoice.browse(ids)
                if i.invoice_report_format != 'pdf'
                or not (i.invoice_report_cache or b'').startswith(b'%PDF')]
            if bad:
                problems.append(f"{label}: {len(bad)} invoices without PDF")

        clear()
        timers.reset()
        start = time.perf_counter()
        InvoiceReport.render_pdf_cache(Invoice.browse(ids))
        result['batch_seconds'] = time.perf_counter() - start
        result['batch_soffice_seconds'] = timers.seconds.get('soffice', 0)
        check("render_pdf_cache")

        clear()
        action = ActionReport(
            ModelData.get_id('account_invoice', 'report_invoice'))
        action.extension = 'pdf'
        action.save()
        times = []
        for id_ in ids:
            start = time.perf_counter()
            format_, content, _, _ = InvoiceReport.execute([id_], {})
            times.append(time.perf_counter() - start)
            if format_ != 'pdf' or not bytes(content).startswith(b'%PDF'):
                problems.append(
                    f"core: invoice {id_} rendered as {format_}, not PDF")
                break
        result['core_seconds'] = times
        check("core")
        transaction.rollback()
    result['problems'] = problems
    return result


WORKERS = {
    'template': worker_template,
    'populate': worker_populate,
    'measure': worker_measure,
    'delivery': worker_delivery,
    }


# ---------------------------------------------------------------------------
# Driver side


def machine_description(backends):
    machine = common_machine_description(DISTRIBUTIONS)
    machine['backends'] = {b.name: b.version() for b in backends}
    return machine


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
    # The hand-written sections and the one of the delivery benchmark
    # (--delivery) stay
    kept = [read_section(path, heading) for heading in KEPT_HEADINGS]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as fp:
        fp.write('\n'.join(lines))
    for section in kept:
        if section:
            update_section(path, section, before=BEFORE, title=TITLE)

# ---------------------------------------------------------------------------
# End-to-end delivery: driver side


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

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (time.time(), list(envelope.rcpt_tos), envelope.content))
        return '250 OK'

    def start(self):
        from aiosmtpd.controller import Controller
        self.controller = Controller(self, hostname='127.0.0.1',
            port=self.port)
        self.controller.start()
        return self

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None

    def take(self):
        "Return the messages received so far and forget them"
        messages, self.messages = self.messages, []
        return messages


def check_mails(messages, expected):
    """Check the mails of a night against the invoices it should deliver:
    one per invoice, to its party, with the invoice's stored PDF attached"""
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
        attachments = list(message.iter_attachments())
        pdfs = [a for a in attachments
            if (a.get_filename() or '').endswith('.pdf')]
        if len(attachments) != 1 or len(pdfs) != 1:
            problems.append(f"invoice {number}: {len(attachments)} "
                f"attachments, {len(pdfs)} PDF")
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


def split_mails(messages, result):
    "The messages received during the first night, the second, and else"
    first = result['first']
    second = result['second']
    parts = {'first': [], 'second': [], 'outside': []}
    for message in messages:
        received = message[0]
        if first['started_at'] <= received <= first['ended_at']:
            parts['first'].append(message)
        elif second['started_at'] <= received <= second['ended_at']:
            parts['second'].append(message)
        else:
            parts['outside'].append(message)
    return parts


def run_delivery(options, backend, sizes, date):
    "Build, fill and measure the delivery databases of a backend"
    measurements = []
    sink = MailSink().start()
    log(f"{backend.name}: SMTP sink on 127.0.0.1:{sink.port}")
    settings = [
        ['email', 'uri', f'smtp://127.0.0.1:{sink.port}'],
        ['email', 'from', MAIL_FROM],
        ]
    try:
        template = backend.db_name('tpl', 'delivery')
        built = run_worker(SCRIPT, backend, 'template',
            {'db': template, 'flavour': 'delivery', 'date': date},
            options.timeout * 2)
        backend.created.append(template)
        if 'crash' in built or 'timeout' in built:
            sys.exit(f"could not build the template {template}, "
                f"see {built['log']}")
        log(f"{backend.name}: template delivery built in "
            f"{built['seconds']:.0f} s")
        for n in sizes:
            db = backend.db_name('delivery', n)
            backend.copy(template, db)
            spec = {'db': db, 'flavour': 'delivery', 'n': n, 'date': date}
            pop = run_worker(
                SCRIPT, backend, 'populate', spec, options.timeout * 2)
            measurement = {'backend': backend.name, 'n': n}
            measurements.append(measurement)
            if 'crash' in pop or 'timeout' in pop:
                measurement['result'] = {
                    'skipped': f"data setup failed ({pop['log']})"}
                continue
            measurement['populate'] = pop['seconds']
            log(f"{backend.name}: {db} filled in {pop['seconds']:.0f} s")
            cases = [('runs', r, {}) for r in range(options.repeat)]
            cases.append(('down', 0, {'converter_down': True}))
            for case, repeat, extra in cases:
                run_spec = dict(spec, **extra,
                    db=backend.db_name('delivery', n, case, repeat),
                    settings=list(settings),
                    # Core's rendering after the first run only: ~1 s each
                    core_pdf=options.core_pdf if (
                        case == 'runs' and repeat == 0) else 0)
                if case == 'down':
                    run_spec['settings'].append(
                        ['recurring_invoice', 'soffice',
                            '/nonexistent/soffice'])
                backend.copy(db, run_spec['db'])
                sink.take()
                timeout = (options.down_timeout if case == 'down'
                    else options.timeout)
                # With the CPU of the whole machine while the worker ran,
                # and the worker's own (with soffice): the rest is
                # everybody else's
                result = run_measured(
                    SCRIPT, backend, 'delivery', run_spec, timeout)
                messages = sink.take()
                if 'first' in result:
                    parts = split_mails(messages, result)
                    expected = ({} if case == 'down'
                        else result['after_first']['expected_mails'])
                    result['mails'] = {
                        'first': check_mails(parts['first'], expected),
                        'second': len(parts['second']),
                        'outside': len(parts['outside']),
                        }
                    mails = result['mails']
                    if case == 'down':
                        if mails['first']['count']:
                            result['problems'].append(
                                f"{mails['first']['count']} mails with the "
                                "converter down")
                    else:
                        if mails['first']['count'] != n:
                            result['problems'].append(
                                f"{mails['first']['count']} mails, "
                                f"expected {n}")
                        result['problems'].extend(
                            mails['first']['problems'])
                    if mails['second']:
                        result['problems'].append(
                            f"second run sent {mails['second']} mails")
                    if mails['outside']:
                        result['problems'].append(
                            f"{mails['outside']} mails outside the runs")
                    result['ok'] = not result['problems']
                    # Only the figures are kept
                    for state in ['after_first', 'after_second']:
                        result[state].pop('expected_mails', None)
                    render = result['first']['timers']['seconds'].get(
                        'render', 0)
                    log(f"{backend.name} N={n} {case} {repeat + 1}: night "
                        f"{result['first']['seconds']:.2f} s, render "
                        f"{render:.2f} s, "
                        f"mails {mails['first']['count']}/"
                        f"{mails['second']}, ok={result['ok']} "
                        f"{'; '.join(result['problems'])}")
                else:
                    result.setdefault('problems', [])
                    result['ok'] = False
                    result['mails_received'] = len(messages)
                    log(f"{backend.name} N={n} {case} {repeat + 1}: no "
                        f"result ({result['log']})")
                measurement.setdefault(case, []).append(result)
                backend.drop(run_spec['db'])
                if case == 'runs' and not result['ok']:
                    break
            measurement['result'] = representative(
                measurement.get('runs', []))
    finally:
        sink.stop()
    return measurements


def soffice_version():
    try:
        output = subprocess.run(['soffice', '--version'],
            capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return ' '.join(output.split()[:2]) or "soffice (unknown version)"


def _batch_size(measurements, kind):
    "The batch size of the module the runs measured ('?' if unknown)"
    sizes = {run.get('batch_sizes', {}).get(kind)
        for m in measurements for run in m.get('runs', [])}
    sizes.discard(None)
    return '/'.join(map(str, sorted(sizes))) or '?'


def _plural(count, word):
    return f"{count} {word}" + ('' if count == 1 else 's')


def delivery_section(machine, measurements, meta, started, total):
    "The lines of the section about the nightly run with e-mail delivery"
    lines = []
    add = lines.append
    add(DELIVERY_HEADING)
    add("")
    add(f"Run on {started:%Y-%m-%d %H:%M} (total {total / 60:.1f} min) "
        "with:")
    add("")
    add("```")
    add(meta['command'])
    add("```")
    add("")
    add(f"Code: commit {machine['code']}. Same machine as above "
        f"({machine['cpu']}, {machine['cores']} cores); "
        f"{meta['soffice']}, aiosmtpd {meta['aiosmtpd']}, "
        + ", ".join(f"{k} {v}" for k, v in machine['backends'].items())
        + ".")
    add("")
    add(f"N monthly contracts as above, all due on {meta['date']}, each "
        "with its own standard delivery setting (post, channel e-mail, the "
        "module's template \"Invoice\"), automatic delivery on (company "
        "switch too) and a customer with an e-mail address; the template "
        "database also has a fiscal year with invoice sequences and "
        "periods. No queue worker is configured, so the cron process "
        "delivers itself. The night is one call of "
        "`sale.subscription.generate_recurring_invoices(D)` in a "
        "transaction, as `ir.cron` runs it, in a fresh process: it creates "
        "the invoices, then, in delivery slices of "
        f"{_batch_size(measurements, 'delivery')} lines (one transaction "
        "each), posts, renders the PDFs (`render_pdf_cache`, one `soffice` "
        "call per slice, at most "
        f"{_batch_size(measurements, 'pdf')} files per call) and e-mails "
        "them through "
        "trytond's `[email] uri` to an aiosmtpd sink on 127.0.0.1 run by "
        "the driver process. The queued tasks (core's `print_invoice`, "
        "which finds the PDF stored) run afterwards and are timed "
        "separately. The sink checks that the night sent exactly N mails, "
        "one per invoice, to the customer's address, each with one PDF "
        "attachment identical (SHA-256) to the invoice's stored report and "
        "readable by pypdf; a second night for the same date must send "
        "nothing and add no protocol line. Median of the runs, each on a "
        "fresh copy of the filled database.")
    add("")
    add("| Backend | N | Result | Night (s) | Range (s) | Invoices/s "
        "| Generation (s) | Post + render + send (s) | Queued tasks (s) "
        "| CPU Python (s) | CPU soffice (s) | Peak RSS (MiB) "
        "| Mails 1st / 2nd night | 2nd night (s) |")
    add("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- | ---: |")
    rows = []
    for m in measurements:
        r = m['result']
        if not r or 'first' not in r:
            reason = r.get('skipped') or (
                f"timeout (> {r['timeout']} s)" if 'timeout' in r
                else 'crashed') if r else 'not run'
            add(f"| {m['backend']} | {m['n']} | **{reason}** |"
                + " |" * 11)
            continue
        first = r['first']
        timers = first['timers']['seconds']
        night = first['seconds']
        delivery = timers.get('delivery', 0)
        times = sorted(run['first']['seconds'] for run in m.get('runs', [])
            if 'first' in run)
        spread = (f"{times[0]:.2f}–{times[-1]:.2f} ({len(times)} runs)"
            if len(times) > 1 else "(1 run)")
        status = "ok" if r['ok'] else (
            "**WRONG**: " + "; ".join(r['problems'][:5]))
        mails = r.get('mails', {})
        add("| " + " | ".join([
                    m['backend'], str(m['n']), status, f"{night:.2f}",
                    spread, f"{m['n'] / night:.1f}",
                    f"{night - delivery:.2f}", f"{delivery:.2f}",
                    f"{first['tasks_seconds']:.2f} "
                    f"({_plural(first['tasks'], 'task')})",
                    f"{first['cpu_seconds']:.2f}",
                    f"{first['children_cpu_seconds']:.2f}",
                    f"{_mib(r['maxrss_kib']):.0f}",
                    f"{mails.get('first', {}).get('count', '?')} / "
                    f"{mails.get('second', '?')}",
                    f"{r['second']['seconds']:.2f}",
                    ]) + " |")
        rows.append((m, r))
    add("")
    add("Where the time of the night goes (same runs; wall time measured "
        "by wrapping the methods in the benchmark process):")
    add("")
    add("| Backend | N | Posting (s) | Posting (s/invoice) "
        "| Rendering `render_pdf_cache` (s) "
        "| of which `soffice` (s) | Rendering share of the night "
        "| Rendering (s/invoice) | Compose + `ir.email` (s) "
        "| SMTP at commit (s) | Rest (s) |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |")
    for m, r in rows:
        first = r['first']
        t = first['timers']['seconds']
        calls = first['timers']['calls']
        night = first['seconds']
        render = t.get('render', 0)
        rest = (t.get('delivery', 0) - t.get('post', 0) - render
            - t.get('compose', 0) - t.get('smtp', 0))
        add("| " + " | ".join([
                    m['backend'], str(m['n']), f"{t.get('post', 0):.2f}",
                    f"{t.get('post', 0) / m['n']:.3f} "
                    f"({_plural(calls.get('post', 0), 'call')})",
                    f"{render:.2f} "
                    f"({_plural(calls.get('render', 0), 'call')})",
                    f"{t.get('soffice', 0):.2f} "
                    f"({_plural(calls.get('soffice', 0), 'start')})",
                    f"{render / night:.0%}",
                    f"{render / m['n']:.3f}",
                    f"{t.get('compose', 0):.2f}", f"{t.get('smtp', 0):.2f}",
                    f"{rest:.2f}",
                    ]) + " |")
    add("")
    add("Rendering the same invoices in the same process after the first "
        "night, their report cache emptied (rolled back afterwards): "
        "`render_pdf_cache` on the first invoices at once, then core's way, "
        "`InvoiceReport.execute([id], {})` per invoice with the report "
        "action's output format set to PDF (one `soffice` start per "
        "invoice, default LibreOffice profile):")
    add("")
    add("| Backend | Invoices | Turnus in the night (s/invoice) "
        "| Turnus, same invoices again (s/invoice) "
        "| Core one at a time (s/invoice, median) | Core mean "
        "| Core min–max | Core / Turnus |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for m in measurements:
        compared = [run for run in m.get('runs', [])
            if (run.get('render_compare') or {}).get('core_seconds')]
        if not compared:
            continue
        r = compared[0]
        compare = r['render_compare']
        core = compare['core_seconds']
        count = compare['invoices']
        night_per = r['first']['timers']['seconds'].get('render', 0) / m['n']
        batch_per = compare['batch_seconds'] / count
        core_median = median(core)
        add("| " + " | ".join([
                    m['backend'], str(count), f"{night_per:.3f}",
                    f"{batch_per:.3f}", f"{core_median:.2f}",
                    f"{sum(core) / len(core):.2f}",
                    f"{min(core):.2f}–{max(core):.2f}",
                    f"{core_median / night_per:.0f}×"
                    if night_per else '',
                    ]) + " |")
    add("")
    add("LibreOffice down (`[recurring_invoice] soffice = "
        "/nonexistent/soffice`), same data, one run: the night must not "
        "hang; the invoices are posted, their lines fail with the reason "
        "and no mail is sent; the second night retries the failed lines "
        "and fails as fast:")
    add("")
    add("| Backend | N | Result | Night (s) | Posted | Lines failed | Mails "
        "| Reason | 2nd night (retry, s) | Queued tasks (s) |")
    add("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for m in measurements:
        for r in m.get('down', []):
            if 'first' not in r:
                reason = (f"**hangs**: killed after {r['timeout']} s"
                    if 'timeout' in r else "**crashed**")
                add(f"| {m['backend']} | {m['n']} | {reason} |" + " |" * 7)
                continue
            state = r['after_first']
            reasons = state['failure_reasons']
            reason = max(reasons, key=reasons.get) if reasons else ''
            status = "ok" if r['ok'] else (
                "**WRONG**: " + "; ".join(r['problems'][:5]))
            add("| " + " | ".join([
                        m['backend'], str(m['n']), status,
                        f"{r['first']['seconds']:.2f}",
                        str(state['invoice_states'].get('posted', 0)),
                        str(state['line_states'].get('failed', 0)),
                        str(r['mails']['first']['count']),
                        reason.replace('|', '\\|'),
                        f"{r['second']['seconds']:.2f}",
                        f"{r['first']['tasks_seconds']:.2f} "
                        f"({_plural(r['first']['tasks'], 'task')})",
                        ]) + " |")
    add("")
    add("### Against the targets")
    add("")
    for m, r in rows:
        render = r['first']['timers']['seconds'].get('render', 0) / m['n']
        night = r['first']['seconds']
        core = median([t for run in m.get('runs', [])
                for t in (run.get('render_compare') or {}).get(
                    'core_seconds', [])])
        verdict = "met" if render <= TARGET_RENDER_PER_INVOICE else "missed"
        text = (f"- {m['backend']}, N = {m['n']}: rendering "
            f"{render:.3f} s per invoice (target ≤ "
            f"{TARGET_RENDER_PER_INVOICE} s: {verdict}; core in the same run "
            f"{fmt(core)} s, issue: 1.05 s)")
        if m['n'] == 200:
            verdict = "met" if night <= TARGET_NIGHT_200 else "missed"
            text += (f"; whole night {night:.1f} s (target ≤ "
                f"{TARGET_NIGHT_200} s: {verdict})")
        else:
            text += f"; whole night {night:.1f} s"
        add(text + ".")
    for m in measurements:
        for r in m.get('down', []):
            if 'first' in r:
                add(f"- {m['backend']}, N = {m['n']}, converter down: "
                    f"the night ends after {r['first']['seconds']:.1f} s "
                    f"with {r['after_first']['line_states'].get('failed', 0)}"
                    " lines failed and a reason, no mail sent.")
    add("")
    loads = [(run['load_before'], run['load_after'])
        for m in measurements for case in ['runs', 'down']
        for run in m.get(case, []) if 'load_before' in run]
    if loads:
        add(("The 1-minute load average was "
            f"{min(a for a, _ in loads):.2f} to "
            f"{max(a for a, _ in loads):.2f} just before the measured runs "
            f"and {min(b for _, b in loads):.2f} to "
            f"{max(b for _, b in loads):.2f} just after them "
            "(the benchmark keeps about one core busy, LibreOffice a second "
            "one while it converts). " + meta.get('load_note', '')).strip())
        add("")
    windows = [run for m in measurements for case in ['runs', 'down']
        for run in m.get(case, []) if run.get('window_seconds')]
    if windows:
        window = sum(r['window_seconds'] for r in windows)
        other = sum(max(r['machine_cpu_seconds'] - r['worker_cpu_seconds'],
                0) for r in windows)
        add(f"While the measuring processes ran ({window:.0f} s in all, "
            "pool loading and checks included), the other processes of the "
            f"machine used {other:.0f} CPU seconds, i.e. "
            f"{other / window:.2f} of the {os.cpu_count()} cores on average "
            "(the database server's share included on PostgreSQL); "
            "per run: " + ", ".join(
                f"{other_cores(r):.2f}" for r in windows) + ".")
        add("")
    for note in meta.get('notes', []):
        add(note)
        add("")
    add("Re-run only this section (it replaces itself in this file and "
        "keeps the rest):")
    add("")
    add("```")
    add("python tests/benchmark_nightly.py --delivery --sizes 200 "
        "--backend sqlite")
    add("TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\")
    add("    python tests/benchmark_nightly.py --delivery --sizes 200 "
        "--backend both")
    add("```")
    add("")
    add("`--core-pdf` sets how many invoices core renders one at a time "
        "(default 30, 0 to skip), `--repeat` the number of runs (default "
        "3), `--down-timeout` how long the converter-down run may take "
        "before it counts as hanging (default 120 s).")
    add("")
    return lines


def main_delivery(options, sizes, output, names, uri, notes):
    "The end-to-end delivery benchmark: writes its section of output"
    started = dt.datetime.now()
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix='turnus-bench-')
    log(f"work directory {workdir}")
    date = due_date().isoformat()
    backends = [Backend(name, workdir, uri) for name in names]
    measurements = []
    try:
        machine = machine_description(backends)
        fingerprint = modules_fingerprint()
        for backend in backends:
            measurements.extend(run_delivery(options, backend, sizes, date))
        if modules_fingerprint() != fingerprint:
            notes.append(f"**modules/ changed during the run** (commit "
                f"{machine['code']} at the start, {code_version()} at the "
                "end): the runs may have measured different versions.")
    finally:
        if not options.keep:
            for backend in backends:
                backend.drop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    total = time.monotonic() - start
    meta = {
        'date': date, 'notes': notes, 'command': command_line(SCRIPT),
        'soffice': soffice_version(),
        'aiosmtpd': importlib.metadata.version('aiosmtpd'),
        'load_note': options.load_note or '',
        }
    lines = delivery_section(machine, measurements, meta, started, total)
    update_section(output, '\n'.join(lines), before=BEFORE, title=TITLE)
    if options.json:
        with open(options.json, 'w') as fp:
            json.dump({'machine': machine, 'measurements': measurements},
                fp, indent=1, default=str)
    log(f"section written to {output} ({total / 60:.1f} min)")
    failed = [m for m in measurements
        if not m['result'].get('ok')
        or not all(r.get('ok') for r in m.get('down', []))]
    return 1 if failed else 0


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark the nightly recurring invoice generation")
    parser.add_argument('--sizes',
        help="comma separated numbers of contracts (default: 200,2000; "
        "200 with --delivery)")
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
    parser.add_argument('--delivery', action='store_true',
        help="measure only the nightly run with e-mail delivery end to end "
        "(post, render, send to a local SMTP sink) and replace its section "
        f"{DELIVERY_HEADING[3:]!r} of the report, keeping the rest")
    parser.add_argument('--core-pdf', type=int, default=30,
        help="with --delivery: invoices that core renders one report at a "
        "time after the first run, for comparison (default: 30; 0: none)")
    parser.add_argument('--down-timeout', type=float, default=120,
        help="with --delivery: seconds after which the run with the PDF "
        "converter down counts as hanging and is killed (default: 120)")
    parser.add_argument('--load-note', help="with --delivery: a sentence "
        "about other load on the machine, added to the report")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(argv)
    if options.sizes is None:
        options.sizes = '200' if options.delivery else '200,2000'
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

    if options.delivery:
        return main_delivery(options, sizes, output, names, uri, notes)

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
                        run_worker, SCRIPT, backend, 'template',
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
                        lambda spec: run_worker(SCRIPT,
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
                    result = run_measured(SCRIPT,
                        backend, 'measure', run_spec, options.timeout)
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
                measurement['result'] = representative(
                    runs, key=lambda r: r['seconds'])
    finally:
        if not options.keep:
            for backend in backends:
                backend.drop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")

    total = time.monotonic() - start
    write_report(output, machine, measurements,
        {'date': date, 'notes': notes, 'command': command_line(SCRIPT)},
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
    run_script(main, WORKERS)
