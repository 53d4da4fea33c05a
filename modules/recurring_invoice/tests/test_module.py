# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.

from trytond.modules.company.tests import CompanyTestMixin
from trytond.tests.test_tryton import ModuleTestCase

from turnus.testing import TranslationTestMixin, ViewTestMixin


class RecurringInvoiceTestCase(
        TranslationTestMixin, ViewTestMixin, CompanyTestMixin, ModuleTestCase):
    "Test Recurring Invoice module"
    module = 'recurring_invoice'


del ModuleTestCase
