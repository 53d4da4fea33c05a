# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Dispatch orders bill their extra work as additional invoices of their
contract (registered only with dispatch_order activated)"""
import datetime as dt

from trytond.i18n import gettext
from trytond.model import ModelView, Workflow, fields
from trytond.modules.product import price_digits
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction

from .exceptions import DispatchInvoiceError


class Order(metaclass=PoolMeta):
    __name__ = 'dispatch.order'

    invoice = fields.Many2One(
        'account.invoice', "Invoice", readonly=True, ondelete='RESTRICT',
        states={
            'invisible': ~Eval('invoice'),
            },
        help="The additional invoice of the contract that bills the "
        "billable lines of the order.")

    @classmethod
    def copy(cls, orders, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('invoice', None)
        return super().copy(orders, default=default)

    @classmethod
    @ModelView.button
    @Workflow.transition('draft')
    def draft(cls, orders):
        cls.release_invoices(orders)
        super().draft(orders)

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    def do(cls, orders):
        super().do(orders)
        cls.create_invoices(orders)

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, orders):
        cls.release_invoices(orders)
        super().cancel(orders)

    @classmethod
    def create_invoices(cls, orders):
        """Bill the billable lines of the done orders as one additional
        invoice of their contract each; an order that has its invoice is
        not billed again"""
        pool = Pool()
        Date = pool.get('ir.date')
        Subscription = pool.get('sale.subscription')
        requests, billed = [], []
        for order in orders:
            if order.invoice and order.invoice.state != 'cancelled':
                continue
            lines = [l for l in order.lines if l.billable]
            if not lines:
                continue
            if not order.contract:
                raise DispatchInvoiceError(gettext(
                        'recurring_invoice.msg_dispatch_invoice_no_contract',
                        order=order.rec_name))
            for line in lines:
                line.check_billable()
            with Transaction().set_context(company=order.company.id):
                today = Date.today()
            requests.append((order.contract, today,
                    [l.get_invoice_line_values() for l in lines]))
            billed.append(order)
        if not requests:
            return []
        invoices = Subscription.create_additional_invoices(requests)
        for order, invoice in zip(billed, invoices):
            order.invoice = invoice
        cls.save(billed)
        return invoices

    @classmethod
    def release_invoices(cls, orders):
        """Delete the draft invoices of reopened or cancelled orders (done
        again, the order bills its lines anew); refuse once an invoice is
        posted or in delivery"""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        to_delete, released = [], []
        for order in orders:
            invoice = order.invoice
            if not invoice:
                continue
            if invoice.state not in {'draft', 'cancelled'}:
                raise DispatchInvoiceError(gettext(
                        'recurring_invoice.msg_dispatch_invoice_posted',
                        order=order.rec_name, invoice=invoice.rec_name))
            if invoice.state == 'draft':
                if invoice.delivery_lines:
                    raise DispatchInvoiceError(gettext(
                            'recurring_invoice'
                            '.msg_dispatch_invoice_delivery',
                            order=order.rec_name,
                            invoice=invoice.rec_name))
                to_delete.append(invoice)
            released.append(order)
        if released:
            cls.write(released, {'invoice': None})
        if to_delete:
            Invoice.delete(to_delete)


class OrderLine(metaclass=PoolMeta):
    __name__ = 'dispatch.order.line'

    billable = fields.Boolean(
        "Billable",
        help="If checked, the line is billed on an additional invoice of "
        "the contract when the order is done.")
    unit_price = fields.Numeric(
        "Unit Price", digits=price_digits,
        states={
            'invisible': ~Eval('billable', False),
            },
        help="The price of one unit billed for the line.")

    @classmethod
    def default_billable(cls):
        return False

    @fields.depends('billable', 'product', 'unit', 'quantity', 'order',
        '_parent_order.party', '_parent_order.company',
        '_parent_order.contract')
    def _set_unit_price(self):
        pool = Pool()
        Product = pool.get('product.product')
        if not self.billable or not self.product:
            return
        context = {}
        if self.order and self.order.party:
            context['customer'] = self.order.party.id
        if self.order and self.order.company:
            context['company'] = self.order.company.id
        if self.order and self.order.contract:
            context['currency'] = self.order.contract.currency.id
        if self.unit:
            context['uom'] = self.unit.id
        with Transaction().set_context(**context):
            price = Product.get_sale_price(
                [self.product], quantity=self.quantity or 0)[self.product.id]
        if price is not None:
            self.unit_price = round(price, price_digits[1])

    @fields.depends(methods=['_set_unit_price'])
    def on_change_product(self):
        super().on_change_product()
        self._set_unit_price()

    @fields.depends('unit_price', methods=['_set_unit_price'])
    def on_change_billable(self):
        if self.unit_price is None:
            self._set_unit_price()

    def check_billable(self):
        "Raise if the billable line cannot be invoiced"
        if not self.product:
            raise DispatchInvoiceError(gettext(
                    'recurring_invoice.msg_dispatch_line_no_product',
                    line=self.rec_name, order=self.order.rec_name))
        if self.unit_price is None:
            raise DispatchInvoiceError(gettext(
                    'recurring_invoice.msg_dispatch_line_no_price',
                    line=self.rec_name, order=self.order.rec_name))

    def get_invoice_line_values(self):
        "Return the values of the invoice line that bills the line"
        date = self.order.execution_date
        return {
            'product': self.product,
            'description': self.description,
            'quantity': self.quantity or 0,
            'unit': self.unit,
            'unit_price': self.unit_price,
            'origin': self,
            'service_start_date': date,
            'service_end_date': date,
            }


class InvoiceLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.line'

    @classmethod
    def _get_origin(cls):
        return super()._get_origin() + ['dispatch.order.line']


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    @classmethod
    def _terminated(cls, subscriptions, date):
        """Cancel the orders not done yet of the contracts that are due after
        their end, with a note; the generation stops at the end date"""
        pool = Pool()
        Lang = pool.get('ir.lang')
        Order = pool.get('dispatch.order')
        super()._terminated(subscriptions, date)
        orders = Order.search([
                ('contract', 'in', [s.id for s in subscriptions]),
                ('state', 'in', ['draft', 'planned']),
                ['OR',
                    ('planning_date', '>', date),
                    [('planning_date', '=', None), ('key_date', '>', date)],
                    ],
                ])
        if not orders:
            return
        lang = Lang.get()
        for order in orders:
            note = gettext('recurring_invoice.msg_termination_order_note',
                date=lang.strftime(date))
            order.notes = '\n'.join(filter(None, [order.notes, note]))
        Order.save(orders)
        Order.cancel(orders)

    @classmethod
    def _paused(cls, pauses):
        """Cancel the orders not done yet that are due in the pauses, with
        a note"""
        pool = Pool()
        Order = pool.get('dispatch.order')
        super()._paused(pauses)
        domain = ['OR']
        for pause in pauses:
            end = pause.date_to or dt.date.max
            domain.append([
                    ('contract', '=', pause.subscription.id),
                    ['OR',
                        [('planning_date', '>=', pause.date_from),
                            ('planning_date', '<=', end)],
                        [('planning_date', '=', None),
                            ('key_date', '>=', pause.date_from),
                            ('key_date', '<=', end)],
                        ],
                    ])
        orders = Order.search([
                ('state', 'in', ['draft', 'planned']),
                domain,
                ])
        if not orders:
            return
        pauses = {p.subscription: p for p in pauses}
        for order in orders:
            pause = pauses[order.contract]
            note = gettext('recurring_invoice.msg_pause_order_note',
                pause=pause.rec_name, reason=pause.reason or '')
            order.notes = '\n'.join(filter(None, [order.notes, note]))
        Order.save(orders)
        Order.cancel(orders)

    def _get_dispatch_dates(self, key_dates, planning_dates, date=None,
            count=1):
        """No order is due in a pause: the rhythm skips its key dates, an
        order after a planning date waits for the end of the pause"""
        dates = super()._get_dispatch_dates(
            key_dates, planning_dates, date=date, count=count)
        intervals = self._pause_intervals()
        if not intervals or not dates:
            return dates
        if self.dispatch_mode == 'planning_date':
            until = dt.date.max
            if date:
                until = date + dt.timedelta(days=self.dispatch_lead_days or 0)
            until = min(until, self.end_date or dt.date.max)
            result = []
            for day in dates:
                for start, end in intervals:
                    if start <= day <= end:
                        day = (end + dt.timedelta(days=1)
                            if end < dt.date.max else None)
                if day and day <= until:
                    result.append(day)
            return result
        dates = [d for d in dates
            if not any(s <= d <= e for s, e in intervals)]
        if not date and len(dates) < count:
            # The next ones after the pauses
            last, orders = key_dates
            for day in self._get_key_dates(
                    last, until=self.end_date, count=count + 400):
                if (not any(s <= day <= e for s, e in intervals)
                        and day not in dates):
                    dates.append(day)
                if len(dates) >= count:
                    break
            dates = sorted(dates)[:count]
        return dates
