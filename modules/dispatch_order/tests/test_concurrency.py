# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Exactly-once dispatch orders with concurrent runs"
import datetime as dt
import os
import select
import subprocess
import sys
import textwrap
import time
import unittest
from collections import Counter

from dateutil.relativedelta import relativedelta
from proteus import Model

from trytond import backend
from trytond.modules.company.tests.tools import create_company, get_company
from trytond.model import fields
from trytond.tests.test_tryton import DB_NAME, drop_db
from trytond.transaction import Transaction

from turnus.testing import activate_modules

from ..subscription import BATCH_SIZE
from .tools import (
    create_dispatch_contract, generate_dispatch_orders, get_dispatch_data,
    setup_dispatch_data)

WORKER = textwrap.dedent('''
    import datetime as dt
    import logging
    import sys
    import time

    from trytond.pool import Pool
    from trytond.transaction import Transaction

    database, company, date, start = sys.argv[1:5]
    logging.basicConfig(
        level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger(
        'trytond.modules.dispatch_order.subscription').setLevel(
        logging.INFO)
    Pool(database).init()
    with Transaction().start(
            database, 0, context={'company': int(company)}):
        Subscription = Pool().get('sale.subscription')
        time.sleep(max(0, float(start) - time.time()))
        Subscription.generate_dispatch_orders(
            dt.date.fromisoformat(date))
    ''')
# Prepended to WORKER: the first lock of the contracts (the table is the
# extra argument of the worker) takes the snapshot of the slice transaction
# first, then waits for a line on stdin, so that the test can let another
# run commit the same contracts in between.  This is the window of a run
# that starts its slice transaction just before the other one commits,
# made wide enough to be hit every time.
STALE_SNAPSHOT = textwrap.dedent('''
    import logging
    import sys

    from trytond import backend

    _lock_records = backend.Database.lock_records.__func__
    _stalled = []
    _logger = logging.getLogger('stale_snapshot')
    _logger.setLevel(logging.INFO)

    def lock_records(cls, connection, table, ids):
        if table == sys.argv[5] and not _stalled:
            _stalled.append(table)
            # REPEATABLE READ: the first statement takes the snapshot
            connection.cursor().execute('SELECT 1')
            print('snapshot', flush=True)
            sys.stdin.readline()
        try:
            _lock_records(cls, connection, table, ids)
        except backend.DatabaseOperationalError as exception:
            _logger.info(
                'lock failed: %s', getattr(exception, 'sqlstate', None))
            raise
    backend.Database.lock_records = classmethod(lock_records)
    ''')
# What the stalled lock logs when the other run has touched the contracts
STALE_LOCK_LOG = r'(?m)^INFO stale_snapshot: lock failed: 40001$'
# What the run logs when it finds a slice locked
LOCKED_LOG = (
    r'(?m)^INFO trytond\.modules\.dispatch_order\.subscription: '
    r'.*locked by another process')
# A run that leaves contracts for the next one or fails logs a warning
WARNING_LOG = r'(?m)^(WARNING|ERROR|CRITICAL) '
CONTRACTS = 250
MODES = ['key_date', 'planning_date']
# preset: (months of the rhythm, lead days of the contract)
PRESETS = {
    'monthly': (1, 0),
    'quarterly': (3, 14),
    }
# Spread over a few months, with month ends
START_DATES = [
    dt.date(2025, 11, 30),
    dt.date(2025, 12, 15),
    dt.date(2025, 12, 31),
    dt.date(2026, 1, 1),
    dt.date(2026, 1, 31),
    dt.date(2026, 2, 28),
    ]
# The run comes after a pause of several intervals: each key date contract
# catches up several key dates (up to seven for the monthly ones)
DATE = dt.date(2026, 5, 31)
# Seconds between the start of the workers and their run, for their pool
START_DELAY = 3
# Seconds that another connection holds the lock on some contracts
LOCK_HOLD = 2
TIMEOUT = 120


def expected_key_dates(mode, preset, start_date, date):
    """Return the key dates due on date, computed independently of the
    module: the month ends are kept as relativedelta does"""
    months, lead_days = PRESETS[preset]
    if mode == 'planning_date':
        # The first order is due on the start date, the next one only once
        # it is planned
        return [start_date]
    until = date + dt.timedelta(days=lead_days)
    dates, count = [], 0
    while (key_date := start_date + relativedelta(
                months=months * count)) <= until:
        dates.append(key_date)
        count += 1
    return dates


@unittest.skipIf(
    backend.name != 'postgresql', "needs concurrent connections")
class ConcurrencyTestCase(unittest.TestCase):
    "Test that concurrent runs create each dispatch order exactly once"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.config = activate_modules(
            'dispatch_order', create_company, setup_dispatch_data)

    @classmethod
    def tearDownClass(cls):
        drop_db()
        super().tearDownClass()

    def create_contracts(self, count):
        """Return {id: (mode, preset, start date)} of count running
        contracts, half in each mode

        A draft contract per preset is set up by the wizard, then copied
        with the modes and start dates in one server-side transaction
        (proteus would copy the lines contract by contract); the drafts
        are left as they are and never get an order."""
        customer, service, _ = get_dispatch_data()
        templates = {
            preset: create_dispatch_contract(
                customer, service, START_DATES[0], MODES[0], preset=preset,
                lead_days=lead_days, run=False).id
            for preset, (_, lead_days) in PRESETS.items()}
        specs = Counter(
            (MODES[i % 2], list(PRESETS)[i // 2 % len(PRESETS)],
                START_DATES[i // 4 % len(START_DATES)])
            for i in range(count))
        pool = self.config.pool
        Subscription = pool.get('sale.subscription')
        Line = pool.get('sale.subscription.line')
        line_fields = [
            n for n, f in Line._fields.items()
            if not isinstance(f, fields.Function)
            and f._type not in {'one2many', 'many2many'}
            and n not in {
                'id', 'create_uid', 'create_date', 'write_uid', 'write_date',
                'subscription', 'start_date', 'next_consumption_date',
                'consumed_until'}]
        contracts = {}
        with Transaction().start(
                DB_NAME, self.config.user, context=self.config.context):
            lines = {
                preset: Line.read(
                    [line.id for line in Subscription(id_).lines], line_fields)
                for preset, id_ in templates.items()}
            subscriptions, line_values = [], []
            # By start date first, so the last ids have both modes
            for (mode, preset, start_date), number in sorted(
                    specs.items(), key=lambda s: s[0][::-1]):
                copies = Subscription.copy(
                    [Subscription(templates[preset])] * number, default={
                        'start_date': start_date,
                        'dispatch_mode': mode,
                        'lines': None,
                        })
                subscriptions.extend(copies)
                line_values.extend(
                    {**values, 'subscription': copy.id,
                        'start_date': start_date}
                    for copy in copies for values in lines[preset])
                contracts.update(
                    (c.id, (mode, preset, start_date)) for c in copies)
            Line.create(line_values)
            subscriptions = Subscription.browse(subscriptions)
            Subscription.quote(subscriptions)
            Subscription.run(subscriptions)
            self.assertTrue(all(s.lines for s in subscriptions))
            self.assertEqual(
                {s.state for s in subscriptions}, {'running'})
        self.assertEqual(len(contracts), count)
        return contracts

    def read_orders(self, contracts):
        "Return the (contract, key date) of the orders of the contracts"
        Order = Model.get('dispatch.order')
        return [
            (o['contract'], o['key_date'])
            for o in Order._proxy.search_read(
                [('contract', 'in', list(contracts))], 0, None, None,
                ['contract', 'key_date'], self.config.context)]

    def assertExactlyOnce(self, contracts, orders):
        "Check that the orders are exactly the ones due on DATE"
        counter = Counter(orders)
        self.assertEqual(
            [o for o, n in counter.items() if n > 1], [],
            msg="duplicate (contract, key date)")
        expected = {
            (id_, key_date)
            for id_, spec in contracts.items()
            for key_date in expected_key_dates(*spec, DATE)}
        self.assertEqual(set(counter), expected)
        self.assertEqual(len(orders), len(expected))
        by_contract = Counter(c for c, _ in orders)
        for id_, (mode, _, _) in contracts.items():
            if mode == 'planning_date':
                self.assertEqual(by_contract[id_], 1, msg=f"contract {id_}")
            else:
                self.assertGreaterEqual(
                    by_contract[id_], 2, msg=f"contract {id_}")

    def assertNoError(self, contracts):
        Subscription = Model.get('sale.subscription')
        self.assertEqual(
            Subscription.find([
                    ('id', 'in', list(contracts)),
                    ('dispatch_error', '!=', None),
                    ]), [])

    def start_workers(self, count, start, script=WORKER, args=(), **popen):
        company = get_company()
        workers = [
            subprocess.Popen([
                    sys.executable, '-c', script, DB_NAME, str(company.id),
                    DATE.isoformat(), str(start), *args],
                env=os.environ.copy(), stderr=subprocess.PIPE, text=True,
                **popen)
            for _ in range(count)]
        for worker in workers:
            self.addCleanup(self.stop_worker, worker)
        return workers

    @staticmethod
    def stop_worker(worker):
        "Stop the worker if a failed test left it running"
        if worker.poll() is None:
            worker.kill()
            worker.communicate()

    def wait_workers(self, workers):
        "Wait for the workers and return their logs"
        logs = []
        for worker in workers:
            _, log = worker.communicate(timeout=TIMEOUT)
            self.assertEqual(worker.returncode, 0, msg=log)
            self.assertNotRegex(log, WARNING_LOG)
            logs.append(log)
        return logs

    def assertRerunCreatesNothing(self):
        Order = Model.get('dispatch.order')
        count = len(Order.find([]))
        generate_dispatch_orders(DATE)
        self.assertEqual(len(Order.find([])), count)

    def test_concurrent_runs(self):
        "Two processes create the dispatch orders at the same time"
        contracts = self.create_contracts(CONTRACTS)
        self.assertEqual(
            Counter(m for m, _, _ in contracts.values()),
            {m: CONTRACTS // 2 for m in MODES})

        workers = self.start_workers(2, time.time() + START_DELAY)
        self.wait_workers(workers)

        self.assertExactlyOnce(contracts, self.read_orders(contracts))
        self.assertNoError(contracts)
        self.assertRerunCreatesNothing()

    def test_locked_contracts(self):
        "Contracts locked by another connection are dispatched on a retry"
        contracts = self.create_contracts(150)
        # The run takes the due contracts by id in slices: the first slice
        # is free, some of each mode are locked in the second one
        ids = sorted(contracts)
        first_slice = ids[:BATCH_SIZE]
        locked = [
            id_ for mode in MODES
            for id_ in [
                i for i in ids[BATCH_SIZE:] if contracts[i][0] == mode][-5:]]
        self.assertEqual(len(locked), 10)
        table = self.config.pool.get('sale.subscription')._table

        # Another connection, not a transaction of this thread, so that
        # the test can read the orders while it holds the lock
        database = backend.Database(DB_NAME).connect()
        connection = database.get_connection()
        try:
            database.lock_records(connection, table, locked)
            start = time.time() + START_DELAY
            workers = self.start_workers(1, start)
            time.sleep(max(0, start + LOCK_HOLD - time.time()))
            # The free slice does not wait for the locked one
            deadline = time.time() + TIMEOUT
            while not self.read_orders(first_slice):
                self.assertLess(time.time(), deadline)
                time.sleep(0.1)
            # The run found the contracts locked and waits to retry
            self.assertIsNone(workers[0].poll())
            self.assertEqual(
                self.read_orders(locked), [],
                msg="orders created while the contracts are locked")
        finally:
            connection.rollback()
            database.put_connection(connection)
        log, = self.wait_workers(workers)

        self.assertRegex(log, LOCKED_LOG)
        orders = self.read_orders(contracts)
        self.assertExactlyOnce(contracts, orders)
        self.assertTrue(
            {c for c, _ in orders} >= set(locked),
            msg="locked contracts not dispatched")
        self.assertNoError(contracts)
        self.assertRerunCreatesNothing()

    def test_stale_snapshot(self):
        "A run whose snapshot predates the other run's commit creates nothing"
        contracts = self.create_contracts(40)
        table = self.config.pool.get('sale.subscription')._table
        worker, = self.start_workers(
            1, 0, script=STALE_SNAPSHOT + WORKER, args=[table],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        # The worker found the contracts due and took the snapshot of its
        # first slice, without locking it yet
        ready, _, _ = select.select([worker.stdout], [], [], TIMEOUT)
        line = worker.stdout.readline() if ready else ''
        if line != 'snapshot\n':
            worker.kill()
            _, log = worker.communicate()
            self.fail(f"worker did not stop at the lock: {line!r}\n{log}")
        # Another run creates and commits the orders in the meantime
        generate_dispatch_orders(DATE)
        self.assertExactlyOnce(contracts, self.read_orders(contracts))
        # The worker locks the contracts with its old snapshot
        worker.stdin.write('\n')
        worker.stdin.flush()
        log, = self.wait_workers([worker])

        self.assertExactlyOnce(contracts, self.read_orders(contracts))
        self.assertNoError(contracts)
        # The lock failed on the contracts touched by the other run, the
        # transaction started again with a fresh snapshot
        self.assertRegex(log, STALE_LOCK_LOG)
