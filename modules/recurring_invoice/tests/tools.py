# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Helpers for the scenarios of recurring_invoice"
import os
import re
from decimal import Decimal

from proteus import Model, Wizard
from proteus import config as pconfig

from trytond.modules.account.tests.tools import create_tax, get_accounts

__all__ = [
    'create_eur_company', 'setup_contract_data', 'get_contract_data', 'create_contract',
    'generate_invoices', 'einvoice_report']


def create_eur_company(config=None):
    "Create the company with the euro as its currency"
    from trytond.modules.company.tests.tools import create_company
    from trytond.modules.currency.tests.tools import get_currency
    create_company(currency=get_currency('EUR', config=config), config=config)


def setup_contract_data(config=None):
    """Create a VAT tax, service products with their subscription services
    and a customer with an invoice address"""
    if config is None:
        config = pconfig.get_config()
    ProductCategory = Model.get('product.category', config=config)
    ProductTemplate = Model.get('product.template', config=config)
    Service = Model.get('sale.subscription.service', config=config)
    Uom = Model.get('product.uom', config=config)
    Party = Model.get('party.party', config=config)

    accounts = get_accounts(config=config)
    tax = create_tax(Decimal('.19'), config=config)
    tax.save()

    account_category = ProductCategory(name="Services")
    account_category.accounting = True
    account_category.account_revenue = accounts['revenue']
    account_category.customer_taxes.append(tax)
    account_category.save()

    unit, = Uom.find([('name', '=', 'Unit')])
    for name, price, prorate in [
            ("Maintenance", Decimal('100'), False),
            ("Rental", Decimal('31'), True),
            ("Garden Care", Decimal('80'), False),
            ]:
        template = ProductTemplate(name=name)
        template.default_uom = unit
        template.type = 'service'
        template.list_price = price
        template.account_category = account_category
        template.subscription_prorate = prorate
        template.save()
        product, = template.products
        Service(product=product).save()

    customer = Party(name="Customer")
    address, = customer.addresses
    address.street = "Hauptstraße 1"
    address.postal_code = "10115"
    address.city = "Berlin"
    address.invoice = True
    customer.save()


def get_contract_data(config=None):
    "Return the records created by setup_contract_data"
    Service = Model.get('sale.subscription.service', config=config)
    Party = Model.get('party.party', config=config)
    services = {s.product.name: s for s in Service.find([])}
    customer, = Party.find([('name', '=', "Customer")])
    return customer, services


def create_contract(
        party, services, start_date, end_date=None, preset='monthly',
        invoice_timing='advance', catch_up=False, config=None, **wizard):
    """Return a draft contract with one line per service, its recurrence
    set up by the wizard"""
    Subscription = Model.get('sale.subscription', config=config)
    subscription = Subscription(party=party)
    subscription.start_date = start_date
    subscription.end_date = end_date
    for service in services:
        line = subscription.lines.new()
        line.service = service
        line.quantity = 1
    subscription.save()
    setup = Wizard('sale.subscription.setup_recurrence', [subscription])
    setup.form.preset = preset
    setup.form.invoice_timing = invoice_timing
    setup.form.catch_up = catch_up
    setup.form.start_date = start_date
    for name, value in wizard.items():
        setattr(setup.form, name, value)
    setup.execute('preview')
    setup.execute('apply')
    subscription.reload()
    return subscription


def generate_invoices(date=None, config=None):
    "Run the recurring invoice generation for date"
    create_invoice = Wizard('sale.subscription.create_invoice', config=config)
    if date:
        create_invoice.form.date = date
    create_invoice.execute('create_')


# The official EN 16931 and XRechnung validation artefacts beside the
# repository (../shared/einvoice, see its README); the module's own copies
# (einvoice_validation, test_einvoice.py checks they are the same files)
# when they are not there
SHARED_EINVOICE = os.path.join(
    os.path.dirname(__file__), '..', '..', '..', '..', 'shared', 'einvoice')
_EINVOICE_FILES = {
    'en16931': ['EN16931-CII-validation.xslt'],
    'xrechnung': ['xrechnung', 'XRechnung-CII-validation.xsl'],
    }
_stylesheets = {}


def einvoice_stylesheet(name):
    "The path of the official stylesheet name ('en16931' or 'xrechnung')"
    path = os.path.join(SHARED_EINVOICE, *_EINVOICE_FILES[name])
    if not os.path.exists(path):
        path = os.path.join(
            os.path.dirname(__file__), '..', 'einvoice_validation',
            _EINVOICE_FILES[name][-1])
    return os.path.normpath(path)


def einvoice_report(xml, xrechnung=False):
    """Validate the CII XML as an e-invoice receiver would: Factur-X's XSD
    of the EN 16931 profile and the official schematron stylesheets run by
    Saxon; return the failed assertions as "flag id" strings, warnings
    included (an empty list: valid)"""
    import facturx
    from saxonche import PySaxonProcessor
    facturx.xml_check_xsd(xml, flavor='factur-x', level='en16931')
    if 'processor' not in _stylesheets:
        _stylesheets['processor'] = PySaxonProcessor(license=False)
    processor = _stylesheets['processor']
    failed = []
    for name in ['en16931'] + (['xrechnung'] if xrechnung else []):
        if name not in _stylesheets:
            _stylesheets[name] = (
                processor.new_xslt30_processor().compile_stylesheet(
                    stylesheet_file=einvoice_stylesheet(name)))
        node = processor.parse_xml(xml_text=xml.decode('utf-8'))
        svrl = _stylesheets[name].transform_to_string(xdm_node=node)
        for assertion in re.findall(r'<svrl:failed-assert[^>]*>', svrl):
            flag = re.search(r'flag="([^"]*)"', assertion)
            id_ = re.search(r'id="([^"]*)"', assertion)
            failed.append('%s %s' % (
                    flag.group(1) if flag else 'fatal',
                    id_.group(1) if id_ else '?'))
    return failed
