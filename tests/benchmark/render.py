# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the invoice PDF rendering (not a test).

Creates and posts N customer invoices in an SQLite database in memory
(posting stores their unconverted ODT report, as core's queued
print_invoice does), then times, in seconds per invoice:

* ``core``: ``InvoiceReport.execute`` per invoice with the report action's
  output format set to PDF, i.e. core's ``Report.convert`` starting
  ``soffice`` once per invoice;
* ``batch, cold``: ``render_pdf_cache`` of recurring_invoice (ODT rendered,
  then one ``soffice`` call per 50 files) in a process whose LibreOffice
  profile does not exist yet;
* ``batch``: the same again (profile created);
* ``batch, ODT cached``: ``render_pdf_cache`` on invoices that already hold
  the ODT stored at posting: conversion only.

Before each run the report caches are emptied (or set back to the ODT).

Usage (it prints the table of doc/rendering.md, section "Figures")::

    python -m tests.benchmark.render [-n 50] [--no-core]
"""
import argparse
import datetime as dt
import os
import time
from decimal import Decimal

from .harness import log, table

os.environ.setdefault('DB_NAME', ':memory:')


def setup(n):
    from proteus import Model
    from trytond.modules.account.tests.tools import (
        create_chart, create_fiscalyear, get_accounts)
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    from trytond.modules.company.tests.tools import create_company
    from trytond.tests.tools import activate_modules

    config = activate_modules(
        'recurring_invoice', create_company, create_chart)
    fiscalyear = set_fiscalyear_invoice_sequences(
        create_fiscalyear(today=dt.date.today()))
    fiscalyear.click('create_period')
    accounts = get_accounts()

    ProductCategory = Model.get('product.category')
    category = ProductCategory(name="Services", accounting=True)
    category.account_revenue = accounts['revenue']
    category.account_expense = accounts['expense']
    category.save()
    Uom = Model.get('product.uom')
    unit, = Uom.find([('name', '=', "Unit")])
    Template = Model.get('product.template')
    template = Template(
        name="Maintenance", default_uom=unit, type='service',
        list_price=Decimal('40'), account_category=category)
    template.save()
    product, = template.products

    Party = Model.get('party.party')
    Invoice = Model.get('account.invoice')
    parties = [Party(name=f"Customer {i}") for i in range(n)]
    Party.save(parties)
    invoices = []
    for i, party in enumerate(parties):
        invoice = Invoice(type='out')
        invoice.party = party
        for quantity in range(1, 4):
            line = invoice.lines.new()
            line.product = product
            line.quantity = quantity + i % 5
            line.unit_price = Decimal('40')
        invoices.append(invoice)
    Invoice.save(invoices)
    Invoice.click(invoices, 'post')
    return config, [i.id for i in invoices]


def run(config, label, ids, function, reset):
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    with Transaction().start(
            config.database_name, config.user, context=config.context):
        reset(Pool(), ids)
    with Transaction().start(
            config.database_name, config.user, context=config.context):
        pool = Pool()
        start = time.perf_counter()
        function(pool, ids)
        elapsed = time.perf_counter() - start
        Invoice = pool.get('account.invoice')
        formats = {i.invoice_report_format for i in Invoice.browse(ids)}
        assert formats == {'pdf'}, formats
        assert all(i.invoice_report_cache.startswith(b'%PDF')
            for i in Invoice.browse(ids))
    per_invoice = elapsed / len(ids)
    log(f"{label}: {elapsed:.2f} s, {per_invoice:.3f} s / invoice")
    return label, elapsed, per_invoice


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-n', type=int, default=50, help="invoices")
    parser.add_argument('--no-core', dest='core', action='store_false',
        help="skip the core run (about 1 s per invoice)")
    args = parser.parse_args()

    log(f"setting up {args.n} posted invoices")
    config, ids = setup(args.n)

    odt = {}

    def save_odt(pool, ids):
        Invoice = pool.get('account.invoice')
        for invoice in Invoice.browse(ids):
            assert invoice.invoice_report_format == 'odt'
            odt[invoice.id] = invoice.invoice_report_cache

    def clear(pool, ids):
        Invoice = pool.get('account.invoice')
        Invoice.write(Invoice.browse(ids), {
                'invoice_report_cache': None,
                'invoice_report_format': None,
                })

    def restore_odt(pool, ids):
        Invoice = pool.get('account.invoice')
        invoices = Invoice.browse(ids)
        for invoice in invoices:
            invoice.invoice_report_cache = odt[invoice.id]
            invoice.invoice_report_format = 'odt'
        Invoice.save(invoices)

    def core(pool, ids):
        ActionReport = pool.get('ir.action.report')
        ModelData = pool.get('ir.model.data')
        InvoiceReport = pool.get('account.invoice', type='report')
        action = ActionReport(
            ModelData.get_id('account_invoice', 'report_invoice'))
        action.extension = 'pdf'
        action.save()
        try:
            for id_ in ids:
                InvoiceReport.execute([id_], {})
        finally:
            action.extension = ''
            action.save()

    def batch(pool, ids):
        Invoice = pool.get('account.invoice')
        InvoiceReport = pool.get('account.invoice', type='report')
        InvoiceReport.render_pdf_cache(Invoice.browse(ids))

    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(
            config.database_name, config.user, context=config.context):
        save_odt(Pool(), ids)

    results = []
    if args.core:
        results.append(run(
                config, "core, `Report.execute` per invoice", ids, core,
                clear))
    results += [
        run(config, "`render_pdf_cache`, new LibreOffice profile", ids,
            batch, clear),
        run(config, "`render_pdf_cache`", ids, batch, clear),
        run(config, "`render_pdf_cache`, ODT cached at posting", ids, batch,
            restore_odt),
        ]
    print(f"\n{args.n} invoices, {os.cpu_count()} CPUs\n")
    print('\n'.join(table(["way", "s", "s / invoice"], [
                    [label, f"{elapsed:.1f}", f"{per_invoice:.3f}"]
                    for label, elapsed, per_invoice in results])))


if __name__ == '__main__':
    main()
