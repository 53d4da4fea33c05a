# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import logging

from sql.aggregate import Count, Max, Sum
from sql.conditionals import Case

from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields, sequence_ordered
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from turnus.recurrence import (
    RecurrenceSetupMixin, RecurrenceWizardMixin, to_datetime)
from turnus.subscription import SubscriptionNameMixin
from turnus.tools import process_slices

from .dispatch import LineMixin
from .exceptions import (
    DispatchLockedError, DispatchSettingsError, SetupRecurrenceError)

logger = logging.getLogger(__name__)

# Contracts handled in one transaction by the nightly run
BATCH_SIZE = 100
LOCKED_FIELDS = {'dispatch_recurrence', 'dispatch_mode', 'start_date'}
DISPATCH_STATES = ['running', 'closed']


class Subscription(SubscriptionNameMixin, metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    service_address = fields.Many2One(
        'party.address', "Service Address",
        domain=[
            ('party', '=', Eval('party', -1)),
            ],
        states={
            'readonly': Eval('state').in_(['closed', 'cancelled']),
            },
        help="Where the service is provided.\n"
        "Leave empty to use the delivery address of the party.")
    dispatch_recurrence = fields.Many2One(
        'sale.subscription.recurrence.rule.set', "Dispatch Recurrence",
        ondelete='RESTRICT',
        states={
            'readonly': Eval('dispatch_locked', False),
            },
        help="The rhythm of the dispatch orders.")
    dispatch_mode = fields.Selection([
            (None, ""),
            ('planning_date', "Planning Date"),
            ('key_date', "Key Date"),
            ], "Dispatch Mode",
        states={
            'readonly': Eval('dispatch_locked', False),
            },
        help="Planning date: the next order is due one interval after the "
        "planning date of the last order.\n"
        "Key date: the orders are due on the fixed dates of the rhythm.")
    dispatch_lead_days = fields.Integer(
        "Dispatch Lead Time",
        help="The number of days before its due date "
        "that a dispatch order is created.")
    dispatch_lines = fields.One2Many(
        'sale.subscription.dispatch.line', 'subscription', "Dispatch Lines",
        help="The lines of the dispatch orders.\n"
        "Leave empty to copy the lines of the contract.")
    dispatch_orders = fields.One2Many(
        'dispatch.order', 'contract', "Dispatch Orders", readonly=True)
    next_dispatch_date = fields.Function(
        fields.Date(
            "Next Dispatch Date",
            help="The due date of the next dispatch order to create."),
        'get_next_dispatch_date')
    dispatch_locked = fields.Function(
        fields.Boolean("Dispatch Locked"), 'get_dispatch_locked')
    dispatch_error = fields.Text(
        "Dispatch Error", readonly=True,
        states={
            'invisible': ~Eval('dispatch_error'),
            },
        help="Why the last nightly run could not create "
        "the dispatch orders of the contract.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.start_date.states = cls.start_date.states.copy()
        cls.start_date.states['readonly'] |= Eval('dispatch_locked', False)
        cls._buttons.update({
                'setup_dispatch': {
                    'invisible': Eval('state').in_(['closed', 'cancelled']),
                    'readonly': Eval('dispatch_locked', False),
                    'icon': 'tryton-launch',
                    'depends': ['state', 'dispatch_locked'],
                    },
                })

    @classmethod
    def default_dispatch_lead_days(cls):
        return 14

    @fields.depends('party', 'service_address')
    def on_change_party(self):
        super().on_change_party()
        if self.service_address and self.service_address.party != self.party:
            self.service_address = None

    def get_service_address(self):
        "Return the address where the service is provided"
        if self.service_address:
            return self.service_address
        if self.party:
            return self.party.address_get(type='delivery')

    @classmethod
    def copy(cls, subscriptions, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('dispatch_orders', None)
        default.setdefault('dispatch_error', None)
        return super().copy(subscriptions, default=default)

    @classmethod
    def _dispatched(cls, subscriptions):
        "Return the ids of the subscriptions with a dispatch order"
        return {
            id_ for id_, (_, count) in cls._dispatch_key_dates(
                subscriptions).items() if count}

    @classmethod
    def get_dispatch_locked(cls, subscriptions, name):
        dispatched = cls._dispatched(subscriptions)
        return {s.id: s.id in dispatched for s in subscriptions}

    @classmethod
    def validate_fields(cls, subscriptions, field_names):
        super().validate_fields(subscriptions, field_names)
        cls.check_dispatch_settings(subscriptions, field_names)

    @classmethod
    def check_dispatch_settings(cls, subscriptions, field_names=None):
        if field_names and not (field_names & {
                    'dispatch_recurrence', 'dispatch_mode',
                    'dispatch_lead_days'}):
            return
        for subscription in subscriptions:
            if (subscription.dispatch_lead_days is not None
                    and subscription.dispatch_lead_days < 0):
                raise DispatchSettingsError(gettext(
                        'dispatch_order.msg_dispatch_lead_days_negative',
                        subscription=subscription.rec_name))
            if (subscription.dispatch_recurrence
                    and not subscription.dispatch_mode):
                raise DispatchSettingsError(gettext(
                        'dispatch_order.msg_dispatch_mode_required',
                        subscription=subscription.rec_name))

    @classmethod
    def check_modification(
            cls, mode, subscriptions, values=None, external=False):
        super().check_modification(
            mode, subscriptions, values=values, external=external)
        if mode == 'write' and (values.keys() & LOCKED_FIELDS):
            dispatched = cls._dispatched(subscriptions)
            for subscription in subscriptions:
                if subscription.id not in dispatched:
                    continue
                changed = sorted(
                    f for f in values.keys() & LOCKED_FIELDS
                    if values[f] != getattr(
                        getattr(subscription, f), 'id',
                        getattr(subscription, f)))
                if changed:
                    raise DispatchLockedError(gettext(
                            'dispatch_order.msg_dispatch_locked',
                            subscription=subscription.rec_name,
                            fields=', '.join(
                                cls.__names__(f)['field']
                                for f in changed)))

    @classmethod
    @ModelView.button_action('dispatch_order.wizard_subscription_setup_dispatch')
    def setup_dispatch(cls, subscriptions):
        pass

    # Dispatch dates
    #
    # Key date mode: the orders are due on the dates of the dispatch
    # recurrence anchored on the start date; the next order follows the
    # key date of the last order.
    # Planning date mode: the next order is due one interval after the
    # planning date of the last order that is not cancelled, and none is
    # due while an order has no planning date.
    # Without orders, the first date on or after the start date is due.

    @classmethod
    def _dispatch_key_dates(cls, subscriptions):
        "Return {id: (last key date, number of orders)}"
        pool = Pool()
        Order = pool.get('dispatch.order')
        order = Order.__table__()
        cursor = Transaction().connection.cursor()
        ids = [s.id for s in subscriptions if s.id is not None and s.id >= 0]
        result = {}
        for sub_ids in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*order.select(
                    order.contract, Max(order.key_date), Count(order.id),
                    where=fields.SQL_OPERATORS['in'](
                        order.contract, list(sub_ids)),
                    group_by=[order.contract]))
            for contract, key_date, count in cursor:
                if isinstance(key_date, str):
                    key_date = dt.date.fromisoformat(key_date)
                result[contract] = (key_date, count)
        return result

    @classmethod
    def _dispatch_planning_dates(cls, subscriptions):
        """Return {id: (planning date of the last order, unplanned)}
        for the orders that are not cancelled"""
        pool = Pool()
        Order = pool.get('dispatch.order')
        order = Order.__table__()
        cursor = Transaction().connection.cursor()
        ids = [s.id for s in subscriptions if s.id is not None and s.id >= 0]
        last, unplanned = {}, {}
        for sub_ids in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*order.select(
                    order.contract, Max(order.id),
                    Sum(Case((order.planning_date == None, 1), else_=0)),
                    where=fields.SQL_OPERATORS['in'](
                        order.contract, list(sub_ids))
                    & (order.state != 'cancelled'),
                    group_by=[order.contract]))
            for contract, order_id, count in cursor:
                last[contract] = order_id
                unplanned[contract] = bool(count)
        planning_dates = {
            o.id: o.planning_date for o in Order.browse(list(last.values()))}
        return {
            c: (planning_dates[o], unplanned[c]) for c, o in last.items()}

    @classmethod
    def get_dispatch_dates(cls, subscriptions, date=None, count=1):
        """Return {id: [due dates]} of the next dispatch orders

        With date, the orders to create on that day: those due on or
        before date plus the lead time; otherwise the count next ones."""
        key_dates = cls._dispatch_key_dates(subscriptions)
        planning_dates = cls._dispatch_planning_dates(subscriptions)
        result = {}
        for subscription in subscriptions:
            result[subscription.id] = subscription._get_dispatch_dates(
                key_dates.get(subscription.id, (None, 0)),
                planning_dates.get(subscription.id), date=date, count=count)
        return result

    def _get_dispatch_dates(self, key_dates, planning_dates, date=None,
            count=1):
        if (not self.dispatch_recurrence or not self.dispatch_mode
                or not self.start_date):
            return []
        until = None
        if date:
            until = date + dt.timedelta(days=self.dispatch_lead_days or 0)
        if self.end_date:
            until = min(until, self.end_date) if until else self.end_date
        last_key_date, _ = key_dates
        if self.dispatch_mode == 'planning_date':
            if planning_dates:
                base, unplanned = planning_dates
                if unplanned or not base:
                    return []
                rruleset = self.dispatch_recurrence.rruleset(
                    to_datetime(base))
                following = rruleset.after(to_datetime(base))
                dates = [following.date()] if following else []
            else:
                dates = self._get_key_dates(None, count=1)
            if not date:
                # The following ones depend on when the orders are planned
                dates = dates[:1]
        else:
            dates = self._get_key_dates(
                last_key_date, until=until, count=None if date else count)
        return [d for d in dates if not until or d <= until]

    def _get_key_dates(self, after, until=None, count=None):
        "Return the dates of the rhythm after the date, or from the start"
        rruleset = self.dispatch_recurrence.rruleset(
            to_datetime(self.start_date))
        if after:
            following = rruleset.xafter(to_datetime(after))
        else:
            following = rruleset.xafter(
                to_datetime(self.start_date), inc=True)
        dates = []
        for date in following:
            date = date.date()
            if until and date > until:
                break
            dates.append(date)
            if count and len(dates) >= count:
                break
        return dates

    @classmethod
    def get_next_dispatch_date(cls, subscriptions, name):
        dates = cls.get_dispatch_dates(subscriptions)
        return {s.id: (dates[s.id] or [None])[0] for s in subscriptions}

    # Nightly run

    @classmethod
    def generate_dispatch_orders(cls, date=None):
        """Create every dispatch order due on or before date plus the lead
        time of the contract (date default: today)

        Contracts are processed in slices, each one in its own transaction
        that locks its contracts and reads their orders again, so a rerun
        or a concurrent run creates nothing twice."""
        pool = Pool()
        Date = pool.get('ir.date')
        Company = pool.get('company.company')
        transaction = Transaction()
        company_id = transaction.context.get('company')
        if company_id is None:
            # A scheduled action without companies runs for all of them
            for company in Company.search([]):
                with transaction.set_context(company=company.id):
                    cls.generate_dispatch_orders(date=date)
            return
        if date is None:
            date = Date.today()
        # Only the ids: the records are browsed slice by slice
        cursor = transaction.connection.cursor()
        cursor.execute(*cls.search([
                    ('company', '=', company_id),
                    ('state', 'in', DISPATCH_STATES),
                    ('dispatch_recurrence', '!=', None),
                    ('dispatch_mode', '!=', None),
                    ], order=[('id', 'ASC')], query=True))
        ids = [id_ for id_, in cursor]
        due = []
        for sub_ids in grouped_slice(ids, BATCH_SIZE):
            sub_subscriptions = cls.browse(list(sub_ids))
            dates = cls.get_dispatch_dates(sub_subscriptions, date=date)
            due.extend(s.id for s in sub_subscriptions if dates[s.id])
        process_slices(
            list(map(list, grouped_slice(due, BATCH_SIZE))),
            lambda ids: cls._generate_dispatch_orders_slice(ids, date))

    @classmethod
    def _generate_dispatch_orders_slice(cls, ids, date):
        "Create the orders of the contracts, return False if they are locked"
        transaction = Transaction()
        try:
            # Starting the transaction locks the contracts
            slice_transaction = transaction.new_transaction(
                _lock_records={cls._table: ids})
        except backend.DatabaseOperationalError:
            logger.info(
                "subscriptions %s..%s locked by another process",
                ids[0], ids[-1])
            return False
        try:
            with slice_transaction:
                cls.create_dispatch_orders(cls.browse(ids), date)
                cls._touch(ids)
        except Exception as exception:
            if len(ids) > 1:
                # Create the others and find the failing ones
                return all([
                        cls._generate_dispatch_orders_slice([id_], date)
                        for id_ in ids])
            else:
                cls._record_dispatch_error(ids[0], exception)
        return True

    @classmethod
    def _touch(cls, ids):
        """Update the locked contracts without changing them

        A run that locks them after this commit may hold a snapshot taken
        before it (REPEATABLE READ): the update makes its lock fail with a
        serialization error, so it starts again with a fresh snapshot
        instead of creating the orders a second time."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.update(
                [table.dispatch_error], [table.dispatch_error],
                where=fields.SQL_OPERATORS['in'](table.id, ids)))

    @classmethod
    def _record_dispatch_error(cls, id_, exception):
        logger.info(
            "dispatch orders of subscription %d failed", id_, exc_info=True)
        message = getattr(exception, 'message', None) or str(exception)
        with Transaction().new_transaction():
            cls.write([cls(id_)], {'dispatch_error': message})

    @classmethod
    def create_dispatch_orders(cls, subscriptions, date):
        "Create the dispatch orders due on date for the subscriptions"
        pool = Pool()
        Order = pool.get('dispatch.order')
        OrderLine = pool.get('dispatch.order.line')
        subscriptions = [
            s for s in subscriptions if s.state in DISPATCH_STATES]
        dates = cls.get_dispatch_dates(subscriptions, date=date)
        orders, lines = [], []
        for subscription in subscriptions:
            for key_date in dates[subscription.id]:
                order = subscription._get_dispatch_order(key_date)
                order_lines = subscription._get_dispatch_order_lines(order)
                for sequence, line in enumerate(order_lines, 1):
                    line.sequence = sequence
                orders.append(order)
                lines.extend(order_lines)
        Order.set_number(orders)
        Order.save(orders)
        OrderLine.save(lines)
        cls.write(
            [s for s in subscriptions if s.dispatch_error],
            {'dispatch_error': None})
        return orders

    def _get_dispatch_order(self, key_date):
        pool = Pool()
        Order = pool.get('dispatch.order')
        return Order(
            company=self.company,
            contract=self,
            party=self.party,
            service_address=self.get_service_address(),
            contact=self.contact,
            description=self.description,
            key_date=key_date,
            state='draft',
            )

    def _get_dispatch_order_lines(self, order):
        "Return the lines of the order: the dispatch lines or the lines"
        if self.dispatch_lines:
            return [l.get_dispatch_order_line(order)
                for l in self.dispatch_lines]
        return [l.get_dispatch_order_line(order)
            for l in self.lines
            if not l.end_date or l.end_date >= order.key_date]


class Line(metaclass=PoolMeta):
    __name__ = 'sale.subscription.line'

    def get_dispatch_order_line(self, order):
        pool = Pool()
        OrderLine = pool.get('dispatch.order.line')
        return OrderLine(
            order=order,
            product=self.service.product if self.service else None,
            quantity=self.quantity,
            unit=self.unit,
            description=self.description,
            )


class DispatchLine(sequence_ordered(), LineMixin, ModelSQL, ModelView):
    __name__ = 'sale.subscription.dispatch.line'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", required=True, ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('subscription')
        cls.product.context = {
            'company': Eval('_parent_subscription', {}).get('company', -1),
            }
        cls.product.depends = {'subscription'}

    def get_dispatch_order_line(self, order):
        pool = Pool()
        OrderLine = pool.get('dispatch.order.line')
        return OrderLine(
            order=order,
            product=self.product,
            quantity=self.quantity,
            unit=self.unit,
            description=self.description,
            )


class SetupDispatch(RecurrenceWizardMixin, Wizard):
    __name__ = 'sale.subscription.setup_dispatch'
    _recurrence_field = 'dispatch_recurrence'
    start = StateView(
        'sale.subscription.setup_dispatch.start',
        'dispatch_order.subscription_setup_dispatch_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Preview", 'preview', 'tryton-forward', default=True),
            ])
    preview = StateView(
        'sale.subscription.setup_dispatch.preview',
        'dispatch_order.subscription_setup_dispatch_preview_view_form', [
            Button("Back", 'start', 'tryton-back'),
            Button("Apply", 'apply', 'tryton-ok', default=True),
            ])
    apply = StateTransition()

    def get_start_values(self, subscription):
        pool = Pool()
        Start = pool.get('sale.subscription.setup_dispatch.start')
        lead_days = subscription.dispatch_lead_days
        if lead_days is None:
            lead_days = Start.default_dispatch_lead_days()
        return {
            'dispatch_mode': (
                subscription.dispatch_mode or Start.default_dispatch_mode()),
            'dispatch_lead_days': lead_days,
            'start_date': subscription.start_date,
            }

    def check_subscriptions(self, subscriptions):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        dispatched = Subscription._dispatched(subscriptions)
        for subscription in subscriptions:
            if (subscription.state in {'closed', 'cancelled'}
                    or subscription.id in dispatched):
                raise SetupRecurrenceError(gettext(
                        'dispatch_order.msg_setup_dispatch_state',
                        subscription=subscription.rec_name))

    def get_preview_values(self, subscription):
        lead = dt.timedelta(days=self.start.dispatch_lead_days)
        # The preview assumes that each order is planned on its due date
        dates = subscription._get_key_dates(None, count=12)
        return {
            'dispatch_mode': self.start.dispatch_mode,
            'lines': [{
                    'due_date': date,
                    'creation_date': date - lead,
                    } for date in dates],
            }

    def apply_rule_set(self, rule_set):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        Subscription.write(list(self.records), {
                'dispatch_recurrence': rule_set.id,
                'dispatch_mode': self.start.dispatch_mode,
                'dispatch_lead_days': self.start.dispatch_lead_days,
                })


class SetupDispatchStart(RecurrenceSetupMixin, ModelView):
    __name__ = 'sale.subscription.setup_dispatch.start'
    _recurrence_module = 'dispatch_order'

    dispatch_mode = fields.Selection(
        'get_dispatch_modes', "Dispatch Mode", required=True)
    dispatch_lead_days = fields.Integer(
        "Lead Time", required=True,
        help="The number of days before its due date "
        "that a dispatch order is created.")
    start_date = fields.Date(
        "Start Date", readonly=True,
        help="The date of the contract the rhythm starts from.")

    @classmethod
    def get_dispatch_modes(cls):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        return [s for s in Subscription.fields_get(
                ['dispatch_mode'])['dispatch_mode']['selection'] if s[0]]

    @classmethod
    def default_dispatch_mode(cls):
        return 'key_date'

    @classmethod
    def default_dispatch_lead_days(cls):
        return 14

    def check(self):
        super().check()
        if self.dispatch_lead_days is None or self.dispatch_lead_days < 0:
            raise SetupRecurrenceError(gettext(
                    'dispatch_order.msg_setup_dispatch_lead_days'))


class SetupDispatchPreview(ModelView):
    __name__ = 'sale.subscription.setup_dispatch.preview'

    dispatch_mode = fields.Selection(
        'get_dispatch_modes', "Dispatch Mode", readonly=True)
    lines = fields.One2Many(
        'sale.subscription.setup_dispatch.preview.line', None,
        "Next Dispatch Orders", readonly=True)

    @classmethod
    def get_dispatch_modes(cls):
        pool = Pool()
        Start = pool.get('sale.subscription.setup_dispatch.start')
        return Start.get_dispatch_modes()


class SetupDispatchPreviewLine(ModelView):
    __name__ = 'sale.subscription.setup_dispatch.preview.line'

    due_date = fields.Date("Due Date", readonly=True)
    creation_date = fields.Date("Creation Date", readonly=True)


class CreateDispatchOrders(Wizard):
    __name__ = 'sale.subscription.create_dispatch_orders'
    start = StateView(
        'sale.subscription.create_dispatch_orders.start',
        'dispatch_order.subscription_create_dispatch_orders_start_view_form',
        [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Create", 'create_', 'tryton-ok', default=True),
            ])
    create_ = StateTransition()

    def transition_create_(self):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        Subscription.generate_dispatch_orders(date=self.start.date)
        return 'end'


class CreateDispatchOrdersStart(ModelView):
    __name__ = 'sale.subscription.create_dispatch_orders.start'

    date = fields.Date(
        "Date", required=True,
        help="Create the dispatch orders due on this date "
        "plus the lead time of each contract.")

    @classmethod
    def default_date(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        return Date.today()
