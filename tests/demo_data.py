#!/usr/bin/env python3
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Load the Turnus demo data into a Tryton database (through proteus).

The database must exist with the modules recurring_invoice and
dispatch_order activated (``make demo-db`` does that).  Every step checks
what is already there, so running the script again creates nothing twice.

    python tests/demo_data.py [-d demo] [-c var/trytond.conf] [--date ...]

Creates: the company "Turnus Demo GmbH" (EUR, Germany), German as a
translatable language, the minimal chart of accounts, fiscal years with
invoice sequences, a 19% VAT tax, a payment term, ~20 customers, service
products with their subscription services and ~20 contracts (sale
subscriptions) with different recurrences, set up with the wizard
"Set Up Recurrence" and activated; switches automatic delivery on for the
company and for a few contracts (posted and e-mailed, one also as a letter,
one as letter and direct debit); then it runs the recurring invoice
generation once, which posts and delivers the invoices of those contracts
and leaves a protocol (account.invoice.run) to confirm; the nights with
invoices due since the contracts started are replayed one after the other,
the protocols of the past nights confirmed.  The e-mails go to
the SMTP server of the trytond configuration ([email] uri; scripts/demo.sh
starts a local sink).

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
import datetime as dt
import os
import sys
from decimal import Decimal

from dateutil.relativedelta import relativedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMPANY_NAME = "Turnus Demo GmbH"
COMPANY_EMAIL = "buchhaltung@turnus-demo.example"
TAX_NAME = "USt 19%"
PAYMENT_TERM_NAME = "14 Tage netto"
CATEGORY_NAME = "Dienstleistungen"
REFERENCE_PREFIX = "DEMO-"
# internal copy of the invoices delivered by e-mail
DELIVERY_CC = "buchhaltung@turnus-demo.example"

# the contracts (reference number) that deliver their invoices
# automatically, with their channels
AUTOMATIC_DELIVERY = [
    (1, ['email']),
    (2, ['email', 'letter']),
    (3, ['email']),
    (13, ['email']),
    (19, ['letter', 'direct_debit']),
    ]

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
    ]

# name, code, list price (net, EUR)
SERVICES = [
    ("Wartungsvertrag Heizung", "WART-HZG", Decimal('39.00')),
    ("Gartenpflege", "GARTEN", Decimal('180.00')),
    ("Miete Kaffeeautomat", "MIETE-KAFFEE", Decimal('49.90')),
    ("Reinigung Büro", "REINIGUNG", Decimal('420.00')),
    ("Hosting", "HOSTING", Decimal('12.50')),
    ("Wartung Aufzug", "WART-AUFZUG", Decimal('290.00')),
    ("Winterdienst", "WINTER", Decimal('150.00')),
    ("Softwarelizenz Praxis", "LIZENZ", Decimal('600.00')),
    ("Fensterreinigung", "FENSTER", Decimal('95.00')),
    ("Hausmeisterservice", "HAUSMEISTER", Decimal('260.00')),
    ("Miete Wasserspender", "MIETE-WASSER", Decimal('24.90')),
    ("Wartung Klimaanlage", "WART-KLIMA", Decimal('120.00')),
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
# The dispatcher plans the orders due within DISPATCH_HORIZON days of
# today; the orders created in the last DISPATCH_BACKLOG_NIGHTS nights and
# those due later wait to be planned ("To Plan")
DISPATCH_HORIZON = 21
DISPATCH_BACKLOG_NIGHTS = 2


def _contracts(today):
    "The demo contracts, dates relative to today"
    month = today.replace(day=1)
    quarter = month - relativedelta(months=(month.month - 1) % 3)
    year = today.replace(month=1, day=1)
    april = dt.date(today.year, 4, 1)
    if april > today:
        april = april.replace(year=today.year - 1)
    monday = today - dt.timedelta(days=today.weekday())
    season = [str(m) for m in range(4, 11)]  # April to October
    winter = ['11', '12', '1', '2', '3']
    # customer index, [(service code, quantity)], recurrence, timing,
    # start date, catch up, end date, description
    return [
        (0, [("WART-HZG", 1)], dict(preset='monthly'), 'advance',
            month, False, None, "Heizungswartung Filiale Kreuzberg"),
        (1, [("REINIGUNG", 1), ("FENSTER", 2)], dict(preset='monthly'),
            'arrears', month - relativedelta(months=3), True, None,
            "Reinigung Verkaufsraum und Werkstatt"),
        (2, [("LIZENZ", 1)], dict(preset='yearly'), 'advance',
            year, True, None, "Praxissoftware Jahreslizenz"),
        (3, [("GARTEN", 1)], dict(preset='seasonal', months=season),
            'advance', april, True, None, "Gartenpflege Hotelanlage "
            "(April bis Oktober)"),
        (4, [("MIETE-KAFFEE", 2), ("MIETE-WASSER", 1)],
            dict(preset='monthly'), 'advance',
            month - relativedelta(months=2), False, None,
            "Getränkeautomaten Kanzlei"),
        (5, [("WART-AUFZUG", 1)], dict(preset='quarterly'), 'arrears',
            quarter - relativedelta(months=6), True, None,
            "Aufzugswartung Lastenaufzug"),
        (6, [("REINIGUNG", 1)], dict(preset='every_n_weeks', interval=2),
            'arrears', monday - dt.timedelta(weeks=6), True, None,
            "Praxisreinigung 14-täglich"),
        (7, [("HAUSMEISTER", 3)], dict(preset='monthly'), 'advance',
            month - relativedelta(months=4), True,
            month + relativedelta(months=2, days=-1),
            "Hausmeisterservice Pumpwerke (befristet)"),
        (8, [("GARTEN", 1)], dict(preset='seasonal', months=season),
            'arrears', april, False, None, "Pflege Schaugarten"),
        (9, [("HOSTING", 4)], dict(preset='monthly'), 'advance',
            month + relativedelta(months=1), False, None,
            "Webhosting vier Domains (Start nächsten Monat)"),
        (10, [("WART-KLIMA", 1)], dict(preset='half_yearly'), 'advance',
            year, True, None, "Klimaanlage Gastraum"),
        (11, [("WINTER", 2)], dict(preset='seasonal', months=winter),
            'advance', month, False, None, "Winterdienst Wohnanlagen"),
        (12, [("FENSTER", 1)], dict(preset='bimonthly'), 'advance',
            month - relativedelta(months=2), True, None,
            "Fensterreinigung Kita"),
        (13, [("HOSTING", 1)], dict(preset='yearly'), 'arrears',
            year - relativedelta(years=1), False, None,
            "Webshop-Hosting"),
        (14, [("WART-HZG", 1), ("WART-KLIMA", 1)],
            dict(preset='quarterly'), 'advance', quarter, False, None,
            "Haustechnik Druckhalle"),
        (15, [("REINIGUNG", 1)], dict(preset='weekly'), 'arrears',
            monday - dt.timedelta(weeks=3), True, None,
            "Reinigung Umkleiden wöchentlich"),
        (16, [("MIETE-WASSER", 2)], dict(preset='every_n_months', interval=4),
            'advance', month - relativedelta(months=4), True, None,
            "Wasserspender Wartezimmer"),
        (17, [("LIZENZ", 1), ("HOSTING", 1)], dict(preset='yearly'),
            'advance', month, False, None, "Kanzleisoftware mit Hosting"),
        (18, [("MIETE-KAFFEE", 1)], dict(preset='monthly'), 'arrears',
            month - relativedelta(months=1), True, None,
            "Kaffeeautomat Gaststube"),
        (19, [("WART-HZG", 1)], dict(preset='quarterly'), 'advance',
            quarter + relativedelta(months=3), True, None,
            "Heizungswartung Neubau (Start nächstes Quartal)"),
        ]


def log(message):
    print(message, flush=True)


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


def setup_accounting(config, company):
    from proteus import Model
    from trytond.modules.account.tests.tools import (
        create_chart, create_fiscalyear, get_accounts)
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    Account = Model.get('account.account')
    FiscalYear = Model.get('account.fiscalyear')
    Tax = Model.get('account.tax')
    PaymentTerm = Model.get('account.invoice.payment_term')

    if not Account.find([('company', '=', company.id)], limit=1):
        log("chart of accounts")
        create_chart(company, config=config)
    accounts = get_accounts(company, config=config)

    today = dt.date.today()
    for year in (today.year - 1, today.year, today.year + 1):
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

    taxes = Tax.find([
            ('company', '=', company.id), ('name', '=', TAX_NAME)])
    if taxes:
        tax, = taxes
    else:
        log("tax")
        tax = Tax(name=TAX_NAME, description="Umsatzsteuer 19 %")
        tax.company = company
        tax.type = 'percentage'
        tax.rate = Decimal('0.19')
        tax.invoice_account = accounts['tax']
        tax.credit_note_account = accounts['tax']
        tax.save()

    terms = PaymentTerm.find([('name', '=', PAYMENT_TERM_NAME)])
    if terms:
        payment_term, = terms
    else:
        payment_term = PaymentTerm(name=PAYMENT_TERM_NAME)
        line = payment_term.lines.new(type='remainder')
        line.relativedeltas.new(days=14)
        payment_term.save()
    return accounts, tax, payment_term


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


def setup_services(accounts, tax):
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
        category.customer_taxes.append(tax)
        category.save()

    unit, = Uom.find([('name', '=', "Unit")])
    services = {}
    new = 0
    for name, code, price in SERVICES:
        products = Product.find([('code', '=', code)])
        if products:
            product, = products
        else:
            template = Template(name=name)
            template.code = code
            template.type = 'service'
            template.default_uom = unit
            template.list_price = price
            template.salable = True
            template.account_category = category
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


def setup_contracts(config, company, customers, services, today):
    from proteus import Model, Wizard
    Subscription = Model.get('sale.subscription')
    RuleSet = Model.get('sale.subscription.recurrence.rule.set')

    # a plain monthly rule set so that a new contract can be saved; the
    # wizard replaces it
    rule_sets = RuleSet.find([('name', '=', "Monatlich")])
    if rule_sets:
        monthly = rule_sets[0]
    else:
        monthly = RuleSet(name="Monatlich")
        rule, = monthly.rules
        rule.freq = 'monthly'
        rule.interval = 1
        monthly.save()

    created = 0
    for i, (customer, lines, recurrence, timing, start, catch_up, end,
            description) in enumerate(_contracts(today), 1):
        reference = f'{REFERENCE_PREFIX}{i:03d}'
        found = Subscription.find([('reference', '=', reference)])
        if found:
            subscription, = found
            if subscription.state != 'draft':
                continue
        else:
            subscription = Subscription()
            subscription.reference = reference
            subscription.description = description
            subscription.party = customers[customer]
            subscription.start_date = start
            subscription.end_date = end
            subscription.invoice_recurrence = monthly
            for code, quantity in lines:
                line = subscription.lines.new()
                line.service = services[code]
                line.quantity = quantity
            subscription.save()

        setup = Wizard('sale.subscription.setup_recurrence', [subscription])
        form = setup.form
        form.preset = recurrence['preset']
        if 'interval' in recurrence:
            form.interval = recurrence['interval']
        if 'months' in recurrence:
            form.months = recurrence['months']
        form.invoice_timing = timing
        form.start_date = start
        form.catch_up = catch_up
        setup.execute('preview')
        setup.execute('apply')

        subscription.reload()
        subscription.click('quote')
        subscription.click('run')
        created += 1
        log(f"contract {reference}: {customers[customer].name}, "
            f"{recurrence['preset']}, {timing}, start {start}"
            + (", catch-up" if catch_up else "")
            + (f", until {end}" if end else ""))
    return created


def setup_delivery(config, customers):
    """Switch automatic delivery on for the company and for the contracts
    of AUTOMATIC_DELIVERY (only what is not switched on yet)"""
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


def run_night(date):
    "Run the nightly pipeline for date (the core wizard calls it)"
    from proteus import Wizard
    create_invoice = Wizard('sale.subscription.create_invoice')
    create_invoice.form.date = date
    create_invoice.execute('create_')


def generate_invoices(config, date):
    """Replay the nights up to date that have invoices due, oldest first

    The contracts that catch up have invoices due on several past days.
    Running the nights one after the other creates, posts and numbers them
    in the order of their invoice dates (posting them all in one night
    fails for the earlier ones: their number would come after a later
    date).  The protocols of the past nights are confirmed, the one of the
    last night is left to confirm."""
    from proteus import Model
    Subscription = Model.get('sale.subscription')
    Run = Model.get('account.invoice.run')
    Warning = Model.get('res.user.warning')

    existing = {r.id for r in Run.find([])}
    nights = set()
    while True:
        due = Subscription.find([
                ('state', 'in', ['running', 'closed']),
                ('next_invoice_date', '<', date),
                ], order=[('next_invoice_date', 'ASC'), ('id', 'ASC')],
            limit=1)
        if not due or due[0].next_invoice_date in nights:
            break
        night = due[0].next_invoice_date
        nights.add(night)
        log(f"  night of {night}")
        run_night(night)
    log(f"  night of {date}")
    run_night(date)

    runs = Run.find([
            ('id', 'not in', list(existing)),
            ('kind', '=', 'automatic'),
            ('state', '=', 'executed'),
            ], order=[('date', 'ASC'), ('id', 'ASC')])
    for run in runs[:-1]:
        try:
            run.click('confirm')
        except Exception as exception:
            name = getattr(exception, 'name', None)
            if not name:
                raise
            Warning.skip(name, True, config.context)
            run.click('confirm')
    if runs[:-1]:
        log(f"  {len(runs) - 1} protocol(s) of past nights confirmed")


def setup_technicians(company):
    "Return the technicians (company.employee) of TECHNICIANS"
    from proteus import Model
    Employee = Model.get('company.employee')
    Party = Model.get('party.party')
    employees = []
    for name, email in TECHNICIANS:
        found = Employee.find([
                ('company', '=', company.id),
                ('party.name', '=', name),
                ])
        if found:
            employees.append(found[0])
            continue
        parties = Party.find([('name', '=', name)])
        if parties:
            party = parties[0]
        else:
            party = Party(name=name)
            party.contact_mechanisms.new(type='email', value=email)
            party.save()
        employee = Employee(party=party, company=company)
        employee.save()
        employees.append(employee)
        log(f"technician {name}")
    return employees


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


def generate_dispatch(contracts, today, technicians):
    """Replay the nights up to today that have dispatch orders to create,
    oldest first, each followed by the dispatcher's planning (the next
    order of a planning date contract is due one interval after the
    planning date of the last one), then the night of today"""
    from proteus import Model, Wizard
    Subscription = Model.get('sale.subscription')
    ids = [c.id for c in contracts]
    totals = [0, 0, 0]

    def run_night(night):
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
    skip_config_wizard()
    lang = set_language(config)
    country = get_germany()
    company = setup_company(config, lang, country)
    accounts, tax, payment_term = setup_accounting(config, company)
    customers = setup_customers(lang, country, payment_term)
    services = setup_services(accounts, tax)
    if not contracts:
        log("base data loaded (no contracts)")
        return

    setup_contracts(config, company, customers, services, today)
    # before the generation, so that it posts and delivers the invoices
    setup_delivery(config, customers)
    Invoice = Model.get('account.invoice')
    Subscription = Model.get('sale.subscription')
    Run = Model.get('account.invoice.run')
    RunLine = Model.get('account.invoice.run.line')
    before = len(Invoice.find([]))
    lines_before = len(RunLine.find([]))
    if generate:
        log(f"generating recurring invoices for {today}")
        generate_invoices(config, today)
    setup_dispatch_sequence()
    technicians = setup_technicians(company)
    dispatch_contracts = setup_dispatch_contracts(services)
    Order = Model.get('dispatch.order')
    orders_before = len(Order.find([]))
    if generate:
        log(f"generating dispatch orders for {today}")
        generate_dispatch(dispatch_contracts, today, technicians)

    invoices = len(Invoice.find([]))
    count = len(Subscription.find([
                ('reference', 'like', f'{REFERENCE_PREFIX}%')]))
    log(f"demo data: {len(customers)} customers, {count} contracts, "
        f"{invoices} invoices ({invoices - before} new)")
    lines = RunLine.find([])
    new_lines = len(lines) - lines_before
    states = {}
    for line in lines:
        key = f'{line.channel} {line.state}'
        states[key] = states.get(key, 0) + 1
    runs = Run.find([('state', '=', 'executed')])
    log(f"delivery: {new_lines} new protocol lines; "
        f"{len(runs)} protocol(s) to confirm "
        f"(Financial › Invoices › Invoice Runs); all lines: "
        + (', '.join(f'{v} {k}' for k, v in sorted(states.items()))
            or 'none'))
    orders = Order.find([])
    states = {}
    for order in orders:
        key = f'{order.contract.dispatch_mode if order.contract else "-"} '
        key += ('to plan' if order.state == 'draft'
            and not order.planning_date else order.state)
        states[key] = states.get(key, 0) + 1
    log(f"dispatch: {len(technicians)} technicians, "
        f"{len(dispatch_contracts)} contracts, {len(orders)} orders "
        f"({len(orders) - orders_before} new): "
        + (', '.join(f'{v} {k}' for k, v in sorted(states.items()))
            or 'none'))


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
        help="do not generate invoices and dispatch orders")
    parser.add_argument('--no-contracts', dest='contracts',
        action='store_false',
        help="only the base data (company, accounting, customers, "
        "products), e.g. before the Turnus modules are activated")
    options = parser.parse_args()
    main(options.database, options.config_file, options.date,
        options.generate, options.contracts)
