# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from sql import Null

from trytond.model import Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, If
from trytond.transaction import Transaction


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True, ondelete='RESTRICT',
        states={
            'invisible': ~Eval('subscription'),
            },
        help="The contract that generated the invoice.")
    subscription_kind = fields.Selection([
            (None, ""),
            ('standard', "Standard"),
            ('additional', "Additional"),
            ], "Contract Invoice Kind", readonly=True,
        states={
            'invisible': ~Eval('subscription'),
            },
        help="Standard: a recurring invoice of the contract.\n"
        "Additional: an invoice of additional or optional items, "
        "delivered with the contract's additional delivery settings.")
    subscription_kind_string = subscription_kind.translated(
        'subscription_kind')
    subscription_period_start = fields.Date(
        "Service Period Start", readonly=True,
        states={
            'invisible': ~Eval('subscription'),
            })
    subscription_period_end = fields.Date(
        "Service Period End", readonly=True,
        states={
            'invisible': ~Eval('subscription'),
            })
    contact = fields.Many2One(
        'party.contact_mechanism', "Contact",
        context={
            'company': Eval('company', -1),
            },
        search_context={
            'related_party': Eval('party'),
            },
        depends={'company'},
        states={
            'readonly': Eval('state') != 'draft',
            'invisible': Eval('type') != 'out',
            },
        help="The contact person of the customer for the invoice.")
    delivery_lines = fields.One2Many(
        'account.invoice.run.line', 'invoice', "Deliveries", readonly=True)
    sent_date = fields.Date(
        "Sent Date", readonly=True,
        states={
            'invisible': Eval('type') != 'out',
            },
        help="The day the invoice was last delivered by an invoice run.")
    sent_channel = fields.Selection(
        'get_sent_channels', "Sent By", readonly=True,
        states={
            'invisible': Eval('type') != 'out',
            },
        help="How the invoice was last delivered.")
    direct_debit_notice = fields.Text(
        "Direct Debit Pre-notification", readonly=True,
        states={
            'invisible': ~Eval('direct_debit_notice'),
            },
        help="The announcement of the SEPA direct debit printed on the "
        "invoice and in its e-mail: amount, collection date, mandate "
        "reference and creditor identifier.")

    ignore_in_invoice_runs = fields.Boolean(
        "Ignore in Invoice Runs",
        states={
            'invisible': Eval('type') != 'out',
            },
        help="If checked, the invoice never enters an invoice run.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('subscription_period_unique',
                Unique(t, t.subscription, t.subscription_period_start),
                'recurring_invoice.msg_invoice_subscription_period_unique'),
            ]
        cls._check_modify_exclude |= {
            'sent_date', 'sent_channel', 'ignore_in_invoice_runs'}

    @classmethod
    def __register__(cls, module):
        cursor = Transaction().connection.cursor()
        table = cls.__table__()
        table_h = cls.__table_handler__(module)
        fill_kind = not table_h.column_exist('subscription_kind')
        super().__register__(module)
        # Migration from before additional invoices: every contract
        # invoice was a recurring one
        if fill_kind:
            cursor.execute(*table.update(
                    [table.subscription_kind], ['standard'],
                    where=table.subscription != Null))

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if (mode == 'create' and values.get('subscription')
                and not values.get('subscription_kind')):
            values['subscription_kind'] = 'standard'
        return values

    def get_subscription_delivery(self):
        """Return the delivery settings of the contract for the invoice: the
        standard ones for recurring invoices, the additional ones for
        additional invoices (None without contract or settings)"""
        if self.subscription:
            return getattr(
                self.subscription,
                f'{self.subscription_kind or "standard"}_delivery')

    @classmethod
    def default_ignore_in_invoice_runs(cls):
        return False

    @classmethod
    def get_sent_channels(cls):
        pool = Pool()
        Delivery = pool.get('sale.subscription.delivery')
        return [(None, "")] + Delivery.get_channels()

    @classmethod
    def copy(cls, invoices, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('subscription', None)
        default.setdefault('subscription_kind', None)
        default.setdefault('subscription_period_start', None)
        default.setdefault('subscription_period_end', None)
        default.setdefault('delivery_lines', None)
        default.setdefault('sent_date', None)
        default.setdefault('sent_channel', None)
        default.setdefault('ignore_in_invoice_runs', False)
        default.setdefault('direct_debit_notice', None)
        return super().copy(invoices, default=default)


class InvoiceLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.line'

    service_start_date = fields.Date(
        "Service Start",
        domain=[
            If(Eval('service_start_date') & Eval('service_end_date'),
                ('service_start_date', '<=', Eval('service_end_date')),
                ()),
            ],
        states={
            'readonly': Eval('invoice_state') != 'draft',
            'invisible': Eval('type') != 'line',
            },
        help="The first day of the service period the line bills.")
    service_end_date = fields.Date(
        "Service End",
        domain=[
            If(Eval('service_start_date') & Eval('service_end_date'),
                ('service_end_date', '>=', Eval('service_start_date')),
                ()),
            ],
        states={
            'readonly': Eval('invoice_state') != 'draft',
            'invisible': Eval('type') != 'line',
            },
        help="The last day of the service period the line bills.")

    def _credit(self):
        line = super()._credit()
        line.service_start_date = self.service_start_date
        line.service_end_date = self.service_end_date
        return line
