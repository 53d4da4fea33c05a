# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the DATEV export (not a test).

One template database per backend (recurring_invoice, a euro company,
chart with SKR 03 codes: receivable 1400, revenue 8400 automatic and 8300
with tax key, a 19 % tax with DATEV key 3, the DATEV consultant and client
numbers, a fiscal year, 20 customers of which one has a DATEV debtor
account), then per size N a copy with N posted customer invoices of last
month (two lines on the two revenue accounts, 19 % each; created in slices
of 200 with the ORM, posted with ``Invoice.post`` per slice, a transaction
each).  Every invoice gets the same small real PDF as its report cache,
written in SQL (no rendering: the render benchmark measures that).

Then, each in a cold child on a fresh copy of the filled database:

* ``turnus``: ``DatevExport.create_export(company, invoices, ...)`` of the
  N invoices with documents (EXTF file and ZIP document package), commit;
* ``turnus_nodocs``: the same with ``documents=False``;
* ``core``: core Tryton's generic export an accountant would use: the
  ``account.move.line`` ``export_data_domain`` of the invoices' move lines
  (move number and date, account code, debit, credit, party) written as
  CSV.

Each result is checked (EXTF parsed back, bookings, sum against the
invoices' totals, ZIP content; CSV rows and balance); a wrong result fails
the run.  A last child profiles one ``turnus`` run of the smallest size
(cProfile).  It replaces its section of doc/benchmark.md::

    python -m tests.benchmark.datev [--sizes 1000 10000]
        [--backend sqlite|postgresql|both] [--doc doc/benchmark.md]
        [--repeat 3] [--json FILE]
    python -m tests.benchmark.datev --merge A.json B.json

``--merge`` writes the section from the ``--json`` files of earlier runs
(e.g. SQLite and PostgreSQL at other sizes) instead of measuring.
"""
import csv
import datetime as dt
import io
import json
import os
import sys
import time
import types
import zipfile
from decimal import Decimal

from . import harness as h
from .nightly import BEFORE, TITLE

OUTPUT = os.path.join('doc', 'benchmark.md')
HEADING = "## DATEV export"
DISTRIBUTIONS = ['trytond', 'trytond_account', 'trytond_account_invoice',
    'proteus', 'python-sql']
SLICE = 200
# Invoices made and posted with the ORM; a larger N copies them in SQL
ORM_INVOICES = int(os.environ.get('DATEV_ORM_INVOICES') or 1000)
# The tables of a posted invoice, copied in this order (foreign keys)
COPIED = ['account.move', 'account.move.line', 'account.tax.line',
    'account.invoice', 'account.invoice.line',
    'account.invoice.line-account.tax', 'account.invoice.tax']
PARTIES = 20
DEBTOR = '10000'
CASES = ['turnus', 'turnus_nodocs', 'core']
LABELS = {
    'turnus': "Turnus `create_export`, with documents",
    'turnus_nodocs': "Turnus `create_export`, without documents",
    'core': "core `export_data` of the move lines + CSV",
    }
# As the client's CSV export names them (a path is joined by '/')
CORE_FIELDS = ['move/number', 'account/code', 'debit', 'credit',
    'party/name', 'move/date']


def period():
    "Last month: the invoice dates and the period of the export"
    first = dt.date.today().replace(day=1)
    last = first - dt.timedelta(days=1)
    return last.replace(day=1), last


def small_pdf():
    "A real one-page PDF of about 1 KiB"
    from pypdf import PdfWriter
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.add_metadata({'/Title': 'Rechnung'})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def template(spec):
    """Database, euro company, chart with codes, tax with DATEV key, DATEV
    numbers, fiscal year with invoice sequences, the customers"""
    from proteus import Model
    from proteus import config as pconfig

    from trytond.modules.account.tests.tools import (
        create_chart, create_fiscalyear, create_tax, get_accounts)
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    from trytond.modules.recurring_invoice.tests.tools import (
        create_eur_company)

    start = time.monotonic()
    h.init_trytond(spec)
    h.create_database(spec['db'], ['recurring_invoice'], translatable=True)
    config = pconfig.set_trytond(
        database=spec['db'], config_file=spec['config'])
    create_eur_company(config=config)
    create_chart(config=config)
    date_from, _ = period()
    fiscalyear = set_fiscalyear_invoice_sequences(
        create_fiscalyear(today=(date_from, dt.date.today())))
    fiscalyear.click('create_period')

    Account = Model.get('account.account')
    accounts = get_accounts()
    receivable = Account(accounts['receivable'].id)
    receivable.code = '1400'
    receivable.save()
    revenue = Account(accounts['revenue'].id)
    revenue.code = '8400'
    revenue.datev_automatic = True
    revenue.save()
    other_revenue, = Account.duplicate([revenue], {'code': '8300'})
    other_revenue.datev_automatic = False
    other_revenue.save()
    tax = create_tax(Decimal('.19'))
    tax.datev_tax_key = '3'
    tax.save()
    configuration = Model.get('account.configuration')(1)
    configuration.datev_consultant_number = 29098
    configuration.datev_client_number = 55003
    configuration.datev_chart = 'skr03'
    configuration.save()
    Party = Model.get('party.party')
    parties = []
    for i in range(PARTIES):
        party = Party(name=f"Kunde {i + 1:02d} Müller GmbH")
        if i == 0:
            party.datev_account = DEBTOR
        party.addresses[0].street = f"Hauptstraße {i + 1}"
        party.addresses[0].postal_code = '10115'
        party.addresses[0].city = 'Berlin'
        parties.append(party)
    Party.save(parties)
    return {'seconds': time.monotonic() - start}


def populate(spec):
    """N posted invoices of last month, two lines each, and the same small
    PDF as the report cache of every invoice (in SQL)"""
    from sql import Null

    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n = spec['db'], spec['n']
    date_from, date_to = period()
    days = (date_to - date_from).days + 1
    pool, context = h.worker_pool(spec)
    Invoice = pool.get('account.invoice')
    Account = pool.get('account.account')
    with Transaction().start(db, 0, context=context) as transaction:
        company = pool.get('company.company')(context['company'])
        revenue, = Account.search([('code', '=', '8400')])
        other, = Account.search([('code', '=', '8300')])
        journal, = pool.get('account.journal').search(
            [('type', '=', 'revenue')], limit=1)
        tax, = pool.get('account.tax').search([])
        parties = pool.get('party.party').search([], order=[('id', 'ASC')])
        ids = []
        made = min(n, ORM_INVOICES)
        for offset in range(0, made, SLICE):
            values = []
            for i in range(offset, min(offset + SLICE, made)):
                party = parties[i % len(parties)]
                values.append({
                        'type': 'out',
                        'company': company.id,
                        'currency': company.currency.id,
                        'party': party.id,
                        'invoice_address': party.addresses[0].id,
                        'account': party.account_receivable_used.id,
                        'journal': journal.id,
                        # In the order of posting: numbers follow dates
                        'invoice_date': date_from + dt.timedelta(
                            days=i * days // made),
                        'lines': [('create', [{
                                        'type': 'line',
                                        'account': account.id,
                                        'description': description,
                                        'quantity': 1,
                                        'unit_price': price,
                                        'taxes': [('add', [tax.id])],
                                        } for account, description, price in [
                                        (revenue, "Wartung Heizung",
                                            Decimal(100 + i % 7)),
                                        (other, "Ersatzteile",
                                            Decimal('35.50') + i % 3),
                                        ]])],
                        })
            invoices = Invoice.create(values)
            Invoice.update_taxes(invoices)
            ids.append([i.id for i in invoices])
            transaction.commit()
    for batch in ids:
        # Posting locks the sequence: started again with the lock
        h.as_request(db, context, lambda: Invoice.post(Invoice.browse(batch)))
    copied = 0
    if n > made:
        if n % made:
            raise ValueError(
                f"N = {n}: above {made} a multiple of {made} (copies)")
        copied = copy_invoices(pool, db, context, n // made - 1)
    pdf = small_pdf()
    with Transaction().start(db, 0, context=context) as transaction:
        # Core's print_invoice tasks are not run
        Transaction().tasks.clear()
        Queue = pool.get('ir.queue')
        Queue.delete(Queue.search([]))
        # The PDF in the column, not the filestore: it goes with the copies
        table = Invoice.__table__()
        cursor = transaction.connection.cursor()
        cursor.execute(*table.update(
                [table.invoice_report_cache, table.invoice_report_format,
                    table.invoice_report_cache_id],
                [pdf, 'pdf', Null], where=table.type == 'out'))
        transaction.commit()
        posted = Invoice.search_count([('state', '=', 'posted')])
    if posted != n:
        raise AssertionError(f"{posted} posted invoices, expected {n}")
    return {'seconds': time.monotonic() - start, 'posted': posted,
        'pdf_bytes': len(pdf), 'orm': made, 'copied': copied}


def copy_invoices(pool, db, context, times):
    """Copy the posted invoices in SQL times, with their moves, lines,
    taxes and tax lines: ids shifted, references and numbers ("-K") of
    the copies rewritten; return the number of invoices copied"""
    from sql import Table

    from trytond.model import fields
    from trytond.transaction import Transaction

    models = [pool.get(name) for name in COPIED]
    with Transaction().start(db, 0, context=context) as transaction:
        database = transaction.database
        connection = transaction.connection
        cursor = connection.cursor()
        span, columns = {}, {}
        for Model in models:
            table = Model.__table__()
            cursor.execute(*table.select(table.id, order_by=table.id.desc,
                    limit=1))
            span[Model.__name__] = cursor.fetchone()[0]
            columns[Model.__name__] = ['id'] + sorted(
                name for name, field in Model._fields.items()
                if name != 'id' and not isinstance(field, fields.Function)
                and field.sql_type() is not None
                and not getattr(field, 'file_id', None))
        copied = 0
        for k in range(1, times + 1):
            for Model in models:
                name = Model.__name__
                names = columns[name]
                table = Table(Model._table)
                cursor.execute(*table.select(
                        *[getattr(table, c) for c in names],
                        where=table.id <= span[name]))
                rows = []
                for row in cursor.fetchall():
                    row = dict(zip(names, row))
                    rows.append([_shifted(Model, c, row[c], k, span)
                            for c in names])
                if name == 'account.invoice':
                    copied += len(rows)
                size = max(1, 900 // len(names))
                for index in range(0, len(rows), size):
                    cursor.execute(*table.insert(
                            [getattr(table, c) for c in names],
                            rows[index:index + size]))
            transaction.commit()
        for Model in models:
            table = Model.__table__()
            cursor.execute(*table.select(table.id, order_by=table.id.desc,
                    limit=1))
            database.setnextid(connection, Model._table,
                cursor.fetchone()[0] + 1)
        transaction.commit()
    return copied


def _shifted(Model, name, value, k, span):
    "The value of column name in the k-th copy"
    from trytond.model import fields
    if value is None:
        return None
    if name == 'id':
        return value + k * span[Model.__name__]
    field = Model._fields[name]
    if isinstance(field, fields.Many2One) and field.model_name in span:
        return value + k * span[field.model_name]
    if isinstance(field, fields.Reference) and isinstance(value, str):
        model, _, id_ = value.partition(',')
        if model in span and id_.isdigit():
            return f'{model},{int(id_) + k * span[model]}'
    if name in {'number', 'post_number'} and isinstance(value, str):
        return f'{value}-{k}'
    return value


def _expected(pool, invoice_ids):
    "The total of the invoices (company currency) and the debtor's count"
    Invoice = pool.get('account.invoice')
    total, debtor = Decimal(0), 0
    for values in Invoice.read(invoice_ids, ['total_amount', 'party']):
        total += values['total_amount']
    debtor = Invoice.search_count([('id', 'in', invoice_ids),
            ('party.datev_account', '=', DEBTOR)])
    return total, debtor


def _amount(row):
    value = row['Basis-Umsatz'] or row['Umsatz (ohne Soll/Haben-Kz)']
    value = Decimal(value.replace(',', '.'))
    return value if row['Soll/Haben-Kennzeichen'] == 'S' else -value


def check_turnus(pool, exports, invoice_ids, documents):
    """What is wrong with the exports of the invoices (problems, figures):
    one export, or with documents one per MAX_DOCUMENTS invoices"""
    from trytond.modules.recurring_invoice.datev_format import (
        MAX_DOCUMENTS, read_extf)
    n = len(invoice_ids)
    problems, figures = [], {}
    expected = -(-n // MAX_DOCUMENTS) if documents else 1
    if len(exports) != expected:
        return [f"{len(exports)} exports, expected {expected}"], figures
    total, debtor = _expected(pool, invoice_ids)
    rows, extf_bytes, export_total, booking_count = [], 0, Decimal(0), 0
    for export in exports:
        header, columns, export_rows = read_extf(export.extf_file)
        rows += export_rows
        extf_bytes += len(export.extf_file)
        export_total += export.total
        booking_count += export.booking_count
        if header[0] != 'EXTF' or len(columns) != 125:
            problems.append(
                f"EXTF header {header[:5]}, {len(columns)} columns")
    amounts = sum(map(_amount, rows), Decimal(0))
    figures.update(bookings=len(rows), columns=len(columns),
        extf_kib=extf_bytes / 1024, total=str(amounts),
        invoices_total=str(total), export_total=str(export_total),
        exports=len(exports),
        documents=sum(e.document_count for e in exports))
    if len(rows) != 2 * n or booking_count != len(rows):
        problems.append(f"{len(rows)} bookings in the EXTF, booking_count "
            f"{booking_count}, expected {2 * n}")
    if not (amounts == total == export_total):
        problems.append(f"sum of the bookings {amounts}, export total "
            f"{export_total}, invoices' total {total}")
    debtor_rows = sum(1 for r in rows if r['Konto'] == DEBTOR)
    if debtor_rows != 2 * debtor:
        problems.append(f"{debtor_rows} bookings on the debtor account "
            f"{DEBTOR}, expected {2 * debtor}")
    links = sum(1 for r in rows if r['Beleglink'])
    if documents:
        pdfs, files, size = 0, 0, 0
        for export in exports:
            if not export.document_package:
                problems.append("no document package")
                continue
            archive = zipfile.ZipFile(io.BytesIO(export.document_package))
            names = archive.namelist()
            files += len(names)
            size += len(export.document_package)
            pdfs += sum(1 for name in names if name.endswith('.pdf')
                and archive.open(name).read(5) == b'%PDF-')
            if 'document.xml' not in names:
                problems.append("ZIP without document.xml")
        figures.update(zip_files=files, zip_mib=size / 1024 / 1024)
        if pdfs != n:
            problems.append(f"ZIPs: {pdfs} PDFs, expected {n}")
        if figures['documents'] != n or links != len(rows):
            problems.append(f"{figures['documents']} documents, "
                f"{links} Beleglinks, expected {n} and {len(rows)}")
    elif any(e.document_package for e in exports) or links:
        problems.append(f"without documents: a package or {links} links")
    return problems, figures


def check_core(pool, path, n, invoice_ids):
    "What is wrong with core's CSV of the move lines"
    total, _ = _expected(pool, invoice_ids)
    with open(path, newline='', encoding='utf-8') as fp:
        rows = list(csv.reader(fp))
    rows = rows[1:]  # without the header
    debit = sum((Decimal(r[2]) for r in rows), Decimal(0))
    credit = sum((Decimal(r[3]) for r in rows), Decimal(0))
    receivable = sum((Decimal(r[2]) - Decimal(r[3]) for r in rows
            if r[1] == '1400'), Decimal(0))
    figures = {'rows': len(rows), 'csv_kib': os.path.getsize(path) / 1024,
        'debit': str(debit), 'credit': str(credit),
        'receivable': str(receivable), 'invoices_total': str(total)}
    problems = []
    if len(rows) != 4 * n:
        problems.append(f"{len(rows)} CSV rows, expected {4 * n} "
            "(receivable, two revenues, tax per invoice)")
    if debit != credit or receivable != total:
        problems.append(f"debit {debit}, credit {credit}, receivable "
            f"{receivable}, invoices' total {total}")
    return problems, figures


def top_functions(profile, count=25):
    "The functions of most cumulative time: (where, calls, cumulative s)"
    import pstats
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, name), (_, calls, _, cumulative, _) in (
            stats.stats.items()):
        where = f"{os.path.relpath(filename, h.ROOT)}:{line}({name})" if (
            filename.startswith(h.ROOT)) else f"{filename}:{line}({name})"
        for marker in ['site-packages/', 'lib/python3']:
            if marker in where and not where.startswith('modules'):
                where = where.split(marker, 1)[1]
        rows.append((where, calls, cumulative))
    rows.sort(key=lambda r: -r[2])
    return rows[:count]


def measure(spec):
    """One case of spec['case'] on the N invoices of last month, timed,
    checked after; with spec['profile'] under cProfile"""
    from trytond.transaction import Transaction

    db, n, case = spec['db'], spec['n'], spec['case']
    date_from, date_to = period()
    pool, context = h.worker_pool(spec)
    counter = h.QueryCounter()
    Export = pool.get('account.datev.export')
    Line = pool.get('account.move.line')
    result = {'case': case, 'n': n, 'problems': []}
    profile = None
    if spec.get('profile'):
        import cProfile
        profile = cProfile.Profile()
    csv_path = os.path.abspath(f"{db}-move-lines.csv")
    with Transaction().start(db, 0, context=context) as transaction:
        company = pool.get('company.company')(context['company'])
        select = {}
        with h.measured(select, counter):
            invoices = Export.get_invoices(company, date_from, date_to)
        result['select'] = select
        invoice_ids = [i.id for i in invoices]
        if len(invoice_ids) != n:
            result['problems'].append(
                f"{len(invoice_ids)} invoices found, expected {n}")
        result['rss_before_kib'] = h.rss_kib()
        step = result['export'] = {}
        with h.measured(step, counter):
            if profile:
                profile.enable()
            if case == 'core':
                data = Line.export_data_domain([
                        ('move.journal.type', '=', 'revenue'),
                        ('move.state', '=', 'posted'),
                        ('move.date', '>=', date_from),
                        ('move.date', '<=', date_to),
                        ], CORE_FIELDS, order=[
                        ('move.number', 'ASC'), ('id', 'ASC')],
                    header=True)
                with open(csv_path, 'w', newline='', encoding='utf-8') as fp:
                    csv.writer(fp, quoting=csv.QUOTE_ALL).writerows(data)
                del data
            else:
                exports = Export.create_export(
                    company, invoices, date_from=date_from,
                    date_to=date_to, documents=case == 'turnus')
                export_ids = [e.id for e in exports]
                del exports
            transaction.commit()
            if profile:
                profile.disable()
        result['maxrss_kib'] = h.maxrss_kib()
    if profile:
        result['profile'] = top_functions(profile)
    with Transaction().start(db, 0, context=context, readonly=True):
        if case == 'core':
            problems, figures = check_core(pool, csv_path, n, invoice_ids)
            os.remove(csv_path)
        else:
            problems, figures = check_turnus(
                pool, Export.browse(export_ids), invoice_ids,
                case == 'turnus')
    result['problems'] += problems
    result['figures'] = figures
    return result


def run_backend(options, backend):
    "Build the databases of a backend and measure every case and size"
    measurements = []
    settings = []
    if backend.name == 'postgresql':
        # The filestore (the exports' files) in the work directory
        settings = [['database', 'path',
                os.path.join(backend.workdir, 'filestore')]]
    tpl = backend.db_name('tpl')
    built = backend.build(template, {'db': tpl, 'settings': settings},
        options.timeout)
    for n in options.sizes:
        spec = {'db': backend.db_name(n), 'n': n, 'settings': settings}
        pop = backend.build(populate, spec, options.timeout * 4,
            copy_of=tpl)
        m = {'backend': backend.name, 'label': backend.label, 'n': n,
            'populate': pop['seconds'], 'template': built['seconds'],
            'pdf_bytes': pop.get('pdf_bytes'), 'cases': {}}
        for case in CASES:
            m['cases'][case] = h.repeat_runs(measure, backend, dict(
                    spec, case=case), spec['db'], options.repeat,
                options.timeout, label=f"N={n} {case}")
        if options.profile and n == min(options.sizes):
            run, = h.repeat_runs(measure, backend, dict(
                    spec, case='turnus', profile=True), spec['db'], 1,
                options.timeout, label=f"N={n} profile")
            m['profile'] = {k: run.get(k) for k in [
                    'profile', 'export', 'ok', 'problems']}
        backend.drop(spec['db'])
        measurements.append(m)
    backend.drop(tpl)
    return measurements


def _median(runs, key):
    values = [key(r) for r in runs if r.get('ok')]
    return h.median(values) if values else None


def growth(run):
    "The growth of the RSS of a run during the export"
    return run['maxrss_kib'] - run['rss_before_kib']


def section(session, machine, measurements):
    "The lines of the section DATEV export"
    lines = [HEADING, ""] + h.run_header(session)
    add = lines.append
    add(h.machine_line(machine))
    add("")
    sizes = ", ".join(f"{m['label']} N = {m['n']:,}: {m['populate']:.0f} s"
        for m in measurements)
    pdf = {m.get('pdf_bytes') for m in measurements} - {None}
    add("N posted customer invoices of last month (euro company, two lines "
        "each on the revenue accounts 8400 (automatic) and 8300 (tax key "
        "3), 19 % VAT, 20 customers, one with the DATEV debtor account "
        f"{DEBTOR}, the others on the receivable 1400): up to "
        f"{ORM_INVOICES:,} created with the ORM in slices of {SLICE} and "
        "posted with `Invoice.post` per slice; a larger N (a multiple of "
        f"{ORM_INVOICES:,}) copies these posted invoices in SQL with their "
        "moves, move lines, tax lines, invoice lines and taxes (ids and "
        "references shifted, the numbers of the K-th copy ending in "
        "\"-K\"), because core's posting costs about 0.2 s per invoice "
        "(10,000 would take more than half an hour) and is not what is "
        f"measured (set-up not measured; {sizes}). Every invoice holds the "
        "same small real "
        f"PDF ({'/'.join(map(str, sorted(pdf)))} bytes, one page) as its "
        "report cache, written in SQL: **no rendering is measured here** "
        "(the render and delivery benchmarks measure it). Each measurement "
        "is a cold process (pool loaded) on a fresh copy of the database, "
        "user root with the company in the context, the median of the runs:")
    add("")
    add("- **Turnus, with documents**: `DatevExport.create_export(company, "
        "invoices, date_from, date_to)` of the N invoices (found by "
        "`get_invoices`, not timed), the commit included: the EXTF "
        "Buchungsstapel and the ZIP document package with document.xml "
        "and the N PDFs, one `account.datev.export` record;")
    add("- **Turnus, without documents**: the same with "
        "`documents=False` (EXTF only);")
    add("- **Core**: what an accountant does with core Tryton: the CSV "
        "export of the move lines of the invoices' moves "
        "(`account.move.line` `export_data_domain` on revenue journal, "
        "posted, last month; fields "
        + ", ".join(f"`{f}`" for f in CORE_FIELDS)
        + ") written with `csv`; 4 lines per invoice.")
    add("")
    add("Checked after each run (a failed check makes the run **WRONG**): "
        "the EXTF parsed back with `datev_format.read_extf` has 125 columns "
        "and 2 N bookings (two revenue accounts per invoice), the debtor's "
        "bookings on its account, the bookings sum to the invoices' total "
        "and to the export's total; with documents the ZIP holds "
        "document.xml and N PDFs and every booking has its Beleglink (above "
        "4,999 invoices one export per 4,999, DATEV's limit of documents in "
        "a document.xml; the checks hold for them together); core's "
        "CSV has 4 N rows, debit = credit and the receivable lines sum to "
        "the invoices' total. CPU is the measuring process's (not the "
        "database server's); queries are the SQL statements it sent; peak "
        "RSS is its ru_maxrss after the export (pool loaded included), "
        "growth that minus its RSS just before the export.")
    add("")
    rows = []
    for m in measurements:
        core = _median(m['cases'].get('core', []),
            lambda r: r['export']['seconds'])
        for case in CASES:
            runs = m['cases'].get(case, [])
            good = [r for r in runs if r.get('ok')]
            if not good:
                bad = runs[0] if runs else {}
                reason = "; ".join(bad.get('problems', []))
                if 'crash' in bad:
                    reason = bad['crash'].strip().splitlines()[-1]
                rows.append([m['label'], f"{m['n']:,}", LABELS[case],
                        "**FAILED**: " + reason.replace('|', '\\|')[:300]])
                continue
            seconds = _median(good, lambda r: r['export']['seconds'])
            figures = h.representative(
                good, key=lambda r: r['export']['seconds'])['figures']
            queries = _median(good, lambda r: r['export'].get('queries', 0))
            output = (f"EXTF {figures['extf_kib']:.0f} KiB"
                if case != 'core' else f"CSV {figures['csv_kib']:.0f} KiB")
            if figures.get('zip_mib'):
                output += f", ZIP {figures['zip_mib']:.1f} MiB"
            if figures.get('exports', 1) > 1:
                output += f" in {figures['exports']} exports"
            rows.append([m['label'], f"{m['n']:,}", LABELS[case],
                    h.status(good[0]), f"{seconds:.2f}",
                    h.spread([r['export']['seconds'] for r in good]),
                    f"{m['n'] / seconds:.0f}",
                    h.fmt(_median(good,
                            lambda r: r['export']['cpu_seconds'])),
                    f"{queries:.0f}", f"{queries / m['n']:.2f}",
                    f"{_median(good, lambda r: r['maxrss_kib']) / 1024:.0f}",
                    f"{_median(good, growth) / 1024:.0f}",
                    output,
                    f"{seconds / core:.1f}×" if core and case != 'core'
                    else ''])
    lines += h.table(["Backend", "N", "Path", "Result", "Time (s)",
            "Range (s)", "Invoices/s", "CPU (s)", "Queries",
            "Queries/invoice", "Peak RSS (MiB)", "RSS growth (MiB)",
            "Output", "Turnus / core"], rows, 'lrll' + 'r' * 9 + 'r')
    add("")
    for m in measurements:
        if m.get('profile') and m['profile'].get('profile'):
            prof = m['profile']
            add(f"cProfile of one Turnus run with documents, {m['label']}, "
                f"N = {m['n']:,} ({prof['export']['seconds']:.1f} s under "
                "the profiler), the functions of most cumulative time below "
                "`create_export`, the ORM's attribute access wrappers left "
                "out (calls, cumulative s):")
            add("")
            shown = [r for r in prof['profile']
                if not any(s in r[0] for s in [
                        '(create_export)', 'cProfile', '(<module>)',
                        '(__get__)', '(__getattr__)'])]
            for where, calls, cumulative in shown[:5]:
                add(f"- `{where}`: {calls:,} calls, {cumulative:.2f} s")
            add("")
    add("### Against the targets")
    add("")
    add("The issue asks for \"Benchmark: DATEV export of 10,000 invoices; "
        "figures in doc/\" and sets no numeric target, so this reports what "
        "the export costs and where the time goes:")
    add("")
    for m in measurements:
        runs = {case: [r for r in m['cases'].get(case, []) if r.get('ok')]
            for case in CASES}
        if not runs['turnus']:
            continue
        seconds = _median(runs['turnus'], lambda r: r['export']['seconds'])
        text = (f"- {m['label']}, N = {m['n']:,}: {seconds:.1f} s with "
            f"documents, {seconds / m['n'] * 1000:.1f} ms per invoice")
        if runs['turnus_nodocs']:
            nodocs = _median(runs['turnus_nodocs'],
                lambda r: r['export']['seconds'])
            text += f"; without documents {nodocs:.1f} s, so the document "
            if seconds - nodocs > 0.05 * seconds:
                text += f"package costs {seconds - nodocs:.1f} s"
            else:
                text += "package costs nothing beyond the noise"
        if runs['core']:
            core = _median(runs['core'], lambda r: r['export']['seconds'])
            text += (f"; core's CSV of the move lines {core:.1f} s "
                f"(Turnus / core {seconds / core:.1f}×; core's CSV is no "
                "file DATEV imports: no EXTF header, one row per move line, "
                "no tax keys, no documents)")
        add(text + ".")
        if m.get('profile') and m['profile'].get('profile'):
            top = {where: cumulative for where, _, cumulative in (
                    m['profile']['profile'])}
            total = m['profile']['export']['seconds']
            bookings = next((v for k, v in top.items()
                    if '(get_datev_bookings)' in k), None)
            if bookings:
                add(f"  Under the profiler {bookings:.1f} of {total:.1f} s "
                    f"({bookings / total:.0%}) are "
                    "`Invoice.get_datev_bookings` (called by "
                    "`check_invoices` for slices of the record cache's "
                    "size, so the lines, taxes, amounts and lines to pay "
                    "are read for a slice at once).")
    for note in getattr(session.options, 'note', None) or []:
        add(f"- {note}")
    add("")
    lines += h.load_lines([r for m in measurements
            for runs in m['cases'].values() for r in runs])
    for note in session.notes:
        lines += [note, ""]
    lines += [
        "Re-run only this section (it replaces itself in this file and "
        "keeps the rest):", "", "```",
        "python -m tests.benchmark.datev --sizes 1000 10000 --backend "
        "sqlite --json /tmp/datev_sqlite.json",
        "TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\",
        "    python -m tests.benchmark.datev --sizes 1000 10000 "
        "--backend postgresql --json /tmp/datev_pg.json",
        "python -m tests.benchmark.datev --merge /tmp/datev_sqlite.json "
        "/tmp/datev_pg.json",
        "```", "",
        "`--repeat` sets the runs per case (default 3), `--no-profile` "
        "skips the cProfile run, `--timeout` bounds each child (default "
        "1800 s); `DATEV_ORM_INVOICES` (default 1000) sets how many "
        "invoices are made with the ORM before copying.", ""]
    return lines


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


def write(options, lines):
    h.update_section(options.output, lines, before=BEFORE, title=TITLE)


def ok(measurements):
    return int(not all(r.get('ok') for m in measurements
            for runs in m['cases'].values() for r in runs))


def main(argv=None):
    parser = h.arguments("Benchmark the DATEV export", OUTPUT,
        backend='sqlite', timeout=1800)
    parser.add_argument('--doc', dest='output',
        help="the Markdown file to write the section to (as --output)")
    parser.add_argument('--sizes', nargs='+', default=['1000', '10000'],
        help="numbers of invoices, separated by spaces or commas "
        "(default: 1000 10000)")
    parser.add_argument('--no-profile', dest='profile',
        action='store_false',
        help="skip the cProfile run of the smallest size")
    parser.add_argument('--no-write', dest='write', action='store_false',
        help="do not write the section (print it)")
    parser.add_argument('--note', action='append',
        help="a line added to \"Against the targets\" (repeatable)")
    parser.add_argument('--merge', nargs='+', metavar='JSON',
        help="write the section from the --json files of earlier runs "
        "instead of measuring")
    options = parser.parse_args(argv)
    if options.merge:
        if not os.path.isabs(options.output):
            options.output = os.path.join(h.ROOT, options.output)
        return merge(options)
    options.sizes = sorted({int(s) for value in options.sizes
            for s in value.split(',') if s.strip()})
    with h.Session(options, prefix='bench_datev') as session:
        machine = h.machine_description(DISTRIBUTIONS, session.backends)
        measurements = [m for backend in session.backends
            for m in run_backend(options, backend)]
        session.notes.append(h.changed_note(machine))
    session.notes = list(filter(None, session.notes))
    lines = section(session, machine, measurements)
    if options.write:
        write(options, lines)
    else:
        print('\n'.join(lines))
    session.write_json({'machine': machine, 'measurements': measurements,
            'notes': session.notes, 'command': session.command,
            'started': session.started.isoformat(),
            'total': session.total()})
    return ok(measurements)


if __name__ == '__main__':
    sys.exit(main())
