# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"The direct-debit channel refuses a mandate given to another company"
import datetime as dt
import unittest
from types import SimpleNamespace

from trytond.modules.company.tests import create_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction


class DirectDebitMandateTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        activate_module(['recurring_invoice', 'account_payment_sepa'])

    @with_transaction()
    def test_mandate_of_other_company(self):
        pool = Pool()
        Bank = pool.get('bank')
        BankAccount = pool.get('bank.account')
        Mandate = pool.get('account.payment.sepa.mandate')
        Party = pool.get('party.party')
        from trytond.modules.recurring_invoice.exceptions import (
            DirectDebitError)
        from trytond.modules.recurring_invoice.sepa import get_mandate

        ours = create_company(name="Turnus GmbH")
        other = create_company(name="Schwester GmbH")
        party = Party(name="Kunde", addresses=[{'city': "Berlin"}])
        party.save()
        bank = Bank(party=Party(name="Bank"))
        bank.party.save()
        bank.save()
        account = BankAccount(
            bank=bank, owners=[party],
            numbers=[{'type': 'iban', 'number': 'DE02120300000000202051'}])
        account.save()
        mandate = Mandate(
            party=party, address=party.addresses[0], company=other,
            account_number=account.numbers[0],
            identification='MANDAT-2', type='recurrent',
            signature_date=dt.date.today(), state='validated')
        mandate.save()
        invoice = SimpleNamespace(
            party=party, company=ours, rec_name="R-1")

        with self.assertRaises(DirectDebitError) as context:
            get_mandate(invoice)
        self.assertEqual(context.exception.message, (
                'Invoice "R-1" cannot be collected by direct debit: the SEPA '
                'mandate "MANDAT-2" of customer "Kunde" was given to company '
                '"Schwester GmbH", not to "Turnus GmbH".'))
        self.assertEqual(
            get_mandate(SimpleNamespace(
                    party=party, company=other, rec_name="R-2")),
            mandate)
