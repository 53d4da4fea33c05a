# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The data of the nightly scenarios (nightly, delivery, workers): N
running monthly contracts, one line and one customer each, all due on
due_date().  Child steps ``template`` and ``populate``, by flavour:

* ``turnus``: recurring_invoice, recurrence by the wizard
  ``sale.subscription.setup_recurrence`` (catch up);
* ``core``: sale_subscription alone, the service's consumption recurrence
  and the contract's invoice recurrence monthly;
* ``delivery``: as turnus, plus a fiscal year to post in, customers with an
  e-mail address, each contract its own standard delivery (post, e-mail,
  the module's template "Invoice"), automatic delivery on (company too);
  ``spec['channels']`` (default ``['email']``) sets its channels;
* ``direct_debit``: as delivery with account_payment_sepa activated and a
  euro company: the company's creditor identifier, bank account and SEPA
  payment journal (the sale configuration's direct-debit journal), and per
  customer a bank account (a German IBAN) with a validated SEPA mandate.
"""
import datetime as dt
import time

from .harness import (
    contract_values, create_database, create_parties, init_trytond,
    run_wizard, start_contracts, worker_pool)

# Records created or processed in one call while populating
SLICE = 500
MANDATE_SLICE = 50
PRICE = 100
FLAVOURS = {
    'turnus': ['recurring_invoice'],
    'core': ['sale_subscription'],
    'delivery': ['recurring_invoice'],
    'direct_debit': ['recurring_invoice', 'account_payment_sepa'],
    }
# The flavours whose contracts deliver the invoices themselves
DELIVERING = {'delivery', 'direct_debit'}
# The SEPA data of the direct_debit flavour (as scenario_direct_debit.rst)
CREDITOR_IDENTIFIER = 'DE98ZZZ09999999999'
BANK_BIC = 'COLSDE33XXX'
BANK_CODE = '37040044'
COMPANY_IBAN = 'DE89370400440532013000'


def german_iban(account):
    "A valid German IBAN of BANK_CODE and the account number account"
    bban = BANK_CODE + f'{account:010d}'
    # ISO 7064 MOD 97-10 with 'DE00' moved to the end (D = 13, E = 14)
    return f"DE{98 - int(bban + '131400') % 97:02d}{bban}"


def mandate_identification(number):
    return f"MANDAT-{number:05d}"


def due_date():
    "The date on which every contract is due: first day of last month"
    first = dt.date.today().replace(day=1)
    return (first - dt.timedelta(days=1)).replace(day=1)


def template(spec):
    "Database, modules, company, chart, tax and the subscription service"
    from decimal import Decimal

    from proteus import Model
    from proteus import config as pconfig

    from trytond.modules.account.tests.tools import (
        create_chart, create_fiscalyear, create_tax, get_accounts)
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    from trytond.modules.company.tests.tools import create_company

    start = time.monotonic()
    flavour = spec['flavour']
    init_trytond(spec)
    create_database(spec['db'], FLAVOURS[flavour], translatable=True)
    config = pconfig.set_trytond(
        database=spec['db'], config_file=spec['config'])
    if flavour == 'direct_debit':
        # SEPA collects euros
        from trytond.modules.currency.tests.tools import get_currency
        create_company(currency=get_currency('EUR', config=config),
            config=config)
    else:
        create_company(config=config)
    create_chart(config=config)

    accounts = get_accounts()
    tax = create_tax(Decimal('.19'))
    tax.save()
    category = Model.get('product.category')(name="Services")
    category.accounting = True
    category.account_revenue = accounts['revenue']
    category.customer_taxes.append(tax)
    category.save()

    unit, = Model.get('product.uom').find([('name', '=', "Unit")])
    product_template = Model.get('product.template')(name="Maintenance")
    product_template.default_uom = unit
    product_template.type = 'service'
    product_template.list_price = Decimal(PRICE)
    product_template.account_category = category
    product_template.save()
    product, = product_template.products
    service = Model.get('sale.subscription.service')(product=product)
    if flavour == 'core':
        # Core has no recurrence wizard: the service gives the consumption
        # recurrence and the contract the invoice recurrence
        monthly = Model.get('sale.subscription.recurrence.rule.set')(
            name="Monthly")
        # The rule set comes with an empty rule for a user
        rule = monthly.rules[0] if monthly.rules else monthly.rules.new()
        rule.freq = 'monthly'
        rule.interval = 1
        monthly.save()
        service.consumption_recurrence = monthly
    service.save()

    if flavour in DELIVERING:
        # Automatic posting dates the invoices of past periods today
        date, today = dt.date.fromisoformat(spec['date']), dt.date.today()
        fiscalyear = set_fiscalyear_invoice_sequences(
            create_fiscalyear(today=(min(date, today), max(date, today))))
        fiscalyear.click('create_period')
        configuration = Model.get('sale.configuration')(1)
        configuration.automatic_delivery = True
        configuration.save()
    if flavour == 'direct_debit':
        _setup_sepa(config)
    return {'seconds': time.monotonic() - start}


def _setup_sepa(config):
    """The company's creditor identifier and bank account, the SEPA payment
    journal and the sale configuration's direct-debit journal"""
    from proteus import Model

    from trytond.modules.company.tests.tools import get_company

    Party = Model.get('party.party')
    company = get_company(config=config)
    company.party.identifiers.new(type='eu_at_02', code=CREDITOR_IDENTIFIER)
    company.party.save()
    bank = Model.get('bank')(party=Party(name="Sparkasse"), bic=BANK_BIC)
    bank.party.save()
    bank.save()
    account = Model.get('bank.account')(bank=bank)
    account.owners.append(Party(company.party.id))
    account.numbers.new(type='iban', number=COMPANY_IBAN)
    account.save()
    journal = Model.get('account.payment.journal')(name="SEPA-Lastschrift")
    journal.process_method = 'sepa'
    journal.sepa_bank_account_number = account.numbers[0]
    journal.sepa_payable_flavor = 'pain.001.001.03'
    journal.sepa_receivable_flavor = 'pain.008.001.02'
    journal.save()
    configuration = Model.get('sale.configuration')(1)
    configuration.direct_debit_journal = journal
    configuration.save()


def populate(spec):
    "Create N customers and N running contracts due on spec['date']"
    from trytond.transaction import Transaction

    start = time.monotonic()
    db, n, flavour = spec['db'], spec['n'], spec['flavour']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = worker_pool(spec)
    Product = pool.get('product.product')
    Subscription = pool.get('sale.subscription')

    with Transaction().start(db, 0, context=context) as transaction:
        company = pool.get('company.company')(context['company'])
        service, = pool.get('sale.subscription.service').search([])
        product = service.product
        with Transaction().set_context(
                currency=company.currency.id, sale_date=date,
                uom=product.sale_uom.id):
            unit_price = Product.get_sale_price([product], 1)[product.id]
        line_values = {
            'service': service.id,
            'quantity': 1,
            'unit': product.sale_uom.id,
            'unit_price': unit_price,
            'start_date': date,
            }
        if service.consumption_recurrence:
            line_values['consumption_recurrence'] = (
                service.consumption_recurrence.id)

        ids = []
        for offset in range(0, n, SLICE):
            parties = create_parties(pool, offset + 1,
                min(SLICE, n - offset), email=flavour in DELIVERING and (
                    "customer{:05d}@example.com"))
            if flavour == 'direct_debit':
                _create_mandates(pool, company, parties, offset + 1, date)
            extra = {'invoice_recurrence': service.consumption_recurrence.id
                } if flavour == 'core' else {}
            values = [contract_values(company, party, date,
                    [dict(line_values)], **extra) for party in parties]
            ids.extend(s.id for s in Subscription.create(values))
            transaction.commit()

        slices = [ids[o:o + SLICE] for o in range(0, n, SLICE)]
        if flavour != 'core':
            # The recurrence wizard, as a user would run it on a selection
            for sub_ids in slices:
                run_wizard(pool, 'sale.subscription.setup_recurrence',
                    sub_ids, {'start': {
                            'preset': 'monthly',
                            'interval': 1,
                            'months': [],
                            'invoice_timing': 'advance',
                            'catch_up': True,
                            'start_date': date,
                            }})
                transaction.commit()
        if flavour in DELIVERING:
            channels = spec.get('channels') or ['email']
            for sub_ids in slices:
                _setup_deliveries(pool, sub_ids, channels)
                transaction.commit()
        start_contracts(pool, slices)

        due = Subscription.search_count([
                ('state', '=', 'running'),
                ('next_invoice_date', '=', date),
                ])
        # core's sale_subscription has no delivery settings
        automatic = Subscription.search_count([
                ('automatic_delivery', '=', True),
                ('standard_delivery', '!=', None),
                ]) if flavour in DELIVERING else n
        mandates = pool.get('account.payment.sepa.mandate').search_count([
                ('state', '=', 'validated'),
                ]) if flavour == 'direct_debit' else n
    if due != n or automatic != n or mandates != n:
        raise AssertionError(f"{due} contracts due on {date}, {automatic} "
            f"with automatic delivery, {mandates} mandates, expected {n}")
    return {'seconds': time.monotonic() - start, 'due': due}


def _create_mandates(pool, company, parties, first, date):
    """Give each party (numbered from first) a bank account with a German
    IBAN and a validated recurrent SEPA mandate signed on date, in bulk"""
    from stdnum import iban

    BankAccount = pool.get('bank.account')
    Mandate = pool.get('account.payment.sepa.mandate')
    bank, = pool.get('bank').search([('bic', '=', BANK_BIC)])
    numbers = [german_iban(first + i) for i in range(len(parties))]
    assert all(map(iban.is_valid, numbers))
    accounts = []
    # SQLite's parser fails on the unique check of more numbers at once
    for offset in range(0, len(parties), MANDATE_SLICE):
        accounts += BankAccount.create([{
                    'bank': bank.id,
                    'owners': [('add', [party.id])],
                    'numbers': [('create', [{
                                    'type': 'iban', 'number': number}])],
                    } for party, number in zip(
                    parties[offset:offset + MANDATE_SLICE],
                    numbers[offset:offset + MANDATE_SLICE])])
    values = [{
            'company': company.id,
            'party': party.id,
            'address': party.addresses[0].id,
            'account_number': account.numbers[0].id,
            'identification': mandate_identification(first + i),
            'type': 'recurrent',
            'signature_date': date,
            'state': 'validated',
            } for i, (party, account) in enumerate(zip(parties, accounts))]
    for offset in range(0, len(values), MANDATE_SLICE):
        Mandate.create(values[offset:offset + MANDATE_SLICE])


def _setup_deliveries(pool, sub_ids, channels=('email',)):
    """Give each contract its own standard delivery (post, by channels, by
    e-mail with the template of the module) and switch its automatic
    delivery on"""
    from trytond.transaction import Transaction

    Delivery = pool.get('sale.subscription.delivery')
    Subscription = pool.get('sale.subscription')
    template_id = pool.get('ir.model.data').get_id(
        'recurring_invoice', 'email_template_invoice')
    deliveries = Delivery.create([{
                'kind': 'standard',
                'post': True,
                'channels': list(channels),
                'email_template': template_id if 'email' in channels else None,
                } for _ in sub_ids])
    args = []
    for sub_id, delivery in zip(sub_ids, deliveries):
        args.extend([Subscription.browse([sub_id]), {
                    'standard_delivery': delivery.id,
                    'automatic_delivery': True,
                    }])
    # Switching automatic delivery on asks for confirmation
    with Transaction().set_context(_skip_warnings=True):
        Subscription.write(*args)


def filled(backend, flavour, sizes, timeout, date=None):
    """Build the template database of flavour, then one filled copy per
    size: {n: (database, populate result)}"""
    date = (date or due_date()).isoformat()
    spec = {'db': backend.db_name('tpl', flavour), 'flavour': flavour,
        'date': date}
    backend.build(template, spec, timeout)
    databases = {}
    for n in sizes:
        db = backend.db_name(flavour, n)
        databases[n] = (db, backend.build(populate, dict(spec, db=db, n=n),
                timeout, copy_of=spec['db']))
    return databases
