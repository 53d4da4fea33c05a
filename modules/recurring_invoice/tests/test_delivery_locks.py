# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Delivery never drops an invoice when rows are locked by another process"
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from aiosmtpd.controller import Controller

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


class PostingDatabase:
    "A database with the contract data and a fiscal year of today to post"

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


@unittest.skipIf(backend.name != 'postgresql', "needs concurrent connections")
class DeliveryLockTestCase(PostingDatabase, unittest.TestCase):
    "Test that locked rows delay delivery but never drop it"

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


NIGHT = textwrap.dedent('''
    import datetime as dt
    import sys

    from trytond import config
    config.update_etc(sys.argv[1])
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    database, company, date = sys.argv[2:]
    Pool(database).init()
    with Transaction().start(
            database, 0, context={'company': int(company)}):
        Subscription = Pool().get('sale.subscription')
        Subscription.generate_recurring_invoices(
            dt.date.fromisoformat(date))
    ''')
CONTRACTS = 500


@unittest.skipIf(backend.name != 'postgresql', "needs trytond-worker")
class WorkersTestCase(PostingDatabase, unittest.TestCase):
    """Test that two trytond-worker processes deliver the whole night:
    every invoice posted, numbered and mailed once"""

    def setUp(self):
        super().setUp()
        self.messages = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(envelope.rcpt_tos)
                return '250 OK'
        with socket.socket() as free:
            free.bind(('127.0.0.1', 0))
            port = free.getsockname()[1]
        self.smtp = Controller(Handler(), hostname='127.0.0.1', port=port)
        self.smtp.start()
        self.addCleanup(self.smtp.stop)
        directory = tempfile.mkdtemp(prefix='turnus-workers-')
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.conf = os.path.join(directory, 'trytond.conf')
        with open(self.conf, 'w') as file:
            file.write(textwrap.dedent(f'''
                [database]
                uri = {os.environ['TRYTOND_DATABASE_URI']}
                [queue]
                worker = True
                batch_size = 20
                [email]
                uri = smtp://127.0.0.1:{port}
                from = rechnung@turnus.example
                '''))

    def create_contracts(self, count):
        "Contracts delivered automatically by e-mail"
        ContactMechanism = Model.get('party.contact_mechanism')
        Delivery = Model.get('sale.subscription.delivery')
        Subscription = Model.get('sale.subscription')
        customer, services = get_contract_data()
        ContactMechanism(
            party=customer, type='email', value='kunde@example.com').save()
        subscription = create_contract(
            customer, [services['Maintenance']], DATE, catch_up=True)
        subscriptions = [subscription] + Subscription.duplicate(
            [subscription] * (count - 1))
        Warning = Model.get('res.user.warning')
        context = self.config.context
        deliveries = Delivery.create([{
                    'kind': 'standard',
                    'post': True,
                    'channels': ['email'],
                    } for _ in subscriptions], context)
        args = []
        for subscription, delivery in zip(subscriptions, deliveries):
            args.extend([[subscription.id], {'standard_delivery': delivery}])
        Subscription.write(*args, context)
        ids = [s.id for s in subscriptions]
        try:
            Subscription.write(ids, {'automatic_delivery': True}, context)
        except Exception as warning:
            # Switching automatic delivery on asks for confirmation
            Warning.skip(warning.name, True, context)
            Subscription.write(ids, {'automatic_delivery': True}, context)
        Subscription.click(subscriptions, 'quote')
        Subscription.click(subscriptions, 'run')
        return subscriptions

    def test_two_workers(self):
        "Two workers deliver every invoice of the night once"
        Configuration = Model.get('sale.configuration')
        Invoice = Model.get('account.invoice')
        RunLine = Model.get('account.invoice.run.line')
        subscriptions = self.create_contracts(CONTRACTS)
        configuration = Configuration(1)
        configuration.automatic_delivery = True
        configuration.save()
        company = get_company()

        bin_dir = os.path.dirname(sys.executable)
        # each in a session of its own: stopping it stops its pool's process
        workers = [
            subprocess.Popen([
                    os.path.join(bin_dir, 'trytond-worker'),
                    '-c', self.conf, '-d', DB_NAME, '-n', '1'],
                env=os.environ.copy(), start_new_session=True,
                stdout=subprocess.DEVNULL)
            for _ in range(2)]

        def stop():
            for worker in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
            for worker in workers:
                worker.wait(timeout=60)
            # their database sessions end with them
            time.sleep(1)
        self.addCleanup(stop)
        night = subprocess.run([
                sys.executable, '-c', NIGHT, self.conf, DB_NAME,
                str(company.id), DATE.isoformat()],
            env=os.environ.copy(), timeout=600)
        self.assertEqual(night.returncode, 0)

        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            pending = RunLine.find([('state', '=', 'pending')])
            if not pending and RunLine.find([]):
                break
            time.sleep(2)
        lines = RunLine.find([])
        self.assertEqual(
            sorted({(l.channel, l.state) for l in lines}),
            [('email', 'done')])
        self.assertEqual(len(lines), CONTRACTS)
        invoices = Invoice.find([
                ('subscription', 'in', [s.id for s in subscriptions]),
                ])
        self.assertEqual(len(invoices), CONTRACTS)
        self.assertEqual({i.state for i in invoices}, {'posted'})
        numbers = sorted(int(re.sub(r'\D', '', i.number)) for i in invoices)
        # one sequence, no gap, no duplicate
        self.assertEqual(
            numbers, list(range(numbers[0], numbers[0] + CONTRACTS)))
        self.assertEqual(len(self.messages), CONTRACTS)
