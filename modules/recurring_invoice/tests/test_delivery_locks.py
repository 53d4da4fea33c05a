# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Delivery never drops an invoice when rows are locked by another process"
import datetime as dt
import unittest

from proteus import Model

from trytond import backend
from trytond.modules.account.tests.tools import (
    create_chart, create_fiscalyear)
from trytond.modules.account_invoice.tests.tools import (
    set_fiscalyear_invoice_sequences)
from trytond.modules.company.tests.tools import create_company, get_company
from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, drop_db
from trytond.tests.tools import activate_modules
from trytond.transaction import Transaction

from .tools import (
    create_contract, generate_invoices, get_contract_data, setup_contract_data)

# Delivery posts with today's date: the fiscal year of today
DATE = dt.date.today().replace(day=1)


class RowLock:
    "Lock rows FOR UPDATE in a connection of its own, as another process"

    def __init__(self, table, ids):
        self.table, self.ids = table, list(ids)

    def __enter__(self):
        self.database = backend.Database(DB_NAME).connect()
        self.connection = self.database.get_connection()
        cursor = self.connection.cursor()
        cursor.execute(
            f'SELECT id FROM "{self.table}" WHERE id = ANY(%s) FOR UPDATE',
            (self.ids,))
        return self

    def __exit__(self, *args):
        self.connection.rollback()
        self.database.put_connection(self.connection)


@unittest.skipIf(backend.name != 'postgresql', "needs concurrent connections")
class DeliveryLockTestCase(unittest.TestCase):
    "Test that locked rows delay delivery but never drop it"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.config = activate_modules(
            'recurring_invoice', create_company, create_chart,
            setup_contract_data)
        fiscalyear = set_fiscalyear_invoice_sequences(create_fiscalyear())
        fiscalyear.click('create_period')

    @classmethod
    def tearDownClass(cls):
        drop_db()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.set_automatic_delivery(False)

    def set_automatic_delivery(self, value):
        Configuration = Model.get('sale.configuration')
        configuration = Configuration(1)
        configuration.automatic_delivery = value
        configuration.save()

    def create_contracts(self, count):
        "Contracts delivered automatically by direct debit (no PDF)"
        Subscription = Model.get('sale.subscription')
        Warning = Model.get('res.user.warning')
        customer, services = get_contract_data()
        subscriptions = []
        for _ in range(count):
            subscription = create_contract(
                customer, [services['Maintenance']], DATE, catch_up=True)
            subscription.click('delivery_settings')
            subscription.standard_delivery.channels = ['direct_debit']
            subscription.standard_delivery.save()
            subscription.automatic_delivery = True
            try:
                subscription.save()
            except Exception as warning:
                Warning.skip(warning.name, True, self.config.context)
                subscription.save()
            subscriptions.append(subscription)
        Subscription.click(subscriptions, 'quote')
        Subscription.click(subscriptions, 'run')
        return subscriptions

    def invoices(self, subscriptions):
        Invoice = Model.get('account.invoice')
        return Invoice.find([
                ('subscription', 'in', [s.id for s in subscriptions]),
                ], order=[('id', 'ASC')])

    def test_locked_invoice_waits(self):
        "An invoice locked during the night: the others are delivered"
        subscriptions = self.create_contracts(3)
        generate_invoices(DATE)
        invoices = self.invoices(subscriptions)
        self.assertEqual([i.state for i in invoices], ['draft'] * 3)
        self.set_automatic_delivery(True)

        with RowLock('account_invoice', [invoices[0].id]):
            generate_invoices(DATE)
        for invoice in invoices:
            invoice.reload()
        self.assertEqual(
            [(i.state, len(i.delivery_lines)) for i in invoices],
            [('draft', 0), ('posted', 1), ('posted', 1)])

        # The next attempt delivers it, nothing twice
        generate_invoices(DATE)
        for invoice in invoices:
            invoice.reload()
        self.assertEqual(
            [(i.state, len(i.delivery_lines)) for i in invoices],
            [('posted', 1)] * 3)

    def test_locked_lines_stay_pending(self):
        """Lines locked by another process are never reported delivered:
        the delivery raises for the queue to retry, and the run cannot be
        confirmed with pending lines"""
        subscriptions = self.create_contracts(2)
        generate_invoices(DATE)
        invoices = self.invoices(subscriptions)
        company = get_company()
        pool = Pool(DB_NAME)
        with Transaction().start(
                DB_NAME, 1, context={'company': company.id}):
            Run = pool.get('account.invoice.run')
            Invoice = pool.get('account.invoice')
            run = Run.create_automatic(
                DATE, Invoice.browse([i.id for i in invoices]))
            run_id, line_ids = run.id, [l.id for l in run.lines]

        with RowLock('account_invoice_run_line', line_ids):
            with Transaction().start(
                    DB_NAME, 1, context={'company': company.id}):
                RunLine = pool.get('account.invoice.run.line')
                with self.assertRaises(backend.DatabaseOperationalError):
                    RunLine._deliver_slice(line_ids, retry=1)
                with self.assertRaises(backend.DatabaseOperationalError):
                    RunLine.deliver(RunLine.browse(line_ids))
        with Transaction().start(
                DB_NAME, 1, context={'company': company.id}):
            RunLine = pool.get('account.invoice.run.line')
            Run = pool.get('account.invoice.run')
            self.assertEqual(
                {l.state for l in RunLine.browse(line_ids)}, {'pending'})
            run = Run(run_id)
            self.assertEqual(run.pending_count, 2)
            self.assertFalse(run.notified)
            with self.assertRaises(Exception) as context:
                Run.confirm([run])
            self.assertIn('not delivered yet', str(context.exception))

        with Transaction().start(
                DB_NAME, 1, context={'company': company.id}) as transaction:
            RunLine = pool.get('account.invoice.run.line')
            RunLine.deliver(RunLine.browse(line_ids))
            transaction.commit()
        with Transaction().start(
                DB_NAME, 1, context={'company': company.id}):
            RunLine = pool.get('account.invoice.run.line')
            self.assertEqual(
                {l.state for l in RunLine.browse(line_ids)}, {'manual'})
            self.assertEqual(
                {l.invoice.state for l in RunLine.browse(line_ids)},
                {'posted'})
            # The slice that delivered the last lines notified once
            Run = pool.get('account.invoice.run')
            self.assertTrue(Run(run_id).notified)
