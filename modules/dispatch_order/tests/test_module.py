# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.

from trytond.modules.company.tests import CompanyTestMixin
from trytond.tests.test_tryton import ModuleTestCase

from turnus.testing import TranslationTestMixin, ViewTestMixin


class DispatchOrderTestCase(
        TranslationTestMixin, ViewTestMixin, CompanyTestMixin, ModuleTestCase):
    "Test Dispatch Order module"
    module = 'dispatch_order'


del ModuleTestCase
