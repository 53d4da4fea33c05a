# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Additional invoices: what a contract bills beside its recurring fee"
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.modules.account_product.exceptions import AccountError
from trytond.modules.product import price_digits
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval, If
from trytond.transaction import Transaction
from trytond.wizard import (
    Button, StateAction, StateTransition, StateView, Wizard)

from .exceptions import AdditionalInvoiceError


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'create_additional_invoice': {
                    'invisible': Eval('state') != 'running',
                    'icon': 'tryton-add',
                    'depends': ['state'],
                    },
                })

    @classmethod
    @ModelView.button_action(
        'recurring_invoice.wizard_subscription_create_additional_invoice')
    def create_additional_invoice(cls, subscriptions):
        pass

    @classmethod
    def create_additional_invoices(cls, requests):
        """Create the draft additional invoices and return them

        requests: a list of (subscription, invoice date, lines), each line
        a dictionary of invoice line values: product, quantity, unit,
        unit_price, and optionally description, origin,
        service_start_date, service_end_date"""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        InvoiceLine = pool.get('account.invoice.line')
        invoices, all_lines = [], []
        for subscription, invoice_date, lines in requests:
            if not lines:
                raise AdditionalInvoiceError(gettext(
                        'recurring_invoice.msg_additional_invoice_no_lines',
                        subscription=subscription.rec_name))
            invoice = subscription._get_additional_invoice(invoice_date)
            invoice_lines = subscription._get_prolog_lines(invoice) + [
                subscription._get_additional_invoice_line(invoice, values)
                for values in lines]
            for sequence, line in enumerate(invoice_lines, 1):
                line.sequence = sequence
            invoices.append(invoice)
            all_lines.extend(invoice_lines)
        Invoice.save(invoices)
        InvoiceLine.save(all_lines)
        Invoice.update_taxes(invoices)
        return invoices

    def _get_additional_invoice(self, invoice_date):
        "Return the header of an additional invoice of the contract"
        invoice = self._get_invoice()
        invoice.invoice_date = invoice_date
        invoice.subscription = self
        invoice.subscription_kind = 'additional'
        invoice.contact = self.contact
        invoice.description = self.description
        invoice.comment = self.invoice_epilog
        return invoice

    def _get_additional_invoice_line(self, invoice, values):
        "Return an invoice line of values with its account and taxes"
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        Product = pool.get('product.product')
        values = values.copy()
        line = InvoiceLine(invoice=invoice, type='line')
        line.on_change_invoice()
        # Read in the company of the contract, not in the context of the
        # record the values come from
        with Transaction().set_context(company=self.company.id):
            product = Product(values.pop('product').id)
        line.product = product
        line.quantity = values.pop('quantity')
        line.unit = values.pop('unit', None) or product.default_uom
        try:
            line.on_change_product()
        except AccountError as exception:
            raise AdditionalInvoiceError(gettext(
                    'recurring_invoice.msg_additional_invoice_no_account',
                    product=product.rec_name,
                    subscription=self.rec_name)) from exception
        if not line.account:
            raise AdditionalInvoiceError(gettext(
                    'recurring_invoice.msg_additional_invoice_no_account',
                    product=product.rec_name, subscription=self.rec_name))
        if not values.get('description'):
            values['description'] = product.name
        for name, value in values.items():
            setattr(line, name, value)
        return line


class CreateAdditionalInvoiceStart(ModelView):
    __name__ = 'sale.subscription.create_additional_invoice.start'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    company = fields.Many2One('company.company', "Company", readonly=True)
    party = fields.Many2One(
        'party.party', "Party", readonly=True,
        context={
            'company': Eval('company', -1),
            },
        depends={'company'})
    currency = fields.Many2One('currency.currency', "Currency", readonly=True)
    invoice_date = fields.Date(
        "Invoice Date", required=True,
        help="The date of the invoice; the nightly run dates it the day "
        "it posts it if that is later.")
    lines = fields.One2Many(
        'sale.subscription.create_additional_invoice.line', None, "Lines",
        context={
            'company': Eval('company', -1),
            'customer': Eval('party', -1),
            'currency': Eval('currency', -1),
            'sale_date': Eval('invoice_date'),
            },
        depends={'company', 'party', 'currency', 'invoice_date'},
        help="The items to bill, with the unit prices of the products "
        "by default.")


class CreateAdditionalInvoiceLine(ModelView):
    __name__ = 'sale.subscription.create_additional_invoice.line'

    product = fields.Many2One(
        'product.product', "Product", required=True,
        domain=[
            ('salable', '=', True),
            ])
    description = fields.Text("Description")
    quantity = fields.Float("Quantity", digits='unit', required=True)
    unit = fields.Many2One(
        'product.uom', "Unit", required=True,
        domain=[
            If(Bool(Eval('product_uom_category')),
                ('category', '=', Eval('product_uom_category', -1)),
                ()),
            ])
    product_uom_category = fields.Function(
        fields.Many2One('product.uom.category', "Product UoM Category"),
        'on_change_with_product_uom_category')
    unit_price = fields.Numeric(
        "Unit Price", digits=price_digits, required=True)

    @classmethod
    def default_quantity(cls):
        return 1

    @fields.depends('product')
    def on_change_with_product_uom_category(self, name=None):
        return self.product.default_uom_category if self.product else None

    @fields.depends('product', 'unit', 'quantity', 'description')
    def on_change_product(self):
        pool = Pool()
        Product = pool.get('product.product')
        if not self.product:
            return
        category = self.product.default_uom.category
        if not self.unit or self.unit.category != category:
            self.unit = self.product.sale_uom or self.product.default_uom
        if not self.description:
            self.description = self.product.name
        with Transaction().set_context(uom=self.unit.id):
            prices = Product.get_sale_price(
                [self.product], quantity=self.quantity or 0)
        price = prices[self.product.id]
        if price is not None:
            self.unit_price = price.quantize(
                price.__class__(1).scaleb(-price_digits[1]))

    @fields.depends(methods=['on_change_product'])
    def on_change_unit(self):
        self.on_change_product()

    def get_invoice_line_values(self):
        return {
            'product': self.product,
            'description': self.description,
            'quantity': self.quantity,
            'unit': self.unit,
            'unit_price': self.unit_price,
            }


class CreateAdditionalInvoice(Wizard):
    __name__ = 'sale.subscription.create_additional_invoice'
    start = StateView(
        'sale.subscription.create_additional_invoice.start',
        'recurring_invoice.subscription_create_additional_invoice_start_'
        'view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Create", 'create_invoice', 'tryton-ok', default=True),
            ])
    create_invoice = StateTransition()
    open_invoice = StateAction('account_invoice.act_invoice_out_form')

    def default_start(self, fields):
        pool = Pool()
        Date = pool.get('ir.date')
        subscription = self.record
        with Transaction().set_context(company=subscription.company.id):
            today = Date.today()
        return {
            'subscription': subscription.id,
            'company': subscription.company.id,
            'party': (subscription.invoice_party or subscription.party).id,
            'currency': subscription.currency.id,
            'invoice_date': today,
            'lines': [],
            }

    def transition_create_invoice(self):
        subscription = self.record
        if subscription.state != 'running':
            raise AdditionalInvoiceError(gettext(
                    'recurring_invoice.msg_additional_invoice_state',
                    subscription=subscription.rec_name))
        self.invoice, = subscription.create_additional_invoices([(
                    subscription, self.start.invoice_date,
                    [l.get_invoice_line_values() for l in self.start.lines])])
        return 'open_invoice'

    def do_open_invoice(self, action):
        action['views'].reverse()
        return action, {'res_id': [self.invoice.id]}

    def end(self):
        return 'reload'
