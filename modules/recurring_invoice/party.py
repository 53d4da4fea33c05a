# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.model import fields
from trytond.pool import PoolMeta


class Party(metaclass=PoolMeta):
    __name__ = 'party.party'

    invoice_delivery = fields.Selection([
            ('email', "E-mail"),
            ('letter', "Letter"),
            ], "Invoice Delivery", required=True,
        help="How the customer wants to receive invoices; "
        "invoice runs that respect the delivery preference follow it.")
    ignore_in_invoice_runs = fields.Boolean(
        "Ignore in Invoice Runs",
        help="If checked, the invoices of the party never enter an "
        "invoice run.")

    @classmethod
    def default_invoice_delivery(cls):
        return 'email'

    @classmethod
    def default_ignore_in_invoice_runs(cls):
        return False
