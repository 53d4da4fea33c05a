# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Mid-period changes: the quantity or the price of a running contract line
from a date, billed exactly from that day"""
import datetime as dt
from collections import defaultdict
from decimal import Decimal

from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.modules.product import price_digits
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import PriceRevisionError
from .pause import subtract

ONE_DAY = dt.timedelta(days=1)


class InvoiceLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.line'

    @classmethod
    def _get_origin(cls):
        return super()._get_origin() + ['sale.subscription.line.price']


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    waiting_invoice_lines = fields.Function(fields.Many2Many(
            'account.invoice.line', None, None,
            "Waiting for the Next Invoice",
            readonly=True,
            states={
                'invisible': ~Eval('waiting_invoice_lines'),
                },
            help="The differences of changes of lines that the next "
            "invoice of the contract bills."),
        'get_waiting_invoice_lines')

    @classmethod
    def get_waiting_invoice_lines(cls, subscriptions, name):
        waiting = cls._get_waiting_invoice_lines(subscriptions)
        return {
            s.id: [l.id for l in waiting.get(s, [])] for s in subscriptions}

    @classmethod
    def change_lines(cls, changes):
        """Change the lines from a date on: changes is a list of (line,
        date, quantity, unit_price), None for a value that stays. Drafts
        that bill days from the date on are billed again; the days posted
        invoices billed get the difference on the next invoice of the
        contract. Return the lines of the differences"""
        pool = Pool()
        LinePrice = pool.get('sale.subscription.line.price')
        Line = pool.get('sale.subscription.line')
        exp = Decimal(1).scaleb(-price_digits[1])
        cls.check_line_changes(changes)
        differences = []
        for line, date, quantity, unit_price in changes:
            old_quantity = line.get_quantity(date)
            old_price = line.get_unit_price(date)
            if quantity is None:
                quantity = old_quantity
            if unit_price is None:
                unit_price = old_price
            unit_price = unit_price.quantize(exp)
            prices = list(line.prices)
            if not prices and date > line.start_date:
                # The values billed before the first change
                prices.append(LinePrice(
                        line=line, date=line.start_date,
                        unit_price=line.unit_price.quantize(exp),
                        quantity=line.quantity))
            same = [p for p in prices if p.date == date]
            if same:
                # The change on the start day replaces the first values
                price, = same
                price.unit_price = unit_price
                price.quantity = quantity
            else:
                price = LinePrice(line=line, date=date,
                    unit_price=unit_price, quantity=quantity)
                prices.append(price)
            LinePrice.save(prices)
            # The line shows its latest values
            Line.write([line], {
                    'quantity': quantity,
                    'unit_price': unit_price,
                    })
            line = Line(line.id)
            cls.rebill_drafts([line], date)
            differences.extend(line.subscription._get_line_change_differences(
                    line, price, old_quantity, old_price))
        cls._bill_line_change_differences(differences)
        return differences

    @classmethod
    def check_line_changes(cls, changes):
        pool = Pool()
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        for line, date, quantity, unit_price in changes:
            subscription = line.subscription
            values = {
                'line': line.rec_name,
                'subscription': subscription.rec_name,
                'date': lang.strftime(date),
                }
            if date < line.start_date:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_line_change_before_start',
                        start=lang.strftime(line.start_date), **values))
            if (subscription.state not in {'draft', 'quotation', 'running'}
                    or (line.end_date and line.end_date < date)
                    or (subscription.end_date
                        and subscription.end_date < date)):
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_line_change_ended', **values))
            later = [p.date for p in line.prices
                if p.date > date or (p.date == date and p.revision)]
            if later:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_line_change_later',
                        later=lang.strftime(max(later)), **values))
            if quantity is not None and quantity < 0:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_line_change_quantity',
                        quantity=lang.format_number(quantity), **values))
            if unit_price is not None and unit_price < 0:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_negative',
                        line=line.rec_name,
                        subscription=subscription.rec_name,
                        price=lang.format_number(unit_price)))
            if ((quantity is None or quantity == line.get_quantity(date))
                    and (unit_price is None
                        or unit_price == line.get_unit_price(date))):
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_line_change_nothing',
                        **values))

    def _get_line_change_differences(self, line, price, old_quantity,
            old_price):
        """Return the invoice lines that bill the difference of the change
        price for the days from its date on that invoices billed already:
        the price difference on the old quantity and the quantity
        difference at the new price, each prorated by days"""
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        billed = InvoiceLine.search([
                ('origin', '=', str(line)),
                ('invoice.type', '=', 'out'),
                ('invoice.state', 'in', ['validated', 'posted', 'paid']),
                ('service_end_date', '>=', price.date),
                ('quantity', '>', 0),
                ], order=[('service_start_date', 'ASC')])
        if not billed:
            return []
        intervals = []
        for invoice_line in billed:
            start = max(invoice_line.service_start_date, price.date)
            intervals.extend(
                subtract(start, invoice_line.service_end_date, intervals))
        # The days of pauses were credited or not billed
        paused = self._pause_intervals()
        new_quantity, new_price = price.quantity, price.unit_price
        values = []
        if new_price != old_price and old_quantity:
            values.append((old_quantity, new_price - old_price))
        if new_quantity != old_quantity:
            values.append((new_quantity - old_quantity, new_price))
        lines = []
        for _, period_start, period_end, full_end in (
                self.iter_invoice_periods()):
            if period_start > max(e for _, e in intervals):
                break
            for start, end in sorted(intervals):
                start, end = max(start, period_start), min(end, full_end)
                if start > end:
                    continue
                for part_start, part_end in subtract(start, end, paused):
                    for quantity, unit_price in values:
                        lines.append(self._get_line_change_difference(
                                line, price, quantity, unit_price,
                                part_start, part_end, period_start,
                                full_end))
        return lines

    def _get_line_change_difference(self, line, price, quantity, unit_price,
            start, end, period_start, full_end):
        "Return an invoice line without invoice of the difference"
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        Lang = pool.get('ir.lang')
        party = self.invoice_party or self.party
        lang = Lang.get(party.lang.code if party.lang else None)
        invoice_line = InvoiceLine(
            type='line', invoice_type='out', party=party,
            currency=self.currency, company=self.company,
            product=line.service.product, unit=line.unit,
            quantity=quantity, origin=price)
        invoice_line.on_change_product()
        with Transaction().set_context(language=lang.code):
            invoice_line.description = gettext(
                'recurring_invoice.msg_line_change_line',
                description=(line.description
                    or line.service.product.rec_name),
                date=lang.strftime(price.date))
        invoice_line.unit_price = unit_price
        self._set_invoice_line_service(
            invoice_line, start, end, period_start, full_end, prorate=True)
        return invoice_line

    @classmethod
    def _bill_line_change_differences(cls, lines):
        """Put the lines on the first draft invoice of their contract, else
        they wait for its next invoice; a contract without one bills them
        on an additional invoice"""
        pool = Pool()
        Date = pool.get('ir.date')
        Invoice = pool.get('account.invoice')
        InvoiceLine = pool.get('account.invoice.line')
        by_subscription = defaultdict(list)
        for line in lines:
            by_subscription[line.origin.line.subscription].append(line)
        if not by_subscription:
            return
        drafts = {}
        for invoice in Invoice.search([
                    ('subscription', 'in', [
                            s.id for s in by_subscription]),
                    ('subscription_kind', '=', 'standard'),
                    ('type', '=', 'out'),
                    ('state', '=', 'draft'),
                    ], order=[('invoice_date', 'DESC'), ('id', 'DESC')]):
            if not invoice.delivery_lines:
                drafts[invoice.subscription] = invoice
        to_save, invoices, requests = [], [], []
        today = Date.today()
        for subscription, sub_lines in by_subscription.items():
            invoice = drafts.get(subscription)
            if invoice:
                sequence = max(
                    (l.sequence or 0 for l in invoice.lines), default=0)
                for sequence, line in enumerate(sub_lines, sequence + 1):
                    line.invoice = invoice
                    line.on_change_invoice()
                    line.sequence = sequence
                invoices.append(invoice)
                to_save.extend(sub_lines)
            elif subscription.next_invoice_date:
                to_save.extend(sub_lines)
            else:
                requests.append((subscription, today, [{
                                'product': l.product,
                                'quantity': l.quantity,
                                'unit': l.unit,
                                'unit_price': l.unit_price,
                                'description': l.description,
                                'origin': l.origin,
                                'service_start_date': l.service_start_date,
                                'service_end_date': l.service_end_date,
                                } for l in sub_lines]))
        InvoiceLine.save(to_save)
        if invoices:
            Invoice.update_taxes(invoices)
        if requests:
            cls.create_additional_invoices(requests)

    @classmethod
    def _get_waiting_invoice_lines(cls, subscriptions):
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        result = defaultdict(list)
        for key, lines in super()._get_waiting_invoice_lines(
                subscriptions).items():
            result[key].extend(lines)
        for sub_ids in grouped_slice(
                [s.id for s in subscriptions], backend.MAX_QUERY_PARAMS):
            for line in InvoiceLine.search([
                        ('invoice', '=', None),
                        ('invoice_type', '=', 'out'),
                        ('origin.line.subscription', 'in', list(sub_ids),
                            'sale.subscription.line.price'),
                        ], order=[('id', 'ASC')]):
                result[line.origin.line.subscription].append(line)
        return result


class ChangeLineStart(ModelView):
    __name__ = 'sale.subscription.change_line.start'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    line = fields.Many2One(
        'sale.subscription.line', "Line", required=True,
        domain=[
            ('subscription', '=', Eval('subscription', -1)),
            ])
    date = fields.Date(
        "Date", required=True,
        help="The first day billed with the new values.")
    quantity = fields.Float(
        "Quantity", digits='unit',
        help="The quantity from the date on; empty: it stays.")
    unit = fields.Many2One('product.uom', "Unit", readonly=True)
    unit_price = fields.Numeric(
        "Unit Price", digits=price_digits,
        help="The unit price from the date on; empty: it stays.")

    @fields.depends('line', 'date')
    def on_change_line(self):
        if self.line:
            self.unit = self.line.unit
            date = self.date or self.line.start_date
            self.quantity = self.line.get_quantity(date)
            self.unit_price = self.line.get_unit_price(date)

    @fields.depends(methods=['on_change_line'])
    def on_change_date(self):
        self.on_change_line()


class ChangeLine(Wizard):
    __name__ = 'sale.subscription.change_line'
    start = StateView(
        'sale.subscription.change_line.start',
        'recurring_invoice.subscription_change_line_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Change", 'change', 'tryton-ok', default=True),
            ])
    change = StateTransition()

    def default_start(self, fields):
        pool = Pool()
        Date = pool.get('ir.date')
        today = Date.today()
        values = {'date': today}
        if self.model and self.model.__name__ == 'sale.subscription.line':
            line = self.record
        else:
            lines = self.record.lines
            line = lines[0] if len(lines) == 1 else None
            values['subscription'] = self.record.id
        if line:
            values.update({
                    'subscription': line.subscription.id,
                    'line': line.id,
                    'unit': line.unit.id,
                    'quantity': line.get_quantity(today),
                    'unit_price': line.get_unit_price(today),
                    })
        return values

    def transition_change(self):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        start = self.start
        Subscription.change_lines([
                (start.line, start.date, start.quantity, start.unit_price)])
        return 'end'
