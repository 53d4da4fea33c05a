# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Test helpers shared by the Turnus modules"
import os
import sys

import polib
from lxml import etree

from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction


class TranslationTestMixin:
    "Check that locale/de.po translates every string of the module"
    maxDiff = None

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


class ViewTestMixin:
    "Check the form views that the module defines or extends"

    @with_transaction()
    def test_form_labels_unique(self):
        "Test that no form of the module shows two labels with one text"
        pool = Pool()
        View = pool.get('ir.ui.view')
        ModelData = pool.get('ir.model.data')
        Field = pool.get('ir.model.field')
        fields_ = {(f.model, f.name) for f in Field.search([
                    ('module', '=', self.module),
                    ])}
        view_ids = {d.db_id for d in ModelData.search([
                    ('module', '=', self.module),
                    ('model', '=', 'ir.ui.view'),
                    ])}
        roots = set()
        for view in View.browse(view_ids):
            while view.inherit:
                view = view.inherit
            if view.type == 'form':
                roots.add(view)
        for view in roots:
            Model = pool.get(view.model)
            result = Model.fields_view_get(view_id=view.id, view_type='form')
            tree = etree.fromstring(result['arch'])
            strings, ours = [], set()
            for label in tree.iter('label'):
                name = label.get('name')
                string = label.get('string')
                if string is None and name in result['fields']:
                    string = result['fields'][name]['string']
                if string:
                    strings.append(string)
                    if (view.model, name) in fields_:
                        ours.add(string)
            # core's own labels are core's business
            duplicates = sorted(
                {s for s in ours if strings.count(s) > 1})
            self.assertEqual(duplicates, [],
                msg=f"labels shown twice in view {view.name} of "
                f"{view.model}")
