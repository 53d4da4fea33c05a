# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Contract lifecycle: the term of a contract, its notice period and its
automatic renewal by the nightly run"""
import datetime as dt
import logging
from collections import defaultdict
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from sql import Null

from trytond import backend
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, Index, ModelSQL, ModelView, fields, sequence_ordered)
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from turnus.tools import process_slices

from .exceptions import (
    LifecycleValidationError, TerminationError, TerminationWarning)
from .invoice_run import _addresses

logger = logging.getLogger(__name__)

# Contracts renewed per transaction
BATCH_SIZE = 100

NOTICE_UNITS = [
    ('day', "Days"),
    ('week', "Weeks"),
    ('month', "Months"),
    ]


def term_end(start, months):
    """Return the last day of a term of months beginning on start

    As § 188 BGB counts: the day before the day of the last month that
    corresponds to start, or the last day of that month when it has no such
    day (a term beginning on 31 January for one month ends on 28 or 29
    February)."""
    end = start + relativedelta(months=months)
    if end.day == start.day:
        end -= dt.timedelta(days=1)
    return end


def notice_deadline(end, period, unit):
    """Return the last day on which a termination with the notice period
    (period, unit) still reaches end"""
    if not end:
        return None
    if unit == 'day':
        return end - dt.timedelta(days=period)
    if unit == 'week':
        return end - dt.timedelta(weeks=period)
    # The latest day whose notice, counted from the next day, ends on end
    # or before: near end - period months, month ends decide
    candidate = end - relativedelta(months=period)
    deadline = None
    for offset in range(-3, 4):
        day = candidate + dt.timedelta(days=offset)
        if term_end(day + dt.timedelta(days=1), period) <= end:
            deadline = day
    return deadline


def grouped_writes(values):
    """Return the arguments of write for {record: values}: one pair per
    distinct values (a night writes the same dates to many contracts)"""
    groups = defaultdict(list)
    for record, record_values in values.items():
        groups[tuple(sorted(record_values.items()))].append(record)
    args = []
    for key, records in groups.items():
        for sub_records in grouped_slice(records, backend.MAX_QUERY_PARAMS):
            args.extend([list(sub_records), dict(key)])
    return args


class Configuration(metaclass=PoolMeta):
    __name__ = 'sale.configuration'

    notice_reminder_days = fields.Integer(
        "Notice Reminder Days",
        domain=[
            ('notice_reminder_days', '>=', 0),
            ],
        help="The users of group Recurring Invoicing are notified of the "
        "contracts whose notice deadline comes within this many days.")

    renewal_email = fields.Boolean(
        "Renewal E-mail",
        help="If checked, the customers are e-mailed before their contract "
        "is renewed automatically.")
    renewal_email_days = fields.Integer(
        "Renewal E-mail Days",
        domain=[
            ('renewal_email_days', '>=', 0),
            ],
        states={
            'invisible': ~Eval('renewal_email'),
            'required': Bool(Eval('renewal_email')),
            },
        help="How many days before the end of the term the customer is "
        "e-mailed.")
    renewal_email_template = fields.Many2One(
        'ir.email.template', "Renewal E-mail Template",
        domain=[
            ('model.name', '=', 'sale.subscription'),
            ],
        states={
            'invisible': ~Eval('renewal_email'),
            'required': Bool(Eval('renewal_email')),
            })

    @classmethod
    def default_notice_reminder_days(cls):
        return 30

    @classmethod
    def default_renewal_email(cls):
        return False

    @classmethod
    def default_renewal_email_days(cls):
        return 30

    @classmethod
    def default_renewal_email_template(cls):
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        try:
            return ModelData.get_id(
                'recurring_invoice', 'email_template_renewal')
        except KeyError:
            return None


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    term_months = fields.Integer(
        "Term",
        domain=[
            ('term_months', '>=', 0),
            ],
        states={
            'readonly': (Eval('state') == 'closed') | Bool(Eval('terms')),
            },
        help="The initial term of the contract in months, from its start "
        "date.\n0: open-ended.")
    renewal_months = fields.Integer(
        "Renewal",
        domain=[
            ('renewal_months', '>=', 0),
            ],
        states={
            'readonly': Eval('state') == 'closed',
            'invisible': ~Eval('term_months'),
            },
        help="The months the contract is renewed by at the end of each "
        "term unless it is terminated.\n0: it ends with its term.")
    notice_period = fields.Integer(
        "Notice Period",
        domain=[
            ('notice_period', '>=', 0),
            ],
        states={
            'readonly': Eval('state') == 'closed',
            },
        help="How long before the end of the term a termination must "
        "arrive.")
    notice_unit = fields.Selection(
        NOTICE_UNITS, "Notice Unit", sort=False, required=True,
        states={
            'readonly': Eval('state') == 'closed',
            })
    term_end = fields.Date(
        "Term End", readonly=True,
        help="The last day of the current term.")
    notice_deadline = fields.Date(
        "Notice Deadline", readonly=True,
        help="The last day a termination reaches the end of the current "
        "term.")
    notice_due = fields.Function(fields.Boolean(
            "Notice Deadline Soon",
            help="The notice deadline comes within the reminder days of the "
            "sale configuration."),
        'get_notice_due', searcher='search_notice_due')
    notice_reminded = fields.Date(
        "Notice Reminded", readonly=True,
        help="The notice deadline the users were last reminded of.")
    renewal_notified = fields.Date(
        "Renewal Notified", readonly=True,
        help="The end of the term the customer was e-mailed about.")
    terms = fields.One2Many(
        'sale.subscription.term', 'subscription', "Terms", readonly=True,
        order=[('start_date', 'ASC')])
    termination_date = fields.Date(
        "Termination Date", readonly=True,
        help="The day the contract ends by its termination.")
    termination_reason = fields.Many2One(
        'sale.subscription.termination_reason', "Termination Reason",
        readonly=True, ondelete='RESTRICT')
    termination_comment = fields.Text("Termination Comment", readonly=True)
    terminated_by = fields.Many2One(
        'res.user', "Terminated by", readonly=True)
    terminated_at = fields.DateTime("Terminated at", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.notice_deadline, Index.Range()),
                    where=t.state == 'running'),
                Index(t, (t.term_end, Index.Range()),
                    where=t.state == 'running'),
                })
        cls._setup_buttons()

    @classmethod
    def _setup_buttons(cls):
        cls._buttons.update({
                'terminate': {
                    'invisible': (
                        (Eval('state') != 'running')
                        | Bool(Eval('termination_date'))),
                    'icon': 'tryton-cancel',
                    'depends': ['state', 'termination_date'],
                    },
                })

    @classmethod
    @ModelView.button_action(
        'recurring_invoice.wizard_subscription_terminate')
    def terminate(cls, subscriptions):
        pass

    @classmethod
    def default_term_months(cls):
        return 0

    @classmethod
    def default_renewal_months(cls):
        return 0

    @classmethod
    def default_notice_period(cls):
        return 0

    @classmethod
    def default_notice_unit(cls):
        return 'month'

    @classmethod
    def copy(cls, subscriptions, default=None):
        default = default.copy() if default is not None else {}
        for name in [
                'term_end', 'notice_deadline', 'notice_reminded',
                'renewal_notified',
                'termination_date', 'termination_reason',
                'termination_comment', 'terminated_by', 'terminated_at']:
            default.setdefault(name, None)
        default.setdefault('terms', None)
        return super().copy(subscriptions, default=default)

    @classmethod
    def _notice_due_date(cls, date=None):
        "The last notice deadline that is due on date (default today)"
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        Date = pool.get('ir.date')
        if date is None:
            date = Date.today()
        days = Configuration(1).notice_reminder_days or 0
        return date + dt.timedelta(days=days)

    @classmethod
    def get_notice_due(cls, subscriptions, name):
        pool = Pool()
        Date = pool.get('ir.date')
        today = Date.today()
        limit = cls._notice_due_date(today)
        return {s.id: bool(
                s.state == 'running' and s.notice_deadline
                and today <= s.notice_deadline <= limit)
            for s in subscriptions}

    @classmethod
    def search_notice_due(cls, name, clause):
        pool = Pool()
        Date = pool.get('ir.date')
        _, operator, value = clause[:3]
        today = Date.today()
        domain = [
            ('state', '=', 'running'),
            ('notice_deadline', '>=', today),
            ('notice_deadline', '<=', cls._notice_due_date(today)),
            ]
        if (operator == '=') != bool(value):
            domain = ['OR',
                ('state', '!=', 'running'),
                ('notice_deadline', '=', None),
                ('notice_deadline', '<', today),
                ('notice_deadline', '>', cls._notice_due_date(today)),
                ]
        return domain

    @classmethod
    def validate_fields(cls, subscriptions, field_names):
        super().validate_fields(subscriptions, field_names)
        cls.check_term(subscriptions, field_names)

    @classmethod
    def check_term(cls, subscriptions, field_names=None):
        if field_names and not (field_names & {
                    'term_months', 'notice_period', 'renewal_months'}):
            return
        for subscription in subscriptions:
            if subscription.notice_period and not subscription.term_months:
                raise LifecycleValidationError(gettext(
                        'recurring_invoice.msg_lifecycle_notice_without_term',
                        subscription=subscription.rec_name))

    @classmethod
    def write(cls, *args):
        super().write(*args)
        # A changed notice period moves the deadline of the current term
        actions = iter(args)
        changed, started = [], []
        for subscriptions, values in zip(actions, actions):
            if values.keys() & {'notice_period', 'notice_unit'}:
                changed.extend(subscriptions)
            if 'term_months' in values:
                # A term given to a running contract starts at its start
                started.extend(
                    s for s in subscriptions if s.state == 'running')
        if started:
            cls.start_terms(cls.browse(started))
        if changed:
            cls.update_notice_deadlines(cls.browse(changed))

    @classmethod
    def update_notice_deadlines(cls, subscriptions):
        "Store the notice deadline of the current term of the contracts"
        to_write = {}
        for subscription in subscriptions:
            deadline = subscription._get_notice_deadline()
            if deadline != subscription.notice_deadline:
                to_write[subscription] = {'notice_deadline': deadline}
        if to_write:
            super().write(*grouped_writes(to_write))

    def _get_notice_deadline(self):
        "The notice deadline of the current term"
        if self.notice_period:
            return notice_deadline(
                self.term_end, self.notice_period, self.notice_unit)

    @classmethod
    def run(cls, subscriptions):
        super().run(subscriptions)
        cls.start_terms(subscriptions)

    @classmethod
    def start_terms(cls, subscriptions):
        """Record the initial term of the contracts that have a term and
        none yet; a contract that is not renewed ends with it"""
        pool = Pool()
        Term = pool.get('sale.subscription.term')
        # In slices: a selection of thousands activated at once
        for sub_subscriptions in grouped_slice(subscriptions, BATCH_SIZE):
            terms, to_write, started = [], {}, []
            for subscription in sub_subscriptions:
                if not subscription.term_months or subscription.terms:
                    continue
                end = term_end(
                    subscription.start_date, subscription.term_months)
                terms.append(Term(
                        subscription=subscription, kind='initial',
                        start_date=subscription.start_date, end_date=end))
                values = {'term_end': end}
                if not subscription.renewal_months and (
                        not subscription.end_date
                        or subscription.end_date > end):
                    values['end_date'] = end
                to_write[subscription] = values
                started.append(subscription)
            Term.save(terms)
            if to_write:
                cls.write(*grouped_writes(to_write))
                cls.update_notice_deadlines(cls.browse(started))

    @classmethod
    def generate_recurring_invoices(cls, date=None):
        "Renew the terms first, remind of the notice deadlines at the end"
        pool = Pool()
        Date = pool.get('ir.date')
        # Without a company it calls itself for each company
        company = Transaction().context.get('company')
        if company is not None:
            cls.renew_terms(date or Date.today())
        super().generate_recurring_invoices(date=date)
        if company is not None:
            with Transaction().new_transaction():
                cls.remind_notice_deadlines(date or Date.today())
            with Transaction().new_transaction():
                cls.send_renewal_emails(date or Date.today())

    @classmethod
    def _to_renew_domain(cls, date):
        return [
            ('company', '=', Transaction().context.get('company')),
            ('state', '=', 'running'),
            ('term_end', '<=', date),
            ('renewal_months', '>', 0),
            ]

    @classmethod
    def renew_terms(cls, date):
        """Renew the running contracts whose term ends on or before date and
        that end later, term after term up to date, each term once also when
        two nights run at the same time"""
        transaction = Transaction()
        if transaction.context.get('company') is None:
            return
        with transaction.new_transaction(readonly=True) as search:
            # Only the ids: the records are read slice by slice
            cursor = search.connection.cursor()
            cursor.execute(*cls.search(
                    cls._to_renew_domain(date), order=[('id', 'ASC')],
                    query=True))
            ids = [id_ for id_, in cursor]
        process_slices(
            list(map(list, grouped_slice(ids, BATCH_SIZE))),
            lambda ids: cls._renew_slice(ids, date))

    @classmethod
    def _renewable(cls, subscription, date):
        return bool(
            subscription.state == 'running'
            and subscription.renewal_months
            and subscription.term_end and subscription.term_end <= date
            and (not subscription.end_date
                or subscription.end_date > subscription.term_end))

    @classmethod
    def _renew_slice(cls, ids, date):
        "Renew the contracts, return False if another process locks them"
        pool = Pool()
        Term = pool.get('sale.subscription.term')
        try:
            slice_transaction = Transaction().new_transaction(
                _lock_records={cls._table: ids})
        except backend.DatabaseOperationalError:
            logger.info(
                "skip renewing %d subscriptions locked by another process",
                len(ids))
            return False
        with slice_transaction:
            terms, to_write = [], {}
            # Read after the lock: what a concurrent night renewed is seen
            for subscription in cls.browse(ids):
                end = subscription.term_end
                while cls._renewable(subscription, date):
                    start = subscription.term_end + dt.timedelta(days=1)
                    subscription.term_end = term_end(
                        start, subscription.renewal_months)
                    terms.append(Term(
                            subscription=subscription, kind='renewal',
                            start_date=start,
                            end_date=subscription.term_end))
                if subscription.term_end != end:
                    to_write[subscription] = {
                        'term_end': subscription.term_end,
                        'notice_deadline': (
                            subscription._get_notice_deadline()),
                        }
            Term.save(terms)
            if to_write:
                super().write(*grouped_writes(to_write))
            if terms:
                logger.info("%d terms renewed", len(terms))
        return True

    @classmethod
    def remind_notice_deadlines(cls, date):
        """Notify the users of group Recurring Invoicing of the contracts
        whose notice deadline comes within the reminder days, once per
        deadline"""
        pool = Pool()
        ActWindow = pool.get('ir.action.act_window')
        Group = pool.get('res.group')
        ModelData = pool.get('ir.model.data')
        Notification = pool.get('res.notification')
        User = pool.get('res.user')
        company = Transaction().context.get('company')
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        # Only the ids of those not reminded of their deadline yet
        cursor.execute(*table.select(table.id,
                where=(table.company == company)
                & (table.state == 'running')
                & (table.notice_deadline >= date)
                & (table.notice_deadline <= cls._notice_due_date(date))
                & ((table.notice_reminded == Null)
                    | (table.notice_reminded != table.notice_deadline)),
                order_by=[table.notice_deadline.asc, table.id.asc]))
        ids = [id_ for id_, in cursor]
        if not ids:
            return
        group = Group(ModelData.get_id(
                'recurring_invoice', 'group_recurring_invoicing'))
        action = ActWindow(ModelData.get_id(
                'recurring_invoice', 'act_subscription_notice_due')).action
        users = [
            u for u in User.search([('groups', '=', group.id)])
            if not u.companies or company in map(int, u.companies)]
        languages = defaultdict(list)
        for user in users:
            languages[user.language.code if user.language else None].append(
                user)
        Lang = pool.get('ir.lang')
        # In slices: the records of thousands of contracts are read once
        for sub_ids in grouped_slice(ids, BATCH_SIZE):
            subscriptions = cls.browse(sub_ids)
            notifications = []
            for language, language_users in languages.items():
                lang = Lang.get(language)
                with Transaction().set_context(language=language):
                    label = gettext(
                        'recurring_invoice.msg_notice_reminder_label')
                    for subscription in subscriptions:
                        description = gettext(
                            'recurring_invoice.msg_notice_reminder',
                            subscription=subscription.rec_name,
                            party=subscription.party.rec_name,
                            deadline=lang.strftime(
                                subscription.notice_deadline),
                            term_end=lang.strftime(subscription.term_end))
                        notifications.extend(Notification(
                                user=user, icon='tryton-notification',
                                action=action, label=label,
                                description=description)
                            for user in language_users)
            with without_check_access():
                for sub_notifications in grouped_slice(
                        notifications, BATCH_SIZE):
                    Notification.save(list(sub_notifications))
            super().write(*grouped_writes({
                        s: {'notice_reminded': s.notice_deadline}
                        for s in subscriptions}))

    @classmethod
    def send_renewal_emails(cls, date):
        """E-mail the customers of the contracts renewed within the renewal
        e-mail days of the sale configuration, once per term"""
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        config = Configuration(1)
        if not config.renewal_email or not config.renewal_email_template:
            return
        limit = date + dt.timedelta(days=config.renewal_email_days or 0)
        subscriptions = cls.search([
                ('company', '=', Transaction().context.get('company')),
                ('state', '=', 'running'),
                ('renewal_months', '>', 0),
                ('termination_date', '=', None),
                ('term_end', '>=', date),
                ('term_end', '<=', limit),
                ], order=[('term_end', 'ASC'), ('id', 'ASC')])
        subscriptions = [s for s in subscriptions
            if s.renewal_notified != s.term_end
            and cls._renewable(s, s.term_end)]
        template_id = config.renewal_email_template.id
        for sub_subscriptions in grouped_slice(subscriptions, BATCH_SIZE):
            to_write = []
            for subscription in sub_subscriptions:
                if cls._send_renewal_email(subscription, template_id):
                    to_write.extend([[subscription], {
                                'renewal_notified': subscription.term_end,
                                }])
            if to_write:
                super().write(*to_write)

    @classmethod
    def _send_renewal_email(cls, subscription, template_id):
        "Send the renewal e-mail of the contract, return if it was sent"
        pool = Pool()
        Email = pool.get('ir.email')
        Template = pool.get('ir.email.template')
        party = subscription.invoice_party or subscription.party
        language = party.lang.code if party.lang else None
        with Transaction().set_context(language=language):
            # Read in the language of the customer
            template = Template(template_id)
            values = template.get(cls(subscription.id))
        to = _addresses(values.get('to'))
        if not to:
            logger.info(
                "renewal of subscription %d not e-mailed: no address",
                subscription.id)
            return False
        Email.send(
            to=to, cc=_addresses(values.get('cc')),
            bcc=_addresses(values.get('bcc')),
            subject=values.get('subject', ''),
            body=values.get('body', ''),
            record=(cls.__name__, subscription.id),
            reports=values.get('reports'))
        return True

    def get_termination_date(self, date):
        """Return the earliest day a termination arriving on date ends the
        contract: the end of the current term when its notice deadline is
        not passed, else of the next term; date for an open-ended
        contract"""
        if not self.term_end:
            return max(date, self.start_date)
        end = self.term_end
        while True:
            deadline = notice_deadline(
                end, self.notice_period or 0, self.notice_unit)
            if date <= deadline or not self.renewal_months:
                return end
            end = term_end(end + dt.timedelta(days=1), self.renewal_months)

    @classmethod
    def terminate_on(cls, subscriptions, date, reason=None, comment=None):
        """End the contracts on date for reason: their end date, who, when
        and why, and a draft credit note for what posted invoices billed
        after date; the caller checked the date against the notice"""
        # Wait for a night that invoices them: its drafts are seen
        cls.lock(subscriptions)
        for subscription in subscriptions:
            if subscription.state == 'closed':
                raise TerminationError(gettext(
                        'recurring_invoice.msg_termination_closed',
                        subscription=subscription.rec_name))
            if date < subscription.start_date:
                raise TerminationError(gettext(
                        'recurring_invoice.msg_termination_before_start',
                        subscription=subscription.rec_name,
                        start=subscription.start_date))
        credits = cls._termination_credits(subscriptions, date)
        # core's end date is read-only once running
        super().write(list(subscriptions), {
                'end_date': date,
                'termination_date': date,
                'termination_reason': reason.id if reason else None,
                'termination_comment': comment,
                'terminated_by': Transaction().user or None,
                'terminated_at': dt.datetime.now(),
                })
        if credits:
            cls.create_additional_invoices(credits)
        cls._terminated(cls.browse(subscriptions), date)

    @classmethod
    def _terminated(cls, subscriptions, date):
        "Called once the contracts end on date; extend to stop more"

    @classmethod
    def _termination_credits(cls, subscriptions, date):
        """Return the requests of the credit notes (create_additional_invoices)
        for the days after date that posted invoices billed; raise
        TerminationError for a draft invoice that bills them"""
        pool = Pool()
        Date = pool.get('ir.date')
        InvoiceLine = pool.get('account.invoice.line')
        today = Date.today()
        # One search for all the contracts
        by_subscription = defaultdict(list)
        for sub_ids in grouped_slice(
                [s.id for s in subscriptions], backend.MAX_QUERY_PARAMS):
            for line in InvoiceLine.search([
                        ('invoice.subscription', 'in', list(sub_ids)),
                        ('invoice.type', '=', 'out'),
                        ('invoice.state', '!=', 'cancelled'),
                        ('type', '=', 'line'),
                        ('service_end_date', '>', date),
                        ], order=[
                        ('service_start_date', 'ASC'), ('id', 'ASC')]):
                by_subscription[line.invoice.subscription.id].append(line)
        requests = []
        for subscription in subscriptions:
            credits = []
            for line in by_subscription[subscription.id]:
                if line.invoice.state in {'draft', 'validated'}:
                    raise TerminationError(gettext(
                            'recurring_invoice.msg_termination_draft',
                            subscription=subscription.rec_name,
                            invoice=line.invoice.rec_name, date=date))
                if line.quantity <= 0:
                    continue
                start = max(line.service_start_date, date
                    + dt.timedelta(days=1))
                end = line.service_end_date
                full = (end - line.service_start_date).days + 1
                if start > line.service_start_date and not (
                        line.product
                        and line.product.template.subscription_prorate):
                    # Not prorated: the started period is billed whole
                    continue
                digits = InvoiceLine.unit_price.digits[1]
                # Without the days of pauses: credited or not billed
                for part_start, part_end in subscription._get_period_segments(
                        start, end):
                    days = (part_end - part_start).days + 1
                    price = (line.unit_price * Decimal(days) / Decimal(full)
                        ).quantize(Decimal(1).scaleb(-digits))
                    credits.append({
                            'product': line.product,
                            'quantity': -line.quantity,
                            'unit': line.unit,
                            'unit_price': price,
                            'description': gettext(
                                'recurring_invoice'
                                '.msg_termination_credit_line',
                                description=line.description or '',
                                invoice=line.invoice.rec_name),
                            'origin': line,
                            'service_start_date': part_start,
                            'service_end_date': part_end,
                            })
            if credits:
                requests.append((subscription, today, credits))
        return requests


class Term(ModelSQL, ModelView):
    __name__ = 'sale.subscription.term'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", required=True, ondelete='CASCADE')
    kind = fields.Selection([
            ('initial', "Initial"),
            ('renewal', "Renewal"),
            ], "Kind", required=True, readonly=True)
    start_date = fields.Date("Start Date", required=True, readonly=True)
    end_date = fields.Date(
        "End Date", required=True, readonly=True,
        domain=[
            ('end_date', '>=', Eval('start_date', None)),
            ])

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('start_date', 'ASC'))
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.subscription, Index.Equality())))


class TerminationReason(sequence_ordered(), DeactivableMixin, ModelSQL,
        ModelView):
    __name__ = 'sale.subscription.termination_reason'

    name = fields.Char("Name", required=True, translate=True)


class TerminateStart(ModelView):
    __name__ = 'sale.subscription.terminate.start'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    allowed_date = fields.Date(
        "Earliest Date", readonly=True,
        help="The earliest end a termination arriving today reaches.")
    date = fields.Date(
        "Date", required=True,
        help="The last day of the contract.")
    reason = fields.Many2One(
        'sale.subscription.termination_reason', "Reason", required=True)
    comment = fields.Text("Comment")


class Terminate(Wizard):
    __name__ = 'sale.subscription.terminate'
    start = StateView(
        'sale.subscription.terminate.start',
        'recurring_invoice.subscription_terminate_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Terminate", 'terminate', 'tryton-ok', default=True),
            ])
    terminate = StateTransition()

    def default_start(self, fields):
        pool = Pool()
        Date = pool.get('ir.date')
        subscription = self.record
        with Transaction().set_context(company=subscription.company.id):
            today = Date.today()
        allowed = subscription.get_termination_date(today)
        return {
            'subscription': subscription.id,
            'allowed_date': allowed,
            'date': allowed,
            }

    def transition_terminate(self):
        pool = Pool()
        Date = pool.get('ir.date')
        Lang = pool.get('ir.lang')
        ModelData = pool.get('ir.model.data')
        User = pool.get('res.user')
        Warning = pool.get('res.user.warning')
        subscription = self.record
        with Transaction().set_context(company=subscription.company.id):
            today = Date.today()
        allowed = subscription.get_termination_date(today)
        date = self.start.date
        lang = Lang.get()
        if subscription.state == 'running' and date < allowed and (
                date >= subscription.start_date):
            # An extraordinary termination
            group = ModelData.get_id(
                'recurring_invoice', 'group_recurring_invoicing_admin')
            user = User(Transaction().user)
            if group not in {g.id for g in user.groups}:
                raise TerminationError(gettext(
                        'recurring_invoice.msg_termination_too_early',
                        subscription=subscription.rec_name,
                        date=lang.strftime(date),
                        allowed=lang.strftime(allowed)))
            key = Warning.format(
                'extraordinary_termination', [subscription])
            if Warning.check(key):
                raise TerminationWarning(key, gettext(
                        'recurring_invoice.msg_termination_extraordinary',
                        subscription=subscription.rec_name,
                        date=lang.strftime(date),
                        allowed=lang.strftime(allowed)))
        subscription.__class__.terminate_on(
            [subscription], date, self.start.reason, self.start.comment)
        return 'end'
