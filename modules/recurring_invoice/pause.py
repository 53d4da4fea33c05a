# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Pauses of contracts: nothing is billed for the days of a pause, the
rhythm keeps its anchor dates"""
import datetime as dt
from collections import defaultdict
from decimal import Decimal

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from turnus.recurrence import to_datetime

from .exceptions import PauseError, PauseValidationError

ONE_DAY = dt.timedelta(days=1)


def subtract(start, end, intervals):
    """Return the parts of the days from start to end outside of the
    intervals, (first day, last day) each, sorted"""
    parts = [(start, end)]
    for pause_start, pause_end in intervals:
        remaining = []
        for part_start, part_end in parts:
            if pause_end < part_start or pause_start > part_end:
                remaining.append((part_start, part_end))
                continue
            if pause_start > part_start:
                remaining.append((part_start, pause_start - ONE_DAY))
            if pause_end < part_end:
                remaining.append((pause_end + ONE_DAY, part_end))
        parts = remaining
    return sorted(parts)


def days(start, end):
    return (end - start).days + 1


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    pauses = fields.One2Many(
        'sale.subscription.pause', 'subscription', "Pauses", readonly=True,
        order=[('date_from', 'ASC')])
    paused = fields.Function(fields.Boolean(
            "Paused",
            help="The contract has a pause that is not over."),
        'get_paused')

    @classmethod
    def _setup_buttons(cls):
        super()._setup_buttons()
        cls._buttons.update({
                'pause': {
                    'invisible': Eval('state') != 'running',
                    'icon': 'tryton-date',
                    'depends': ['state'],
                    },
                'resume': {
                    'invisible': (
                        (Eval('state') != 'running') | ~Eval('paused')),
                    'icon': 'tryton-forward',
                    'depends': ['state', 'paused'],
                    },
                })

    @classmethod
    @ModelView.button_action('recurring_invoice.wizard_subscription_pause')
    def pause(cls, subscriptions):
        pass

    @classmethod
    @ModelView.button_action('recurring_invoice.wizard_subscription_resume')
    def resume(cls, subscriptions):
        pass

    @classmethod
    def copy(cls, subscriptions, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('pauses', None)
        return super().copy(subscriptions, default=default)

    @classmethod
    def get_paused(cls, subscriptions, name):
        pool = Pool()
        Date = pool.get('ir.date')
        today = Date.today()
        return {s.id: bool(s.get_running_pause(today, upcoming=True))
            for s in subscriptions}

    def _pause_intervals(self, exclude=None):
        """Return the (first day, last day) of the pauses; a pause without
        end lasts up to the end date of the contract"""
        end = self.end_date or dt.date.max
        return [(p.date_from, min(p.date_to or dt.date.max, end))
            for p in self.pauses if p != exclude]

    def get_running_pause(self, date, upcoming=False):
        """Return the pause that runs on date (or, with upcoming, later)
        and is not over"""
        for pause, (start, end) in zip(self.pauses, self._pause_intervals()):
            if end >= date and (upcoming or start <= date):
                return pause

    def _invoice_period_waits(self, start, end, date):
        # A period inside a pause without end waits for the resume: the
        # night then bills its days after the pause
        waits = super()._invoice_period_waits(start, end, date)
        for pause_start, pause_end in self._pause_intervals():
            if pause_start <= start and pause_end == dt.date.max:
                waits = True
        return waits

    def _get_period_segments(self, start, end):
        segments = super()._get_period_segments(start, end)
        intervals = self._pause_intervals()
        if not intervals:
            return segments
        return [part for s, e in segments for part in subtract(
                s, e, intervals)]

    @classmethod
    def pause_on(cls, subscriptions, date_from, date_to=None, reason=None):
        """Pause the running contracts from date_from to date_to (without:
        until resumed): the pauses and a draft credit note for the days of
        the pause that posted invoices billed"""
        pool = Pool()
        Pause = pool.get('sale.subscription.pause')
        # Wait for a night that invoices them: its drafts are seen
        cls.lock(subscriptions)
        for subscription in subscriptions:
            if subscription.state != 'running':
                raise PauseError(gettext(
                        'recurring_invoice.msg_pause_not_running',
                        subscription=subscription.rec_name))
        pauses = [Pause(
                subscription=s, date_from=date_from, date_to=date_to,
                reason=reason) for s in subscriptions]
        Pause.save(pauses)
        credits = cls._pause_credits(Pause.browse(pauses))
        if credits:
            cls.create_additional_invoices(credits)
        cls._paused(pauses)
        return pauses

    @classmethod
    def _paused(cls, pauses):
        "Called once the pauses are saved; extend to stop more"

    @classmethod
    def resume_on(cls, subscriptions, date):
        """End the running pause of the contracts on the day before date
        and bill the days from date on that their invoices left out"""
        pool = Pool()
        Pause = pool.get('sale.subscription.pause')
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        cls.lock(subscriptions)
        to_resume = []
        for subscription in subscriptions:
            # The first pause that is not over on date
            pause = subscription.get_running_pause(date, upcoming=True)
            end = None
            if pause:
                end = min(pause.date_to or dt.date.max,
                    subscription.end_date or dt.date.max)
            if (not pause or subscription.state != 'running'
                    or date > end):
                raise PauseError(gettext(
                        'recurring_invoice.msg_resume_not_paused',
                        subscription=subscription.rec_name,
                        date=lang.strftime(date)))
            if date <= pause.date_from:
                raise PauseError(gettext(
                        'recurring_invoice.msg_resume_before_pause',
                        subscription=subscription.rec_name,
                        date=lang.strftime(date),
                        start=lang.strftime(pause.date_from)))
            to_resume.append((subscription, pause, (date, end)))
        charges = cls._resume_charges(
            {s: (p, interval) for s, p, interval in to_resume})
        Pause.write([p for _, p, _ in to_resume], {
                'date_to': date - ONE_DAY,
                })
        if charges:
            cls.create_additional_invoices(charges)

    @classmethod
    def _billed_lines(cls, subscriptions, intervals, message):
        """Return {subscription: [invoice lines]} of the posted invoices
        that bill days of the interval (first day, last day or None) of
        each contract; raise PauseError with message for a draft one"""
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        first = min(start for start, _ in intervals.values())
        by_subscription = defaultdict(list)
        for sub_ids in grouped_slice(
                [s.id for s in subscriptions], backend.MAX_QUERY_PARAMS):
            for line in InvoiceLine.search([
                        ('invoice.subscription', 'in', list(sub_ids)),
                        ('invoice.type', '=', 'out'),
                        ('invoice.state', '!=', 'cancelled'),
                        ('type', '=', 'line'),
                        ('service_end_date', '>=', first),
                        ], order=[
                        ('service_start_date', 'ASC'), ('id', 'ASC')]):
                by_subscription[line.invoice.subscription.id].append(line)
        result = {}
        for subscription in subscriptions:
            start, end = intervals[subscription]
            end = end or dt.date.max
            lines = [l for l in by_subscription[subscription.id]
                if l.service_start_date and l.service_start_date <= end
                and l.service_end_date >= start]
            for line in lines:
                if line.invoice.state in {'draft', 'validated'}:
                    raise PauseError(gettext(message,
                            subscription=subscription.rec_name,
                            invoice=line.invoice.rec_name,
                            date=lang.strftime(start)))
            result[subscription] = lines
        return result

    @classmethod
    def _pause_credits(cls, pauses):
        """Return the requests of the credit notes for the days of the
        pauses that posted invoices billed"""
        pool = Pool()
        Date = pool.get('ir.date')
        InvoiceLine = pool.get('account.invoice.line')
        today = Date.today()
        subscriptions = [p.subscription for p in pauses]
        pauses = {p.subscription: p for p in pauses}
        intervals = {s: (p.date_from, p.date_to) for s, p in pauses.items()}
        billed = cls._billed_lines(subscriptions, intervals,
            'recurring_invoice.msg_pause_draft')
        digits = InvoiceLine.unit_price.digits[1]
        requests = []
        for subscription in subscriptions:
            start, end = intervals[subscription]
            end = end or dt.date.max
            paused = subscription._pause_intervals(
                exclude=pauses[subscription])
            credits = []
            for line in billed[subscription]:
                if line.quantity <= 0:
                    continue
                line_start = line.service_start_date
                line_end = line.service_end_date
                # Days of earlier pauses are credited or not billed
                parts = subtract(
                    max(line_start, start), min(line_end, end), paused)
                if not parts:
                    continue
                prorate = bool(line.product
                    and line.product.template.subscription_prorate)
                if not prorate:
                    if subtract(line_start, line_end, paused + [
                                (start, end)]):
                        # A day is served: the period is billed whole
                        continue
                    parts = [(line_start, line_end)]
                for part_start, part_end in parts:
                    price = line.unit_price
                    if prorate:
                        price = (price * Decimal(days(part_start, part_end))
                            / Decimal(days(line_start, line_end))).quantize(
                                Decimal(1).scaleb(-digits))
                    credits.append({
                            'product': line.product,
                            'quantity': -line.quantity,
                            'unit': line.unit,
                            'unit_price': price,
                            'description': gettext(
                                'recurring_invoice.msg_pause_credit_line',
                                description=line.description or '',
                                invoice=line.invoice.rec_name),
                            'origin': line,
                            'service_start_date': part_start,
                            'service_end_date': part_end,
                            })
            if credits:
                requests.append((subscription, today, credits))
        return requests

    @classmethod
    def _resume_charges(cls, resumed):
        """Return the requests of the invoices for the days of the
        intervals {subscription: (pause, (first day, last day))} that
        the invoiced periods left out for the pause"""
        pool = Pool()
        Date = pool.get('ir.date')
        InvoiceLine = pool.get('account.invoice.line')
        Lang = pool.get('ir.lang')
        Period = pool.get('account.invoice.subscription_period')
        today = Date.today()
        subscriptions = list(resumed)
        intervals = {s: interval for s, (_, interval) in resumed.items()}
        periods = defaultdict(list)
        for sub_ids in grouped_slice(
                [s.id for s in subscriptions], backend.MAX_QUERY_PARAMS):
            for period in Period.search([
                        ('subscription', 'in', list(sub_ids)),
                        ('invoice.state', '!=', 'cancelled'),
                        ], order=[('start', 'ASC')]):
                periods[period.subscription.id].append(period)
        lang = Lang.get()
        for subscription in subscriptions:
            # Drafts are posted first (or deleted: the night bills again)
            start, end = intervals[subscription]
            for period in periods[subscription.id]:
                if (period.start <= end and period.end >= start
                        and period.invoice.state in {'draft', 'validated'}):
                    raise PauseError(gettext(
                            'recurring_invoice.msg_resume_draft',
                            subscription=subscription.rec_name,
                            invoice=period.invoice.rec_name,
                            date=lang.strftime(start)))
        digits = InvoiceLine.unit_price.digits[1]
        requests = []
        for subscription in subscriptions:
            pause, (start, end) = resumed[subscription]
            others = subscription._pause_intervals(exclude=pause)
            invoiced = {p.start for p in periods[subscription.id]}
            charges = []
            # The periods the night has invoiced or passed; it bills the
            # later ones without the pause
            for invoice_date, period_start, period_end, full_end in (
                    subscription.iter_invoice_periods()):
                if period_start > end:
                    break
                if (period_start not in invoiced
                        and subscription.next_invoice_date
                        and invoice_date >= subscription.next_invoice_date):
                    break
                if period_end < start:
                    continue
                charges.extend(subscription._get_resume_charges(
                        period_start, period_end, full_end,
                        others + [(pause.date_from, end)],
                        others + [(pause.date_from, start - ONE_DAY)],
                        digits))
            if charges:
                requests.append((subscription, today, charges))
        return requests

    def _get_resume_charges(self, start, end, full_end, paused, resumed,
            digits):
        """Return the values of the lines that bill the days of the period
        from start to end outside the pauses resumed but inside paused:
        billed by days for a line prorated, else the consumption spans
        that paused covers and resumed does not"""
        charges = []
        for line in self.lines:
            line_start = max(start, line.start_date)
            line_end = min(end, line.end_date or dt.date.max)
            if line_start > line_end or not line.consumption_recurrence:
                continue
            charge = []
            if self._prorate_line(line):
                billed = subtract(line_start, line_end, paused)
                for part_start, part_end in subtract(
                        line_start, line_end, resumed):
                    for new_start, new_end in subtract(
                            part_start, part_end, billed):
                        price = (line.get_unit_price(new_start)
                            * Decimal(days(new_start, new_end))
                            / Decimal(days(start, full_end))).quantize(
                                Decimal(1).scaleb(-digits))
                        charge.append((new_start, new_end, price))
            else:
                rruleset = line.consumption_recurrence.rruleset(
                    to_datetime(line.start_date))
                for date in rruleset.between(
                        to_datetime(line_start), to_datetime(line_end),
                        inc=True):
                    date = date.date()
                    following = rruleset.after(to_datetime(date))
                    span_end = min(line_end,
                        following.date() - ONE_DAY if following
                        else dt.date.max)
                    if (not subtract(date, span_end, paused)
                            and subtract(date, span_end, resumed)):
                        charge.append(
                            (date, span_end, line.get_unit_price(date)))
            for part_start, part_end, price in charge:
                charges.append({
                        'product': line.service.product,
                        'quantity': line.get_quantity(part_start),
                        'unit': line.unit,
                        'unit_price': price,
                        'description': gettext(
                            'recurring_invoice.msg_resume_charge_line',
                            description=line.description
                            or line.service.product.rec_name),
                        'origin': line,
                        'service_start_date': part_start,
                        'service_end_date': part_end,
                        })
        return charges


class Line(metaclass=PoolMeta):
    __name__ = 'sale.subscription.line'

    def get_consumption(self, date):
        "No consumption of a span that lies in a pause"
        consumption = super().get_consumption(date)
        subscription = self.subscription
        if consumption and subscription.pauses and (
                self.consumption_recurrence):
            rruleset = self.consumption_recurrence.rruleset(
                to_datetime(self.start_date))
            following = rruleset.after(to_datetime(date))
            end = following.date() - ONE_DAY if following else dt.date.max
            end = min(end, self.end_date or dt.date.max,
                subscription.end_date or dt.date.max)
            if not subtract(date, end, subscription._pause_intervals()):
                return None
        return consumption


class Pause(ModelSQL, ModelView):
    __name__ = 'sale.subscription.pause'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", required=True, readonly=True,
        ondelete='CASCADE')
    date_from = fields.Date("From Date", required=True, readonly=True)
    date_to = fields.Date(
        "To Date", readonly=True,
        help="The last day of the pause.\n"
        "Empty: until the contract is resumed.")
    reason = fields.Char("Reason", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('date_from', 'ASC'))
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.subscription, Index.Equality())))

    def get_rec_name(self, name):
        pool = Pool()
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        return '%s - %s' % (lang.strftime(self.date_from),
            lang.strftime(self.date_to) if self.date_to else '')

    @classmethod
    def validate_fields(cls, pauses, field_names):
        super().validate_fields(pauses, field_names)
        cls.check_dates(pauses, field_names)

    @classmethod
    def check_dates(cls, pauses, field_names=None):
        "Check each pause against its contract and the other pauses"
        pool = Pool()
        Lang = pool.get('ir.lang')
        if field_names and not (field_names & {
                    'date_from', 'date_to', 'subscription'}):
            return
        lang = Lang.get()
        for pause in pauses:
            subscription = pause.subscription
            if pause.date_to and pause.date_to < pause.date_from:
                raise PauseValidationError(gettext(
                        'recurring_invoice.msg_pause_end_before_start',
                        subscription=subscription.rec_name,
                        date_from=lang.strftime(pause.date_from),
                        date_to=lang.strftime(pause.date_to)))
            if (pause.date_from < subscription.start_date
                    or (subscription.end_date
                        and pause.date_from > subscription.end_date)):
                raise PauseValidationError(gettext(
                        'recurring_invoice.msg_pause_outside',
                        subscription=subscription.rec_name,
                        date_from=lang.strftime(pause.date_from)))
            end = pause.date_to or dt.date.max
            for other in subscription.pauses:
                if other == pause:
                    continue
                if (other.date_from <= end
                        and (other.date_to or dt.date.max)
                        >= pause.date_from):
                    raise PauseValidationError(gettext(
                            'recurring_invoice.msg_pause_overlap',
                            subscription=subscription.rec_name,
                            pause=pause.rec_name, other=other.rec_name))


class PauseStart(ModelView):
    __name__ = 'sale.subscription.pause.start'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    date_from = fields.Date(
        "From Date", required=True,
        help="The first day of the pause.")
    date_to = fields.Date(
        "To Date",
        help="The last day of the pause.\n"
        "Empty: until the contract is resumed.")
    reason = fields.Char("Reason")


class PauseWizard(Wizard):
    __name__ = 'sale.subscription.pause'
    start = StateView(
        'sale.subscription.pause.start',
        'recurring_invoice.subscription_pause_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Pause", 'pause', 'tryton-ok', default=True),
            ])
    pause = StateTransition()

    def default_start(self, fields):
        pool = Pool()
        Date = pool.get('ir.date')
        subscription = self.record
        with Transaction().set_context(company=subscription.company.id):
            today = Date.today()
        return {
            'subscription': subscription.id,
            'date_from': max(today, subscription.start_date),
            }

    def transition_pause(self):
        self.model.pause_on([self.record], self.start.date_from,
            self.start.date_to, self.start.reason)
        return 'end'


class ResumeStart(ModelView):
    __name__ = 'sale.subscription.resume.start'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    pause = fields.Many2One(
        'sale.subscription.pause', "Pause", readonly=True)
    date = fields.Date(
        "Date", required=True,
        help="The first day billed again.")


class Resume(Wizard):
    __name__ = 'sale.subscription.resume'
    start = StateView(
        'sale.subscription.resume.start',
        'recurring_invoice.subscription_resume_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Resume", 'resume', 'tryton-ok', default=True),
            ])
    resume = StateTransition()

    def default_start(self, fields):
        pool = Pool()
        Date = pool.get('ir.date')
        subscription = self.record
        with Transaction().set_context(company=subscription.company.id):
            today = Date.today()
        pause = subscription.get_running_pause(today, upcoming=True)
        return {
            'subscription': subscription.id,
            'pause': pause.id if pause else None,
            'date': max(today, pause.date_from + ONE_DAY) if pause else today,
            }

    def transition_resume(self):
        self.model.resume_on([self.record], self.start.date)
        return 'end'
