# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction

from .exceptions import AutomaticDeliveryError, AutomaticDeliveryWarning


class Configuration(metaclass=PoolMeta):
    __name__ = 'sale.configuration'

    automatic_delivery = fields.Boolean(
        "Automatic Invoicing and Delivery",
        help="If checked, the nightly run posts and delivers the invoices "
        "of the contracts that ask for it.")

    @classmethod
    def default_automatic_delivery(cls):
        return False


class Delivery(ModelSQL, ModelView):
    __name__ = 'sale.subscription.delivery'

    kind = fields.Selection([
            ('standard', "Standard"),
            ('additional', "Additional"),
            ], "Kind", required=True, readonly=True,
        help="Standard: the recurring invoices of the contract.\n"
        "Additional: invoices for additional or optional items.")
    post = fields.Boolean(
        "Post", help="If checked, the invoices are posted automatically.")
    channels = fields.MultiSelection(
        'get_channels', "Channels",
        help="How the invoices are delivered, each channel on its own.")
    email_template = fields.Many2One(
        'ir.email.template', "E-mail Template",
        domain=[
            ('model.name', '=', 'account.invoice'),
            ],
        states={
            'invisible': ~Eval('channels', []).contains('email'),
            'required': Eval('channels', []).contains('email'),
            })
    email_cc = fields.Char(
        "E-mail Cc",
        states={
            'invisible': ~Eval('channels', []).contains('email'),
            },
        help="Internal addresses that receive a copy, comma separated.")
    email_bcc = fields.Char(
        "E-mail Bcc",
        states={
            'invisible': ~Eval('channels', []).contains('email'),
            },
        help="Internal addresses that receive a hidden copy, "
        "comma separated.")

    @classmethod
    def get_channels(cls):
        "Return the delivery channels; extend it to add a channel"
        return [
            ('email', "E-mail"),
            ('letter', "Letter"),
            ('direct_debit', "Direct Debit"),
            ]

    @classmethod
    def default_post(cls):
        return True

    @classmethod
    def default_channels(cls):
        return []

    @classmethod
    def default_email_template(cls):
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        try:
            return ModelData.get_id(
                'recurring_invoice', 'email_template_invoice')
        except KeyError:
            return None

    def get_rec_name(self, name):
        kinds = dict(self.fields_get(['kind'])['kind']['selection'])
        return kinds[self.kind]


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    automatic_delivery = fields.Boolean(
        "Deliver Automatically",
        states={
            'invisible': ~Eval('invoice_recurrence'),
            },
        help="If checked, the invoices are created, posted and sent "
        "without review by the nightly run.")
    standard_delivery = fields.Many2One(
        'sale.subscription.delivery', "Standard Delivery",
        domain=[('kind', '=', 'standard')], ondelete='RESTRICT',
        help="How the recurring invoices are delivered.")
    additional_delivery = fields.Many2One(
        'sale.subscription.delivery', "Additional Delivery",
        domain=[('kind', '=', 'additional')], ondelete='RESTRICT',
        help="How invoices of additional or optional items are delivered.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'delivery_settings': {
                    'icon': 'tryton-launch',
                    },
                })

    @classmethod
    def default_automatic_delivery(cls):
        return False

    @classmethod
    def copy(cls, subscriptions, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('automatic_delivery', False)
        default.setdefault('standard_delivery', None)
        default.setdefault('additional_delivery', None)
        return super().copy(subscriptions, default=default)

    @classmethod
    @ModelView.button
    def delivery_settings(cls, subscriptions):
        "Create the missing delivery settings of the contracts"
        pool = Pool()
        Delivery = pool.get('sale.subscription.delivery')
        deliveries = []
        for subscription in subscriptions:
            for kind in ['standard', 'additional']:
                name = f'{kind}_delivery'
                if not getattr(subscription, name):
                    delivery = Delivery(kind=kind)
                    setattr(subscription, name, delivery)
                    deliveries.append(delivery)
        Delivery.save(deliveries)
        cls.save(subscriptions)

    @classmethod
    def check_modification(
            cls, mode, subscriptions, values=None, external=False):
        pool = Pool()
        Warning = pool.get('res.user.warning')
        super().check_modification(
            mode, subscriptions, values=values, external=external)
        if mode == 'create':
            enabled = [s for s in subscriptions if s.automatic_delivery]
        elif mode == 'write' and values.get('automatic_delivery'):
            enabled = [s for s in subscriptions if not s.automatic_delivery]
        else:
            enabled = []
        if enabled and not Transaction().context.get('_skip_warnings'):
            key = Warning.format('automatic_delivery', enabled)
            if Warning.check(key):
                raise AutomaticDeliveryWarning(key, gettext(
                        'recurring_invoice.msg_automatic_delivery_enable',
                        subscriptions=', '.join(
                            s.rec_name for s in enabled[:5])))

    @classmethod
    def validate_fields(cls, subscriptions, field_names):
        super().validate_fields(subscriptions, field_names)
        cls.check_automatic_delivery(subscriptions, field_names)

    def get_automatic_deliveries(self):
        """Return the delivery settings the nightly run uses for the
        contract: the standard ones, and the additional ones when set"""
        return [d for d in [self.standard_delivery, self.additional_delivery]
            if d]

    @classmethod
    def _automatic_delivery_fields(cls):
        "The fields whose change checks the automatic delivery again"
        return {
            'automatic_delivery', 'invoice_recurrence', 'standard_delivery',
            'additional_delivery'}

    @classmethod
    def check_automatic_delivery(cls, subscriptions, field_names=None):
        if field_names and not (
                field_names & cls._automatic_delivery_fields()):
            return
        for subscription in subscriptions:
            if not subscription.automatic_delivery:
                continue
            if not subscription.invoice_recurrence:
                raise AutomaticDeliveryError(gettext(
                        'recurring_invoice'
                        '.msg_automatic_delivery_not_recurring',
                        subscription=subscription.rec_name))
            if not subscription.standard_delivery:
                raise AutomaticDeliveryError(gettext(
                        'recurring_invoice.msg_automatic_delivery_settings',
                        subscription=subscription.rec_name))
            for delivery in subscription.get_automatic_deliveries():
                if ('email' in delivery.channels
                        and not delivery.email_template):
                    raise AutomaticDeliveryError(gettext(
                            'recurring_invoice'
                            '.msg_automatic_delivery_template',
                            subscription=subscription.rec_name))
