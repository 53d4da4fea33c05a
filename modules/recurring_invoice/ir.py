# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import PoolMeta


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('sale.subscription|generate_recurring_invoices',
                "Generate Recurring Invoices"))
        cls.method.selection.append(
            ('account.invoice.run.line|requeue_stalled',
                "Queue Stalled Deliveries Again"))
        cls._notifications.add(
            'sale.subscription|generate_recurring_invoices')
