# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.model import fields
from trytond.pool import PoolMeta
from trytond.pyson import Eval


class Template(metaclass=PoolMeta):
    __name__ = 'product.template'

    subscription_prorate = fields.Boolean(
        "Prorate Partial Periods",
        states={
            'invisible': Eval('type') != 'service',
            },
        help="If checked, a contract period shortened by an end date is "
        "invoiced only for its days.")

    @classmethod
    def default_subscription_prorate(cls):
        return False
