# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Exactly-once invoicing with concurrent runs"
import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
import unittest

from proteus import Model

from trytond import backend
from trytond.modules.account.tests.tools import create_chart
from trytond.modules.company.tests.tools import create_company, get_company
from trytond.tests.test_tryton import DB_NAME, drop_db

from turnus.testing import activate_modules

from .tools import (
    create_contract, generate_invoices, get_contract_data, setup_contract_data)

WORKER = textwrap.dedent('''
    import datetime as dt
    import logging
    import sys
    import time

    from trytond.pool import Pool
    from trytond.transaction import Transaction

    database, company, date, start = sys.argv[1:]
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger(
        'trytond.modules.recurring_invoice.subscription').setLevel(
        logging.INFO)
    Pool(database).init()
    with Transaction().start(
            database, 0, context={'company': int(company)}):
        Subscription = Pool().get('sale.subscription')
        time.sleep(max(0, float(start) - time.time()))
        Subscription.generate_recurring_invoices(
            dt.date.fromisoformat(date))
    ''')
CONTRACTS = 250


class ConcurrencyTestCase(unittest.TestCase):
    "Test that concurrent runs invoice every period exactly once"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.config = activate_modules(
            'recurring_invoice', create_company, create_chart,
            setup_contract_data)

    @classmethod
    def tearDownClass(cls):
        drop_db()
        super().tearDownClass()

    def create_contracts(self, count):
        Subscription = Model.get('sale.subscription')
        customer, services = get_contract_data()
        subscription = create_contract(
            customer, [services['Maintenance']], dt.date(2025, 1, 1),
            catch_up=True)
        subscriptions = [subscription] + Subscription.duplicate(
            [subscription] * (count - 1))
        Subscription.click(subscriptions, 'quote')
        Subscription.click(subscriptions, 'run')
        return subscriptions

    @unittest.skipIf(
        backend.name != 'postgresql', "needs concurrent connections")
    def test_concurrent_runs(self):
        "Two processes invoice the same contracts at the same time"
        Invoice = Model.get('account.invoice')
        subscriptions = self.create_contracts(CONTRACTS)
        company = get_company()
        date = dt.date(2025, 3, 1)
        start = time.time() + 3
        workers = [
            subprocess.Popen([
                    sys.executable, '-c', WORKER, DB_NAME, str(company.id),
                    date.isoformat(), str(start)],
                env=os.environ.copy())
            for _ in range(2)]
        for worker in workers:
            self.assertEqual(worker.wait(timeout=300), 0)

        invoices = Invoice.find([
                ('subscription', 'in', [s.id for s in subscriptions]),
                ])
        # January, February and March for each contract
        self.assertEqual(len(invoices), 3 * CONTRACTS)
        self.assertEqual(
            len({
                    (i.subscription.id, i.subscription_period_start)
                    for i in invoices}),
            3 * CONTRACTS)
        for subscription in subscriptions:
            subscription.reload()
            self.assertEqual(
                subscription.next_invoice_date, dt.date(2025, 4, 1))
            self.assertIsNone(subscription.invoice_error)

    @unittest.skipIf(
        backend.name != 'postgresql', "needs concurrent connections")
    def test_concurrent_renewals(self):
        "Two nights at the same time renew each term exactly once"
        Subscription = Model.get('sale.subscription')
        customer, services = get_contract_data()
        subscription = create_contract(
            customer, [services['Garden Care']], dt.date(2025, 1, 1),
            preset='yearly')
        subscription.term_months = 2
        subscription.renewal_months = 12
        subscription.save()
        subscriptions = [subscription] + Subscription.duplicate(
            [subscription] * 99)
        Subscription.click(subscriptions, 'quote')
        Subscription.click(subscriptions, 'run')
        company = get_company()
        start = time.time() + 3
        workers = [
            subprocess.Popen([
                    sys.executable, '-c', WORKER, DB_NAME, str(company.id),
                    '2025-03-01', str(start)],
                env=os.environ.copy())
            for _ in range(2)]
        for worker in workers:
            self.assertEqual(worker.wait(timeout=300), 0)
        for subscription in subscriptions:
            subscription.reload()
            self.assertEqual(
                [(t.kind, t.start_date, t.end_date)
                    for t in subscription.terms], [
                    ('initial', dt.date(2025, 1, 1), dt.date(2025, 2, 28)),
                    ('renewal', dt.date(2025, 3, 1), dt.date(2026, 2, 28)),
                    ])
            self.assertEqual(subscription.term_end, dt.date(2026, 2, 28))

    def test_period_unique(self):
        "The database refuses a second invoice for the same period"
        Invoice = Model.get('account.invoice')
        subscription, = self.create_contracts(1)
        generate_invoices(dt.date(2025, 1, 1))
        invoice, = Invoice.find([('subscription', '=', subscription.id)])
        copy, = Invoice.duplicate([invoice])
        with self.assertRaises(Exception) as context:
            Invoice.write([copy.id], {
                    'subscription': subscription.id,
                    'subscription_period_start': dt.date(2025, 1, 1),
                    }, self.config.context)
        self.assertIn('only once', str(context.exception))
