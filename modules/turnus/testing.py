# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Test helpers shared by the Turnus modules"
import os
import sys

import polib

from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction


class TranslationTestMixin:
    "Check that locale/de.po translates every string of the module"

    @with_transaction()
    def test_de_po_complete(self):
        "Test that de.po has a German text for every string, and no other"
        pool = Pool()
        Translation = pool.get('ir.translation')
        TranslationSet = pool.get('ir.translation.set', type='wizard')
        session_id, _, _ = TranslationSet.create()
        TranslationSet(session_id).transition_set_()
        template = polib.pofile(
            Translation.translation_export('en', self.module).decode())
        directory = os.path.dirname(sys.modules[
                f'trytond.modules.{self.module}'].__file__)
        german = polib.pofile(os.path.join(directory, 'locale', 'de.po'))
        translated = {
            (e.msgctxt, e.msgid): e.msgstr for e in german if e.msgstr}
        expected = {(e.msgctxt, e.msgid) for e in template}
        self.assertEqual(
            sorted(expected - translated.keys()), [],
            msg="strings without German translation in de.po")
        self.assertEqual(
            sorted(translated.keys() - expected), [],
            msg="entries of de.po that the module no longer has")
