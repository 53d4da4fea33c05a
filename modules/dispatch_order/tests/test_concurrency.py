# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Exactly-once dispatch orders with concurrent runs"
import datetime as dt
import os
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
from trytond.tests.test_tryton import DB_NAME, drop_db
from trytond.tests.tools import activate_modules

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

    database, company, date, start = sys.argv[1:]
    logging.basicConfig(level=logging.WARNING)
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
LOCKED_MESSAGE = "locked by another process"
NOT_GENERATED_MESSAGE = "not generated"
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

        One draft contract per mode and preset is set up by the wizard and
        then duplicated with the start dates; the drafts are left as they
        are and never get an order."""
        Subscription = Model.get('sale.subscription')
        customer, service, _ = get_dispatch_data()
        specs = Counter(
            (MODES[i % 2], list(PRESETS)[i // 2 % len(PRESETS)],
                START_DATES[i // 4 % len(START_DATES)])
            for i in range(count))
        templates = {}
        for mode in MODES:
            for preset, (_, lead_days) in PRESETS.items():
                templates[mode, preset] = create_dispatch_contract(
                    customer, service, START_DATES[0], mode, preset=preset,
                    lead_days=lead_days, run=False)
        contracts, subscriptions = {}, []
        # By start date first, so the last ids have both modes
        for (mode, preset, start_date), number in sorted(
                specs.items(), key=lambda s: s[0][::-1]):
            copies = Subscription.duplicate(
                [templates[mode, preset]] * number, default={
                    'start_date': start_date,
                    'lines.start_date': start_date,
                    })
            subscriptions.extend(copies)
            contracts.update(
                (c.id, (mode, preset, start_date)) for c in copies)
        Subscription.click(subscriptions, 'quote')
        Subscription.click(subscriptions, 'run')
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

    def start_workers(self, count, start):
        company = get_company()
        workers = [
            subprocess.Popen([
                    sys.executable, '-c', WORKER, DB_NAME, str(company.id),
                    DATE.isoformat(), str(start)],
                env=os.environ.copy(), stderr=subprocess.PIPE, text=True)
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
            self.assertNotIn(NOT_GENERATED_MESSAGE, log)
            logs.append(log)
        return logs

    def assertRerunCreatesNothing(self):
        Order = Model.get('dispatch.order')
        count = len(Order.find([]))
        generate_dispatch_orders(DATE)
        self.assertEqual(len(Order.find([])), count)

    @unittest.skipIf(
        backend.name != 'postgresql', "needs concurrent connections")
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

    @unittest.skipIf(
        backend.name != 'postgresql', "needs concurrent connections")
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

        self.assertIn(LOCKED_MESSAGE, log)
        orders = self.read_orders(contracts)
        self.assertExactlyOnce(contracts, orders)
        self.assertTrue(
            {c for c, _ in orders} >= set(locked),
            msg="locked contracts not dispatched")
        self.assertNoError(contracts)
        self.assertRerunCreatesNothing()
