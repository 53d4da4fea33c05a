#!/usr/bin/env python3
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Load the Turnus demo data into a Tryton database (through proteus).

The database must exist with the modules recurring_invoice and
dispatch_order activated (``make demo-db`` does that).  Every step checks
what is already there, so running the script again creates nothing twice.

    python tests/demo_data.py [-d demo] [-c var/trytond.conf] [--date ...]

Creates: the company "Turnus Demo GmbH" (EUR, Germany), German as a
translatable language with its translations loaded, the admin working in
German and an English user (EN_LOGIN, the same groups, company and
employee), a small German chart of accounts (SKR03 numbers: account types
of the German balance sheet and income statement, receivable 1400,
payable 1600, revenue 8300/8400, the taxes "USt 19 %" / "USt 7 %" and
their input tax "VSt 19 %" / "VSt 7 %"), fiscal years with invoice
sequences, a payment term, ~25 customers, service products with their
subscription services and ~25 contracts (sale subscriptions, see
_contracts), each set up with the wizard "Set Up Recurrence" (which
creates and names the rule sets); switches automatic delivery on for the
company and for a few contracts (posted and e-mailed, one also as a
letter, one as letter and direct debit; two also uploaded to the document
store "Nextcloud (Demo)", the local WebDAV server of scripts/demo.sh on
DEMO_DAV_PORT, files in var/dav/, one of them also handed to DATEV).
DATEV: the consultant and client numbers, SKR 03, 8400 and 8300 automatic
accounts, the folder target "DATEV Belegtransfer" (DEMO_DATEV_DIR, default
var/datev/) where each night's Buchungsstapel lands; the accountant
exports a month from Financial › Reporting › Export to DATEV.
With account_payment_sepa activated (scripts/demo.sh does), SEPA direct
debit: the company's creditor identifier, bank account and payment
journal "SEPA-Lastschrift", the validated mandate of the customer of
DIRECT_DEBIT_CONTRACT; its nights prepare the payments and a payment
group per run (see DIRECT_DEBIT_CONTRACT).  Spare parts (MATERIALS) are
billed on additional invoices: by the office with the wizard "Create
Additional Invoice" (ADDITIONAL_INVOICE_CONTRACT) and by today's repair
order of REPAIR_CONTRACT, done with a billable line.

Then it replays the past: each contract is activated on its own day
(Date.today() of the server answers that day, see demo_today), and the
nightly run of every night with invoices due is run for that night, so
that the contracts show the start date rules (catch up on and off, start
date = activation day) with the invoices of the past months, the invoices
delivered automatically are posted on their night and the protocols of
the past nights (account.invoice.run) are confirmed, the one of the last
night is left to confirm.  The e-mails go to the SMTP server of the
trytond configuration ([email] uri; scripts/demo.sh starts a local sink).

Then the dispatch orders (dispatch_order): two technicians (employees
"Max Techniker" and "Erika Monteur") and a dispatch recurrence on eight
of the running contracts, set up with the wizard "Set Up Dispatch" (see
DISPATCH_CONTRACTS): in key date mode the quarterly and half-yearly
maintenance (created 14 days ahead; one contract with dispatch lines of
its own and a service address), a monthly heating check and a fortnightly
cleaning; in planning date mode the seasonal garden care (April to
October), a quarterly window cleaning and a monthly cleaning.  The nights
since the contracts started are replayed with the wizard "Create Dispatch
Orders", each followed by the dispatcher's planning: the orders due within
three weeks get a planning date and their technician, those planned before
today are done (one visit was cancelled); the orders due later and those
of the last two nights wait "To Plan".  So the calendar of Dispatch
Orders shows done visits in the past and planned ones in the coming
weeks.
"""
import argparse
import contextlib
import datetime as dt
import os
import sys
from collections import defaultdict
from decimal import Decimal

from dateutil.relativedelta import relativedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMPANY_NAME = "Turnus Demo GmbH"
COMPANY_EMAIL = "buchhaltung@turnus-demo.example"
PAYMENT_TERM_NAME = "14 Tage netto"
CATEGORY_NAME = "Dienstleistungen"
REFERENCE_PREFIX = "DEMO-"
# internal copy of the invoices delivered by e-mail
DELIVERY_CC = "buchhaltung@turnus-demo.example"

# The office employee of the admin and of the English user (who planned
# the dispatch orders, who confirmed the protocols): name, e-mail
OFFICE_EMPLOYEE = ("Sabine Schreiber", "sabine.schreiber@turnus-demo.example")
# The English user beside the admin (who works in German); the password
# has the 8 characters that Tryton asks for by default ([password] length)
EN_LOGIN = 'demo-en'
EN_NAME = "Demo User (English)"
EN_PASSWORD = os.environ.get('DEMO_EN_PASSWORD') or 'demo1234'

# The German chart of accounts (SKR03 numbers), made directly (no
# templates).  Account types: key, parent key, name, statement, flags.
# The income statement is part of the equity, as in Tryton's own charts:
# the balance sheet shows the result of the year.
CHART_NAME = "SKR03"
ACCOUNT_TYPES = [
    ('root', None, "Kontenrahmen SKR03", None, {}),
    ('aktiva', 'root', "Aktiva", 'balance', {'assets': True}),
    ('umlauf', 'aktiva', "Umlaufvermögen", 'balance', {'assets': True}),
    ('forderungen', 'umlauf',
        "Forderungen aus Lieferungen und Leistungen", 'balance',
        {'assets': True, 'receivable': True}),
    ('sonstige_vg', 'umlauf', "Sonstige Vermögensgegenstände", 'balance',
        {'assets': True}),
    ('liquide', 'umlauf', "Kassenbestand, Guthaben bei Kreditinstituten",
        'balance', {'assets': True}),
    ('passiva', 'root', "Passiva", 'balance', {}),
    ('eigenkapital', 'passiva', "Eigenkapital", 'balance', {}),
    ('gewinnvortrag', 'eigenkapital', "Gewinnvortrag/Verlustvortrag",
        'balance', {}),
    ('guv', 'eigenkapital',
        "Jahresüberschuss/Jahresfehlbetrag (Gewinn- und Verlustrechnung)",
        'income', {}),
    ('erloese', 'guv', "Umsatzerlöse", 'income', {'revenue': True}),
    ('material', 'guv', "Materialaufwand", 'income', {'expense': True}),
    ('sonstiger_aufwand', 'guv', "Sonstige betriebliche Aufwendungen",
        'income', {'expense': True}),
    ('verbindlichkeiten', 'passiva', "Verbindlichkeiten", 'balance', {}),
    ('vll', 'verbindlichkeiten',
        "Verbindlichkeiten aus Lieferungen und Leistungen", 'balance',
        {'payable': True}),
    ('sonstige_vb', 'verbindlichkeiten', "Sonstige Verbindlichkeiten",
        'balance', {}),
    ]
# Accounts: code, name, type key (None: the heading of an account class),
# the code of the heading, options.  Shown as "8400 - Erlöse 19 % USt".
ACCOUNTS = [
    ('0', "Anlage- und Kapitalkonten", None, None, {}),
    ('0860', "Gewinnvortrag vor Verwendung", 'gewinnvortrag', '0', {}),
    ('1', "Finanz- und Privatkonten", None, None, {}),
    ('1000', "Kasse", 'liquide', '1', {}),
    ('1200', "Bank", 'liquide', '1', {}),
    ('1400', "Forderungen aus Lieferungen und Leistungen", 'forderungen',
        '1', {'party_required': True, 'reconcile': True}),
    ('1571', "Abziehbare Vorsteuer 7 %", 'sonstige_vg', '1', {}),
    ('1576', "Abziehbare Vorsteuer 19 %", 'sonstige_vg', '1', {}),
    ('1600', "Verbindlichkeiten aus Lieferungen und Leistungen", 'vll',
        '1', {'party_required': True, 'reconcile': True}),
    ('1771', "Umsatzsteuer 7 %", 'sonstige_vb', '1', {}),
    ('1776', "Umsatzsteuer 19 %", 'sonstige_vb', '1', {}),
    ('3', "Wareneingangs- und Bestandskonten", None, None, {}),
    ('3400', "Wareneingang 19 % Vorsteuer", 'material', '3', {}),
    ('4', "Betriebliche Aufwendungen", None, None, {}),
    ('4900', "Sonstige betriebliche Aufwendungen", 'sonstiger_aufwand', '4',
        {}),
    ('8', "Erlöskonten", None, None, {}),
    ('8300', "Erlöse 7 % USt", 'erloese', '8', {}),
    ('8400', "Erlöse 19 % USt", 'erloese', '8', {}),
    ]
# The accounts by kind (like trytond.modules.account.tests.tools
# .get_accounts)
ACCOUNT_KINDS = {
    'receivable': '1400',
    'payable': '1600',
    'revenue': '8400',
    'expense': '4900',
    'cash': '1000',
    'tax': '1776',
    }
# Tax groups: code, name, kind
TAX_GROUPS = [
    ('USt', "Umsatzsteuer", 'sale'),
    ('VSt', "Vorsteuer", 'purchase'),
    ]
# Taxes: name, description, rate, account (invoices and credit notes),
# group, the accounts that propose it
TAXES = [
    ("USt 19 %", "Umsatzsteuer 19 %", '0.19', '1776', 'USt', ['8400']),
    ("USt 7 %", "Umsatzsteuer 7 %", '0.07', '1771', 'USt', ['8300']),
    ("VSt 19 %", "Abziehbare Vorsteuer 19 %", '0.19', '1576', 'VSt',
        ['3400', '4900']),
    ("VSt 7 %", "Abziehbare Vorsteuer 7 %", '0.07', '1571', 'VSt', []),
    ]
# E-invoices (with edocument_uncefact activated): the company's VAT
# identification number and tax number, the UN/ECE codes of the taxes and
# the public-sector customer that receives XRechnung with its Leitweg-ID
COMPANY_VAT_ID = 'DE123456788'
COMPANY_TAX_NUMBER = '2181508150'
PUBLIC_CUSTOMER = "Stadtwerke Musterstadt GmbH"
PUBLIC_LEITWEG_ID = '06611000-STADTWERKE-24'
CUSTOMER_TAX = "USt 19 %"
SUPPLIER_TAX = "VSt 19 %"

# the contracts (reference number) that deliver their invoices
# automatically, with their channels
AUTOMATIC_DELIVERY = [
    (1, ['email', 'datev', 'document_store']),
    (2, ['email', 'letter']),
    (3, ['email', 'document_store']),
    # the public-sector customer: XRechnung (see PUBLIC_CUSTOMER)
    (8, ['email']),
    (13, ['email']),
    (19, ['letter', 'direct_debit']),
    ]

# The contracts with a term: (term months, renewal months, notice period,
# notice unit); DEMO-003's notice deadline is at the end of this month, so
# it is under "Notice Deadlines" and the admin was reminded of it
TERMS = {
    2: (12, 12, 3, 'month'),
    3: (12, 12, 1, 'month'),
    }

# Pauses (contract, first day, last day or None, reason), days counted from
# the first of this month: DEMO-005's rentals, posted by the office, are
# paused from the 10th to the 20th (a draft credit note refunds the 11
# days), DEMO-016 is paused from the first of next month until resumed
PAUSES = [
    (5, 9, 19, "Umbau der Kanzleiküche"),
    (16, 'next_month', None, "Umkleiden wegen Sanierung geschlossen"),
    ]

# the channels added to the contracts of AUTOMATIC_DELIVERY of a demo
# database made before them (the others are left as the office set them)
NEW_CHANNELS = ['datev', 'document_store']

# SEPA direct debit (with account_payment_sepa activated): the company's
# creditor identifier, its bank and account, the payment journal of the
# collections; the customer of DIRECT_DEBIT_CONTRACT (delivered by letter
# and direct debit) signed a recurrent mandate for its account on the
# contract's activation day, so each night that posts one of its invoices
# prepares the draft payment and the run's payment group (the groups of
# the past nights are processed: their pain.008 is generated, the last one
# waits for "Process Payments")
DIRECT_DEBIT_CONTRACT = 19
SEPA_CREDITOR_IDENTIFIER = 'DE98ZZZ09999999999'
# bank name, BIC, IBAN of the company, of the customer
SEPA_COMPANY_BANK = (
    "Commerzbank AG", 'COBADEFFXXX', 'DE89370400440532013000')
SEPA_CUSTOMER_BANK = (
    "Förde Sparkasse", 'NOLADE21KIE', 'DE68210501700012345678')
SEPA_MANDATE = 'MANDAT-0001'
SEPA_JOURNAL_NAME = "SEPA-Lastschrift"

# Goods sold beside the contracts: name, code, list price (net, EUR)
MATERIALS = [
    ("Ersatzfilter Kaffeeautomat", "ERSATZFILTER", Decimal('14.90')),
    ("Luftfilter F7", "LUFTFILTER-F7", Decimal('24.50')),
    ]
# An additional invoice: ADDITIONAL_INVOICE_DAYS before today the office
# billed the customer of this contract the ordered spare filters with the
# wizard "Create Additional Invoice" (material code, quantity); the
# contract's additional delivery settings (ADDITIONAL_CHANNELS, posted)
# deliver it the night after
ADDITIONAL_INVOICE_CONTRACT = 19
ADDITIONAL_INVOICE_DAYS = 10
ADDITIONAL_INVOICE_LINES = [("ERSATZFILTER", 2)]
ADDITIONAL_CHANNELS = ['email', 'direct_debit']

# DATEV: the tax advisor's consultant number (Beraternummer) and the
# company's client number (Mandantennummer), SKR 03 with 4-digit G/L
# accounts; the revenue accounts are automatic accounts (DATEV derives the
# VAT), the taxes carry their tax keys; the customer of DEMO-001 has a
# debtor account of its own (the others book on 1400).  The exports go to
# a folder that DATEV Belegtransfer would watch (DEMO_DATEV_DIR, default
# var/datev).
DATEV_CONSULTANT_NUMBER = 29098
DATEV_CLIENT_NUMBER = 55003
DATEV_CHART = 'skr03'
DATEV_ACCOUNT_LENGTH = 4
DATEV_AUTOMATIC_ACCOUNTS = ['8400', '8300']
DATEV_TAX_KEYS = {"USt 19 %": '3', "USt 7 %": '2'}
DATEV_DEBTORS = {0: '10000'}  # index in CUSTOMERS: debtor account
DATEV_TARGET_NAME = "DATEV Belegtransfer"
DATEV_DIR = os.path.abspath(
    os.environ.get('DEMO_DATEV_DIR')
    or os.path.join(ROOT, 'var', 'datev'))
# The document store of the demo: the local WebDAV server that
# scripts/demo.sh starts (files in var/dav/)
DOCUMENT_STORE_NAME = "Nextcloud (Demo)"
DAV_PORT = int(os.environ.get('DEMO_DAV_PORT') or 8090)
DOCUMENT_STORE_URL = f'http://127.0.0.1:{DAV_PORT}/'
DOCUMENT_STORE_PATTERN = 'Rechnungen/{year}/{party}/{number}.pdf'

# collective invoices: this contract's invoices of the next 12 months are
# planned and merged pairwise, the first collective invoice is sent
# tomorrow
COLLECTIVE_CONTRACT = 13
COLLECTIVE_HORIZON = 12

# the contracts whose new invoices the office checks and posts the day
# they are created (not delivered: a manual invoice run sends them)
OFFICE_POSTED = [5, 6, 11, 14, 16, 17, 21]
# invoice runs: the customers of these contracts want their invoices by
# letter, and the one of IGNORED_IN_RUNS is left out of invoice runs
LETTER_CUSTOMERS = [6, 16]
IGNORED_IN_RUNS = [17]

# name, street, number, postal code, city, e-mail
CUSTOMERS = [
    ("Bäckerei Sonnenschein GmbH", "Lindenstraße", "12", "10969", "Berlin",
        "rechnung@baeckerei-sonnenschein.example"),
    ("Autohaus Weber KG", "Industriestraße", "7", "70565", "Stuttgart",
        "buchhaltung@autohaus-weber.example"),
    ("Zahnarztpraxis Dr. Keller", "Marktplatz", "3", "93047", "Regensburg",
        "praxis@dr-keller.example"),
    ("Hotel Alpenblick GmbH & Co. KG", "Bergstraße", "21", "82467",
        "Garmisch-Partenkirchen", "rezeption@alpenblick.example"),
    ("Kanzlei Schulz & Partner", "Königsallee", "60", "40212", "Düsseldorf",
        "office@kanzlei-schulz.example"),
    ("Metallbau Hoffmann GmbH", "Gewerbering", "5", "44137", "Dortmund",
        "info@metallbau-hoffmann.example"),
    ("Physiotherapie Bewegung e.K.", "Schillerstraße", "18", "04109",
        "Leipzig", "team@physio-bewegung.example"),
    ("Stadtwerke Musterstadt GmbH", "Am Wasserturm", "1", "34117", "Kassel",
        "einkauf@stadtwerke-musterstadt.example"),
    ("Blumen Fischer", "Gartenweg", "4", "28195", "Bremen",
        "laden@blumen-fischer.example"),
    ("IT-Service Becker GmbH", "Technologiepark", "9", "76131", "Karlsruhe",
        "billing@it-becker.example"),
    ("Restaurant Zur Linde", "Dorfstraße", "2", "97070", "Würzburg",
        "wirt@zur-linde.example"),
    ("Wohnungsbau Nord eG", "Hafenstraße", "33", "20457", "Hamburg",
        "verwaltung@wohnungsbau-nord.example"),
    ("Kindergarten Regenbogen e.V.", "Wiesenweg", "15", "80331", "München",
        "kita@regenbogen-ev.example"),
    ("Optik Wagner", "Hauptstraße", "45", "69117", "Heidelberg",
        "kontakt@optik-wagner.example"),
    ("Druckerei Schneider GmbH", "Papiermühle", "8", "50667", "Köln",
        "auftrag@druckerei-schneider.example"),
    ("Fitnessstudio Kraftwerk", "Bahnhofstraße", "27", "30159", "Hannover",
        "studio@kraftwerk-fitness.example"),
    ("Tierarztpraxis Am Park", "Parkallee", "11", "01067", "Dresden",
        "praxis@tierarzt-ampark.example"),
    ("Steuerbüro Richter", "Rathausplatz", "6", "90403", "Nürnberg",
        "mail@steuerbuero-richter.example"),
    ("Landgasthof Müller", "Mühlenweg", "19", "24103", "Kiel",
        "gasthof@landgasthof-mueller.example"),
    ("Architekturbüro Lange", "Domstraße", "14", "55116", "Mainz",
        "info@architektur-lange.example"),
    ("Hausverwaltung Klein GmbH", "Ringstraße", "40", "60311",
        "Frankfurt am Main", "verwaltung@hv-klein.example"),
    ("Bauunternehmen Schmitt GmbH", "Baustraße", "2", "66111", "Saarbrücken",
        "bauleitung@schmitt-bau.example"),
    ("Gärtnerei Grünwald", "Am Gewächshaus", "3", "14467", "Potsdam",
        "hallo@gaertnerei-gruenwald.example"),
    ("Musikschule Klangfarbe e.V.", "Lortzingstraße", "9", "39104",
        "Magdeburg", "verwaltung@musikschule-klangfarbe.example"),
    ]

# name, code, list price (net, EUR), prorate a period shortened by an end
# date (the rentals)
SERVICES = [
    ("Wartungsvertrag Heizung", "WART-HZG", Decimal('39.00'), False),
    ("Gartenpflege", "GARTEN", Decimal('180.00'), False),
    ("Miete Kaffeeautomat", "MIETE-KAFFEE", Decimal('49.90'), True),
    ("Reinigung Büro", "REINIGUNG", Decimal('420.00'), False),
    ("Hosting", "HOSTING", Decimal('12.50'), False),
    ("Wartung Aufzug", "WART-AUFZUG", Decimal('290.00'), False),
    ("Winterdienst", "WINTER", Decimal('150.00'), False),
    ("Softwarelizenz Praxis", "LIZENZ", Decimal('600.00'), False),
    ("Fensterreinigung", "FENSTER", Decimal('95.00'), False),
    ("Hausmeisterservice", "HAUSMEISTER", Decimal('260.00'), False),
    ("Miete Wasserspender", "MIETE-WASSER", Decimal('24.90'), True),
    ("Wartung Klimaanlage", "WART-KLIMA", Decimal('120.00'), False),
    ]


# The technicians of the dispatch orders: name, e-mail
TECHNICIANS = [
    ("Max Techniker", "max.techniker@turnus-demo.example"),
    ("Erika Monteur", "erika.monteur@turnus-demo.example"),
    ]
# The contracts (reference number) with dispatch orders: the rhythm for
# the wizard "Set Up Dispatch", the mode, the lead time (days), the
# technician (index in TECHNICIANS) and the days from the due date to the
# visit the dispatcher plans (moved off weekends).  Key date: maintenance
# due on the fixed dates of the rhythm; planning date: the next visit is
# due one interval after the planned one.  The fortnightly and the monthly
# cleaning are created weeks ahead (more than DISPATCH_HORIZON and one
# interval), so one order of each always waits to be planned.
DISPATCH_CONTRACTS = [
    (6, dict(preset='quarterly'), 'key_date', 14, 0, 3),
    (11, dict(preset='half_yearly'), 'key_date', 14, 1, 8),
    (15, dict(preset='quarterly'), 'key_date', 14, 0, 1),
    (7, dict(preset='every_n_weeks', interval=2), 'key_date', 35, 1, 1),
    (1, dict(preset='monthly'), 'key_date', 14, 0, 9),
    (4, dict(preset='seasonal', months=[str(m) for m in range(4, 11)]),
        'planning_date', 7, 0, 0),
    (13, dict(preset='quarterly'), 'planning_date', 21, 1, 2),
    (2, dict(preset='monthly'), 'planning_date', 56, 1, 0),
    ]
# The contract whose dispatch orders have lines of their own (instead of
# the lines of the contract) and a service address of its own:
# [(service code or None, quantity, description)], address
DISPATCH_LINES_CONTRACT = 15
DISPATCH_LINES = [
    ("WART-HZG", 1, "Wartung Heizkessel und Brenner"),
    ("WART-KLIMA", 1, "Wartung Klimaanlage Druckhalle"),
    (None, 4, "Luftfilter der Lüftungsanlage tauschen"),
    ]
SERVICE_ADDRESS = (
    "Druckerei Schneider GmbH, Druckhalle", "Am Rheinhafen", "5", "50829",
    "Köln")
# The customer called off the first visit of this contract
CANCELLED_VISIT_CONTRACT = 6
# Today a technician (index in TECHNICIANS) repaired the ventilation of
# this contract on a dispatch order of its own and fitted material that is
# not part of the contract: its billable lines (material code, quantity)
# are billed on an additional invoice of the contract when it is done (a
# draft for the office), the other line is the work under the contract
REPAIR_CONTRACT = 15
REPAIR_DESCRIPTION = "Störung Lüftungsanlage Druckhalle"
REPAIR_TECHNICIAN = 0
REPAIR_LINES = [("LUFTFILTER-F7", 4)]
REPAIR_WORK = ("WART-KLIMA", "Lüftungsanlage entstört, Filter getauscht")
REPAIR_NOTES = "Luftfilter stark verschmutzt, vier Filter F7 eingebaut."
# The dispatcher plans the orders due within DISPATCH_HORIZON days of
# today; the orders created in the last DISPATCH_BACKLOG_NIGHTS nights and
# those due later wait to be planned ("To Plan")
DISPATCH_HORIZON = 21
DISPATCH_BACKLOG_NIGHTS = 2


def _contracts(today):
    """The demo contracts (DEMO-001, DEMO-002, ... in this order), dates
    relative to today

    Each is a dict: customer (index in CUSTOMERS), lines [(service code,
    quantity)], recurrence (the wizard's preset and its options), timing,
    start, catch_up, end, description and activated: the day the office
    pressed "Activate" (None: left as a quotation, to activate).  Most
    contracts are activated two weeks before they start, so their
    invoices run from the start date on; the others show a start date
    rule (README.md lists what each contract shows)."""
    month = today.replace(day=1)

    def months(n):
        return month + relativedelta(months=n)

    def signed(start, days=14):
        "Activated some days before the start date"
        return start - dt.timedelta(days=days)

    quarter = month - relativedelta(months=(month.month - 1) % 3)
    monday = today - dt.timedelta(days=today.weekday())
    april = dt.date(today.year, 4, 1)
    if april > today:
        april = april.replace(year=today.year - 1)
    november = dt.date(today.year, 11, 1)
    if november > today:
        november = november.replace(year=today.year - 1)
    # the last day of a month with 31 days, four or five months ago
    month_end = months(-4) + relativedelta(day=31)
    if month_end.day != 31:
        month_end = months(-5) + relativedelta(day=31)
    season = [str(m) for m in range(4, 11)]  # April to October
    winter = ['11', '12', '1', '2', '3']

    def contract(customer, lines, recurrence, timing, start, description,
            catch_up=False, end=None, activated=None):
        return dict(customer=customer, lines=lines, recurrence=recurrence,
            timing=timing, start=start, catch_up=catch_up, end=end,
            description=description, activated=activated)

    return [
        # 001: monthly in advance, e-mailed
        contract(0, [("WART-HZG", 1)], dict(preset='monthly'), 'advance',
            months(-5), "Heizungswartung Filiale Kreuzberg",
            activated=signed(months(-5))),
        # 002: monthly in arrears, e-mail and letter
        contract(1, [("REINIGUNG", 1), ("FENSTER", 2)],
            dict(preset='monthly'), 'arrears', months(-3),
            "Reinigung Verkaufsraum und Werkstatt",
            activated=signed(months(-3))),
        # 003: yearly in advance, e-mailed
        contract(2, [("LIZENZ", 1)], dict(preset='yearly'), 'advance',
            months(-10), "Praxissoftware Jahreslizenz",
            activated=signed(months(-10), 7)),
        # 004: seasonal, April to October
        contract(3, [("GARTEN", 1)], dict(preset='seasonal', months=season),
            'advance', april,
            "Gartenpflege Hotelanlage (April bis Oktober)",
            activated=signed(april)),
        # 005: catch up off, start in the past: nothing before the
        # activation day is invoiced
        contract(4, [("MIETE-KAFFEE", 2), ("MIETE-WASSER", 1)],
            dict(preset='monthly'), 'advance', months(-4),
            "Getränkeautomaten Kanzlei (nachträglich erfasst)",
            activated=months(-2) + dt.timedelta(days=9)),
        # 006: quarterly in arrears
        contract(5, [("WART-AUFZUG", 1)], dict(preset='quarterly'),
            'arrears', quarter - relativedelta(months=6),
            "Aufzugswartung Lastenaufzug",
            activated=signed(quarter - relativedelta(months=6))),
        # 007: every 2 weeks in arrears
        contract(6, [("REINIGUNG", 1)],
            dict(preset='every_n_weeks', interval=2), 'arrears',
            monday - dt.timedelta(weeks=8), "Praxisreinigung 14-täglich",
            activated=signed(monday - dt.timedelta(weeks=8), 7)),
        # 008: catch up on: activated last month, every month since the
        # start invoiced the night after; ends in two months
        contract(7, [("HAUSMEISTER", 3)], dict(preset='monthly'), 'advance',
            months(-4), "Hausmeisterservice Pumpwerke (befristet)",
            catch_up=True, end=months(2) - dt.timedelta(days=1),
            activated=months(-1) + dt.timedelta(days=14)),
        # 009: seasonal in arrears
        contract(8, [("GARTEN", 1)], dict(preset='seasonal', months=season),
            'arrears', april, "Pflege Schaugarten",
            activated=signed(april)),
        # 010: starts next month
        contract(9, [("HOSTING", 4)], dict(preset='monthly'), 'advance',
            months(1), "Webhosting vier Domains (Start nächsten Monat)",
            activated=today),
        # 011: half-yearly in advance
        contract(10, [("WART-KLIMA", 1)], dict(preset='half_yearly'),
            'advance', months(-7), "Klimaanlage Gastraum",
            activated=signed(months(-7))),
        # 012: seasonal over the turn of the year (November to March)
        contract(11, [("WINTER", 2)], dict(preset='seasonal', months=winter),
            'advance', november, "Winterdienst Wohnanlagen",
            activated=signed(november)),
        # 013: every 2 months, e-mailed
        contract(12, [("FENSTER", 1)], dict(preset='bimonthly'), 'advance',
            months(-6), "Fensterreinigung Kita",
            activated=signed(months(-6))),
        # 014: yearly in arrears
        contract(13, [("HOSTING", 1)], dict(preset='yearly'), 'arrears',
            months(-12), "Webshop-Hosting",
            activated=signed(months(-12))),
        # 015: quarterly in advance (dispatch lines of its own)
        contract(14, [("WART-HZG", 1), ("WART-KLIMA", 1)],
            dict(preset='quarterly'), 'advance',
            quarter - relativedelta(months=3), "Haustechnik Druckhalle",
            activated=signed(quarter - relativedelta(months=3))),
        # 016: weekly in arrears
        contract(15, [("REINIGUNG", 1)], dict(preset='weekly'), 'arrears',
            monday - dt.timedelta(weeks=3),
            "Reinigung Umkleiden wöchentlich",
            activated=signed(monday - dt.timedelta(weeks=3), 7)),
        # 017: every 4 months
        contract(16, [("MIETE-WASSER", 2)],
            dict(preset='every_n_months', interval=4), 'advance',
            months(-8), "Wasserspender Wartezimmer",
            activated=signed(months(-8))),
        # 018: a quotation, to activate
        contract(17, [("LIZENZ", 1), ("HOSTING", 1)], dict(preset='yearly'),
            'advance', months(1), "Kanzleisoftware mit Hosting (Angebot)"),
        # 019: monthly in arrears, letter and direct debit
        contract(18, [("MIETE-KAFFEE", 1)], dict(preset='monthly'),
            'arrears', months(-3), "Kaffeeautomat Gaststube",
            activated=signed(months(-3))),
        # 020: starts next quarter
        contract(19, [("WART-HZG", 1)], dict(preset='quarterly'), 'advance',
            quarter + relativedelta(months=3),
            "Heizungswartung Neubau (Start nächstes Quartal)",
            activated=today),
        # 021: month end: starts on the 31st, then the last day of the
        # shorter months
        contract(20, [("HAUSMEISTER", 1)], dict(preset='monthly'), 'advance',
            month_end, "Hausmeisterservice zum Monatsende",
            activated=signed(month_end)),
        # 022: ended in the middle of its last quarter: the rentals are
        # prorated, then the contract is closed
        contract(21, [("MIETE-KAFFEE", 1), ("MIETE-WASSER", 2)],
            dict(preset='quarterly'), 'advance', months(-7),
            "Baustellenbüro Getränkeautomaten (befristet)",
            end=months(-1) + dt.timedelta(days=14),
            activated=signed(months(-7))),
        # 023: catch up on, activated today: its past months are due
        contract(22, [("GARTEN", 1)], dict(preset='monthly'), 'advance',
            months(-3), "Pflege Schauhaus (heute aktiviert)",
            catch_up=True, activated=today),
        # 024: start date = activation day: that period counts as
        # invoiced, the first invoice falls one month later
        contract(23, [("REINIGUNG", 1)], dict(preset='monthly'), 'advance',
            months(-3) + dt.timedelta(days=14),
            "Reinigung Unterrichtsräume",
            activated=months(-3) + dt.timedelta(days=14)),
        ]


def log(message):
    print(message, flush=True)


@contextlib.contextmanager
def demo_today(config, date):
    """Make the server's Date.today() answer date (the database's pool is
    in this process): the demo replays the past days, the office
    activating contracts and the nightly runs, as if each were today"""
    Date = config.pool.get('ir.date')
    saved = Date.__dict__.get('today')
    Date.today = classmethod(lambda cls, timezone=None: date)
    try:
        yield
    finally:
        if saved is None:
            del Date.today
        else:
            Date.today = saved


def set_language(config):
    from proteus import Model
    Lang = Model.get('ir.lang')
    de, = Lang.find([('code', '=', 'de')])
    if not de.translatable:
        de.translatable = True
        de.save()
        log("German set translatable, loading translations")
        de.click('load_translations')
    return de


def get_currency():
    from proteus import Model
    Currency = Model.get('currency.currency')
    Rate = Model.get('currency.currency.rate')
    currencies = Currency.find([('code', '=', 'EUR')])
    if currencies:
        eur, = currencies
    else:
        eur = Currency(
            name="Euro", code='EUR', symbol="€", numeric_code='978',
            rounding=Decimal('0.01'), digits=2)
        eur.save()
    if not eur.rates:
        Rate(currency=eur, date=dt.date(2000, 1, 1), rate=Decimal(1)).save()
    return eur


def get_germany():
    from proteus import Model
    Country = Model.get('country.country')
    countries = Country.find([('code', '=', 'DE')])
    if countries:
        return countries[0]
    germany = Country(name="Deutschland", code='DE', code3='DEU',
        code_numeric='276')
    germany.save()
    return germany


def new_address(party, street, number, postal_code, city, country):
    address = party.addresses[0] if party.addresses else party.addresses.new()
    address.street_name = street
    address.building_number = number
    address.postal_code = postal_code
    address.city = city
    address.country = country
    address.invoice = True
    return address


def setup_company(config, lang, country):
    from proteus import Model, Wizard
    Company = Model.get('company.company')
    Party = Model.get('party.party')
    User = Model.get('res.user')

    companies = Company.find([('party.name', '=', COMPANY_NAME)])
    if companies:
        company, = companies
    else:
        log(f"company {COMPANY_NAME}")
        parties = Party.find([('name', '=', COMPANY_NAME)])
        if parties:
            party = parties[0]
        else:
            party = Party(name=COMPANY_NAME)
            party.lang = lang
            new_address(party, "Musterstraße", "12", "50667", "Köln",
                country)
            party.contact_mechanisms.new(type='email', value=COMPANY_EMAIL)
            party.contact_mechanisms.new(
                type='phone', value="+49 221 1234560")
            party.save()
        company_config = Wizard('company.company.config')
        company_config.execute('company')
        company_config.form.party = party
        company_config.form.currency = get_currency()
        company_config.form.timezone = 'Europe/Berlin'
        company_config.execute('add')
        company, = Company.find([('party.name', '=', COMPANY_NAME)])

    # the admin works in the demo company
    admin, = User.find([('login', '=', 'admin')])
    if company not in admin.companies or admin.company != company:
        if company not in admin.companies:
            admin.companies.append(Company(company.id))
        admin.company = company
        admin.save()
    config._context = User.get_preferences(True, {})

    # The scheduled tasks were created when the modules were activated,
    # before the company existed: register the company on them (an empty
    # list runs them without a company in the context).
    Cron = Model.get('ir.cron')
    crons = [c for c in Cron.find([])
        if company.id not in [x.id for x in c.companies]]
    for cron in crons:
        cron.companies.append(Company(company.id))
    if crons:
        Cron.save(crons)
        log(f"company registered on {len(crons)} scheduled tasks")
    return Company(company.id)


def setup_users(config, company, de):
    """The admin works in German with the office employee; the English
    user EN_LOGIN has the admin's groups, company and employee"""
    from proteus import Model
    User = Model.get('res.user')
    Group = Model.get('res.group')
    Lang = Model.get('ir.lang')
    Company = Model.get('company.company')
    Employee = Model.get('company.employee')

    name, email = OFFICE_EMPLOYEE
    employee = get_employee(company, name, email, "office employee")

    admin, = User.find([('login', '=', 'admin')])
    if (admin.language != de
            or employee not in admin.employees
            or admin.employee != employee):
        admin.language = de
        if employee not in admin.employees:
            admin.employees.append(Employee(employee.id))
        admin.employee = employee
        admin.save()
        log(f"admin: German, employee {name}")
    # the data is loaded in the database's language (English): records
    # are found by their English names, translated ones get their German
    # translation as in the client
    config._context = User.get_preferences(True, {})
    config._context['language'] = 'en'

    en, = Lang.find([('code', '=', 'en')])
    users = User.find([('login', '=', EN_LOGIN)])
    if users:
        user, = users
    else:
        user = User(name=EN_NAME, login=EN_LOGIN)
        user.password = EN_PASSWORD
        user.language = en
        log(f"user {EN_LOGIN} (English)")
    changed = user.id is None or user.id < 0
    for group in admin.groups:
        if group not in user.groups:
            user.groups.append(Group(group.id))
            changed = True
    for company_ in admin.companies:
        if company_ not in user.companies:
            user.companies.append(Company(company_.id))
            changed = True
    if employee not in user.employees:
        user.employees.append(Employee(employee.id))
        changed = True
    if user.company != company or user.employee != employee:
        user.company = company
        user.employee = employee
        changed = True
    if changed:
        user.save()


def setup_chart(company):
    """The German chart of accounts (ACCOUNT_TYPES, ACCOUNTS, TAXES) of
    the company, made where missing; return the accounts by code and the
    taxes by name"""
    from proteus import Model
    Type = Model.get('account.account.type')
    Account = Model.get('account.account')
    TaxGroup = Model.get('account.tax.group')
    Tax = Model.get('account.tax')

    types, new = {}, 0
    for sequence, (key, parent, name, statement, flags) in enumerate(
            ACCOUNT_TYPES, 1):
        found = Type.find([
                ('company', '=', company.id), ('name', '=', name)], limit=1)
        if found:
            types[key], = found
            continue
        type_ = Type(name=name, company=company, sequence=sequence * 10)
        if parent:
            type_.parent = types[parent]
        type_.statement = statement
        for field, value in flags.items():
            setattr(type_, field, value)
        type_.save()
        types[key] = type_
        new += 1

    roots = Account.find([
            ('company', '=', company.id),
            ('parent', '=', None),
            ('name', '=', CHART_NAME),
            ], limit=1)
    if roots:
        root, = roots
    else:
        root = Account(name=CHART_NAME, company=company,
            type=types['root'], closed=True)
        root.save()
        new += 1
    accounts = {}
    for code, name, type_key, parent, options in ACCOUNTS:
        found = Account.find([
                ('company', '=', company.id), ('code', '=', code)], limit=1)
        if found:
            accounts[code], = found
            continue
        account = Account(code=code, name=name, company=company)
        # the parent proposes its type (on_change): a heading has none
        account.parent = accounts[parent] if parent else root
        account.type = types[type_key] if type_key else None
        for field, value in options.items():
            setattr(account, field, value)
        account.save()
        accounts[code] = account
        new += 1

    groups = {}
    for code, name, kind in TAX_GROUPS:
        found = TaxGroup.find([('code', '=', code)], limit=1)
        if found:
            groups[code], = found
        else:
            groups[code] = TaxGroup(code=code, name=name, kind=kind)
            groups[code].save()
            new += 1
    taxes = {}
    for name, description, rate, code, group, default_for in TAXES:
        found = Tax.find([
                ('company', '=', company.id), ('name', '=', name)], limit=1)
        if found:
            taxes[name], = found
            continue
        tax = Tax(name=name, description=description, company=company)
        tax.type = 'percentage'
        tax.rate = Decimal(rate)
        tax.group = groups[group]
        tax.invoice_account = accounts[code]
        tax.credit_note_account = accounts[code]
        tax.save()
        taxes[name] = tax
        new += 1
        # the accounts propose the tax (e.g. on a supplier invoice line)
        for account_code in default_for:
            account = Account(accounts[account_code].id)
            account.taxes.append(Tax(tax.id))
            account.save()
    if new:
        log(f"chart of accounts {CHART_NAME}: {new} account types, "
            "accounts, tax groups and taxes")
    return accounts, taxes


def setup_accounting(config, company, years):
    from proteus import Model
    from trytond.modules.account.tests.tools import create_fiscalyear
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    FiscalYear = Model.get('account.fiscalyear')
    PaymentTerm = Model.get('account.invoice.payment_term')
    Configuration = Model.get('account.configuration')

    by_code, taxes = setup_chart(company)
    accounts = {kind: by_code[code] for kind, code in ACCOUNT_KINDS.items()}

    # the default accounts of parties (receivable, payable) and of new
    # product categories
    configuration = Configuration(1)
    defaults = {
        'default_account_receivable': accounts['receivable'],
        'default_account_payable': accounts['payable'],
        'default_category_account_revenue': accounts['revenue'],
        'default_category_account_expense': accounts['expense'],
        }
    changed = False
    for field, account in defaults.items():
        if getattr(configuration, field) != account:
            setattr(configuration, field, account)
            changed = True
    if changed:
        configuration.save()

    for year in years:
        start, end = dt.date(year, 1, 1), dt.date(year, 12, 31)
        fiscalyears = FiscalYear.find([
                ('company', '=', company.id),
                ('start_date', '<=', end),
                ('end_date', '>=', start),
                ])
        if fiscalyears:
            # posting the delivered invoices needs the periods
            for fiscalyear in fiscalyears:
                if not fiscalyear.periods:
                    log(f"periods of fiscal year {fiscalyear.name}")
                    fiscalyear.click('create_period')
            continue
        log(f"fiscal year {year}")
        fiscalyear = set_fiscalyear_invoice_sequences(
            create_fiscalyear(company, (start, end), config=config),
            config=config)
        fiscalyear.save()
        fiscalyear.click('create_period')

    terms = PaymentTerm.find([('name', '=', PAYMENT_TERM_NAME)])
    if terms:
        payment_term, = terms
    else:
        payment_term = PaymentTerm(name=PAYMENT_TERM_NAME)
        line = payment_term.lines.new(type='remainder')
        line.relativedeltas.new(days=14)
        payment_term.save()
    return accounts, taxes, payment_term


def setup_customers(lang, country, payment_term):
    from proteus import Model
    Party = Model.get('party.party')
    customers = []
    new = 0
    for name, street, number, postal_code, city, email in CUSTOMERS:
        parties = Party.find([('name', '=', name)])
        if parties:
            customers.append(parties[0])
            continue
        party = Party(name=name)
        party.lang = lang
        new_address(party, street, number, postal_code, city, country)
        party.contact_mechanisms.new(type='email', value=email)
        party.customer_payment_term = payment_term
        party.save()
        customers.append(party)
        new += 1
    if new:
        log(f"{new} customers")
    return customers


def setup_services(accounts, taxes):
    from proteus import Model
    Category = Model.get('product.category')
    Template = Model.get('product.template')
    Product = Model.get('product.product')
    Service = Model.get('sale.subscription.service')
    Uom = Model.get('product.uom')

    categories = Category.find([('name', '=', CATEGORY_NAME)])
    if categories:
        category, = categories
    else:
        category = Category(name=CATEGORY_NAME)
        category.accounting = True
        category.account_revenue = accounts['revenue']
        category.account_expense = accounts['expense']
        category.customer_taxes.append(taxes[CUSTOMER_TAX])
        category.supplier_taxes.append(taxes[SUPPLIER_TAX])
        category.save()

    unit, = Uom.find([('name', '=', "Unit")])
    services = {}
    new = 0
    for name, code, price, prorate in SERVICES:
        products = Product.find([('code', '=', code)])
        if products:
            product, = products
            template = product.template
            if bool(template.subscription_prorate) != prorate:
                template.subscription_prorate = prorate
                template.save()
        else:
            template = Template(name=name)
            template.code = code
            template.type = 'service'
            template.default_uom = unit
            template.list_price = price
            template.salable = True
            template.account_category = category
            template.subscription_prorate = prorate
            template.save()
            product, = template.products
            new += 1
        found = Service.find([('product', '=', product.id)])
        if found:
            service, = found
        else:
            service = Service(product=product)
            service.save()
        services[code] = service
    if new:
        log(f"{new} service products")
    return services


def setup_materials():
    """The goods of MATERIALS (spare parts sold beside the contracts), in
    the category of the services; return the products by code"""
    from proteus import Model
    Category = Model.get('product.category')
    Template = Model.get('product.template')
    Product = Model.get('product.product')
    Uom = Model.get('product.uom')

    category, = Category.find([('name', '=', CATEGORY_NAME)])
    unit, = Uom.find([('name', '=', "Unit")])
    materials = {}
    new = 0
    for name, code, price in MATERIALS:
        products = Product.find([('code', '=', code)])
        if products:
            materials[code], = products
            continue
        template = Template(name=name)
        template.code = code
        template.type = 'goods'
        template.default_uom = unit
        template.list_price = price
        template.salable = True
        template.account_category = category
        template.save()
        materials[code], = template.products
        new += 1
    if new:
        log(f"{new} material products")
    return materials


def setup_contracts(config, customers, services, today):
    """Create the contracts of _contracts that are missing, as drafts set
    up with the wizard "Set Up Recurrence" (it creates and names the rule
    sets), quote those without activation day; return the drafts to
    activate: {day: [contract]}"""
    from proteus import Model, Wizard
    Subscription = Model.get('sale.subscription')

    activations = defaultdict(list)
    for i, values in enumerate(_contracts(today), 1):
        reference = f'{REFERENCE_PREFIX}{i:03d}'
        customer = customers[values['customer']]
        found = Subscription.find([('reference', '=', reference)])
        if found:
            subscription, = found
            if subscription.state != 'draft':
                continue
        else:
            # a draft needs no invoice recurrence: the wizard sets it
            subscription = Subscription()
            subscription.reference = reference
            subscription.description = values['description']
            subscription.party = customer
            subscription.start_date = values['start']
            subscription.end_date = values['end']
            for code, quantity in values['lines']:
                line = subscription.lines.new()
                line.service = services[code]
                line.quantity = quantity
            subscription.save()

        if not subscription.invoice_recurrence:
            recurrence = values['recurrence']
            setup = Wizard(
                'sale.subscription.setup_recurrence', [subscription])
            form = setup.form
            form.preset = recurrence['preset']
            if 'interval' in recurrence:
                form.interval = recurrence['interval']
            if 'months' in recurrence:
                form.months = recurrence['months']
            form.invoice_timing = values['timing']
            form.start_date = values['start']
            form.catch_up = values['catch_up']
            setup.execute('preview')
            setup.execute('apply')
            subscription.reload()
            log(f"contract {reference}: {customer.name}, "
                f"{recurrence['preset']}, {values['timing']}, "
                f"start {values['start']}"
                + (", catch-up" if values['catch_up'] else "")
                + (f", until {values['end']}" if values['end'] else "")
                + (f", activated {values['activated']}"
                    if values['activated'] else ", to activate"))
        if i in TERMS and not subscription.term_months:
            (subscription.term_months, subscription.renewal_months,
                subscription.notice_period,
                subscription.notice_unit) = TERMS[i]
            subscription.save()
            log(f"contract {reference}: term {TERMS[i][0]} months, renewed "
                f"by {TERMS[i][1]}, notice {TERMS[i][2]} {TERMS[i][3]}(s)")
        if values['activated']:
            activations[min(values['activated'], today)].append(
                subscription)
        else:
            subscription.click('quote')
    return activations


def setup_pauses(today):
    "Pause the contracts of PAUSES that have no pause yet"
    from proteus import Wizard
    first = today.replace(day=1)
    for number, start, end, reason in PAUSES:
        contract = get_contract(number)
        if not contract or contract.state != 'running' or contract.pauses:
            continue
        if start == 'next_month':
            date_from = first + relativedelta(months=1)
        else:
            date_from = first + dt.timedelta(days=start)
        pause = Wizard('sale.subscription.pause', [contract])
        pause.form.date_from = date_from
        pause.form.date_to = (
            first + dt.timedelta(days=end) if end is not None else None)
        pause.form.reason = reason
        pause.execute('pause')
        log(f"contract {contract.reference} paused from {date_from}"
            + (f" to {pause.form.date_to}" if end is not None else "")
            + f": {reason}")


# The consumer price index for the method "Index" of Revise Prices (sample
# values, not the published ones): the first of each month, from a year
# ago to next March
PRICE_INDEX = "VPI 2020=100 (Beispielwerte)"
# The contract (quarterly in advance) whose next invoice is planned so
# that it spans the default date of Revise Prices
PRICE_SPLIT_CONTRACT = 15


def setup_price_revision(today):
    """A price index with monthly values, and the lines that posted
    invoices bill beyond the default date of Revise Prices (the first of
    next year, or the first of a month six weeks ahead) kept from price
    revisions: they were paid in advance at their price"""
    from proteus import Model, Wizard
    Index = Model.get('sale.subscription.price_index')
    Invoice = Model.get('account.invoice')
    InvoiceLine = Model.get('account.invoice.line')
    Line = Model.get('sale.subscription.line')
    if not Index.find([('name', '=', PRICE_INDEX)]):
        index = Index(name=PRICE_INDEX)
        month = today.replace(day=1) - relativedelta(years=1)
        value = Decimal('118.2')
        while month <= dt.date(today.year + 1, 3, 1):
            index.values.new(date=month, value=value)
            month += relativedelta(months=1)
            value += Decimal('0.2')
        index.save()
        log(f"price index {PRICE_INDEX} with {len(index.values)} values")
    from trytond.modules.recurring_invoice.price import (
        default_revision_date)
    revision = default_revision_date(today, 42)
    prefix = f'{Line.__name__},'
    paid = {l.origin.id for l in InvoiceLine.find([
                ('invoice.type', '=', 'out'),
                ('invoice.state', 'in', ['validated', 'posted', 'paid']),
                ('service_end_date', '>=', revision),
                ('origin', 'like', f'{prefix}%'),
                ])}
    # The next quarter of DEMO-015 (in advance) planned as a draft: the
    # revision bills it in two parts
    contract = get_contract(PRICE_SPLIT_CONTRACT)
    if contract and contract.state == 'running' and not Invoice.find([
                ('subscription', '=', contract.id),
                ('subscription_period_start', '<=', revision),
                ('subscription_period_end', '>=', revision),
                ]):
        plan = Wizard('sale.subscription.plan_invoices', [contract])
        plan.form.horizon = (
            (revision.year - today.year) * 12 + revision.month - today.month)
        plan.execute('plan')
        log(f"contract {contract.reference}: invoices up to {revision} "
            "planned as drafts")
    lines = [l for l in Line.find([('id', 'in', list(paid))])
        if l.revise_prices]
    for line in lines:
        line.revise_prices = False
    if lines:
        Line.save(lines)
        references = sorted({
                l.subscription.reference or str(l.subscription.id)
                for l in lines})
        log(f"never revised (paid in advance beyond {revision}): "
            + ', '.join(references))


def setup_datev(company, customers):
    """The DATEV settings of the company (numbers, chart, the folder
    target DATEV_TARGET_NAME in DATEV_DIR), the automatic accounts, the
    tax keys and the debtor accounts (only what is not set yet)"""
    from proteus import Model
    Account = Model.get('account.account')
    Configuration = Model.get('account.configuration')
    Target = Model.get('account.datev.target')
    Tax = Model.get('account.tax')

    # the folder DATEV Belegtransfer watches (scripts/demo.sh makes it
    # too): the exports of the nightly runs are transferred to it
    os.makedirs(DATEV_DIR, exist_ok=True)
    targets = Target.find([('name', '=', DATEV_TARGET_NAME)])
    if targets:
        target, = targets
    else:
        target = Target(name=DATEV_TARGET_NAME, kind='folder')
    if target.id is None or target.id < 0 or target.path != DATEV_DIR:
        target.kind = 'folder'
        target.path = DATEV_DIR
        target.save()
        log(f"DATEV target {DATEV_TARGET_NAME}: folder {DATEV_DIR}")

    configuration = Configuration(1)
    values = {
        'datev_consultant_number': DATEV_CONSULTANT_NUMBER,
        'datev_client_number': DATEV_CLIENT_NUMBER,
        'datev_chart': DATEV_CHART,
        'datev_account_length': DATEV_ACCOUNT_LENGTH,
        }
    changed = False
    for field, value in values.items():
        if not getattr(configuration, field):
            setattr(configuration, field, value)
            changed = True
    if configuration.datev_target != target:
        configuration.datev_target = target
        changed = True
    if changed:
        configuration.save()
        log(f"DATEV: consultant {configuration.datev_consultant_number}, "
            f"client {configuration.datev_client_number}, "
            f"{configuration.datev_chart}, "
            f"{configuration.datev_account_length}-digit accounts")

    accounts = Account.find([
            ('company', '=', company.id),
            ('code', 'in', DATEV_AUTOMATIC_ACCOUNTS),
            ('datev_automatic', '=', False),
            ])
    for account in accounts:
        account.datev_automatic = True
    if accounts:
        Account.save(accounts)
    taxes = [t for t in Tax.find([
                ('company', '=', company.id),
                ('name', 'in', list(DATEV_TAX_KEYS)),
                ]) if not t.datev_tax_key]
    for tax in taxes:
        tax.datev_tax_key = DATEV_TAX_KEYS[tax.name]
    if taxes:
        Tax.save(taxes)
    parties = []
    for index, number in DATEV_DEBTORS.items():
        party = customers[index]
        if not party.datev_account:
            party.datev_account = number
            parties.append(party)
    if parties:
        Model.get('party.party').save(parties)
    return target


def setup_document_store(company):
    """The document store DOCUMENT_STORE_NAME: the local WebDAV server of
    scripts/demo.sh (DEMO_DAV_PORT)"""
    from proteus import Model
    Store = Model.get('document.store')
    stores = Store.find([('name', '=', DOCUMENT_STORE_NAME)])
    if stores:
        store, = stores
        if store.url == DOCUMENT_STORE_URL:
            return store
    else:
        store = Store(name=DOCUMENT_STORE_NAME, kind='webdav')
        store.company = company
        store.path_pattern = DOCUMENT_STORE_PATTERN
    store.url = DOCUMENT_STORE_URL
    store.save()
    log(f"document store {DOCUMENT_STORE_NAME}: {store.url}"
        f"{store.path_pattern}")
    return store


def setup_delivery(config, customers, store=None):
    """Switch automatic delivery on for the company and for the contracts
    of AUTOMATIC_DELIVERY (only what is not switched on yet; the
    NEW_CHANNELS are added to the contracts switched on before), the
    document store of the channel document_store: store"""
    from proteus import Model
    Configuration = Model.get('sale.configuration')
    Subscription = Model.get('sale.subscription')
    Warning = Model.get('res.user.warning')

    configuration = Configuration(1)
    if not configuration.automatic_delivery:
        log("automatic delivery switched on")
        configuration.automatic_delivery = True
        configuration.save()

    enabled = 0
    for number, channels in AUTOMATIC_DELIVERY:
        reference = f'{REFERENCE_PREFIX}{number:03d}'
        found = Subscription.find([('reference', '=', reference)])
        if not found:
            continue
        subscription, = found
        if subscription.automatic_delivery:
            add_channels(subscription, channels, store)
            continue
        mechanisms = subscription.party.contact_mechanisms
        if 'email' in channels and not any(
                m.type == 'email' for m in mechanisms):
            log(f"contract {reference}: customer without e-mail, "
                "no automatic delivery")
            continue
        if not subscription.standard_delivery:
            subscription.click('delivery_settings')
            subscription.reload()
            delivery = subscription.standard_delivery
            delivery.post = True
            delivery.channels = channels
            if 'document_store' in channels:
                delivery.document_store = store
            if 'email' in channels:
                delivery.email_cc = DELIVERY_CC
                # keep the default e-mail template ("Invoice")
            delivery.save()
            subscription.reload()
        # switching it on asks for a confirmation (a warning)
        subscription.automatic_delivery = True
        try:
            subscription.save()
        except Exception as exception:
            name = getattr(exception, 'name', None)
            if not name:
                raise
            Warning.skip(name, True, config.context)
            subscription.save()
        enabled += 1
        log(f"contract {reference}: automatic delivery "
            f"({', '.join(subscription.standard_delivery.channels)})")
    return enabled


def add_channels(subscription, channels, store):
    """Add the NEW_CHANNELS of channels that the delivery settings of the
    subscription miss (a demo database made before them)"""
    delivery = subscription.standard_delivery
    if not delivery:
        return
    current = list(delivery.channels or [])
    missing = [
        c for c in channels if c in NEW_CHANNELS and c not in current]
    if not missing:
        return
    delivery.channels = current + missing
    if 'document_store' in missing and not delivery.document_store:
        delivery.document_store = store
    delivery.save()
    log(f"contract {subscription.reference}: delivery channels "
        f"{', '.join(missing)} added")


def get_contract(number):
    "Return the demo contract of the reference number or None"
    from proteus import Model
    Subscription = Model.get('sale.subscription')
    found = Subscription.find([
            ('reference', '=', f'{REFERENCE_PREFIX}{number:03d}')])
    return found[0] if found else None


def module_activated(module):
    "Whether the (optional) module is activated"
    from proteus import Model
    Module = Model.get('ir.module')
    return bool(Module.find([
                ('name', '=', module),
                ('state', '=', 'activated'),
                ]))


def setup_einvoices(company, taxes):
    """E-invoices, with edocument_uncefact activated: the company's VAT
    identification number and tax number, the UN/ECE codes of the taxes,
    the Leitweg-ID of the public-sector customer (XRechnung); every other
    customer receives the company's default, ZUGFeRD"""
    from proteus import Model
    Party = Model.get('party.party')
    Tax = Model.get('account.tax')
    if not module_activated('edocument_uncefact'):
        log("edocument_uncefact not activated: the invoices are sent "
            "without e-invoice")
        return
    party = Party(company.party.id)
    types = {i.type for i in party.identifiers}
    missing = [(t, c) for t, c in [
            ('eu_vat', COMPANY_VAT_ID), ('de_stnr', COMPANY_TAX_NUMBER)]
        if t not in types]
    for type_, code in missing:
        party.identifiers.new(type=type_, code=code)
    if missing:
        party.save()
        log(f"company VAT id {COMPANY_VAT_ID}, tax number "
            f"{COMPANY_TAX_NUMBER}")
    to_save = []
    for tax in Tax.find([('id', 'in', [t.id for t in taxes.values()])]):
        if not tax.unece_code:
            tax.unece_code, tax.unece_category_code = 'VAT', 'S'
            to_save.append(tax)
    if to_save:
        Tax.save(to_save)
    public, = Party.find([('name', '=', PUBLIC_CUSTOMER)])
    if public.leitweg_id != PUBLIC_LEITWEG_ID:
        public.leitweg_id = PUBLIC_LEITWEG_ID
        public.einvoice_format = 'xrechnung'
        public.save()
        log(f"{PUBLIC_CUSTOMER} receives XRechnung (Leitweg-ID "
            f"{PUBLIC_LEITWEG_ID}), the other customers ZUGFeRD")


def get_bank_account(party, bank_name, bic, iban):
    """Return the IBAN (bank.account.number) of the party at the bank,
    the bank and the account created if missing"""
    from proteus import Model
    Bank = Model.get('bank')
    Account = Model.get('bank.account')
    Number = Model.get('bank.account.number')
    Party = Model.get('party.party')
    numbers = Number.find([
            ('type', '=', 'iban'),
            ('number_compact', '=', iban),
            ('account.owners', '=', party.id),
            ])
    if numbers:
        return numbers[0]
    banks = Bank.find([('bic', '=', bic)])
    if banks:
        bank, = banks
    else:
        parties = Party.find([('name', '=', bank_name)])
        bank_party = parties[0] if parties else Party(name=bank_name)
        if bank_party.id is None or bank_party.id < 0:
            bank_party.save()
        bank = Bank(party=bank_party, bic=bic)
        bank.save()
    account = Account(bank=bank)
    account.owners.append(Party(party.id))
    number = account.numbers.new()
    number.type = 'iban'
    number.number = iban
    account.save()
    log(f"bank account {account.numbers[0].number} of {party.name} "
        f"at {bank_name}")
    return account.numbers[0]


def setup_direct_debit(company, today):
    """SEPA direct debit, with account_payment_sepa activated: the
    company's creditor identifier and bank account, the payment journal
    SEPA_JOURNAL_NAME as the direct-debit journal of the sale
    configuration, the validated mandate of the customer of
    DIRECT_DEBIT_CONTRACT (only what is missing)"""
    from proteus import Model
    if not module_activated('account_payment_sepa'):
        log("account_payment_sepa not activated: the direct debits are "
            "left to staff")
        return None
    Configuration = Model.get('sale.configuration')
    Journal = Model.get('account.payment.journal')
    Mandate = Model.get('account.payment.sepa.mandate')
    Party = Model.get('party.party')
    party = Party(company.party.id)
    if not any(i.type == 'eu_at_02' for i in party.identifiers):
        identifier = party.identifiers.new()
        identifier.type = 'eu_at_02'
        identifier.code = SEPA_CREDITOR_IDENTIFIER
        party.save()
        log(f"SEPA creditor identifier {SEPA_CREDITOR_IDENTIFIER}")
    iban = get_bank_account(party, *SEPA_COMPANY_BANK)

    journals = Journal.find([('name', '=', SEPA_JOURNAL_NAME)])
    if journals:
        journal, = journals
    else:
        journal = Journal(name=SEPA_JOURNAL_NAME)
        journal.process_method = 'sepa'
        journal.sepa_bank_account_number = iban
        journal.sepa_payable_flavor = 'pain.001.001.03'
        journal.sepa_receivable_flavor = 'pain.008.001.02'
        journal.save()
        log(f"payment journal {SEPA_JOURNAL_NAME} ({iban.number})")
    configuration = Configuration(1)
    if not configuration.direct_debit_journal:
        configuration.direct_debit_journal = journal
        configuration.save()
        log(f"direct-debit journal: {SEPA_JOURNAL_NAME}")

    contract = get_contract(DIRECT_DEBIT_CONTRACT)
    if not contract:
        return journal
    customer = contract.party
    if not Mandate.find([
                ('party', '=', customer.id),
                ('state', '=', 'validated'),
                ]):
        account = get_bank_account(customer, *SEPA_CUSTOMER_BANK)
        mandates = Mandate.find([('identification', '=', SEPA_MANDATE)])
        if mandates:
            mandate, = mandates
        else:
            mandate = Mandate(party=customer)
            mandate.account_number = account
            mandate.identification = SEPA_MANDATE
            mandate.type = 'recurrent'
            # signed when the contract was concluded
            values = _contracts(today)[DIRECT_DEBIT_CONTRACT - 1]
            mandate.signature_date = min(values['activated'] or today, today)
            mandate.save()
        if mandate.state == 'draft':
            mandate.click('request')
        if mandate.state == 'requested':
            mandate.click('validate_mandate')
        log(f"SEPA mandate {SEPA_MANDATE} of {customer.name} "
            f"({account.number}): {mandate.state}")
    return journal


def process_payment_groups(config, journal):
    """The office processed the payment groups of the past nights (core
    generates their SEPA message, pain.008) on the night's day, except the
    last one, left to the button "Process Payments" of the group"""
    from proteus import Model
    Group = Model.get('account.payment.group')
    RunLine = Model.get('account.invoice.run.line')
    groups = Group.find([
            ('journal', '=', journal.id),
            ('kind', '=', 'receivable'),
            ], order=[('id', 'ASC')])
    groups = [g for g in groups if not g.sepa_messages]
    for group in groups[:-1]:
        lines = RunLine.find([('payment.group', '=', group.id)], limit=1)
        day = lines[0].run.date if lines else None
        with (demo_today(config, day) if day
                else contextlib.nullcontext()):
            group.click('process_payments')
    if groups:
        log(f"  SEPA: {len(groups) - 1} payment group(s) of past nights "
            f"processed, 1 to process")


def setup_additional_delivery():
    """The additional delivery settings of ADDITIONAL_INVOICE_CONTRACT:
    posted, delivered by ADDITIONAL_CHANNELS (when it has none)"""
    contract = get_contract(ADDITIONAL_INVOICE_CONTRACT)
    if not contract:
        return
    if not contract.additional_delivery:
        contract.click('delivery_settings')
        contract.reload()
    delivery = contract.additional_delivery
    if delivery.channels:
        return
    delivery.post = True
    delivery.channels = ADDITIONAL_CHANNELS
    if 'email' in ADDITIONAL_CHANNELS:
        delivery.email_cc = DELIVERY_CC
    delivery.save()
    log(f"contract {contract.reference}: additional invoices posted, "
        f"{', '.join(ADDITIONAL_CHANNELS)}")


def create_additional_invoice(config, day, materials):
    """The office bills the ADDITIONAL_INVOICE_LINES to the customer of
    ADDITIONAL_INVOICE_CONTRACT on day with the wizard "Create Additional
    Invoice" (once: not if the contract has an additional invoice of them)"""
    from proteus import Model, Wizard
    Invoice = Model.get('account.invoice')
    contract = get_contract(ADDITIONAL_INVOICE_CONTRACT)
    if not contract or contract.state != 'running':
        return
    products = [materials[code].id for code, _ in ADDITIONAL_INVOICE_LINES]
    if Invoice.find([
                ('subscription', '=', contract.id),
                ('subscription_kind', '=', 'additional'),
                ('lines.product', 'in', products),
                ('lines.origin', '=', None),
                ]):
        return
    with demo_today(config, day):
        additional = Wizard(
            'sale.subscription.create_additional_invoice', [contract])
        additional.form.invoice_date = day
        for code, quantity in ADDITIONAL_INVOICE_LINES:
            line = additional.form.lines.new()
            line.product = materials[code]
            line.quantity = quantity
        additional.execute('create_invoice')
    invoice, = Invoice.find([
            ('subscription', '=', contract.id),
            ('subscription_kind', '=', 'additional'),
            ], order=[('id', 'DESC')], limit=1)
    log(f"  additional invoice of {contract.reference} on {day}: "
        f"{invoice.untaxed_amount} EUR net")


def bill_repair(config, today, technicians, materials, services):
    """The repair of REPAIR_CONTRACT today: a dispatch order of its own
    with the billable material of REPAIR_LINES and the work REPAIR_WORK,
    planned and done by the technician, which bills the material on an
    additional invoice of the contract (once)"""
    from proteus import Model
    Order = Model.get('dispatch.order')
    contract = get_contract(REPAIR_CONTRACT)
    if not contract or contract.state != 'running':
        return
    if Order.find([
                ('contract', '=', contract.id),
                ('description', '=', REPAIR_DESCRIPTION),
                ]):
        return
    with demo_today(config, today):
        order = Order(contract=contract)
        order.description = REPAIR_DESCRIPTION
        for code, quantity in REPAIR_LINES:
            line = order.lines.new()
            line.billable = True
            line.product = materials[code]
            line.quantity = quantity
        code, description = REPAIR_WORK
        work = order.lines.new()
        work.product = services[code].product
        work.description = description
        work.quantity = 1
        order.employee = technicians[REPAIR_TECHNICIAN]
        order.planning_date = today
        order.execution_date = today
        order.notes = REPAIR_NOTES
        order.save()
        order.click('plan')
        order.click('do')
    order.reload()
    log(f"dispatch order {order.number} ({contract.reference}, "
        f"{REPAIR_DESCRIPTION}): done, material billed on the additional "
        f"invoice of {order.invoice.untaxed_amount} EUR net "
        f"({order.invoice.state})")


def run_night(date):
    "Run the nightly pipeline for date (the core wizard calls it)"
    from proteus import Wizard
    create_invoice = Wizard('sale.subscription.create_invoice')
    create_invoice.form.date = date
    create_invoice.execute('create_')


def post_office_drafts(day):
    """The office posts the drafts of the contracts of OFFICE_POSTED dated
    day (the invoices of that night)"""
    from proteus import Model
    Invoice = Model.get('account.invoice')
    drafts = Invoice.find([
            ('state', '=', 'draft'),
            ('invoice_date', '=', day),
            ('subscription.reference', 'in', [
                    f'{REFERENCE_PREFIX}{n:03d}' for n in OFFICE_POSTED]),
            ], order=[('id', 'ASC')])
    if drafts:
        Invoice.click(drafts, 'post')
        log(f"  {len(drafts)} invoice(s) posted by the office")


def setup_invoice_runs():
    """The customers' delivery preferences for invoice runs: letters for
    those of LETTER_CUSTOMERS, IGNORED_IN_RUNS left out"""
    from proteus import Model
    Party = Model.get('party.party')
    Subscription = Model.get('sale.subscription')

    def parties(numbers):
        return {s.party.id for s in Subscription.find([
                    ('reference', 'in', [
                            f'{REFERENCE_PREFIX}{n:03d}' for n in numbers]),
                    ])}
    letter = [Party(id_) for id_ in parties(LETTER_CUSTOMERS)]
    letter = [p for p in letter if p.invoice_delivery != 'letter']
    for party in letter:
        party.invoice_delivery = 'letter'
    ignored = [Party(id_) for id_ in parties(IGNORED_IN_RUNS)]
    ignored = [p for p in ignored if not p.ignore_in_invoice_runs]
    for party in ignored:
        party.ignore_in_invoice_runs = True
    Party.save(letter + ignored)
    if letter or ignored:
        log(f"invoice runs: {len(letter)} customer(s) by letter, "
            f"{len(ignored)} ignored")


def setup_collective_invoices(config, today):
    """Plan the invoices of COLLECTIVE_CONTRACT for COLLECTIVE_HORIZON
    months, merge them pairwise and give the first a send date tomorrow

    The collective invoices of the demo are the contract's invoices of the
    coming months: none is due yet, so "Invoices Without Send Date" is
    empty until the first one's invoice date."""
    from proteus import Model, Wizard
    Invoice = Model.get('account.invoice')
    Subscription = Model.get('sale.subscription')
    contract, = Subscription.find([
            ('reference', '=', f'{REFERENCE_PREFIX}{COLLECTIVE_CONTRACT:03d}'),
            ])
    if Invoice.find([
                ('subscription_periods.subscription', '=', contract.id),
                ['OR', ('planned', '=', True), ('collective', '=', True)],
                ]):
        return
    with demo_today(config, today):
        plan = Wizard('sale.subscription.plan_invoices', [contract])
        plan.form.horizon = COLLECTIVE_HORIZON
        plan.execute('plan')
        planned = Invoice.find([
                ('subscription', '=', contract.id),
                ('planned', '=', True),
                ], order=[('invoice_date', 'ASC'), ('id', 'ASC')])
        # pairs: an odd last one stays a planned invoice of its own
        merge = Wizard(
            'account.invoice.merge', planned[:len(planned) // 2 * 2])
        merge.form.group_size = 2
        merge.execute('merge')
        collective = Invoice.find([
                ('subscription', '=', contract.id),
                ('collective', '=', True),
                ], order=[('invoice_date', 'ASC'), ('id', 'ASC')])
        collective[0].send_date = today + dt.timedelta(days=1)
        collective[0].save()
    log(f"collective invoices: {len(planned)} invoices of "
        f"{contract.reference} planned, merged into {len(collective)}, "
        f"the first sent {collective[0].send_date}")


def activate(contracts):
    "Quote and activate the contracts (the office presses the buttons)"
    from proteus import Model
    Subscription = Model.get('sale.subscription')
    drafts = [c for c in contracts if c.state == 'draft']
    if drafts:
        Subscription.click(drafts, 'quote')
    Subscription.click(contracts, 'run')
    for contract in contracts:
        contract.reload()
        log(f"  contract {contract.reference} activated, "
            f"next invoice {contract.next_invoice_date}")


def replay(config, today, activations, generate=True, tasks=None):
    """Replay the days from the first activation to today: on each day
    the nightly run (00:05) if invoices are due, then the activation of
    the contracts of that day and the office's tasks of that day (tasks:
    {day: [function]}), each with Date.today() answering that day

    So the start date rules count from each contract's own activation
    day, the contracts that catch up get the invoices of their past
    periods the night after their activation, and the invoices delivered
    automatically are posted and numbered on their night.  Nothing is
    replayed when there is nothing to activate (the data was loaded
    before).  The protocols of the past nights are confirmed, the one of
    the last night is left to confirm."""
    from proteus import Model
    Subscription = Model.get('sale.subscription')
    Run = Model.get('account.invoice.run')
    RunLine = Model.get('account.invoice.run.line')
    Warning = Model.get('res.user.warning')

    pending = dict(activations)
    if not pending:
        return
    tasks = {d: list(t) for d, t in (tasks or {}).items() if d <= today}
    existing = {r.id for r in Run.find([])}
    last = None
    nights = 0
    while True:
        days = []
        if pending:
            days.append(min(pending))
        if tasks:
            days.append(min(tasks))
        due = None
        if generate:
            found = Subscription.find([
                    ('state', 'in', ['running', 'closed']),
                    ('next_invoice_date', '!=', None),
                    ], order=[('next_invoice_date', 'ASC'), ('id', 'ASC')],
                limit=1)
            if found:
                due = found[0].next_invoice_date
                if last and due <= last:
                    # activated with periods due: invoiced the next night
                    due = last + dt.timedelta(days=1)
                days.append(due)
            if not last or last < today:
                # the night of today runs in any case
                days.append(today)
        days = [d for d in days if d <= today]
        if not days:
            break
        day = min(days)
        with demo_today(config, day):
            if generate and (day == due or day == today):
                log(f"  night of {day}")
                run_night(day)
                post_office_drafts(day)
                nights += 1
            if day in pending:
                activate(pending.pop(day))
            for task in tasks.pop(day, []):
                task()
        last = day

    runs = Run.find([
            ('id', 'not in', list(existing)),
            ('kind', '=', 'automatic'),
            ('state', '=', 'executed'),
            ], order=[('date', 'ASC'), ('id', 'ASC')])
    # the letters of the past nights were sent, their direct debits
    # submitted: ticked off, then each protocol is confirmed
    manual = RunLine.find([
            ('run', 'in', [r.id for r in runs[:-1]]),
            ('state', '=', 'manual'),
            ])
    if manual:
        RunLine.click(manual, 'tick')
    for run in runs[:-1]:
        run.reload()
        try:
            run.click('confirm')
        except Exception as exception:
            name = getattr(exception, 'name', None)
            if not name:
                raise
            Warning.skip(name, True, config.context)
            run.click('confirm')
    log(f"  {nights} night(s) replayed"
        + (f", {len(runs) - 1} protocol(s) of past nights confirmed"
            if runs[:-1] else ""))


def setup_technicians(company):
    "Return the technicians (company.employee) of TECHNICIANS"
    return [
        get_employee(company, name, email, "technician")
        for name, email in TECHNICIANS]


def get_employee(company, name, email, role):
    "Return the employee of the company named name, created if missing"
    from proteus import Model
    Employee = Model.get('company.employee')
    Party = Model.get('party.party')
    found = Employee.find([
            ('company', '=', company.id),
            ('party.name', '=', name),
            ])
    if found:
        return found[0]
    parties = Party.find([('name', '=', name)])
    if parties:
        party = parties[0]
    else:
        party = Party(name=name)
        party.contact_mechanisms.new(type='email', value=email)
        party.save()
    employee = Employee(party=party, company=company)
    employee.save()
    log(f"{role} {name}")
    return employee


def setup_dispatch_sequence():
    """Give the sale configuration the sequence of the dispatch orders
    when it has none (a database whose sale configuration was saved before
    dispatch_order was activated)"""
    from proteus import Model
    Configuration = Model.get('sale.configuration')
    Sequence = Model.get('ir.sequence')
    configuration = Configuration(1)
    if configuration.dispatch_order_sequence:
        return
    # the sequence of dispatch_order (configuration.xml)
    sequences = Sequence.find([
            ('sequence_type.name', '=', "Dispatch Order"),
            ], order=[('id', 'ASC')], limit=1)
    if not sequences:
        sys.exit("no sequence for the dispatch orders")
    configuration.dispatch_order_sequence, = sequences
    configuration.save()
    log("dispatch order sequence set on the sale configuration")


def setup_dispatch_contracts(services):
    """Set up the dispatch recurrence of the contracts of
    DISPATCH_CONTRACTS with the wizard "Set Up Dispatch" (those without
    one), with the dispatch lines and the service address of
    DISPATCH_LINES_CONTRACT; return the contracts"""
    from proteus import Model, Wizard
    Subscription = Model.get('sale.subscription')
    Uom = Model.get('product.uom')
    Address = Model.get('party.address')

    contracts = []
    for number, recurrence, mode, lead_days, _, _ in DISPATCH_CONTRACTS:
        reference = f'{REFERENCE_PREFIX}{number:03d}'
        found = Subscription.find([('reference', '=', reference)])
        if not found:
            continue
        subscription, = found
        contracts.append(subscription)
        # the wizard works on draft and running contracts without orders
        if (subscription.dispatch_recurrence
                or subscription.dispatch_orders
                or subscription.state not in {'draft', 'running'}):
            continue
        if number == DISPATCH_LINES_CONTRACT:
            if not subscription.dispatch_lines:
                unit, = Uom.find([('name', '=', "Unit")])
                for code, quantity, description in DISPATCH_LINES:
                    line = subscription.dispatch_lines.new()
                    if code:
                        line.product = services[code].product
                    line.quantity = quantity
                    line.unit = unit
                    line.description = description
            if not subscription.service_address:
                name, street, building, postal_code, city = SERVICE_ADDRESS
                addresses = Address.find([
                        ('party', '=', subscription.party.id),
                        ('street_name', '=', street),
                        ])
                if addresses:
                    address = addresses[0]
                else:
                    address = Address(party=subscription.party)
                    address.party_name = name
                    address.street_name = street
                    address.building_number = building
                    address.postal_code = postal_code
                    address.city = city
                    address.country = get_germany()
                    address.save()
                subscription.service_address = address
            subscription.save()
        setup = Wizard('sale.subscription.setup_dispatch', [subscription])
        form = setup.form
        form.preset = recurrence['preset']
        if 'interval' in recurrence:
            form.interval = recurrence['interval']
        if 'months' in recurrence:
            form.months = recurrence['months']
        form.dispatch_mode = mode
        form.dispatch_lead_days = lead_days
        setup.execute('preview')
        setup.execute('apply')
        subscription.reload()
        log(f"contract {reference}: dispatch {recurrence['preset']}, "
            f"{mode}, created {lead_days} days ahead"
            + (", own dispatch lines and service address"
                if number == DISPATCH_LINES_CONTRACT else ""))
    return contracts


def _working_day(date):
    "Return date or, on a weekend, the Monday after"
    if date.weekday() >= 5:
        return date + dt.timedelta(days=7 - date.weekday())
    return date


def plan_dispatch_orders(night, today, technicians):
    """The dispatcher's work after the night: the new orders of the demo
    contracts due within DISPATCH_HORIZON days of today get a planning
    date and their technician, those planned before today are done (the
    first one of CANCELLED_VISIT_CONTRACT is cancelled); the orders of the
    last DISPATCH_BACKLOG_NIGHTS nights and those due later wait.
    Return the numbers of orders planned, done and cancelled."""
    from proteus import Model
    Order = Model.get('dispatch.order')
    if night > today - dt.timedelta(days=DISPATCH_BACKLOG_NIGHTS):
        return 0, 0, 0
    settings = {
        f'{REFERENCE_PREFIX}{n:03d}': (technicians[t], offset)
        for n, _, _, _, t, offset in DISPATCH_CONTRACTS}
    cancelled_visit = f'{REFERENCE_PREFIX}{CANCELLED_VISIT_CONTRACT:03d}'
    horizon = today + dt.timedelta(days=DISPATCH_HORIZON)
    orders = Order.find([
            ('state', '=', 'draft'),
            ('planning_date', '=', None),
            ('contract.reference', 'in', list(settings)),
            ('key_date', '<=', horizon),
            ], order=[('key_date', 'ASC'), ('id', 'ASC')])
    planned, done, cancelled = [], [], []
    for order in orders:
        reference = order.contract.reference
        if (reference == cancelled_visit
                and order.key_date < today
                and not Order.find([
                        ('contract', '=', order.contract.id),
                        ('id', '!=', order.id),
                        ], limit=1)):
            order.notes = "Termin vom Kunden abgesagt."
            cancelled.append(order)
            continue
        employee, offset = settings[reference]
        order.planning_date = _working_day(
            order.key_date + dt.timedelta(days=offset))
        order.employee = employee
        planned.append(order)
        if order.planning_date < today:
            order.execution_date = order.planning_date
            done.append(order)
    if cancelled:
        Order.click(cancelled, 'cancel')
    if planned:
        Order.click(planned, 'plan')
    if done:
        Order.click(done, 'do')
    return len(planned), len(done), len(cancelled)


def generate_dispatch(config, contracts, today, technicians):
    """Replay the nights up to today that have dispatch orders to create,
    oldest first, each followed by the dispatcher's planning (the next
    order of a planning date contract is due one interval after the
    planning date of the last one), then the night of today"""
    from proteus import Model, Wizard
    Subscription = Model.get('sale.subscription')
    ids = [c.id for c in contracts]
    totals = [0, 0, 0]

    def run_night(night):
        with demo_today(config, night):
            create = Wizard('sale.subscription.create_dispatch_orders')
            create.form.date = night
            create.execute('create_')
            for i, count in enumerate(
                    plan_dispatch_orders(night, today, technicians)):
                totals[i] += count

    nights = set()
    while True:
        # the night each contract has its next order to create
        due = [
            s.next_dispatch_date - dt.timedelta(days=s.dispatch_lead_days)
            for s in Subscription.find([('id', 'in', ids)])
            if s.dispatch_recurrence and s.next_dispatch_date]
        night = min(due, default=None)
        if night is None or night >= today or night in nights:
            break
        nights.add(night)
        run_night(night)
    run_night(today)
    for subscription in Subscription.find([
                ('id', 'in', ids), ('dispatch_error', '!=', None)]):
        log(f"  contract {subscription.reference}: "
            f"{subscription.dispatch_error}")
    log(f"  {len(nights)} past night(s) replayed and the night of {today}: "
        f"{totals[0]} order(s) planned, {totals[1]} done, "
        f"{totals[2]} cancelled")


def schedule_crons():
    """The nightly runs of today are done (replayed): the scheduled
    actions of the contracts, never run yet, run next at their time
    tomorrow instead of as soon as trytond-cron starts"""
    from proteus import Model
    from trytond.tools import timezone as tz
    Cron = Model.get('ir.cron')
    crons = Cron.find([
            ('next_call', '=', None),
            ('method', 'like', 'sale.subscription%'),
            ])
    now = dt.datetime.now(tz.UTC).astimezone(tz.SERVER)
    for cron in crons:
        next_call = (now + dt.timedelta(days=1)).replace(
            hour=cron.hour if cron.hour is not None else 0,
            minute=cron.minute if cron.minute is not None else 5,
            second=0, microsecond=0)
        cron.next_call = next_call.astimezone(tz.UTC).replace(tzinfo=None)
    if crons:
        Cron.save(crons)
        log(f"{len(crons)} scheduled actions of the contracts next run "
            f"on {crons[0].next_call:%Y-%m-%d}")


def skip_config_wizard():
    "Mark the module configuration wizard done: the demo is configured"
    from proteus import Model
    Item = Model.get('ir.module.config_wizard.item')
    items = Item.find([('state', '!=', 'done')])
    for item in items:
        item.state = 'done'
    Item.save(items)


def main(database, config_file, date=None, generate=True, contracts=True):
    from proteus import Model
    from proteus import config as pconfig

    config = pconfig.set_trytond(database, config_file=config_file)
    Module = Model.get('ir.module')
    missing = [m.name for m in Module.find([
                ('name', 'in', ['recurring_invoice', 'dispatch_order']),
                ('state', '!=', 'activated'),
                ])]
    if missing and contracts:
        sys.exit(f"modules not activated in {database!r}: "
            f"{', '.join(missing)}")

    today = date or dt.date.today()
    # the fiscal years from the first contract's activation on
    first = min(
        min(c['start'], c['activated'] or today) for c in _contracts(today))
    years = range(min(first.year, today.year - 1), today.year + 2)

    skip_config_wizard()
    lang = set_language(config)
    country = get_germany()
    company = setup_company(config, lang, country)
    setup_users(config, company, lang)
    accounts, taxes, payment_term = setup_accounting(config, company, years)
    customers = setup_customers(lang, country, payment_term)
    services = setup_services(accounts, taxes)
    setup_einvoices(company, taxes)
    if not contracts:
        log("base data loaded (no contracts)")
        return

    activations = setup_contracts(config, customers, services, today)
    setup_invoice_runs()
    # before the delivery settings: the channel datev needs the DATEV
    # numbers
    setup_datev(company, customers)
    store = setup_document_store(company)
    # before the activations, so that the nightly runs post and deliver
    # the invoices
    setup_delivery(config, customers, store)
    setup_additional_delivery()
    journal = setup_direct_debit(company, today)
    materials = setup_materials()
    Invoice = Model.get('account.invoice')
    Subscription = Model.get('sale.subscription')
    Run = Model.get('account.invoice.run')
    RunLine = Model.get('account.invoice.run.line')
    before = len(Invoice.find([]))
    lines_before = len(RunLine.find([]))
    if activations:
        log("activating the contracts on their days"
            + (f" and replaying the nights up to {today}"
                if generate else ""))
        # the office's additional invoice, delivered the night after
        day = today - dt.timedelta(days=ADDITIONAL_INVOICE_DAYS)
        tasks = {day: [
                lambda: create_additional_invoice(config, day, materials)]}
        replay(config, today, activations, generate,
            tasks if generate else None)
        if generate and journal:
            process_payment_groups(config, journal)
    if generate:
        # a database loaded before: the additional invoice of today
        create_additional_invoice(config, today, materials)
        setup_collective_invoices(config, today)
        setup_pauses(today)
        setup_price_revision(today)
    setup_dispatch_sequence()
    technicians = setup_technicians(company)
    dispatch_contracts = setup_dispatch_contracts(services)
    Order = Model.get('dispatch.order')
    orders_before = len(Order.find([]))
    if generate:
        log(f"generating dispatch orders for {today}")
        generate_dispatch(config, dispatch_contracts, today, technicians)

    if generate:
        bill_repair(config, today, technicians, materials, services)
        schedule_crons()

    invoices = len(Invoice.find([]))
    contracts = Subscription.find([
            ('reference', 'like', f'{REFERENCE_PREFIX}%')])
    states = defaultdict(int)
    for contract in contracts:
        states[contract.state] += 1
    log(f"demo data: {len(customers)} customers, {len(contracts)} contracts "
        f"({', '.join(f'{v} {k}' for k, v in sorted(states.items()))}), "
        f"{invoices} invoices ({invoices - before} new)")
    due = [c.reference for c in contracts
        if c.state in {'running', 'closed'}
        and c.next_invoice_date and c.next_invoice_date <= today]
    if due:
        log(f"due for the next nightly run: {', '.join(due)}")
    lines = RunLine.find([])
    new_lines = len(lines) - lines_before
    states = defaultdict(int)
    for line in lines:
        states[f'{line.channel} {line.state}'] += 1
    runs = Run.find([('state', '=', 'executed')])
    log(f"delivery: {new_lines} new protocol lines; "
        f"{len(runs)} protocol(s) to confirm "
        f"(Sales › Recurring Invoices › Runs to Confirm); all lines: "
        + (', '.join(f'{v} {k}' for k, v in sorted(states.items()))
            or 'none'))
    Export = Model.get('account.datev.export')
    exports = Export.find([])
    uploads = RunLine.find([
            ('channel', '=', 'document_store'), ('state', '=', 'done')])
    log(f"datev: {len(exports)} export(s) "
        f"({sum(e.transfer_state == 'done' for e in exports)} in "
        f"{DATEV_DIR}); document store: {len(uploads)} upload(s) to "
        f"{DOCUMENT_STORE_URL}")
    orders = Order.find([])
    states = defaultdict(int)
    for order in orders:
        key = f'{order.contract.dispatch_mode if order.contract else "-"} '
        key += ('to plan' if order.state == 'draft'
            and not order.planning_date else order.state)
        states[key] += 1
    log(f"dispatch: {len(technicians)} technicians, "
        f"{len(dispatch_contracts)} contracts, {len(orders)} orders "
        f"({len(orders) - orders_before} new): "
        + (', '.join(f'{v} {k}' for k, v in sorted(states.items()))
            or 'none'))
    additional = Invoice.find([('subscription_kind', '=', 'additional')])
    billed = Order.find([('invoice', '!=', None)])
    log(f"additional invoices: {len(additional)} "
        f"({sum(i.state == 'draft' for i in additional)} draft), "
        f"{len(billed)} of them billed by dispatch orders")
    due = Subscription.find([('notice_due', '=', True)])
    log("notice deadlines within the reminder days: "
        + (', '.join(f'{s.reference} ({s.notice_deadline})' for s in due)
            or 'none')
        + " (Sales › Recurring Invoices › Notice Deadlines)")
    if module_activated('edocument_uncefact'):
        sent = Invoice.find([
                ('type', '=', 'out'), ('sent_date', '!=', None)])
        formats = defaultdict(int)
        for invoice in sent:
            formats[invoice.einvoice_format if invoice.einvoice
                else 'without e-invoice'] += 1
        log(f"e-invoices of the {len(sent)} sent invoices: "
            + (', '.join(f'{v} {k}' for k, v in sorted(formats.items()))
                or 'none'))
    if journal:
        Group = Model.get('account.payment.group')
        groups = Group.find([('journal', '=', journal.id)])
        log(f"SEPA direct debit: {len(groups)} payment group(s), "
            f"{sum(not g.sepa_messages for g in groups)} to process "
            "(Financial › Payments › Payment Groups)")


def _parse_date(value):
    return dt.date.fromisoformat(value)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-d', '--database', default='demo',
        help="database name (default: %(default)s)")
    parser.add_argument('-c', '--config', dest='config_file',
        default=os.path.join(ROOT, 'var', 'trytond.conf'),
        help="trytond configuration file (default: %(default)s)")
    parser.add_argument('--date', type=_parse_date, default=None,
        help="the day the demo is built for (default: today)")
    parser.add_argument('--no-generate', dest='generate',
        action='store_false',
        help="do not generate invoices and dispatch orders (the contracts "
        "are activated on their days all the same)")
    parser.add_argument('--no-contracts', dest='contracts',
        action='store_false',
        help="only the base data (company, users, accounting, customers, "
        "products), e.g. before the Turnus modules are activated")
    options = parser.parse_args()
    main(options.database, options.config_file, options.date,
        options.generate, options.contracts)
