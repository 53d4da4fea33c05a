# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.

from trytond.modules.company.tests import CompanyTestMixin
from trytond.tests.test_tryton import ModuleTestCase

from turnus.testing import TranslationTestMixin, ViewTestMixin


class RecurringInvoiceTestCase(
        TranslationTestMixin, ViewTestMixin, CompanyTestMixin, ModuleTestCase):
    """Test Recurring Invoice module with its optional companions (as
    core's tests do; the scenarios activate it alone, with each of them and
    with both)"""
    module = 'recurring_invoice'
    extras = ['account_payment_sepa', 'dispatch_order', 'edocument_uncefact']


del ModuleTestCase
