# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Contracts (sale.subscription) as both modules extend them"


class SubscriptionNameMixin:
    """Extends sale.subscription: a contract without number and reference
    is named after its party and description

    Core names such a contract "(id)", and the client shows the wizards of
    a new contract as "Set Up Recurrence ((22))"."""
    __slots__ = ()

    def get_rec_name(self, name):
        if not self.number and not self.reference and self.party:
            items = [self.party.rec_name]
            if self.description:
                items.append(self.description)
            return ' - '.join(items)
        return super().get_rec_name(name)
