# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Test helpers shared by the Turnus modules"
import json
import os
import sys

import polib
from lxml import etree

from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction


def activate_modules(modules, *setup):
    """Activate the modules and run the setup functions as
    trytond.tests.tools.activate_modules does, with the same DB_CACHE
    names, but from the longest cached start: the database of the modules
    alone (the one ModuleTestCase caches too) and of each first part of
    the setup is cached, so another setup of the same modules only runs
    what it adds instead of activating the modules again"""
    from trytond.tests import test_tryton, tools

    if isinstance(modules, str):
        modules = [modules]
    base = '-'.join(sorted(modules))
    names = [base] + [
        base + '--' + '|'.join(tools._func_name(f) for f in setup[:i])
        for i in range(1, len(setup) + 1)]
    for done in range(len(setup), -1, -1):
        if test_tryton.restore_db_cache(names[done]):
            break
    else:
        _activate(modules)
        done = 0
    config = tools._get_config()
    for index in range(done, len(setup)):
        setup[index](config=config)
        test_tryton.backup_db_cache(names[index + 1])
    return config


def _activate(modules):
    """Activate the modules and cache the database: on the cached database
    of all of them but one when there is one, from scratch otherwise"""
    from itertools import combinations

    from proteus import Model, Wizard

    from trytond.tests import test_tryton, tools

    name = '-'.join(sorted(modules))
    for others in combinations(sorted(modules), len(modules) - 1):
        if others and test_tryton.restore_db_cache('-'.join(others)):
            tools._get_config()
            Module = Model.get('ir.module')
            Module.click(Module.find([
                        ('name', 'in', sorted(set(modules) - set(others))),
                        ]), 'activate')
            Wizard('ir.module.activate_upgrade').execute('upgrade')
            test_tryton.backup_db_cache(name)
            return
    tools.activate_modules(modules)


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
        if os.environ.get('TURNUS_PO_MISSING'):
            # For translators: the missing strings as JSON lines
            with open(os.environ['TURNUS_PO_MISSING'], 'w') as missing:
                for key in sorted(expected - translated.keys()):
                    missing.write(json.dumps(key) + '\n')
        self.assertEqual(
            sorted(expected - translated.keys()), [],
            msg="strings without German translation in de.po")
        self.assertEqual(
            sorted(translated.keys() - expected), [],
            msg="entries of de.po that the module no longer has")


class ViewTestMixin:
    "Check the views that the module defines or extends"

    def _module_views(self, view_type):
        """Yield (view, fields_view_get result, arch) of the views of type
        view_type that the module defines or extends (the view extended)"""
        pool = Pool()
        View = pool.get('ir.ui.view')
        ModelData = pool.get('ir.model.data')
        view_ids = {d.db_id for d in ModelData.search([
                    ('module', '=', self.module),
                    ('model', '=', 'ir.ui.view'),
                    ])}
        roots = set()
        for view in View.browse(view_ids):
            while view.inherit:
                view = view.inherit
            if view.type == view_type:
                roots.add(view)
        for view in roots:
            Model = pool.get(view.model)
            result = Model.fields_view_get(
                view_id=view.id, view_type=view_type)
            yield view, result, etree.fromstring(result['arch'])

    @with_transaction()
    def test_form_labels_unique(self):
        "Test that no form of the module shows two labels with one text"
        pool = Pool()
        Field = pool.get('ir.model.field')
        fields_ = {(f.model, f.name) for f in Field.search([
                    ('module', '=', self.module),
                    ])}
        for view, result, tree in self._module_views('form'):
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

    # The column widgets of sao's and tryton's lists (TreeXMLViewParser):
    # a datetime is shown with widget "date" and "time", as core does
    TREE_WIDGETS = {
        'binary', 'boolean', 'callto', 'char', 'date', 'dict', 'email',
        'float', 'image', 'integer', 'many2many', 'many2one', 'numeric',
        'one2many', 'one2one', 'progressbar', 'reference', 'selection',
        'multiselection', 'sip', 'text', 'time', 'timedelta', 'url'}

    @with_transaction()
    def test_tree_widgets(self):
        "Test that the lists of the module only use widgets of the clients"
        for view, result, tree in self._module_views('tree'):
            for field in tree.iter('field'):
                name = field.get('name')
                widget = field.get('widget') or result['fields'][name]['type']
                self.assertIn(widget, self.TREE_WIDGETS,
                    msg=f"field {name} of list {view.name} of {view.model}: "
                    "no client shows this widget in a list")
