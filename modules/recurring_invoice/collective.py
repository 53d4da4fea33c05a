# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Collective invoices: plan a contract's invoices ahead, merge draft
invoices into collective invoices and send them on their send date"""
import datetime as dt
from collections import defaultdict
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from sql import Null

from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, PYSONEncoder
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import (
    Button, StateAction, StateView, Wizard)

from .exceptions import (
    InvoiceMergeError, PlanInvoicesError, SendDateWarning)

MAX_HORIZON = 36


class InvoicePeriod(ModelSQL, ModelView):
    """Contract period invoiced by an invoice

    One record per service period of a contract: the nightly run, the
    planning and the merge never bill a period twice, because the database
    refuses a second record for the same contract and period start.
    Deleting the invoice releases its periods."""
    __name__ = 'account.invoice.subscription_period'

    invoice = fields.Many2One(
        'account.invoice', "Invoice", required=True, readonly=True,
        ondelete='CASCADE')
    subscription = fields.Many2One(
        'sale.subscription', "Contract", required=True, readonly=True,
        ondelete='RESTRICT')
    invoice_date = fields.Date(
        "Scheduled Invoice Date", required=True, readonly=True,
        help="The date the contract's rhythm gives the invoice.")
    start = fields.Date("Service Start", required=True, readonly=True)
    end = fields.Date("Service End", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('invoice')
        t = cls.__table__()
        cls._sql_constraints += [
            ('subscription_start_unique',
                Unique(t, t.subscription, t.start),
                'recurring_invoice.msg_invoice_period_unique'),
            ]
        cls._order = [('start', 'ASC'), ('id', 'ASC')]

    @classmethod
    def __register__(cls, module):
        pool = Pool()
        Invoice = pool.get('account.invoice')
        cursor = Transaction().connection.cursor()
        table = cls.__table__()
        invoice = Invoice.__table__()
        created = not backend.TableHandler.table_exist(cls._table)
        super().__register__(module)
        if created:
            # Invoices generated before the periods were recorded
            columns = [
                table.create_uid, table.create_date, table.invoice,
                table.subscription, table.invoice_date, table.start,
                table.end]
            cursor.execute(*table.insert(columns, invoice.select(
                        invoice.create_uid, invoice.create_date, invoice.id,
                        invoice.subscription, invoice.invoice_date,
                        invoice.subscription_period_start,
                        invoice.subscription_period_end,
                        where=(invoice.subscription != Null)
                        & (invoice.subscription_period_start != Null)
                        & (invoice.invoice_date != Null))))

    def get_rec_name(self, name):
        return '%s: %s - %s' % (
            self.subscription.rec_name, self.start, self.end or '')

    @classmethod
    def on_delete(cls, periods):
        callbacks = super().on_delete(periods)
        released = {}
        for period in periods:
            key = period.subscription.id
            released[key] = min(
                released.get(key, period.invoice_date), period.invoice_date)
        if released:
            callbacks.append(
                lambda: cls._release(released))
        return callbacks

    @classmethod
    def _release(cls, released):
        """Move the next invoice date of the contracts back to their
        released periods: the nightly run bills them again"""
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        to_write = []
        for subscription in Subscription.browse(list(released)):
            if subscription.state not in {'running', 'closed'}:
                continue
            date = released[subscription.id]
            if (not subscription.next_invoice_date
                    or date < subscription.next_invoice_date):
                to_write.extend([[subscription], {
                            'next_invoice_date': date,
                            }])
        if to_write:
            Subscription.write(*to_write)


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    subscription_periods = fields.One2Many(
        'account.invoice.subscription_period', 'invoice', "Contract Periods",
        readonly=True,
        states={
            'invisible': ~Eval('subscription_periods'),
            },
        help="The service periods of contracts the invoice bills.")
    planned = fields.Boolean(
        "Planned", readonly=True,
        states={
            'invisible': ~Eval('planned'),
            },
        help="Created ahead by \"Plan Invoices\" on the contract.")
    collective = fields.Boolean(
        "Collective Invoice", readonly=True,
        states={
            'invisible': ~Eval('collective'),
            },
        help="Made by merging invoices.")
    send_date = fields.Date(
        "Send Date",
        states={
            'readonly': Eval('state') != 'draft',
            'invisible': Eval('type') != 'out',
            },
        help="The nightly run posts the draft and sends it on this day.")
    handle_manually = fields.Boolean(
        "Handle Manually",
        states={
            'readonly': Eval('state') != 'draft',
            'invisible': (Eval('type') != 'out') | ~(
                Eval('planned') | Eval('collective')),
            },
        help="If checked, the invoice without send date is posted and sent "
        "by staff and no longer listed as waiting for a send date.")

    @classmethod
    def default_planned(cls):
        return False

    @classmethod
    def default_collective(cls):
        return False

    @classmethod
    def default_handle_manually(cls):
        return False

    @classmethod
    def copy(cls, invoices, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('subscription_periods', None)
        default.setdefault('planned', False)
        default.setdefault('collective', False)
        default.setdefault('send_date', None)
        default.setdefault('handle_manually', False)
        return super().copy(invoices, default=default)

    @classmethod
    def check_modification(cls, mode, invoices, values=None, external=False):
        pool = Pool()
        Date = pool.get('ir.date')
        Warning = pool.get('res.user.warning')
        super().check_modification(
            mode, invoices, values=values, external=external)
        if not external or mode not in {'create', 'write'}:
            return
        today = Date.today()
        if mode == 'create':
            past = [i for i in invoices if i.send_date and i.send_date < today]
        elif values.get('send_date') and values['send_date'] < today:
            past = invoices
        else:
            past = []
        if past:
            # Sent by the next nightly run
            key = Warning.format('send_date_past', past)
            if Warning.check(key):
                raise SendDateWarning(key, gettext(
                        'recurring_invoice.msg_invoice_send_date_past',
                        invoices=', '.join(map(_label, past[:5]))))

    @classmethod
    def merge(cls, groups):
        """Merge each group of draft invoices into one collective invoice
        and return them

        The lines, the contract periods and the taxes move to the new
        invoice, so its totals are the sums of its sources' and no period
        is released; the sources are deleted."""
        pool = Pool()
        Line = pool.get('account.invoice.line')
        Period = pool.get('account.invoice.subscription_period')
        Tax = pool.get('account.invoice.tax')
        groups = [
            sorted(g, key=lambda i: (i.invoice_date or dt.date.max, i.id))
            for g in groups]
        cls.check_merge(groups)
        merged = cls.copy(
            [g[0] for g in groups], default={
                'lines': None,
                'taxes': None,
                'subscription': None,
                'subscription_period_start': None,
                'subscription_period_end': None,
                'collective': True,
                })
        line_args, period_args, to_delete, taxes = [], [], [], []
        for invoice, sources in zip(merged, groups):
            invoice.set_merged_values(sources)
            comments, sequence = set(), 0
            for source in sources:
                for line in sorted(source.lines, key=lambda l: (
                            l.sequence is None, l.sequence or 0, l.id)):
                    if line.type == 'comment':
                        # Each source repeats the contract's prolog
                        if line.description in comments:
                            to_delete.append(line)
                            continue
                        comments.add(line.description)
                    sequence += 1
                    line_args.extend([[line], {
                                'invoice': invoice.id,
                                'sequence': sequence,
                                }])
            periods = [p for s in sources for p in s.subscription_periods]
            if periods:
                period_args.extend([periods, {'invoice': invoice.id}])
            taxes.extend(invoice.get_merged_taxes(sources))
        if to_delete:
            Line.delete(to_delete)
        if line_args:
            Line.write(*line_args)
        if period_args:
            Period.write(*period_args)
        sources = [i for g in groups for i in g]
        cls.delete(cls.browse(sources))
        if taxes:
            Tax.create(taxes)
        # The period guard of the sources holds again on the merged one
        cls.save(merged)
        return cls.browse(merged)

    @classmethod
    def check_merge(cls, groups):
        "Check that each group can become one collective invoice"
        for invoices in groups:
            if len(invoices) < 2:
                raise InvoiceMergeError(gettext(
                        'recurring_invoice.msg_invoice_merge_one',
                        invoice=_label(invoices[0]) if invoices else ''))
            first = invoices[0]
            for invoice in invoices:
                invoice.check_mergeable()
                for name in cls._merge_fields():
                    if getattr(invoice, name) != getattr(first, name):
                        raise InvoiceMergeError(gettext(
                                'recurring_invoice.msg_invoice_merge_differ',
                                invoice=_label(invoice),
                                other=_label(first),
                                field=cls.__names__(name)['field']))

    @classmethod
    def _merge_fields(cls):
        "The fields in which the merged invoices must agree"
        return [
            'company', 'type', 'party', 'invoice_address', 'currency',
            'payment_term', 'account', 'journal']

    def check_mergeable(self):
        if self.type != 'out' or self.state != 'draft':
            raise InvoiceMergeError(gettext(
                    'recurring_invoice.msg_invoice_merge_state',
                    invoice=_label(self)))
        if self.delivery_lines:
            raise InvoiceMergeError(gettext(
                    'recurring_invoice.msg_invoice_merge_delivered',
                    invoice=_label(self)))

    def set_merged_values(self, sources):
        "Set the values of the collective invoice from its sources"
        dates = [s.invoice_date for s in sources if s.invoice_date]
        self.invoice_date = min(dates) if dates else None
        send_dates = [s.send_date for s in sources if s.send_date]
        self.send_date = min(send_dates) if send_dates else None
        self.planned = any(s.planned for s in sources)
        descriptions = []
        for source in sources:
            if (source.description
                    and source.description not in descriptions):
                descriptions.append(source.description)
        self.description = ', '.join(descriptions) or None
        subscriptions = {s.subscription for s in sources}
        if len(subscriptions) == 1 and None not in subscriptions:
            self.subscription, = subscriptions
            kinds = {s.subscription_kind for s in sources}
            self.subscription_kind = (
                'additional' if kinds == {'additional'} else 'standard')
            starts = [s.subscription_period_start for s in sources]
            ends = [s.subscription_period_end for s in sources]
            if None not in starts:
                self.subscription_period_start = min(starts)
            if None not in ends:
                self.subscription_period_end = max(ends)

    def get_merged_taxes(self, sources):
        """Return the values of the tax lines of the collective invoice:
        the sums of the sources' tax lines"""
        totals = {}
        for source in sources:
            for tax in source.taxes:
                key = (tax.account.id, tax.tax.id if tax.tax else None,
                    (tax.base or 0) >= 0, tax.manual, tax.description)
                if key not in totals:
                    totals[key] = {
                        'invoice': self.id,
                        'description': tax.description,
                        'legal_notice': tax.legal_notice,
                        'account': tax.account.id,
                        'tax': tax.tax.id if tax.tax else None,
                        'manual': tax.manual,
                        'base': Decimal(0),
                        'amount': Decimal(0),
                        }
                totals[key]['base'] += tax.base or 0
                totals[key]['amount'] += tax.amount or 0
        return list(totals.values())

    @classmethod
    def _get_without_send_date_domain(cls, date):
        "The domain of the invoices that wait for a send date"
        return [
            ('type', '=', 'out'),
            ('state', '=', 'draft'),
            ['OR',
                ('planned', '=', True),
                ('collective', '=', True),
                ],
            ('send_date', '=', None),
            ('handle_manually', '=', False),
            ('invoice_date', '<=', date),
            ]

    @classmethod
    def notify_without_send_date(cls, date):
        """Tell the users of group Recurring Invoicing how many planned or
        collective invoices wait for a send date

        The reminder replaces their unread one of an earlier night."""
        pool = Pool()
        ActWindow = pool.get('ir.action.act_window')
        ModelData = pool.get('ir.model.data')
        Group = pool.get('res.group')
        Notification = pool.get('res.notification')
        User = pool.get('res.user')
        context = Transaction().context
        count = cls.search_count([
                ('company', '=', context.get('company')),
                ] + cls._get_without_send_date_domain(date))
        action = ActWindow(ModelData.get_id(
                'recurring_invoice', 'act_invoice_without_send_date')).action
        group = Group(ModelData.get_id(
                'recurring_invoice', 'group_recurring_invoicing'))
        company = context.get('company')
        users = [
            u for u in User.search([('groups', '=', group.id)])
            if not u.companies or company in map(int, u.companies)]
        if not users:
            return
        with without_check_access():
            # Of the users' notifications, only the earlier reminders
            earlier = Notification.search([
                    ('user', 'in', list(map(int, users))),
                    ('action', '=', action.id),
                    ('unread', '=', True),
                    ])
            if earlier:
                # core's on_modification queries IN () for none
                Notification.delete(earlier)
        if not count:
            return
        notifications = []
        for user in users:
            language = user.language.code if user.language else None
            with Transaction().set_context(language=language):
                label = gettext(
                    'recurring_invoice.msg_without_send_date_label')
                description = gettext(
                    'recurring_invoice.msg_without_send_date_notification',
                    count=count)
            notifications.append(Notification(
                    user=user, label=label, description=description,
                    icon='tryton-notification', action=action))
        with without_check_access():
            Notification.save(notifications)


class InvoiceLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.line'

    subscription = fields.Function(fields.Many2One(
            'sale.subscription', "Contract",
            states={
                'invisible': ~Eval('subscription'),
                }),
        'get_subscription', searcher='search_subscription')

    @classmethod
    def get_subscription(cls, lines, name):
        pool = Pool()
        SubscriptionLine = pool.get('sale.subscription.line')
        return {
            l.id: l.origin.subscription.id
            if isinstance(l.origin, SubscriptionLine) and l.origin.id >= 0
            else None
            for l in lines}

    @classmethod
    def search_subscription(cls, name, clause):
        nested = clause[0][len(name):]
        return [('origin.subscription' + nested,)
            + tuple(clause[1:3]) + ('sale.subscription.line',)
            + tuple(clause[3:])]


class LineConsumption(metaclass=PoolMeta):
    __name__ = 'sale.subscription.line.consumption'

    @classmethod
    def check_modification(
            cls, mode, consumptions, values=None, external=False):
        if mode == 'write' and not external and values == {
                'invoice_line': None}:
            # The draft invoice line that billed them is deleted: the
            # consumptions are billed again
            consumptions = [
                c for c in consumptions
                if not c.invoice_line
                or c.invoice_line.invoice_state != 'draft']
        super().check_modification(
            mode, consumptions, values=values, external=external)


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'plan_invoices': {
                    'invisible': Eval('state') != 'running',
                    'icon': 'tryton-forward',
                    'depends': ['state'],
                    },
                })

    @classmethod
    @ModelView.button_action('recurring_invoice.wizard_subscription_plan')
    def plan_invoices(cls, subscriptions):
        pass

    def get_planned_periods(self, horizon, today=None):
        """Return the periods the nightly run would invoice in the next
        horizon months: (invoice date, start, end, unbounded end)"""
        pool = Pool()
        Date = pool.get('ir.date')
        if today is None:
            today = Date.today()
        until = today + relativedelta(months=horizon) - dt.timedelta(days=1)
        subscription = self.__class__(self.id)
        invoiced = self.__class__._invoiced_periods([subscription])
        return subscription.get_due_invoice_periods(
            until, invoiced=invoiced.get(subscription.id, set()))

    @classmethod
    def plan(cls, subscriptions, horizon):
        """Create the invoices of the next horizon months as planned drafts
        and return them"""
        pool = Pool()
        Date = pool.get('ir.date')
        cls.check_plan(subscriptions, horizon)
        # The nightly run locks the contracts it invoices
        cls.lock(subscriptions)
        subscriptions = cls.browse(subscriptions)
        until = (Date.today() + relativedelta(months=horizon)
            - dt.timedelta(days=1))
        return cls.create_recurring_invoices(
            subscriptions, until, planned=True)

    @classmethod
    def check_plan(cls, subscriptions, horizon):
        if not horizon or not (0 < horizon <= MAX_HORIZON):
            raise PlanInvoicesError(gettext(
                    'recurring_invoice.msg_plan_horizon',
                    horizon=horizon or 0, maximum=MAX_HORIZON))
        for subscription in subscriptions:
            if not subscription.invoice_recurrence:
                raise PlanInvoicesError(gettext(
                        'recurring_invoice.msg_plan_no_recurrence',
                        subscription=subscription.rec_name))
            if subscription.state != 'running':
                raise PlanInvoicesError(gettext(
                        'recurring_invoice.msg_plan_state',
                        subscription=subscription.rec_name))


class PlanInvoices(Wizard):
    __name__ = 'sale.subscription.plan_invoices'
    start = StateView(
        'sale.subscription.plan_invoices.start',
        'recurring_invoice.subscription_plan_invoices_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Plan", 'plan', 'tryton-ok', default=True),
            ])
    plan = StateAction('account_invoice.act_invoice_out_form')

    def default_start(self, fields):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        Start = pool.get('sale.subscription.plan_invoices.start')
        subscription = self.record
        horizon = Start.default_horizon()
        Subscription.check_plan([subscription], horizon)
        return {
            'subscription': subscription.id,
            'horizon': horizon,
            'invoices': Start.get_invoice_values(subscription, horizon),
            }

    def do_plan(self, action):
        "Create the planned drafts and show them"
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        invoices = Subscription.plan([self.record], self.start.horizon)
        if not invoices:
            raise PlanInvoicesError(gettext(
                    'recurring_invoice.msg_plan_nothing',
                    subscription=self.record.rec_name,
                    horizon=self.start.horizon))
        action['pyson_domain'] = PYSONEncoder().encode(
            [('id', 'in', list(map(int, invoices)))])
        action['name'] += ' (%s)' % self.record.rec_name
        return action, {}


class PlanInvoicesStart(ModelView):
    __name__ = 'sale.subscription.plan_invoices.start'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    horizon = fields.Integer(
        "Horizon", required=True,
        domain=[
            ('horizon', '>', 0),
            ('horizon', '<=', MAX_HORIZON),
            ],
        help="The number of months ahead to plan.")
    # the lines of the recurrence wizard's preview
    invoices = fields.One2Many(
        'sale.subscription.setup_recurrence.preview.line', None, "Invoices",
        readonly=True)

    @classmethod
    def default_horizon(cls):
        return 12

    @fields.depends('subscription', 'horizon', 'invoices')
    def on_change_horizon(self):
        pool = Pool()
        Invoice = pool.get('sale.subscription.setup_recurrence.preview.line')
        values = []
        if self.subscription and self.horizon and (
                0 < self.horizon <= MAX_HORIZON):
            values = self.get_invoice_values(self.subscription, self.horizon)
        self.invoices = [Invoice(**v) for v in values]

    @classmethod
    def get_invoice_values(cls, subscription, horizon):
        return [{
                'invoice_date': invoice_date,
                'period_start': start,
                'period_end': end,
                } for invoice_date, start, end, _
            in subscription.get_planned_periods(horizon)]


class MergeInvoices(Wizard):
    __name__ = 'account.invoice.merge'
    start = StateView(
        'account.invoice.merge.start',
        'recurring_invoice.invoice_merge_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Merge", 'merge', 'tryton-ok', default=True),
            ])
    merge = StateAction('recurring_invoice.act_invoice_collective')

    def default_start(self, fields):
        pool = Pool()
        Invoice = pool.get('account.invoice')
        invoices = sorted(self.records, key=lambda i: (
                i.invoice_date or dt.date.max, i.id))
        if len(invoices) < 2:
            raise InvoiceMergeError(gettext(
                    'recurring_invoice.msg_invoice_merge_one',
                    invoice=_label(invoices[0]) if invoices else ''))
        Invoice.check_merge([invoices])
        return {
            'group_size': len(invoices),
            'invoices': [{
                    'invoice': i.id,
                    'invoice_date': i.invoice_date,
                    'untaxed_amount': i.untaxed_amount,
                    'total_amount': i.total_amount,
                    'currency': i.currency.id,
                    'group': 1,
                    } for i in invoices],
            }

    def do_merge(self, action):
        "Merge the invoices of each group and show the collective invoices"
        pool = Pool()
        Invoice = pool.get('account.invoice')
        groups = defaultdict(list)
        for line in self.start.invoices:
            groups[line.group].append(line.invoice)
        merged = Invoice.merge([groups[g] for g in sorted(groups)])
        action['pyson_domain'] = PYSONEncoder().encode(
            [('id', 'in', list(map(int, merged)))])
        return action, {}


class MergeInvoicesStart(ModelView):
    __name__ = 'account.invoice.merge.start'

    group_size = fields.Integer(
        "Invoices per Collective Invoice", required=True,
        domain=[('group_size', '>', 1)],
        help="Group the invoices in this order: "
        "2 merges the first two, the next two and so on.")
    invoices = fields.One2Many(
        'account.invoice.merge.invoice', None, "Invoices",
        help="The invoices with the same group number are merged.")

    @fields.depends('group_size', 'invoices')
    def on_change_group_size(self):
        if not self.group_size or self.group_size < 1:
            return
        invoices = list(self.invoices or [])
        for index, invoice in enumerate(invoices):
            invoice.group = index // self.group_size + 1
        self.invoices = invoices


class MergeInvoicesInvoice(ModelView):
    __name__ = 'account.invoice.merge.invoice'

    invoice = fields.Many2One(
        'account.invoice', "Invoice", required=True, readonly=True)
    invoice_date = fields.Date("Invoice Date", readonly=True)
    currency = fields.Many2One('currency.currency', "Currency", readonly=True)
    untaxed_amount = fields.Numeric(
        "Untaxed", digits='currency', readonly=True)
    total_amount = fields.Numeric("Total", digits='currency', readonly=True)
    group = fields.Integer(
        "Collective Invoice", required=True,
        domain=[('group', '>', 0)],
        help="The number of the collective invoice it goes into.")


def _label(invoice):
    "The invoice as messages name it: a draft by its party and date"
    pool = Pool()
    Lang = pool.get('ir.lang')
    if invoice.number:
        return invoice.rec_name
    lang = Lang.get()
    return ' '.join(filter(None, [
                invoice.party.rec_name if invoice.party else None,
                lang.strftime(invoice.invoice_date)
                if invoice.invoice_date else None,
                invoice.rec_name]))
