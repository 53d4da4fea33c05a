# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"The e-invoice helpers that need no database"
import filecmp
import os
import unittest

from trytond.modules.recurring_invoice.einvoice import (
    STYLESHEETS, VALIDATION_DIR, ValidationArtefacts, _valid_leitweg_id)

from .tools import SHARED_EINVOICE, einvoice_stylesheet


class EinvoiceTestCase(unittest.TestCase):
    "Test the Leitweg-ID check and the validation artefacts"

    def test_leitweg_id(self):
        "Test the form and the check digits of Leitweg-IDs"
        for value in [
                '04011000-12345-03', '991-33333TEST-33', '04011000-45',
                '04011000-1234512345-06']:
            self.assertTrue(_valid_leitweg_id(value), msg=value)
        for value in [
                '04011000-12345-99', '04011000', '4-12345-03',
                '04011000-12345-3', '04011000-123_45-03', '',
                '04011000-12345-03-01', 'ABC-12345-03']:
            self.assertFalse(_valid_leitweg_id(value), msg=value)

    def test_artefacts_official(self):
        "Test that the module ships the official stylesheets unchanged"
        if not os.path.isdir(SHARED_EINVOICE):
            self.skipTest("../shared/einvoice is not there")
        for name, filename in STYLESHEETS.items():
            self.assertTrue(filecmp.cmp(
                    os.path.join(VALIDATION_DIR, filename),
                    einvoice_stylesheet(name), shallow=False), msg=filename)

    def test_artefacts_refuse(self):
        "Test that the validation finds the fatal errors of an invoice"
        path = os.path.join(SHARED_EINVOICE, 'examples', 'CII_example1.xml')
        if not os.path.exists(path):
            self.skipTest("../shared/einvoice is not there")
        with open(path, 'rb') as file:
            xml = file.read()
        self.assertEqual(ValidationArtefacts.errors(xml, 'en16931'), [])
        broken = xml.replace(b'<ram:TypeCode>380</ram:TypeCode>',
            b'<ram:TypeCode>999</ram:TypeCode>', 1)
        self.assertIn('BR-CL-01', [
                i for i, _ in ValidationArtefacts.errors(broken, 'en16931')])


class EinvoiceActivationTestCase(unittest.TestCase):
    "Test recurring_invoice with edocument_uncefact and without SEPA"

    @classmethod
    def setUpClass(cls):
        from trytond.tests.test_tryton import drop_db

        from turnus.testing import activate_modules
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_modules(['recurring_invoice', 'edocument_uncefact'])

    def test_registered(self):
        "Test the e-invoice classes are there and the SEPA bridge is not"
        from trytond.pool import Pool
        from trytond.tests.test_tryton import DB_NAME
        from trytond.transaction import Transaction
        with Transaction().start(DB_NAME, 0):
            pool = Pool()
            Edocument = pool.get('edocument.uncefact.invoice')
            Invoice = pool.get('account.invoice')
            self.assertTrue(hasattr(Edocument, 'complete'))
            self.assertIn('einvoice', Invoice._fields)
            self.assertNotIn('account.payment.sepa.mandate', [
                    name for name, _ in pool.iterobject()])
