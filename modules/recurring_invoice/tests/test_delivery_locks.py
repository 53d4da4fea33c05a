# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Delivery never drops an invoice when rows are locked by another process"
import asyncio
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

from email import message_from_bytes, policy

from aiosmtpd.controller import Controller

from proteus import Model

from trytond import backend
import trytond.config as trytond_config
from trytond.modules.account.tests.tools import (
    create_chart, create_fiscalyear)
from trytond.modules.account_invoice.tests.tools import (
    set_fiscalyear_invoice_sequences)
from trytond.modules.company.tests.tools import create_company, get_company
from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, drop_db
from trytond.transaction import Transaction

from turnus.testing import activate_modules

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


class MailSink:
    """A mail server on 127.0.0.1 that keeps the subjects it takes

    mode: 'ok', 'slow' (answers each mail after 2 s), 'refuse' (451 to
    every mail), 'reject_first' (550 to the next mail only)"""

    def __init__(self):
        self.subjects = []
        self.mode = 'ok'
        with socket.socket() as free:
            free.bind(('127.0.0.1', 0))
            self.port = free.getsockname()[1]
        self.controller = None

    @property
    def uri(self):
        return f'smtp://127.0.0.1:{self.port}'

    def start(self):
        self.controller = Controller(
            self, hostname='127.0.0.1', port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None

    def numbers(self):
        "The invoice numbers of the subjects taken"
        return sorted(s.split()[1] for s in self.subjects)

    async def handle_DATA(self, server, session, envelope):
        if self.mode == 'slow':
            await asyncio.sleep(2)
        elif self.mode == 'refuse':
            return '451 4.3.0 Try again later'
        elif self.mode == 'reject_first':
            self.mode = 'ok'
            return '550 5.7.1 Rejected'
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.subjects.append(str(message['Subject']))
        return '250 OK'


@contextlib.contextmanager
def configured(section, option, value):
    "The option of trytond's configuration set to value meanwhile"
    if not trytond_config.has_section(section):
        trytond_config.add_section(section)
    old = trytond_config.get(section, option)
    trytond_config.set(section, option, value)
    try:
        yield
    finally:
        if old is None:
            trytond_config._config.remove_option(section, option)
            trytond_config._cache_clear()
        else:
            trytond_config.set(section, option, old)


def create_email_contracts(config, count):
    "Contracts delivered automatically by e-mail"
    ContactMechanism = Model.get('party.contact_mechanism')
    Delivery = Model.get('sale.subscription.delivery')
    Subscription = Model.get('sale.subscription')
    Warning = Model.get('res.user.warning')
    customer, services = get_contract_data()
    if not customer.contact_mechanisms:
        ContactMechanism(
            party=customer, type='email', value='kunde@example.com').save()
    subscription = create_contract(
        customer, [services['Maintenance']], DATE, catch_up=True)
    subscriptions = [subscription] + Subscription.duplicate(
        [subscription] * (count - 1))
    context = config.context
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
    Configuration = Model.get('sale.configuration')
    configuration = Configuration(1)
    configuration.automatic_delivery = True
    configuration.save()
    return subscriptions


def delivered(subscriptions):
    """The (invoice number, state) of the subscriptions' invoices and the
    (channel, state, message) of their lines"""
    Invoice = Model.get('account.invoice')
    RunLine = Model.get('account.invoice.run.line')
    ids = [s.id for s in subscriptions]
    invoices = Invoice.find([('subscription', 'in', ids)])
    lines = RunLine.find([('subscription', 'in', ids)])
    return invoices, lines


def numbers(invoices):
    return sorted(int(re.sub(r'\D', '', i.number)) for i in invoices)


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


@unittest.skipIf(backend.name != 'postgresql', "run on PostgreSQL in CI")
class MailServerTestCase(PostingDatabase, unittest.TestCase):
    """Test that a slow or refusing mail server never loses a mail and
    never gets one twice"""

    def setUp(self):
        super().setUp()
        self.sink = MailSink()
        self.addCleanup(self.sink.stop)
        for option, value in [
                ('uri', self.sink.uri),
                ('from', 'rechnung@turnus.example')]:
            self.enterContext(configured('email', option, value))

    def test_refusing(self):
        """A mail server down, then refusing every mail, then one: the
        lines fail with the reason and the next nights send each mail
        once"""
        subscriptions = create_email_contracts(self.config, 3)

        # Down: the connection is refused before the commit
        generate_invoices(DATE)
        invoices, lines = delivered(subscriptions)
        self.assertEqual({i.state for i in invoices}, {'posted'})
        self.assertEqual({l.state for l in lines}, {'failed'})
        self.assertIn('Connection refused', lines[0].message)

        # Up, refusing every mail: after the commit
        self.sink.start()
        self.sink.mode = 'refuse'
        generate_invoices(DATE)
        invoices, lines = delivered(subscriptions)
        self.assertEqual({l.state for l in lines}, {'failed'})
        self.assertIn('Try again later', lines[0].message)
        self.assertIn('did not take', lines[0].message)
        self.assertEqual({i.sent_date for i in invoices}, {None})
        self.assertEqual(self.sink.subjects, [])

        # It rejects one mail: the others are sent
        self.sink.mode = 'reject_first'
        generate_invoices(DATE)
        invoices, lines = delivered(subscriptions)
        self.assertEqual(
            sorted(l.state for l in lines), ['done', 'done', 'failed'])
        self.assertEqual(len(self.sink.subjects), 2)
        failed, = [l for l in lines if l.state == 'failed']
        self.assertIn('Rejected', failed.message)
        self.assertIsNone(failed.invoice.sent_date)

        generate_invoices(DATE)
        generate_invoices(DATE)
        invoices, lines = delivered(subscriptions)
        self.assertEqual({l.state for l in lines}, {'done'})
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            self.sink.numbers(), sorted(i.number for i in invoices))

    def test_slow(self):
        "A mail server that answers each mail after 2 s: every mail once"
        subscriptions = create_email_contracts(self.config, 2)
        self.sink.start()
        self.sink.mode = 'slow'
        started = time.monotonic()
        generate_invoices(DATE)
        self.assertGreaterEqual(time.monotonic() - started, 4)
        generate_invoices(DATE)
        invoices, lines = delivered(subscriptions)
        self.assertEqual({l.state for l in lines}, {'done'})
        self.assertEqual(
            self.sink.numbers(), sorted(i.number for i in invoices))


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
# issue 11: two workers and 500 contracts
CONTRACTS = 500
BATCH_SIZE = 20


@unittest.skipIf(backend.name != 'postgresql', "needs trytond-worker")
class WorkersTestCase(PostingDatabase, unittest.TestCase):
    """Test that trytond-worker processes deliver the whole night: every
    invoice posted, numbered and mailed once, also when one is killed"""

    def setUp(self):
        super().setUp()
        self.sink = MailSink()
        self.sink.start()
        self.addCleanup(self.sink.stop)
        directory = tempfile.mkdtemp(prefix='turnus-workers-')
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.conf = os.path.join(directory, 'trytond.conf')
        with open(self.conf, 'w') as file:
            file.write(textwrap.dedent(f'''
                [database]
                uri = {os.environ['TRYTOND_DATABASE_URI']}
                [queue]
                worker = True
                batch_size = {BATCH_SIZE}
                [email]
                uri = {self.sink.uri}
                from = rechnung@turnus.example
                '''))
        self.workers = []
        self.addCleanup(self.stop_workers)

    def start_worker(self):
        bin_dir = os.path.dirname(sys.executable)
        # In a session of its own: killing it kills its pool's process
        # and its LibreOffice
        worker = subprocess.Popen([
                os.path.join(bin_dir, 'trytond-worker'),
                '-c', self.conf, '-d', DB_NAME, '-n', '1'],
            env=os.environ.copy(), start_new_session=True,
            stdout=subprocess.DEVNULL)
        self.workers.append(worker)
        return worker

    def kill(self, worker):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=60)

    def stop_workers(self):
        for worker in self.workers:
            self.kill(worker)
        # their database sessions end with them
        time.sleep(1)

    def night(self):
        "The night as trytond-cron runs it: generate, then enqueue"
        company = get_company()
        night = subprocess.run([
                sys.executable, '-c', NIGHT, self.conf, DB_NAME,
                str(company.id), DATE.isoformat()],
            env=os.environ.copy(), timeout=600)
        self.assertEqual(night.returncode, 0)

    def wait(self, condition, timeout=900, step=2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(step)
        self.fail("timed out")

    def pending(self, subscriptions, *domain):
        RunLine = Model.get('account.invoice.run.line')
        return RunLine.find([
                ('subscription', 'in', [s.id for s in subscriptions]),
                ('state', '=', 'pending'),
                ] + list(domain))

    def unfinished_tasks(self):
        "The delivery tasks of the queue that did not finish"
        pool = Pool(DB_NAME)
        with Transaction().start(DB_NAME, 0, readonly=True):
            Queue = pool.get('ir.queue')
            return [
                t.id for t in Queue.search([('finished_at', '=', None)])
                if t.data.get('model') == 'account.invoice.run.line']

    def assertDeliveredOnce(self, subscriptions):
        invoices, lines = delivered(subscriptions)
        self.assertEqual(
            sorted({(l.channel, l.state) for l in lines}),
            [('email', 'done')])
        self.assertEqual(len(lines), len(subscriptions))
        self.assertEqual(len(invoices), len(subscriptions))
        self.assertEqual({i.state for i in invoices}, {'posted'})
        # one sequence, no gap, no duplicate
        numbers_ = numbers(invoices)
        self.assertEqual(
            numbers_, list(range(numbers_[0], numbers_[0] + len(invoices))))
        # every invoice mailed once
        self.assertEqual(
            self.sink.numbers(), sorted(i.number for i in invoices))

    def test_killed_worker(self):
        """A worker killed in the middle of a slice: its lines are queued
        again the same night, every invoice is posted and mailed once"""
        subscriptions = create_email_contracts(self.config, 5 * BATCH_SIZE)
        worker = self.start_worker()
        self.night()
        # A slice posted, its mails not yet sent (they go at its commit)
        self.wait(lambda: self.pending(
                subscriptions, ('invoice.state', '=', 'posted')), step=0.05)
        self.kill(worker)
        sent = len(self.sink.subjects)

        self.start_worker()
        # The other tasks delivered and finished; the killed one's lines
        # wait
        self.wait(lambda: len(self.pending(subscriptions)) == BATCH_SIZE
            and len(self.sink.subjects) == len(subscriptions) - BATCH_SIZE
            and len(self.unfinished_tasks()) == 1)
        self.assertEqual(sent, 0)
        pool = Pool(DB_NAME)
        # The cron job of every 10 minutes, its timeout passed, in a
        # process with workers: it only queues
        with configured('queue', 'worker', 'True'), \
                Transaction().start(DB_NAME, 0) as transaction:
            pool.get('account.invoice.run.line').requeue_stalled(timeout=0)
            transaction.commit()
        self.wait(lambda: not self.pending(subscriptions))
        self.assertDeliveredOnce(subscriptions)
        # Nothing left to queue again
        self.wait(lambda: not self.unfinished_tasks())

    def test_two_workers(self):
        "Two workers deliver every invoice of the night once"
        subscriptions = create_email_contracts(self.config, CONTRACTS)
        self.start_worker()
        self.start_worker()
        self.night()
        self.wait(lambda: not self.pending(subscriptions))
        self.assertDeliveredOnce(subscriptions)
