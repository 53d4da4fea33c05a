# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""End-to-end tests in the web client: sao in headless Chromium

The workflows of the office staff, clicked as a user clicks them, against
the demo database (tests/demo_data.py) served by trytond on 127.0.0.1:

1. log in through sao's login dialog
2. a contract from Sales › Recurring Invoices: party, a service line,
   "Set Up Recurrence" (Quarterly, Preview, Apply), Quote, Activate
3. Sales › Create Subscription Invoices, then the contract's one relate
   "Invoices": the service period on the invoice line
4. Sales › Recurring Invoices › Runs to Confirm: tick a letter line, then
   "Mark as Done"
5. Dispatch › Dispatch Calendar: an order to plan on its key date, set
   its planning date, Plan; the "To Plan" counter of Dispatch Orders
6. the user switches to German in the preferences and sees German labels
7. Sales › Recurring Invoices › Invoice Runs: a run for last month, a line
   removed, executed, the PDFs (ZIP) downloaded
8. a contract's "Plan Invoices" for 2 months, the planned drafts merged
   from the invoice list's actions, a send date on the collective invoice
9. Financial › Reporting › Export to DATEV: last month again ("Export
   Again"), the export opens with its bookings and EXTF file; the night
   uploaded the invoices of DEMO-001 to the document store; a 12-month
   contract with renewal and 3 months' notice: its notice deadline,
   terminated; another contract paused
10. the demo users: admin in German, demo-en in English

The harness is in tests/browser/ (fixture: browser/server.py, steps:
browser/sao.py, base class: browser/case.py).  Skipped on PostgreSQL runs
and, outside CI, when chromium, chromedriver, selenium or the web client
are missing.  A failed step leaves a screenshot and the page's HTML in
var/browser/.  See doc/development.md.

    .venv/bin/python tests/run_tests.py tests -k browser -v
"""
import datetime as dt
import os
import unittest
import zipfile

from dateutil.relativedelta import relativedelta

from browser import case
from browser.case import BrowserTestCase

DEMO_EN_LOGIN = 'demo-en'


def setUpModule():
    case.start_server()


def tearDownModule():
    case.stop_server()


class WebClientTest(BrowserTestCase):
    "The office staff's workflows, as admin in English"

    # the contract test_2 made: id, start date, end of its first period
    contract = None

    # ---------------------------------------------------------- data
    def demo_party(self):
        "The name of a customer of the demo"
        contracts = self.search_read(
            'sale.subscription', [], ['party.name'],
            order=[('id', 'ASC')], limit=1)
        self.assertTrue(contracts, "the demo data has no contract")
        return contracts[0]['party.']['name']

    def demo_service(self):
        "The product name of a subscription service of the demo"
        services = self.search_read(
            'sale.subscription.service', [], ['product.name'],
            order=[('id', 'ASC')], limit=1)
        self.assertTrue(services, "the demo data has no service")
        return services[0]['product.']['name']

    def fill_contract(self, party, service, start):
        "Fill a new contract: party, start date and one service line"
        sao = self.sao
        sao.toolbar('new_')
        sao.wait_view('form')
        sao.set_many2one('party', party)
        # the lines are read-only until the contract has a start date
        sao.set_date('start_date', start)
        sao.one2many_new('lines')
        line = sao.dialog()
        sao.set_many2one('service', service, root=line)
        sao.wait(lambda d: sao.value('unit_price', line),
            "the unit price of the service")
        sao.dialog_button(line)  # Add
        sao.wait_closed(line)
        sao.wait_rows(sao.one2many('lines'), text=service)

    # ---------------------------------------------------------- tests
    def test_1_login(self):
        "Log in through the login dialog (database, user, password)"
        sao = self.sao
        with self.step("log out"):
            sao.logout()
        with self.step("the login dialog names the database"):
            sao.open()
            dialog = sao.visible('.login-dialog')
            database = [
                e for e in sao.all_visible('#database', dialog)]
            self.assertTrue(database, "no database field in the login dialog")
            self.assertEqual(
                database[0].get_attribute('value'), sao.database)
        with self.step("log in as admin/admin"):
            sao.login('admin', 'admin')
        with self.step("the menu and the user"):
            menu = sao.menu_texts()
            for name in ['Sales', 'Dispatch', 'Financial']:
                self.assertIn(name, menu)
            self.assertIn('Administrator', sao.user_name())

    def test_2_create_contract(self):
        "A contract from the menu to Running, with the recurrence wizard"
        sao = self.sao
        today = dt.date.today()
        # started last month: with "Catch Up", its first quarter is due
        start = today.replace(day=1) - relativedelta(months=1)
        first_end = start + relativedelta(months=3, days=-1)
        party, service = self.demo_party(), self.demo_service()

        with self.step("Sales › Recurring Invoices"):
            sao.open_menu('Sales', 'Recurring Invoices')
            self.assertEqual(sao.tab_title(), 'Recurring Invoices')
        with self.step("new contract: party, start date, service line"):
            self.fill_contract(party, service, today)
        with self.step("Set Up Recurrence"):
            button = sao.button('setup_recurrence')
            self.assertEqual(button.text.casefold(), 'set up recurrence')
            sao.click_button('setup_recurrence')
            wizard = sao.wizard()
            title = sao.dialog_title(wizard)
            self.assertTrue(
                title.startswith('Set Up Recurrence'), f"title {title!r}")
            self.assertNotIn('((', title)
            self.assertNotIn('(id)', title)
        with self.step("Rhythm Quarterly, start date, Catch Up"):
            sao.set_selection('preset', 'quarterly', wizard)
            self.assertEqual(sao.selection('preset', wizard)[1], 'Quarterly')
            sao.set_date('start_date', start, wizard)
            sao.set_boolean('catch_up', True, wizard)
        with self.step("Preview"):
            sao.dialog_button(wizard, 'Preview')
            rows = sao.wait_rows(wizard, minimum=4)
            first = rows[0].text.split('\n')
            self.assertEqual(
                [sao.format_date(start), sao.format_date(start),
                    sao.format_date(first_end)], first,
                "first preview line: invoice date, period start, end")
        with self.step("Apply"):
            sao.dialog_button(wizard, 'Apply')
            sao.wait_closed(wizard)
            sao.wait_no_error()
            sao.wait(lambda d: 'quarter' in (
                    sao.value('invoice_recurrence').casefold()),
                "the invoice recurrence Quarterly")
            sao.wait_value('start_date', sao.format_date(start))
        with self.step("Quote"):
            sao.click_button('quote')
            sao.wait_selection('state', 'quotation')
            sao.wait_no_error()
        with self.step("Activate"):
            button = sao.button('run')
            self.assertEqual(button.text.casefold(), 'activate')
            sao.click_button('run')
            sao.wait_selection('state', 'running')
            sao.wait_no_error()
            self.assertEqual(sao.selection('state')[1], 'Running')
        contract_id = sao.record_id()
        self.assertGreater(contract_id or 0, 0)
        values, = self.rpc(
            'model.sale.subscription.read', [contract_id],
            ['state', 'activation_date', 'catch_up'], {})
        self.assertEqual(values['state'], 'running')
        self.assertTrue(values['catch_up'])
        type(self).contract = {
            'id': contract_id, 'start': start, 'end': first_end}

    def test_3_invoices_with_service_period(self):
        "Create the invoices for a date; the service period on the line"
        sao = self.sao
        today = dt.date.today()
        contract = type(self).contract
        if contract:
            periods = {(contract['start'], contract['end'])}
        else:
            # alone (test_2 did not run): a demo contract with invoices
            lines = self.search_read(
                'account.invoice.line',
                [('service_start_date', '!=', None),
                    ('invoice.subscription', '!=', None)],
                ['invoice.subscription'], order=[('id', 'DESC')], limit=1)
            self.assertTrue(lines, "no invoiced contract in the demo data")
            contract = {'id': lines[0]['invoice.']['subscription']}
            periods = None

        with self.step("Sales › Create Subscription Invoices"):
            sao.open_menu('Sales', 'Create Subscription Invoices')
            wizard = sao.wizard()
            sao.set_date('date', today, wizard)
            sao.dialog_button(wizard)  # Create
            sao.wait_closed(wizard)
            sao.wait_no_error()
        if periods is None:
            periods = {
                (_date(line['service_start_date']),
                    _date(line['service_end_date']))
                for line in self.search_read(
                    'account.invoice.line',
                    [('invoice.subscription', '=', contract['id']),
                        ('service_start_date', '!=', None)],
                    ['service_start_date', 'service_end_date'])}
        with self.step("open the contract"):
            sao.open_url(f"model/sale.subscription/{contract['id']}")
            sao.wait_view('form')
            sao.wait_selection('state', 'running')
        with self.step("relate: exactly one entry Invoices"):
            entries = sao.toolbar_menu('relate')
            names = [e.text for e in entries]
            self.assertEqual(names.count('Invoices'), 1, names)
            tabs = sao.tab_count()
            sao.click(entries[names.index('Invoices')])
            sao.wait(lambda d: sao.tab_count() > tabs, "the tab Invoices")
            sao.wait_view('tree')
            self.assertTrue(sao.tab_title().startswith('Invoices'))
            rows = sao.wait_rows()
            if type(self).contract:
                self.assertEqual(len(rows), 1,
                    "the new contract has one invoice: "
                    + ' | '.join(r.text for r in rows))
        with self.step("open the invoice"):
            sao.open_row(rows[0])
            sao.wait_view('form')
        with self.step("open the invoice line: service period"):
            lines = sao.one2many('lines')
            line_rows = sao.wait_rows(lines)
            sao.select_row(line_rows[0])
            sao.one2many_button('lines', 'open')
            dialog = sao.dialog()
            sao.wait(lambda d: sao.value('service_start_date', dialog),
                "the service start date")
            shown = (
                sao.value('service_start_date', dialog),
                sao.value('service_end_date', dialog))
            self.assertIn(shown, {
                    (sao.format_date(s), sao.format_date(e))
                    for s, e in periods})

    def test_4_confirm_run(self):
        "Tick a letter line of a run, then Mark as Done"
        sao = self.sao
        letters = self.search_read(
            'account.invoice.run.line',
            [('channel', '=', 'letter'), ('state', '=', 'manual'),
                ('run.state', '=', 'executed')],
            ['run'])
        self.assertTrue(letters,
            "the demo data has no run to confirm with a letter to post")
        runs = {line['run'] for line in letters}

        with self.step("Sales › Recurring Invoices › Runs to Confirm"):
            sao.open_menu('Sales', 'Recurring Invoices', 'Runs to Confirm')
            self.assertEqual(sao.tab_title(), 'Runs to Confirm')
            rows = sao.wait_rows()
        with self.step("open a run with a letter to post"):
            count = len([
                    r for r in rows
                    if int(sao.cell(r, 'Letters') or 0)])
            self.assertTrue(count, "no run with letters listed")
            for i in range(count):
                with_letters = [
                    r for r in sao.wait_rows()
                    if int(sao.cell(r, 'Letters') or 0)]
                sao.open_row(with_letters[i])
                sao.wait_view('form')
                run_id = sao.record_id()
                if run_id in runs:
                    break
                sao.toolbar('switch_')  # back to the list
                sao.wait_view('tree')
            self.assertIn(run_id, runs,
                "no listed run has a letter line to post")
        with self.step("the form names 'Letters:' once"):
            labels = sao.labels()
            self.assertEqual(labels.count('Letters:'), 1, labels)
        with self.step("tick the letter line"):
            lines = sao.one2many('lines')

            def manual_letter(driver):
                for row in sao.rows(lines):
                    if (sao.cell(row, 'Channel') == 'Letter'
                            and sao.cell(row, 'State') == 'Manual'):
                        return row
            letter = sao.wait(manual_letter, "a letter line to post")
            invoice = sao.cell(letter, 'Invoice')
            sao.row_button(letter, 'tick')

            def ticked(driver):
                return [
                    row for row in sao.rows(lines)
                    if sao.cell(row, 'Channel') == 'Letter'
                    and sao.cell(row, 'Invoice') == invoice
                    and sao.cell(row, 'State') == 'Done']
            sao.wait(ticked, f"the letter of invoice {invoice} to be done")
            sao.wait_no_error()
        with self.step("Mark as Done"):
            button = sao.button('confirm')
            self.assertEqual(button.text.casefold(), 'mark as done')
            sao.click_button('confirm')
            sao.wait_selection('state', 'done')
            sao.wait_no_error()
        run, = self.rpc(
            'model.account.invoice.run.read', [run_id],
            ['state', 'confirmed_at'], {})
        self.assertEqual(run['state'], 'done')
        self.assertTrue(run['confirmed_at'])

    def test_5_plan_from_calendar(self):
        "An order to plan in the calendar on its key date: plan it"
        sao = self.sao
        today = dt.date.today()
        to_plan = self.search_read(
            'dispatch.order',
            [('state', '=', 'draft'), ('planning_date', '=', None)],
            ['number', 'key_date'], order=[('key_date', 'ASC')])
        self.assertTrue(to_plan, "the demo data has no order to plan")
        month = today.replace(day=1)
        upcoming = [
            o for o in to_plan if _date(o['key_date']) >= month]
        order = (upcoming or to_plan)[0]
        key_date = _date(order['key_date'])

        with self.step("Dispatch › Dispatch Orders: the To Plan counter"):
            sao.open_menu('Dispatch', 'Dispatch Orders')
            count = sao.wait(lambda d: dict(sao.tab_domains()).get('To Plan'),
                "the counter of the tab To Plan")
            self.assertNotEqual(count, '0')
            self.assertEqual(int(count), len(to_plan))
        with self.step("Dispatch › Dispatch Calendar"):
            sao.open_menu('Dispatch', 'Dispatch Calendar')
            sao.wait_view('calendar')
            self.assertEqual(sao.tab_title(), 'Dispatch Calendar')
        with self.step(f"go to {key_date:%B %Y}"):
            months = ((key_date.year - today.year) * 12
                + key_date.month - today.month)
            button = '.fc-next-button' if months > 0 else '.fc-prev-button'
            for _ in range(abs(months)):
                sao.click(sao.visible(button, sao.tab()))
                sao.idle()
        with self.step(f"order {order['number']} on {key_date}"):
            element = sao.calendar_event(order['number'])
            self.assertTrue(sao.js("""
                const [event, date] = arguments;
                const days = Array.from(document.querySelectorAll(
                    '#tabcontent .tab-pane.active'
                    + ' .fc-day[data-date="' + date + '"]'));
                const e = event.getBoundingClientRect();
                const x = (e.left + e.right) / 2;
                return days.some(day => {
                    const d = day.getBoundingClientRect();
                    return d.left <= x && x <= d.right
                        && d.top <= e.top && e.top <= d.bottom;
                });""", element, key_date.isoformat()),
                f"order {order['number']} is not shown on {key_date}")
        with self.step("open the order, set the planning date, Plan"):
            sao.click(element)
            sao.wait_view('form')
            sao.wait_value('number', order['number'])
            sao.set_date('planning_date', key_date)
            sao.click_button('plan')
            sao.wait_selection('state', 'planned')
            sao.wait_no_error()
        values, = self.rpc(
            'model.dispatch.order.read', [order['id']],
            ['state', 'planning_date'], {})
        self.assertEqual(values['state'], 'planned')
        self.assertEqual(_date(values['planning_date']), key_date)

    def test_6_german(self):
        "Preferences: German; the menu and the recurrence wizard in German"
        sao = self.sao
        self.addCleanup(case.set_language, self.session, 'en')
        with self.step("Preferences: language German"):
            sao.user_menu_item(0)  # Preferences...
            dialog = sao.dialog()
            sao.set_selection('language', 'de', dialog)
            sao.dialog_button(dialog)  # OK
            sao.wait_closed(dialog)
            sao.wait(lambda d: 'Verkauf' in sao.menu_texts(),
                "the menu in German (Verkauf)")
        with self.step("Verkauf › Wiederkehrende Rechnungen"):
            sao.open_menu('Verkauf', 'Wiederkehrende Rechnungen')
            self.assertEqual(sao.tab_title(), 'Wiederkehrende Rechnungen')
        with self.step("neuer Vertrag"):
            self.fill_contract(
                self.demo_party(), self.demo_service(), dt.date.today())
        with self.step("Wiederholung einrichten"):
            button = sao.button('setup_recurrence')
            self.assertEqual(
                button.text.casefold(), 'wiederholung einrichten')
            sao.click_button('setup_recurrence')
            wizard = sao.wizard()
            title = sao.dialog_title(wizard)
            self.assertTrue(title.startswith('Wiederholung einrichten'),
                f"title {title!r}")
            self.assertNotIn('((', title)
            self.assertIn('Rhythmus:', sao.labels(wizard))
            sao.set_selection('preset', 'quarterly', wizard)
            self.assertEqual(
                sao.selection('preset', wizard)[1], 'Vierteljährlich')
        with self.step("Vorschau"):
            sao.dialog_button(wizard, 'Vorschau')
            sao.wait_rows(wizard)
            self.assertIn('Rechnungsdatum', sao.column_titles(wizard))
            sao.dialog_button(wizard, 'Übernehmen')
            sao.wait_closed(wizard)
            sao.wait_no_error()

    def test_7_invoice_run(self):
        """An accountant's invoice run for last month: create, remove a
        line, execute, download the ZIP"""
        sao = self.sao
        first, last = _last_month()
        invoices = self.search_read(
            'account.invoice', [
                ('type', '=', 'out'),
                ('state', 'in', ['posted', 'paid']),
                ('sent_date', '=', None),
                ('invoice_date', '>=', first),
                ('invoice_date', '<=', last),
                ('ignore_in_invoice_runs', '=', False),
                ('party.ignore_in_invoice_runs', '=', False),
                ], ['number'])
        self.assertGreaterEqual(len(invoices), 2,
            "the demo data has no posted, unsent invoices of last month")

        with self.step("Sales › Recurring Invoices › Invoice Runs, New"):
            sao.open_menu('Sales', 'Recurring Invoices', 'Invoice Runs')
            self.assertEqual(sao.tab_title(), 'Invoice Runs')
            sao.toolbar('new_')
            sao.wait_view('form')
        with self.step("the period: last month"):
            sao.set_date('date_from', first)
            sao.set_date('date_to', last)
            sao.wait_selection('output', 'email')
        with self.step("Create Run"):
            self.assertEqual(
                sao.button('build').text.casefold(), 'create run')
            sao.click_button('build')
            sao.wait_selection('state', 'built')
            sao.wait_no_error()
            sao.page('Protocol')
            lines = sao.one2many('lines')
            rows = sao.wait_rows(lines, minimum=len(invoices))
            self.assertEqual(len(rows), len(invoices))
        with self.step("remove a line and save"):
            sao.select_row(rows[0])
            sao.one2many_button('lines', 'del')
            sao.save()
            sao.wait(lambda d: len(sao.rows(lines)) == len(invoices) - 1,
                "the line to be removed")
            run_id = sao.record_id()
            run, = self.rpc(
                'model.account.invoice.run.read', [run_id],
                ['excluded_invoices'], {})
            self.assertEqual(len(run['excluded_invoices']), 1)
            removed, = self.rpc(
                'model.account.invoice.read', run['excluded_invoices'],
                ['number'], {})
        with self.step("Execute"):
            sao.click_button('execute')
            sao.wait_selection('state', 'executed')
            sao.wait_no_error()
            run, = self.rpc(
                'model.account.invoice.run.read', [run_id],
                ['done_line_count', 'line_count', 'zip_file_name'], {})
            self.assertEqual(run['done_line_count'], run['line_count'])
        with self.step("download the PDFs (ZIP)"):
            path = sao.save_binary('zip_file', self.browser.downloads)
            self.assertEqual(os.path.basename(path), run['zip_file_name'])
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            self.assertEqual(len(names), len(invoices) - 1)
            self.assertNotIn(f"{removed['number']}.pdf", names)

    def test_8_collective_invoices(self):
        """Plan Invoices on a monthly contract, merge the two planned
        drafts from the invoice list and give the collective invoice a send
        date"""
        sao = self.sao
        contracts = self.search_read(
            'sale.subscription', [
                ('reference', '=', 'DEMO-024'),
                ('state', '=', 'running'),
                ], ['rec_name'])
        self.assertTrue(contracts, "the demo data has no running DEMO-024")
        contract = contracts[0]
        tomorrow = dt.date.today() + dt.timedelta(days=1)
        with self.step("the contract: Plan Invoices"):
            sao.open_url(f"model/sale.subscription/{contract['id']}")
            sao.wait_view('form')
            self.assertEqual(
                sao.button('plan_invoices').text.casefold(), 'plan invoices')
            sao.click_button('plan_invoices')
            wizard = sao.wizard()
            # the wizard's one list: the invoices to plan
            self.assertEqual(len(sao.wait_rows(wizard, minimum=12)), 12)
        with self.step("a horizon of 2 months"):
            sao.set_char('horizon', '2', wizard)
            sao.wait(lambda d: len(sao.rows(wizard)) == 2,
                "the 2 invoices of 2 months")
        with self.step("Plan: the planned drafts open"):
            sao.dialog_button(wizard, 'Plan')
            sao.wait_closed(wizard)
            sao.wait_no_error()
            sao.wait(lambda d: sao.tab_title().startswith(
                    'Customer Invoices'), "the tab of the planned invoices")
            rows = sao.wait_rows(minimum=2)
            self.assertEqual(len(rows), 2)
        with self.step("Actions › Merge Invoices"):
            for row in rows:
                sao.select_row(row)
            entries = sao.toolbar_menu('action')
            entry, = [e for e in entries if e.text == 'Merge Invoices']
            sao.click(entry)
            wizard = sao.wizard()
            self.assertEqual(len(sao.wait_rows(wizard, minimum=2)), 2)
            sao.dialog_button(wizard, 'Merge')
            sao.wait_closed(wizard)
            sao.wait_no_error()
            sao.wait(lambda d: sao.tab_title() == 'Collective Invoices',
                "the tab of the collective invoice")
            row, = sao.wait_rows()
        with self.step("the send date: tomorrow"):
            sao.open_row(row)
            sao.wait_view('form')
            sao.set_date('send_date', tomorrow)
            sao.save()
        collective = self.search_read(
            'account.invoice', [
                ('subscription_periods.subscription', '=', contract['id']),
                ('collective', '=', True),
                ], ['send_date', 'subscription_periods'])
        self.assertEqual(len(collective), 1)
        self.assertEqual(_date(collective[0]['send_date']), tomorrow)
        self.assertEqual(len(collective[0]['subscription_periods']), 2)

    def test_9_datev_export(self):
        """An accountant exports last month to DATEV (again: a re-run of
        the tests exports it once more); the nightly runs uploaded the
        invoices of DEMO-001 to the document store"""
        sao = self.sao
        first, last = _last_month()
        # the demo posts invoices every night (the automatic deliveries,
        # the office's drafts): last month has some
        invoices = self.search_read('account.invoice', [
                ('type', '=', 'out'),
                ('state', 'in', ['posted', 'paid']),
                ('move.date', '>=', first),
                ('move.date', '<=', last),
                ], ['number'])
        self.assertTrue(invoices,
            "the demo data has no posted customer invoice of last month")

        with self.step("the night's uploads of DEMO-001"):
            lines = self.search_read(
                'account.invoice.run.line', [
                    ('channel', '=', 'document_store'),
                    ('subscription.reference', '=', 'DEMO-001'),
                    ], ['state', 'recipient', 'message', 'run.date'],
                order=[('id', 'DESC')])
            self.assertTrue(lines,
                "the nightly runs uploaded no invoice of DEMO-001 to "
                "the document store")
            self.assertEqual(
                [(l['state'], l['message']) for l in lines],
                [('done', None)] * len(lines))
            self.assertTrue(lines[0]['recipient'].endswith('.pdf'),
                lines[0]['recipient'])
            datev = self.search_read(
                'account.invoice.run.line', [
                    ('channel', '=', 'datev'),
                    ('subscription.reference', '=', 'DEMO-001'),
                    ], ['state'])
            self.assertTrue(datev, "DEMO-001 has no DATEV line")
            self.assertEqual(
                {l['state'] for l in datev}, {'done'})

        with self.step("Financial › Reporting › Export to DATEV"):
            sao.open_menu('Financial', 'Reporting', 'Export to DATEV')
            wizard = sao.wizard()
            title = sao.dialog_title(wizard)
            self.assertTrue(
                title.startswith('Export to DATEV'), f"title {title!r}")
        with self.step("the dates: last month; Export Again"):
            sao.wait_value('date_from', sao.format_date(first), wizard)
            sao.wait_value('date_to', sao.format_date(last), wizard)
            self.assertTrue(sao.widget('documents', wizard).is_selected())
            sao.set_boolean('force', True, wizard)
        with self.step("Export: the DATEV export opens"):
            sao.dialog_button(wizard, 'Export')
            sao.wait_closed(wizard)
            sao.wait_no_error()
            sao.wait(lambda d: sao.tab_title().startswith('DATEV Exports'),
                "the tab DATEV Exports")
            row, = sao.wait_rows()
            self.assertGreater(int(sao.cell(row, 'Bookings') or 0), 0)
            filename = sao.cell(row, 'Booking File Name')
            self.assertTrue(filename.startswith('EXTF_'), filename)
        with self.step("open the export"):
            sao.open_row(row)
            sao.wait_view('form')
            bookings = int(sao.value('booking_count') or 0)
            self.assertGreater(bookings, 0)
            export_id = sao.record_id()
        export, = self.rpc(
            'model.account.datev.export.read', [export_id],
            ['kind', 'forced', 'booking_count', 'document_count',
                'extf_filename', 'date_from', 'date_to',
                'transfer_state', 'transfer_message'], {})
        self.assertEqual(
            (export['kind'], export['forced'], export['booking_count'],
                export['extf_filename']),
            ('period', True, bookings, filename))
        self.assertEqual(
            (_date(export['date_from']), _date(export['date_to'])),
            (first, last))
        self.assertEqual(export['document_count'], len(invoices))
        # the demo's target is a folder (DATEV Belegtransfer)
        self.assertEqual(export['transfer_state'], 'done',
            export['transfer_message'])
        self.assertIn(filename, export['transfer_message'])

    def test_9b_term_terminate_pause(self):
        """A 12-month contract renewed by 12 months with 3 months' notice:
        its notice deadline, terminated; another contract paused"""
        from trytond.modules.recurring_invoice.lifecycle import (
            notice_deadline, term_end)
        sao = self.sao
        today = dt.date.today()
        end = term_end(today, 12)
        deadline = notice_deadline(end, 3, 'month')
        party, service = self.demo_party(), self.demo_service()

        with self.step("a new contract with a monthly recurrence"):
            sao.open_menu('Sales', 'Recurring Invoices')
            self.fill_contract(party, service, today)
            sao.click_button('setup_recurrence')
            wizard = sao.wizard()
            sao.set_selection('preset', 'monthly', wizard)
            sao.set_date('start_date', today, wizard)
            sao.dialog_button(wizard, 'Preview')
            sao.wait_rows(wizard, minimum=1)
            sao.dialog_button(wizard, 'Apply')
            sao.wait_closed(wizard)
            sao.wait_no_error()
        with self.step("tab Term: 12 months, renewal 12, notice 3 months"):
            sao.page('Term')
            sao.set_char('term_months', '12')
            sao.set_char('renewal_months', '12')
            sao.set_char('notice_period', '3')
            self.assertEqual(sao.selection('notice_unit')[0], 'month')
            sao.save()
            sao.wait_no_error()
        with self.step("Quote, Activate: the term end and notice deadline"):
            sao.click_button('quote')
            sao.wait_selection('state', 'quotation')
            sao.click_button('run')
            sao.wait_selection('state', 'running')
            sao.wait_no_error()
            sao.wait_value('term_end', sao.format_date(end))
            sao.wait_value('notice_deadline', sao.format_date(deadline))
        contract_id = sao.record_id()
        with self.step("Terminate: on the earliest date, with a reason"):
            sao.click_button('terminate')
            wizard = sao.wizard()
            sao.wait(lambda d: sao.value('allowed_date', wizard),
                "the earliest date")
            self.assertEqual(
                sao.value('allowed_date', wizard), sao.format_date(end))
            self.assertEqual(sao.value('date', wizard), sao.format_date(end))
            sao.set_many2one(
                'reason', "Terminated by the customer", root=wizard)
            sao.dialog_button(wizard, 'Terminate')
            sao.wait_closed(wizard)
            sao.wait_no_error()
            sao.wait_value('termination_date', sao.format_date(end))
        values, = self.rpc(
            'model.sale.subscription.read', [contract_id],
            ['end_date', 'termination_reason.name'], {})
        self.assertEqual(_date(values['end_date']), end)
        self.assertEqual(values['termination_reason.']['name'],
            "Terminated by the customer")

        # another running contract, not paused yet
        others = self.search_read(
            'sale.subscription', [
                ('state', '=', 'running'),
                ('id', '!=', contract_id),
                ('pauses', '=', None),
                ('reference', '=', 'DEMO-007'),
                ], ['rec_name'])
        self.assertTrue(others, "the demo data has no running DEMO-007")
        other = others[0]
        start = today.replace(day=1) + relativedelta(months=2)
        with self.step("another contract: Pause from the month after next"):
            sao.open_url(f"model/sale.subscription/{other['id']}")
            sao.wait_view('form')
            sao.wait_selection('state', 'running')
            sao.click_button('pause')
            wizard = sao.wizard()
            sao.set_date('date_from', start, wizard)
            sao.set_char('reason', "Praxis im Umbau", wizard)
            sao.dialog_button(wizard, 'Pause')
            sao.wait_closed(wizard)
            sao.wait_no_error()
        with self.step("the pause on the tab Term, the button Resume"):
            sao.page('Term')
            rows = sao.wait_rows(sao.one2many('pauses'))
            self.assertEqual(len(rows), 1)
            self.assertIn(sao.format_date(start), rows[0].text)
            self.assertIn("Praxis im Umbau", rows[0].text)
            self.assertEqual(sao.button('resume').text.casefold(), 'resume')
        pauses = self.search_read(
            'sale.subscription.pause', [('subscription', '=', other['id'])],
            ['date_from', 'date_to', 'reason'])
        self.assertEqual(
            [(_date(p['date_from']), p['date_to'], p['reason'])
                for p in pauses],
            [(start, None, "Praxis im Umbau")])

    def test_9c_revise_prices(self):
        """Every contract: Revise Prices by 3 % from the proposed date,
        preview, revise: the customers told, DEMO-015's planned quarter
        billed in two parts"""
        from trytond.modules.recurring_invoice.price import (
            default_revision_date)
        sao = self.sao
        date = default_revision_date(dt.date.today(), 42)
        mails = len(self.search_read('ir.email', [], ['id']))
        with self.step("Recurring Invoices, tab All: select every contract"):
            sao.open_menu('Sales', 'Recurring Invoices')
            sao.wait_view('tree')
            sao.tab_domain('All')
            rows = sao.wait_rows(minimum=20)
            for row in rows:
                sao.select_row(row)
        with self.step("Actions › Revise Prices: the proposed date"):
            entries = sao.toolbar_menu('action')
            entry, = [e for e in entries if e.text == 'Revise Prices']
            sao.click(entry)
            wizard = sao.wizard()
            sao.wait(lambda d: sao.value('date', wizard),
                "the proposed date")
            self.assertEqual(sao.value('date', wizard), sao.format_date(date))
            self.assertEqual(
                sao.selection('method', wizard)[0], 'percentage')
            sao.set_char('value', '3', wizard)
        with self.step("Preview: each line with its old and new price"):
            sao.dialog_button(wizard, 'Preview')
            preview = sao.wait_rows(wizard, minimum=10)
            self.assertIn('New Price', sao.column_titles(wizard))
        with self.step("Revise"):
            sao.dialog_button(wizard, 'Revise')
            sao.wait_closed(wizard)
            sao.wait_no_error()
        revisions = self.search_read(
            'sale.subscription.price_revision', [('date', '=', date)],
            ['prices', 'letter_pdf_name'])
        self.assertEqual(len(revisions), 1)
        self.assertGreaterEqual(len(revisions[0]['prices']), len(preview))
        self.assertGreater(
            len(self.search_read('ir.email', [], ['id'])), mails)
        lines = self.search_read(
            'account.invoice.line', [
                ('invoice.subscription.reference', '=', 'DEMO-015'),
                ('invoice.state', '=', 'draft'),
                ('invoice.subscription_period_start', '<=', date),
                ('invoice.subscription_period_end', '>=', date),
                ('type', '=', 'line'),
                ], ['service_start_date', 'service_end_date'])
        starts = {_date(l['service_start_date']) for l in lines}
        self.assertIn(date, starts)
        self.assertEqual(len(starts), 2)


class DemoUsersTest(BrowserTestCase):
    """The demo's users: admin works in German, demo-en in English

    Waits for the demo data (tests/demo_data.py) to create them: skipped
    while there is no user demo-en."""
    login = DEMO_EN_LOGIN
    password = 'demo-en-browser-test'

    @classmethod
    def setUpClass(cls):
        srv = case.server()
        session = srv.login()
        users = srv.call(
            session, 'model.res.user.search', [('login', '=', cls.login)],
            0, None, None, {})
        if not users:
            raise unittest.SkipTest(
                "waiting for the demo data: no user 'demo-en' "
                "(German admin, English user demo-en)")
        # the demo's password is not the tests' business
        srv.call(session, 'model.res.user.write', users,
            {'password': cls.password}, {})
        super().setUpClass()

    def test_admin_german(self):
        "The demo data makes the admin work in German"
        self.assertEqual(self.server.admin_language, 'de')

    def test_demo_en_english(self):
        "demo-en sees the menu and the recurring invoices in English"
        sao = self.sao
        with self.step("the menu in English"):
            menu = sao.menu_texts()
            self.assertIn('Sales', menu)
            self.assertNotIn('Verkauf', menu)
        with self.step("Sales › Recurring Invoices"):
            sao.open_menu('Sales', 'Recurring Invoices')
            self.assertEqual(sao.tab_title(), 'Recurring Invoices')


class DemoEinvoiceTest(unittest.TestCase):
    """Every invoice the demo's nights sent carries a valid e-invoice:
    ZUGFeRD (the XML embedded in the PDF) or XRechnung, checked with the
    XSD and the official EN 16931 and XRechnung rules (no browser)"""

    def test_sent_invoices(self):
        "Each sent invoice's e-invoice is valid and is the PDF's"
        import facturx
        from trytond.modules.recurring_invoice.tests.tools import (
            einvoice_report)
        srv = case.server()
        session = srv.login()
        invoices = srv.call(
            session, 'model.account.invoice.search_read', [
                ('type', '=', 'out'), ('sent_date', '!=', None),
                ('sent_channel', '=', 'email')],
            0, None, None, ['number', 'einvoice_format', 'einvoice',
                'invoice_report_cache'], {})
        self.assertTrue(invoices, msg="the demo sent no invoice by e-mail")
        formats = set()
        for invoice in invoices:
            with self.subTest(invoice=invoice['number']):
                formats.add(invoice['einvoice_format'])
                xml = _bytes(invoice['einvoice'])
                self.assertTrue(xml, msg="no e-invoice")
                xrechnung = invoice['einvoice_format'] == 'xrechnung'
                self.assertEqual(einvoice_report(xml, xrechnung), [])
                _, embedded = facturx.get_xml_from_pdf(
                    _bytes(invoice['invoice_report_cache']),
                    check_xsd=False)
                self.assertEqual(embedded, xml)
        self.assertEqual(formats, {'zugferd', 'xrechnung'})


def _bytes(value):
    "The bytes of a JSON-RPC answer"
    if isinstance(value, dict):
        import base64
        return base64.b64decode(value['base64'])
    return value


def _last_month():
    "The first and the last day of last month"
    first = dt.date.today().replace(day=1) - relativedelta(months=1)
    return first, first + relativedelta(day=31)


def _date(value):
    "A date of a JSON-RPC answer"
    if isinstance(value, dict):
        return dt.date(value['year'], value['month'], value['day'])
    return value
