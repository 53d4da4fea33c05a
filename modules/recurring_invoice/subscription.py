# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import logging
import time
from collections import defaultdict
from decimal import Decimal

from sql import Null

from trytond import backend, config
from trytond.i18n import gettext
from trytond.model import Index, ModelView, Workflow, fields
from trytond.modules.account_product.exceptions import AccountError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from turnus.recurrence import (
    RecurrenceSetupMixin, RecurrenceWizardMixin, to_datetime)
from turnus.subscription import SubscriptionNameMixin
from turnus.tools import process_slices

from .exceptions import (
    ActivationError, RecurrenceLockedError, SetupRecurrenceError)

logger = logging.getLogger(__name__)

# Contracts handled in one transaction by the nightly run
BATCH_SIZE = 100
LOCKED_FIELDS = {
    'invoice_recurrence', 'invoice_timing', 'catch_up', 'start_date',
    'invoice_start_date'}
LOCKED_LINE_FIELDS = {'consumption_recurrence', 'start_date'}


class Subscription(SubscriptionNameMixin, metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    invoice_timing = fields.Selection([
            ('advance', "In Advance"),
            ('arrears', "In Arrears"),
            ], "Invoice Timing", required=True,
        states={
            'readonly': (Eval('state') != 'draft') | Eval('recurring_locked'),
            },
        help="In advance: the invoice is dated on the first day of the "
        "service period.\n"
        "In arrears: the invoice is dated the day after the service "
        "period ends.")
    catch_up = fields.Boolean(
        "Catch Up",
        states={
            'readonly': (Eval('state') != 'draft') | Eval('recurring_locked'),
            },
        help="If checked, every period since the start date is invoiced.\n"
        "Otherwise nothing is invoiced for dates up to the activation day.")
    activation_date = fields.Date(
        "Activation Date", readonly=True,
        help="The day the contract was activated; "
        "the start date rules count from it.")
    invoice_prolog = fields.Text(
        "Invoice Prolog",
        help="The text printed on the invoices before the lines.")
    invoice_epilog = fields.Text(
        "Invoice Epilog",
        help="The text printed on the invoices after the lines.")
    recurring_locked = fields.Function(
        fields.Boolean("Recurrence Locked"), 'get_recurring_locked')
    invoice_error = fields.Text(
        "Invoicing Error", readonly=True,
        states={
            'invisible': ~Eval('invoice_error'),
            },
        help="Why the last nightly run could not invoice the contract.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(
                t,
                (t.next_invoice_date, Index.Range()),
                (t.company, Index.Equality()),
                where=t.state.in_(['running', 'closed'])
                & (t.next_invoice_date != Null)))
        # A draft contract may wait for the recurrence wizard
        cls.invoice_recurrence.required = False
        cls.invoice_recurrence.states = {
            'readonly': (Eval('state') != 'draft') | Eval('recurring_locked'),
            'required': Eval('state').in_(['quotation', 'running']),
            }
        for name in ['start_date', 'invoice_start_date']:
            field = getattr(cls, name)
            field.states = field.states.copy()
            field.states['readonly'] |= Eval('recurring_locked', False)
        cls._buttons.update({
                'setup_recurrence': {
                    'invisible': Eval('state') != 'draft',
                    'readonly': Eval('recurring_locked', False),
                    'icon': 'tryton-launch',
                    'depends': ['state', 'recurring_locked'],
                    },
                })

    @classmethod
    def default_invoice_timing(cls):
        return 'advance'

    @classmethod
    def default_catch_up(cls):
        return False

    @classmethod
    def get_recurring_locked(cls, subscriptions, name):
        invoiced = cls._invoiced(subscriptions)
        return {s.id: s.id in invoiced for s in subscriptions}

    @classmethod
    def _invoiced(cls, subscriptions):
        "Return the ids of the subscriptions with a generated invoice"
        pool = Pool()
        Invoice = pool.get('account.invoice')
        Period = pool.get('account.invoice.subscription_period')
        cursor = Transaction().connection.cursor()
        invoiced = set()
        ids = [s.id for s in subscriptions if s.id is not None and s.id >= 0]
        for sub_ids in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            # A collective invoice of several contracts has their periods
            for table in [Invoice.__table__(), Period.__table__()]:
                cursor.execute(*table.select(
                        table.subscription,
                        where=fields.SQL_OPERATORS['in'](
                            table.subscription, list(sub_ids)),
                        group_by=[table.subscription]))
                invoiced.update(id_ for id_, in cursor)
        return invoiced

    @classmethod
    def _invoiced_periods(cls, subscriptions):
        """Return for each subscription id the starts of its periods billed
        from its next invoice date on"""
        pool = Pool()
        Period = pool.get('account.invoice.subscription_period')
        period = Period.__table__()
        cursor = Transaction().connection.cursor()
        starts = defaultdict(set)
        subscriptions = [s for s in subscriptions if s.next_invoice_date]
        if not subscriptions:
            return starts
        first = min(s.next_invoice_date for s in subscriptions)
        for sub_ids in grouped_slice(
                [s.id for s in subscriptions], backend.MAX_QUERY_PARAMS):
            cursor.execute(*period.select(
                    period.subscription, period.start,
                    where=fields.SQL_OPERATORS['in'](
                        period.subscription, list(sub_ids))
                    & (period.invoice_date >= first)))
            for subscription_id, start in cursor:
                if isinstance(start, str):
                    start = dt.date.fromisoformat(start)
                starts[subscription_id].add(start)
        return starts

    @classmethod
    def copy(cls, subscriptions, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('activation_date', None)
        default.setdefault('invoice_error', None)
        return super().copy(subscriptions, default=default)

    @classmethod
    def check_modification(
            cls, mode, subscriptions, values=None, external=False):
        super().check_modification(
            mode, subscriptions, values=values, external=external)
        if mode == 'write' and (values.keys() & LOCKED_FIELDS):
            invoiced = cls._invoiced(subscriptions)
            for subscription in subscriptions:
                if subscription.id in invoiced:
                    changed = sorted(values.keys() & LOCKED_FIELDS)
                    raise RecurrenceLockedError(gettext(
                            'recurring_invoice.msg_subscription_locked',
                            subscription=subscription.rec_name,
                            fields=', '.join(
                                cls.__names__(f)['field'] for f in changed)))

    @classmethod
    def validate_invoice_recurrence(cls, subscriptions, field_names=None):
        super().validate_invoice_recurrence(
            [s for s in subscriptions if s.invoice_recurrence],
            field_names=field_names)

    # Service periods
    #
    # The invoice recurrence, anchored on the start date, gives the first
    # day of each service period.  A period ends the day before the next
    # step of the rhythm without its month restriction (so a seasonal
    # period lasts one interval) and never after the end date.

    def _rrulesets(self):
        start = to_datetime(self.start_date)
        return (
            self.invoice_recurrence.rruleset(start),
            self.invoice_recurrence.period_rruleset(start))

    def get_period(self, start, rrulesets=None):
        "Return the end and the unbounded end of the period starting at start"
        _, period_set = rrulesets or self._rrulesets()
        following = period_set.after(to_datetime(start))
        full_end = (following.date() - dt.timedelta(days=1)
            if following else dt.date.max)
        end = full_end
        if self.end_date:
            end = min(end, self.end_date)
        return end, full_end

    def get_period_invoice_date(self, start, rrulesets=None):
        if self.invoice_timing == 'arrears':
            end, _ = self.get_period(start, rrulesets)
            if end == dt.date.max:
                return None
            return end + dt.timedelta(days=1)
        return start

    def get_period_start(self, invoice_date, rrulesets=None):
        "Return the first day of the period invoiced on invoice_date"
        rruleset, _ = rrulesets or self._rrulesets()
        if self.invoice_timing == 'arrears':
            return rruleset.before(to_datetime(invoice_date)).date()
        return invoice_date

    def get_next_period_start(self, start, rrulesets=None):
        rruleset, _ = rrulesets or self._rrulesets()
        following = rruleset.after(to_datetime(start))
        if following:
            following = following.date()
            if not self.end_date or following <= self.end_date:
                return following

    def iter_invoice_periods(self, rrulesets=None):
        """Yield (invoice date, period start, period end, unbounded end)
        from the start date on"""
        rrulesets = rrulesets or self._rrulesets()
        rruleset, _ = rrulesets
        start = rruleset.after(to_datetime(self.start_date), inc=True)
        start = start.date() if start else None
        if self.end_date and start and start > self.end_date:
            start = None
        while start:
            end, full_end = self.get_period(start, rrulesets)
            invoice_date = self.get_period_invoice_date(start, rrulesets)
            if not invoice_date:
                break
            yield invoice_date, start, end, full_end
            start = self.get_next_period_start(start, rrulesets)

    def compute_next_invoice_date(self):
        """Return the first invoice date allowed by the start date rules

        Without catch up, invoice dates up to the activation day count as
        already invoiced."""
        pool = Pool()
        Date = pool.get('ir.date')
        if not self.invoice_recurrence or not self.start_date:
            return None
        activation_date = self.activation_date or Date.today()
        for invoice_date, *_ in self.iter_invoice_periods():
            if self.catch_up or invoice_date > activation_date:
                return invoice_date

    def get_preview(self, count=12):
        "Return the next count invoice periods"
        if self.state == 'running' and self.next_invoice_date:
            rrulesets = self._rrulesets()
            first = self.next_invoice_date
        else:
            rrulesets = None
            first = self.compute_next_invoice_date()
        periods = []
        if first:
            for period in self.iter_invoice_periods(rrulesets):
                if period[0] >= first:
                    periods.append(period)
                    if len(periods) >= count:
                        break
        return periods

    def get_due_invoice_periods(self, date, rrulesets=None, invoiced=()):
        """Return the periods to invoice up to date and move
        next_invoice_date after them

        The periods starting on a date of invoiced are billed already
        (planned ahead, or before a released period): they are skipped,
        also after date."""
        rrulesets = rrulesets or self._rrulesets()
        periods = []
        while self.next_invoice_date:
            invoice_date = self.next_invoice_date
            start = self.get_period_start(invoice_date, rrulesets)
            if invoice_date > date and start not in invoiced:
                break
            end, full_end = self.get_period(start, rrulesets)
            if start not in invoiced:
                if self._invoice_period_waits(start, end, date):
                    break
                periods.append((invoice_date, start, end, full_end))
            start = self.get_next_period_start(start, rrulesets)
            next_date = (self.get_period_invoice_date(start, rrulesets)
                if start else None)
            assert not next_date or next_date > invoice_date
            self.next_invoice_date = next_date
        return periods

    def _invoice_period_waits(self, start, end, date):
        "Return True if the period is not invoiced yet by the run of date"
        return False

    def _get_period_segments(self, start, end):
        "Return the (start, end) of the parts of the period to bill"
        return [(start, end)]

    # Activation

    @classmethod
    def check_quotation(cls, subscriptions):
        "Check recurrence and invoice address, filling a missing address"
        for subscription in subscriptions:
            if not subscription.invoice_recurrence:
                raise ActivationError(gettext(
                        'recurring_invoice.msg_subscription_no_recurrence',
                        subscription=subscription.rec_name))
            if not subscription.invoice_address:
                party = subscription.invoice_party or subscription.party
                subscription.invoice_address = party.address_get(
                    type='invoice')
                if not subscription.invoice_address:
                    raise ActivationError(gettext(
                            'recurring_invoice'
                            '.msg_subscription_no_invoice_address',
                            subscription=subscription.rec_name,
                            party=party.rec_name))
        cls.save(subscriptions)

    @classmethod
    def check_activation(cls, subscriptions):
        pool = Pool()
        Rate = pool.get('currency.currency.rate')
        cls.check_quotation(subscriptions)
        currencies = set()
        for subscription in subscriptions:
            name = subscription.rec_name
            if not subscription.lines:
                raise ActivationError(gettext(
                        'recurring_invoice.msg_subscription_no_lines',
                        subscription=name))
            if (subscription.end_date
                    and subscription.start_date > subscription.end_date):
                raise ActivationError(gettext(
                        'recurring_invoice.msg_subscription_dates',
                        subscription=name))
            for line in subscription.lines:
                if line.unit_price is None:
                    raise ActivationError(gettext(
                            'recurring_invoice.msg_subscription_line_no_price',
                            subscription=name, line=line.rec_name))
                product = line.service.product
                with Transaction().set_context(
                        company=subscription.company.id):
                    try:
                        account = product.account_revenue_used
                    except AccountError:
                        account = None
                if not account:
                    raise ActivationError(gettext(
                            'recurring_invoice'
                            '.msg_subscription_line_no_account',
                            subscription=name, product=product.rec_name))
                if account.company != subscription.company:
                    raise ActivationError(gettext(
                            'recurring_invoice.msg_subscription_company',
                            subscription=name, product=product.rec_name,
                            company=subscription.company.rec_name))
            if subscription.currency != subscription.company.currency:
                currencies.add(
                    (subscription.currency, subscription.company, name))
        for currency, company, name in currencies:
            if not Rate.search([('currency', '=', currency.id)], limit=1):
                raise ActivationError(gettext(
                        'recurring_invoice.msg_subscription_currency',
                        subscription=name, currency=currency.rec_name,
                        company=company.rec_name))

    @classmethod
    @ModelView.button
    @Workflow.transition('quotation')
    def quote(cls, subscriptions):
        cls.check_quotation(subscriptions)
        super().quote(subscriptions)

    @classmethod
    @ModelView.button
    @Workflow.transition('running')
    def run(cls, subscriptions):
        pool = Pool()
        Date = pool.get('ir.date')
        cls.check_activation(subscriptions)
        today = Date.today()
        invoiced = cls._invoiced(subscriptions)
        for subscription in subscriptions:
            if subscription.id in invoiced:
                continue
            # Not invoiced yet: the start date rules apply from today
            subscription.activation_date = today
            subscription.next_invoice_date = (
                subscription.compute_next_invoice_date())
            subscription.init_consumption_dates()
        super().run(subscriptions)

    def init_consumption_dates(self):
        "Make the lines consume from the first period to invoice on"
        if not self.next_invoice_date:
            return
        first = self.get_period_start(self.next_invoice_date)
        for line in self.lines:
            line.next_consumption_date = None
            line.consumed_until = None
            if not line.consumption_recurrence:
                continue
            if first > line.start_date:
                line.consumed_until = first - dt.timedelta(days=1)
            line.next_consumption_date = line.compute_next_consumption_date(
                from_date=max(first, line.start_date))

    @classmethod
    @ModelView.button_action(
        'recurring_invoice.wizard_subscription_setup_recurrence')
    def setup_recurrence(cls, subscriptions):
        pass

    # Nightly run

    @classmethod
    def generate_invoice(cls, date=None):
        "Core entry point: use the exactly-once pipeline"
        cls.generate_recurring_invoices(date=date)

    @classmethod
    def generate_recurring_invoices(cls, date=None):
        """Create every invoice due on or before date (default: today)

        Contracts are processed in slices, each one in its own transaction
        that locks its contracts, so a rerun or a concurrent run creates
        nothing twice."""
        pool = Pool()
        Date = pool.get('ir.date')
        Company = pool.get('company.company')
        transaction = Transaction()
        if date is None:
            date = Date.today()
        company_id = transaction.context.get('company')
        if company_id is None:
            # A scheduled action without companies runs for all of them
            for company in Company.search([]):
                with transaction.set_context(company=company.id):
                    cls.generate_recurring_invoices(date=date)
            return
        # Only the ids: each slice browses its records
        cursor = transaction.connection.cursor()
        cursor.execute(*cls.search([
                    ('state', 'in', ['running', 'closed']),
                    ('next_invoice_date', '<=', date),
                    ('company', '=', company_id),
                    ], order=[('id', 'ASC')], query=True))
        started = time.monotonic()
        stats = {'invoices': 0}
        process_slices(
            list(map(list, grouped_slice([id_ for id_, in cursor],
                        BATCH_SIZE))),
            lambda ids: cls._generate_recurring_invoices_slice(
                ids, date, stats=stats))
        cls.deliver_recurring_invoices(date, generation={
                'generation_time': round(time.monotonic() - started, 2),
                'generated_count': stats['invoices'],
                })

    @classmethod
    def deliver_recurring_invoices(cls, date, generation=None):
        """Post and deliver the invoices of the contracts with automatic
        delivery that no run has delivered yet

        generation: the figures of the night's generation to store on the
        run (generation_time, generated_count)

        It works in new transactions to see what the slices committed."""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        Run = pool.get('account.invoice.run')
        RunLine = pool.get('account.invoice.run.line')
        transaction = Transaction()
        with transaction.new_transaction(readonly=True):
            ids = cls._get_invoices_to_deliver(date)
        run_id = None
        # Each slice locks its invoices: one invoice locked by a user waits
        # for the next night, the others go out
        todo = [list(s) for s in grouped_slice(ids, BATCH_SIZE)]
        while todo:
            sub_ids = todo.pop(0)
            try:
                run_transaction = transaction.new_transaction(
                    _lock_records={Invoice._table: sub_ids})
            except backend.DatabaseOperationalError:
                if len(sub_ids) > 1:
                    # The invoices of the slice one by one
                    todo.extend([id_] for id_ in sub_ids)
                else:
                    logger.info(
                        "invoice %d locked: delivered next time", sub_ids[0])
                continue
            with run_transaction:
                invoices = [
                    i for i in Invoice.browse(sub_ids)
                    if not i.delivery_lines]
                if run_id is None:
                    run = Run.create_automatic(
                        date, invoices, **(generation or {}))
                    run_id = run.id if run else None
                else:
                    Run(run_id).add_lines(invoices)
        # Also retry what earlier runs could not deliver
        with transaction.new_transaction(readonly=True):
            lines = RunLine.search([
                    ('run.kind', '=', 'automatic'),
                    ('run.state', '=', 'executed'),
                    ('run.company', '=', transaction.context.get('company')),
                    ('state', 'in', ['pending', 'failed']),
                    ])
            line_ids = list(map(int, lines))
        if config.getboolean('queue', 'worker', default=False):
            # The workers deliver in batches, each in its own task
            with transaction.new_transaction(), \
                    Transaction().set_context(queue_batch=True):
                RunLine.__queue__.deliver(RunLine.browse(line_ids))
        else:
            # The run is notified when its last line was tried
            try:
                RunLine.deliver(RunLine.browse(line_ids))
            except backend.DatabaseOperationalError:
                # Locked by another process: tried again after the run
                # (the queue retries and reschedules its tasks)
                with transaction.new_transaction(), \
                        Transaction().set_context(queue_batch=True):
                    RunLine.__queue__.deliver(RunLine.browse(line_ids))
        with transaction.new_transaction():
            Invoice.notify_without_send_date(date)

    @classmethod
    def _get_invoices_to_deliver(cls, date):
        "Return the ids of the invoices to deliver automatically"
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        Invoice = pool.get('account.invoice')
        RunLine = pool.get('account.invoice.run.line')
        # Staff asked for these: they are sent on their send date
        due = [
            ('send_date', '<=', date),
            ]
        if Configuration(1).automatic_delivery:
            due = ['OR', due, [
                    ('send_date', '=', None),
                    # They wait for staff to set a send date
                    ('planned', '=', False),
                    ('collective', '=', False),
                    ('subscription.automatic_delivery', '=', True),
                    ['OR', [
                            ('subscription_kind', '=', 'standard'),
                            ('subscription.standard_delivery', '!=', None),
                            ], [
                            # Without settings to post them, additional
                            # invoices stay drafts for staff
                            ('subscription_kind', '=', 'additional'),
                            ('subscription.additional_delivery.post',
                                '=', True),
                            ]],
                    ('invoice_date', '<=', date),
                    ]]
        invoices = Invoice.search([
                ('company', '=', Transaction().context.get('company')),
                ('type', '=', 'out'),
                ('state', 'in', ['draft', 'validated']),
                due,
                ], order=[('id', 'ASC')])
        delivered = set()
        for sub_ids in grouped_slice(
                list(map(int, invoices)), backend.MAX_QUERY_PARAMS):
            delivered.update(
                line.invoice.id for line in RunLine.search([
                        ('invoice', 'in', list(sub_ids)),
                        ]))
        return [i.id for i in invoices if i.id not in delivered]

    @classmethod
    def _generate_recurring_invoices_slice(cls, ids, date, stats=None):
        """Invoice the contracts, return False if another process locks them

        stats['invoices'] counts the invoices created."""
        transaction = Transaction()
        try:
            # Starting the transaction locks the contracts
            slice_transaction = transaction.new_transaction(
                _lock_records={cls._table: ids})
        except backend.DatabaseOperationalError:
            # Another process is invoicing these contracts
            logger.info(
                "skip %d subscriptions locked by another process", len(ids))
            return False
        try:
            with slice_transaction:
                subscriptions = cls._due(cls.browse(ids), date)
                created = len(cls.create_recurring_invoices(
                        subscriptions, date))
        except Exception as exception:
            if len(ids) > 1:
                # Invoice the others and find the failing ones
                return all([
                        cls._generate_recurring_invoices_slice(
                            [id_], date, stats=stats)
                        for id_ in ids])
            else:
                cls._record_invoice_error(ids[0], date, exception)
        else:
            if stats is not None:
                stats['invoices'] += created
        return True

    @classmethod
    def _due(cls, subscriptions, date):
        return [s for s in subscriptions
            if s.state in {'running', 'closed'}
            and s.next_invoice_date and s.next_invoice_date <= date]

    @classmethod
    def _record_invoice_error(cls, id_, date, exception):
        with Transaction().new_transaction():
            subscription = cls(id_)
            if not cls._due([subscription], date):
                # Invoiced meanwhile by a concurrent run
                return
            logger.info(
                "invoicing subscription %d failed", id_, exc_info=True)
            message = getattr(exception, 'message', None) or str(exception)
            cls.write([subscription], {'invoice_error': message})

    @classmethod
    def create_recurring_invoices(cls, subscriptions, date, planned=False):
        """Create the invoices due on or before date for the subscriptions

        planned marks them as planned ahead by staff."""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        InvoiceLine = pool.get('account.invoice.line')
        Consumption = pool.get('sale.subscription.line.consumption')
        Line = pool.get('sale.subscription.line')

        invoiced = cls._invoiced_periods(subscriptions)
        periods = {}
        for subscription in subscriptions:
            periods[subscription] = subscription.get_due_invoice_periods(
                date, invoiced=invoiced.get(subscription.id, set()))
        if not periods:
            return []

        max_end = max(
            (p[2] for ps in periods.values() for p in ps),
            default=dt.date.min)
        pending = defaultdict(list)
        for sub_ids in grouped_slice(
                [s.id for s in subscriptions], backend.MAX_QUERY_PARAMS):
            for consumption in Consumption.search([
                        ('invoice_line', '=', None),
                        ('line.subscription', 'in', list(sub_ids)),
                        ('date', '<=', max_end),
                        ], order=[('date', 'ASC'), ('id', 'ASC')]):
                pending[consumption.line.subscription].append(consumption)
        # Lines waiting for the next invoice of their contract
        waiting = cls._get_waiting_invoice_lines(list(periods))

        invoices, all_invoice_lines, consumptions, lines = [], [], [], []
        for subscription, sub_periods in periods.items():
            remaining = pending[subscription]
            for invoice_date, start, end, full_end in sub_periods:
                for line in subscription.lines:
                    remaining.extend(line.consume_until(end))
                to_invoice = [c for c in remaining if c.date <= end]
                remaining = [c for c in remaining if c.date > end]
                if not to_invoice:
                    continue
                invoice = subscription._get_recurring_invoice(
                    invoice_date, start, end)
                invoice.planned = planned
                product_lines, grouped = Consumption.get_invoice_lines(
                    to_invoice, invoice)
                segments = subscription._get_period_segments(start, end)
                period_lines = []
                for line, line_consumptions in zip(product_lines, grouped):
                    parts = subscription._get_period_invoice_lines(
                        line, start, end, full_end, segments)
                    period_lines.extend(parts)
                    for consumption in line_consumptions:
                        consumption.invoice_line = parts[0]
                        consumptions.append(consumption)
                for line in waiting.pop(subscription, []):
                    line.invoice = invoice
                    period_lines.append(line)
                invoice_lines = (
                    subscription._get_prolog_lines(invoice) + period_lines)
                for sequence, line in enumerate(invoice_lines, 1):
                    line.sequence = sequence
                invoices.append(invoice)
                all_invoice_lines.extend(invoice_lines)
            lines.extend(subscription.lines)
            subscription.invoice_error = None

        Invoice.save(invoices)
        InvoiceLine.save(all_invoice_lines)
        Consumption.save(consumptions)
        Invoice.update_taxes(invoices)
        Line.save(lines)
        cls.save(subscriptions)
        cls.close([s for s in subscriptions
                if s.state == 'running' and not s.next_invoice_date])
        return invoices

    @classmethod
    def _get_waiting_invoice_lines(cls, subscriptions):
        """Return {subscription: invoice lines} of the lines without invoice
        that the next invoice of the subscription bills"""
        return {}

    def _get_recurring_invoice(self, invoice_date, start, end):
        pool = Pool()
        Period = pool.get('account.invoice.subscription_period')
        invoice = self._get_invoice()
        invoice.invoice_date = invoice_date
        invoice.subscription = self
        invoice.subscription_kind = 'standard'
        invoice.subscription_period_start = start
        invoice.subscription_period_end = end
        # The guard that no period is billed twice, also after a merge
        invoice.subscription_periods = [Period(
                subscription=self, invoice_date=invoice_date,
                start=start, end=end)]
        invoice.contact = self.contact
        invoice.description = self.description
        invoice.comment = self.invoice_epilog
        return invoice

    def _get_prolog_lines(self, invoice):
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        if not self.invoice_prolog:
            return []
        return [InvoiceLine(
                invoice=invoice, type='comment',
                description=self.invoice_prolog)]

    def _get_period_invoice_lines(self, line, start, end, full_end,
            segments):
        """Return the invoice lines that bill line for the period: one per
        segment of the period (pauses left out) and per price of the line,
        each prorated by days, for a line billed by days; else line"""
        subscription_line = line.origin
        price_dates = []
        # A line billed in the rhythm of the invoices bills one
        # consumption per period: its quantity follows the line's history
        same_rhythm = (
            subscription_line.consumption_recurrence
            == self.invoice_recurrence)
        if same_rhythm:
            price_dates = subscription_line.get_price_dates(start, end)

        def set_values(part, date):
            part.unit_price = subscription_line.get_unit_price(date)
            if same_rhythm:
                part.quantity = subscription_line.get_quantity(date)
        if not price_dates and (segments == [(start, end)] or not segments):
            set_values(line, max(start, subscription_line.start_date))
            self._set_invoice_line_period(line, start, end, full_end)
            return [line]
        # The segments the line runs in
        line_end = subscription_line.end_date or dt.date.max
        segments = [
            (max(s, subscription_line.start_date), min(e, line_end))
            for s, e in (segments or [(start, end)])]
        segments = [(s, e) for s, e in segments if s <= e]
        if not segments:
            set_values(line, start)
            self._set_invoice_line_period(line, start, end, full_end)
            return [line]
        # Each price for its days
        for date in price_dates:
            split = []
            for segment_start, segment_end in segments:
                if segment_start < date <= segment_end:
                    split.append((segment_start, date - dt.timedelta(days=1)))
                    segment_start = date
                split.append((segment_start, segment_end))
            segments = split
        if not price_dates and not self._prorate_line(subscription_line):
            # Billed whole for the days it runs
            set_values(line, segments[0][0])
            self._set_invoice_line_service(
                line, segments[0][0], segments[-1][1], start, full_end,
                prorate=False)
            return [line]
        values = dict(line._values._items())
        lines = []
        for index, (segment_start, segment_end) in enumerate(segments):
            part = line if not index else line.__class__(**values)
            set_values(part, segment_start)
            self._set_invoice_line_service(
                part, segment_start, segment_end, start, full_end,
                prorate=True)
            lines.append(part)
        return lines

    def _prorate_line(self, subscription_line):
        "Return True if the line is billed by days of its periods"
        template = subscription_line.service.product.template
        return bool(template.subscription_prorate
            and subscription_line.consumption_recurrence
            == self.invoice_recurrence)

    def _set_invoice_line_period(self, line, start, end, full_end):
        subscription_line = line.origin
        line_end = end
        if subscription_line.end_date:
            line_end = min(line_end, subscription_line.end_date)
        self._set_invoice_line_service(
            line, max(start, subscription_line.start_date), line_end,
            start, full_end,
            prorate=(self._prorate_line(subscription_line)
                and line_end < full_end))

    def _set_invoice_line_service(self, line, service_start, service_end,
            start, full_end, prorate):
        """Set the service period of the line, its price prorated by days
        of the period from start to full_end if prorate"""
        pool = Pool()
        Lang = pool.get('ir.lang')
        party = self.invoice_party or self.party
        lang = Lang.get(party.lang.code if party.lang else None)
        line.service_start_date = service_start
        line.service_end_date = service_end
        with Transaction().set_context(language=lang.code):
            period = gettext('recurring_invoice.msg_service_period',
                start=lang.strftime(service_start),
                end=lang.strftime(service_end))
        line.description = '\n'.join(filter(None, [line.description, period]))
        if prorate:
            full = (full_end - start).days + 1
            days = (service_end - service_start).days + 1
            digits = line.__class__.unit_price.digits[1]
            price = line.unit_price * Decimal(days) / Decimal(full)
            line.unit_price = price.quantize(Decimal(1).scaleb(-digits))


class Line(metaclass=PoolMeta):
    __name__ = 'sale.subscription.line'

    def get_unit_price(self, date):
        "Return the unit price billed on date"
        return self.unit_price

    def get_quantity(self, date):
        "Return the quantity billed on date"
        return self.quantity

    def get_price_dates(self, start, end):
        "Return the days after start up to end on which the price changes"
        return []

    def compute_next_consumption_date(self, from_date=None):
        if from_date is None:
            return super().compute_next_consumption_date()
        if not self.consumption_recurrence:
            return None
        rruleset = self.consumption_recurrence.rruleset(
            to_datetime(self.start_date))
        next_date = rruleset.after(to_datetime(from_date), inc=True)
        if next_date:
            next_date = next_date.date()
            for end_date in [self.end_date, self.subscription.end_date]:
                if end_date and next_date > end_date:
                    return None
            return next_date

    def consume_until(self, date):
        "Return the consumptions up to date and move the next date after"
        consumptions = []
        while (self.next_consumption_date
                and self.next_consumption_date <= date):
            consumption = self.get_consumption(self.next_consumption_date)
            if consumption:
                consumptions.append(consumption)
            self.next_consumption_date = self.compute_next_consumption_date()
            if self.next_consumption_date:
                self.consumed_until = (
                    self.next_consumption_date - dt.timedelta(days=1))
            else:
                self.consumed_until = self.end_date or date
        return consumptions

    @classmethod
    def check_modification(cls, mode, lines, values=None, external=False):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        super().check_modification(
            mode, lines, values=values, external=external)
        if mode == 'write' and (values.keys() & LOCKED_LINE_FIELDS):
            invoiced = Subscription._invoiced(
                {line.subscription for line in lines})
            for line in lines:
                if line.subscription.id in invoiced:
                    changed = sorted(values.keys() & LOCKED_LINE_FIELDS)
                    raise RecurrenceLockedError(gettext(
                            'recurring_invoice.msg_subscription_line_locked',
                            line=line.rec_name,
                            fields=', '.join(
                                cls.__names__(f)['field'] for f in changed)))


class SetupRecurrence(RecurrenceWizardMixin, Wizard):
    __name__ = 'sale.subscription.setup_recurrence'
    _recurrence_field = 'invoice_recurrence'
    start = StateView(
        'sale.subscription.setup_recurrence.start',
        'recurring_invoice.subscription_setup_recurrence_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Preview", 'preview', 'tryton-forward', default=True),
            ])
    preview = StateView(
        'sale.subscription.setup_recurrence.preview',
        'recurring_invoice.subscription_setup_recurrence_preview_view_form', [
            Button("Back", 'start', 'tryton-back'),
            Button("Apply", 'apply', 'tryton-ok', default=True),
            ])
    apply = StateTransition()

    def get_start_values(self, subscription):
        return {
            'invoice_timing': subscription.invoice_timing or 'advance',
            'catch_up': bool(subscription.catch_up),
            'start_date': subscription.start_date,
            }

    def check_subscriptions(self, subscriptions):
        for subscription in subscriptions:
            if subscription.state != 'draft' or subscription.recurring_locked:
                raise SetupRecurrenceError(gettext(
                        'recurring_invoice.msg_setup_recurrence_state',
                        subscription=subscription.rec_name))

    def get_subscription(self):
        subscription = super().get_subscription()
        subscription.state = 'draft'
        subscription.next_invoice_date = None
        subscription.start_date = self.start.start_date
        subscription.invoice_timing = self.start.invoice_timing
        subscription.catch_up = self.start.catch_up
        subscription.activation_date = None
        return subscription

    def get_preview_values(self, subscription):
        return {
            'lines': [{
                    'invoice_date': invoice_date,
                    'period_start': start,
                    'period_end': end,
                    } for invoice_date, start, end, _
                in subscription.get_preview(count=12)],
            }

    def apply_rule_set(self, rule_set):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        Line = pool.get('sale.subscription.line')
        start_date = self.start.start_date
        lines = []
        for subscription in self.records:
            for line in subscription.lines:
                if (line.start_date == subscription.start_date
                        or line.start_date < start_date):
                    line.start_date = start_date
                line.consumption_recurrence = rule_set
                lines.append(line)
            subscription.start_date = start_date
            subscription.invoice_start_date = None
            subscription.invoice_recurrence = rule_set
            subscription.invoice_timing = self.start.invoice_timing
            subscription.catch_up = self.start.catch_up
        Subscription.save(self.records)
        Line.save(lines)


class SetupRecurrenceStart(RecurrenceSetupMixin, ModelView):
    __name__ = 'sale.subscription.setup_recurrence.start'
    _recurrence_module = 'recurring_invoice'

    invoice_timing = fields.Selection(
        'get_invoice_timings', "Invoice Timing", required=True)
    catch_up = fields.Boolean(
        "Catch Up",
        help="If checked, every period since the start date is invoiced.")
    start_date = fields.Date(
        "Start Date", required=True,
        help="The first day of the first service period.")

    @classmethod
    def get_invoice_timings(cls):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        return Subscription.fields_get(
            ['invoice_timing'])['invoice_timing']['selection']


class SetupRecurrencePreview(ModelView):
    __name__ = 'sale.subscription.setup_recurrence.preview'

    lines = fields.One2Many(
        'sale.subscription.setup_recurrence.preview.line', None,
        "Next Invoices", readonly=True)


class SetupRecurrencePreviewLine(ModelView):
    __name__ = 'sale.subscription.setup_recurrence.preview.line'

    invoice_date = fields.Date("Invoice Date", readonly=True)
    period_start = fields.Date("Service Start", readonly=True)
    period_end = fields.Date("Service End", readonly=True)
