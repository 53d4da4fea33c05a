# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Helpers for the scenarios of dispatch_order"
from proteus import Model, Wizard
from proteus import config as pconfig

__all__ = [
    'setup_dispatch_data', 'get_dispatch_data', 'create_dispatch_contract',
    'generate_dispatch_orders']


def setup_dispatch_data(config=None):
    """Create a maintenance service, a spare part and a customer with an
    address

    It needs no chart of accounts, so it works with dispatch_order
    activated alone."""
    if config is None:
        config = pconfig.get_config()
    ProductTemplate = Model.get('product.template', config=config)
    Service = Model.get('sale.subscription.service', config=config)
    Uom = Model.get('product.uom', config=config)
    Party = Model.get('party.party', config=config)

    unit, = Uom.find([('name', '=', 'Unit')])
    hour, = Uom.find([('name', '=', 'Hour')])
    for name, uom, type_ in [
            ("Maintenance", hour, 'service'),
            ("Filter", unit, 'goods'),
            ]:
        template = ProductTemplate(name=name)
        template.default_uom = uom
        template.type = type_
        template.save()
        if type_ == 'service':
            product, = template.products
            Service(product=product).save()

    customer = Party(name="Customer")
    address, = customer.addresses
    address.street = "Hauptstraße 1"
    address.postal_code = "10115"
    address.city = "Berlin"
    customer.save()


def get_dispatch_data(config=None):
    "Return the customer, the maintenance service and the filter product"
    Service = Model.get('sale.subscription.service', config=config)
    Product = Model.get('product.product', config=config)
    Party = Model.get('party.party', config=config)
    service, = Service.find([('product.name', '=', "Maintenance")])
    filter_, = Product.find([('name', '=', "Filter")])
    customer, = Party.find([('name', '=', "Customer")])
    return customer, service, filter_


def create_dispatch_contract(
        party, service, start_date, mode, preset='quarterly', lead_days=0,
        end_date=None, run=True, config=None, **wizard):
    """Return a contract with one maintenance line and its dispatch
    recurrence set up by the wizard, running unless run is False

    Without recurring_invoice, core requires an invoice recurrence: the
    contract gets a yearly one and its line no consumption recurrence, so
    it never creates an invoice."""
    Subscription = Model.get('sale.subscription', config=config)
    RuleSet = Model.get('sale.subscription.recurrence.rule.set', config=config)
    subscription = Subscription(party=party)
    subscription.start_date = start_date
    subscription.end_date = end_date
    if not subscription.invoice_recurrence:
        yearly = RuleSet.find([('name', '=', "Yearly")])
        if not yearly:
            yearly = RuleSet(name="Yearly")
            rule, = yearly.rules
            rule.freq = 'yearly'
            rule.interval = 1
            yearly.save()
        else:
            yearly, = yearly
        subscription.invoice_recurrence = yearly
    line = subscription.lines.new()
    line.service = service
    line.quantity = 2
    line.description = "Annual maintenance of the heating"
    subscription.save()
    setup = Wizard('sale.subscription.setup_dispatch', [subscription])
    setup.form.preset = preset
    setup.form.dispatch_mode = mode
    setup.form.dispatch_lead_days = lead_days
    for name, value in wizard.items():
        setattr(setup.form, name, value)
    setup.execute('preview')
    setup.execute('apply')
    subscription.reload()
    if run:
        subscription.click('quote')
        subscription.click('run')
    return subscription


def generate_dispatch_orders(date, config=None):
    "Run the dispatch order generation for date"
    create = Wizard(
        'sale.subscription.create_dispatch_orders', config=config)
    create.form.date = date
    create.execute('create_')
