# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import PoolMeta

from turnus.recurrence import RecurrenceRuleMixin, RecurrenceRuleSetMixin


class RecurrenceRuleSet(RecurrenceRuleSetMixin, metaclass=PoolMeta):
    __name__ = 'sale.subscription.recurrence.rule.set'
    _recurrence_module = 'dispatch_order'


class RecurrenceRule(RecurrenceRuleMixin, metaclass=PoolMeta):
    __name__ = 'sale.subscription.recurrence.rule'
