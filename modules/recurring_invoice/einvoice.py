# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Electronic invoices (registered with edocument_uncefact activated)

The UN/CEFACT Cross Industry Invoice of Tryton's edocument_uncefact is
completed where EN 16931 and the German CIUS XRechnung need more, validated
(XSD and the official business rules) and then embedded in the delivered PDF
(ZUGFeRD / Factur-X) or, for XRechnung, sent beside it."""
import logging
import os
import threading

from lxml import etree

from trytond.i18n import gettext
from trytond.model import ModelSQL, fields
from trytond.modules.company.model import CompanyValueMixin
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from .exceptions import EinvoiceError, EinvoiceValidationError

logger = logging.getLogger(__name__)

FORMATS = [
    ('none', "None"),
    ('zugferd', "ZUGFeRD / Factur-X"),
    ('xrechnung', "XRechnung"),
    ]
PROFILES = [
    ('en16931', "EN 16931 (Comfort)"),
    ('extended', "Extended"),
    ]
# BT-24, the specification the invoice follows
GUIDELINES = {
    'en16931': 'urn:cen.eu:en16931:2017',
    'extended': (
        'urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended'),
    'xrechnung': (
        'urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:'
        'xrechnung_3.0'),
    }
# BT-23, the business process (PEPPOL billing, as XRechnung expects)
BUSINESS_PROCESS = 'urn:fdc:peppol.eu:2017:poacc:billing:01:1.0'
TEMPLATE = '16B-CII'

NS = {
    'rsm': 'urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100',
    'ram': 'urn:un:unece:uncefact:data:standard:'
    'ReusableAggregateBusinessInformationEntity:100',
    'udt': 'urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100',
    'svrl': 'http://purl.oclc.org/dsdl/svrl',
    }

# The sequences of the CII schema, for inserting at the right place
ORDER = {
    'ExchangedDocumentContext': [
        'TestIndicator', 'BusinessProcessSpecifiedDocumentContextParameter',
        'GuidelineSpecifiedDocumentContextParameter'],
    'TradeParty': [
        'ID', 'GlobalID', 'Name', 'RoleCode', 'Description',
        'SpecifiedLegalOrganization', 'DefinedTradeContact',
        'PostalTradeAddress', 'URIUniversalCommunication',
        'SpecifiedTaxRegistration'],
    'ApplicableHeaderTradeAgreement': [
        'BuyerReference', 'SellerTradeParty', 'BuyerTradeParty',
        'SellerTaxRepresentativeTradeParty', 'SellerOrderReferencedDocument',
        'BuyerOrderReferencedDocument', 'ContractReferencedDocument'],
    'ApplicableHeaderTradeSettlement': [
        'CreditorReferenceID', 'PaymentReference', 'TaxCurrencyCode',
        'InvoiceCurrencyCode', 'InvoiceIssuerReference',
        'InvoicerTradeParty', 'InvoiceeTradeParty', 'PayeeTradeParty',
        'PayerTradeParty', 'TaxApplicableTradeCurrencyExchange',
        'SpecifiedTradeSettlementPaymentMeans', 'ApplicableTradeTax',
        'BillingSpecifiedPeriod', 'SpecifiedTradeAllowanceCharge',
        'SpecifiedLogisticsServiceCharge', 'SpecifiedTradePaymentTerms',
        'SpecifiedTradeSettlementHeaderMonetarySummation'],
    'SpecifiedLineTradeSettlement': [
        'ApplicableTradeTax', 'BillingSpecifiedPeriod',
        'SpecifiedTradeAllowanceCharge',
        'SpecifiedTradeSettlementLineMonetarySummation'],
    'SpecifiedTradeSettlementPaymentMeans': [
        'TypeCode', 'Information', 'ApplicableTradeSettlementFinancialCard',
        'PayerPartyDebtorFinancialAccount',
        'PayeePartyCreditorFinancialAccount',
        'PayeeSpecifiedCreditorFinancialInstitution'],
    'SpecifiedTradePaymentTerms': [
        'Description', 'DueDateDateTime', 'DirectDebitMandateID',
        'PartialPaymentAmount'],
    'IncludedSupplyChainTradeLineItem': [
        'AssociatedDocumentLineDocument', 'SpecifiedTradeProduct',
        'SpecifiedLineTradeAgreement', 'SpecifiedLineTradeDelivery',
        'SpecifiedLineTradeSettlement'],
    }
for _party in ['SellerTradeParty', 'BuyerTradeParty']:
    ORDER[_party] = ORDER['TradeParty']

# The official validation artefacts (see einvoice_validation/README.md)
VALIDATION_DIR = os.path.join(
    os.path.dirname(__file__), 'einvoice_validation')
STYLESHEETS = {
    'en16931': 'EN16931-CII-validation.xslt',
    'xrechnung': 'XRechnung-CII-validation.xsl',
    }


def _tag(name):
    prefix, local = name.split(':')
    return f'{{{NS[prefix]}}}{local}'


def _local(element):
    return etree.QName(element).localname


def _element(name, text=None, **attrib):
    element = etree.Element(_tag(name), **attrib)
    if text is not None:
        element.text = str(text)
    return element


def _place(parent, element):
    """Insert element into parent after the children that come before it in
    the schema's sequence"""
    order = ORDER[_local(parent)]
    rank = order.index(_local(element))
    position = 0
    for index, child in enumerate(parent):
        if (not isinstance(child.tag, str)
                or _local(child) not in order
                or order.index(_local(child)) <= rank):
            position = index + 1
    parent.insert(position, element)
    return element


def _date(name, date):
    element = _element(name)
    element.append(
        _element('udt:DateTimeString', date.strftime('%Y%m%d'), format='102'))
    return element


def _find(parent, path):
    return parent.find(path, NS)


def _remove(element):
    element.getparent().remove(element)


class ValidationArtefacts:
    """The compiled business-rule stylesheets, once per process

    Saxon's processor is not documented as thread-safe: transformations
    run one at a time"""
    _lock = threading.Lock()
    _processor = None
    _compiled = {}

    @classmethod
    def errors(cls, xml, name):
        "Return the (rule id, text) of the fatal failed assertions"
        with cls._lock:
            if cls._processor is None:
                from saxonche import PySaxonProcessor
                cls._processor = PySaxonProcessor(license=False)
            if name not in cls._compiled:
                compiler = cls._processor.new_xslt30_processor()
                cls._compiled[name] = compiler.compile_stylesheet(
                    stylesheet_file=os.path.join(
                        VALIDATION_DIR, STYLESHEETS[name]))
            node = cls._processor.parse_xml(xml_text=xml.decode('utf-8'))
            svrl = cls._compiled[name].transform_to_string(xdm_node=node)
        report = etree.fromstring(svrl.encode('utf-8'))
        errors = []
        for failed in report.iterfind('.//svrl:failed-assert', NS):
            if failed.get('flag') not in {None, 'fatal', 'error'}:
                continue
            text = ' '.join(
                ''.join(failed.find('svrl:text', NS).itertext()).split()
                if failed.find('svrl:text', NS) is not None else [])
            errors.append((failed.get('id') or '', text))
        return errors


def validate(xml, format, profile='en16931'):
    """Return the errors of the CII XML: XSD of the Factur-X profile, then
    the EN 16931 rules and, for XRechnung, the XRechnung rules"""
    import facturx
    level = 'en16931' if format == 'xrechnung' else profile
    try:
        facturx.xml_check_xsd(xml, flavor='factur-x', level=level)
    except Exception as exception:
        # lxml's reason, after factur-x's introduction, with prefixes
        text = str(exception).split('the problem: ', 1)[-1]
        for prefix, uri in NS.items():
            text = text.replace('{%s}' % uri, prefix + ':')
        return [('XSD', ' '.join(text.split()))]
    errors = ValidationArtefacts.errors(xml, 'en16931')
    if not errors and format == 'xrechnung':
        errors = ValidationArtefacts.errors(xml, 'xrechnung')
    return errors


class Configuration(metaclass=PoolMeta):
    __name__ = 'sale.configuration'

    einvoice_format = fields.MultiValue(fields.Selection(
            FORMATS, "E-Invoice Format",
            help="The electronic invoice of the customer invoices the "
            "company delivers, unless the customer's party says otherwise."))
    einvoice_profile = fields.MultiValue(fields.Selection(
            PROFILES, "ZUGFeRD Profile",
            states={
                'invisible': Eval('einvoice_format') != 'zugferd',
                },
            help="The ZUGFeRD / Factur-X profile of the XML embedded in the "
            "PDF."))

    @classmethod
    def multivalue_model(cls, field):
        pool = Pool()
        if field in {'einvoice_format', 'einvoice_profile'}:
            return pool.get('sale.configuration.einvoice')
        return super().multivalue_model(field)

    @classmethod
    def default_einvoice_format(cls, **pattern):
        return cls.multivalue_model(
            'einvoice_format').default_einvoice_format()

    @classmethod
    def default_einvoice_profile(cls, **pattern):
        return cls.multivalue_model(
            'einvoice_profile').default_einvoice_profile()


class ConfigurationEinvoice(ModelSQL, CompanyValueMixin):
    __name__ = 'sale.configuration.einvoice'
    __string__ = "Sale Configuration E-Invoice"

    einvoice_format = fields.Selection(FORMATS, "E-Invoice Format")
    einvoice_profile = fields.Selection(PROFILES, "ZUGFeRD Profile")

    @classmethod
    def default_einvoice_format(cls):
        return 'zugferd'

    @classmethod
    def default_einvoice_profile(cls):
        return 'en16931'


def company_einvoice(companies):
    "Return {company id: (format, profile)} of the sale configuration"
    pool = Pool()
    Configuration = pool.get('sale.configuration')
    configuration = Configuration(1)
    result = {}
    for company in companies:
        result[int(company)] = (
            configuration.get_multivalue(
                'einvoice_format', company=int(company)) or 'none',
            configuration.get_multivalue(
                'einvoice_profile', company=int(company)) or 'en16931')
    return result


class Party(metaclass=PoolMeta):
    __name__ = 'party.party'

    einvoice_format = fields.Selection([(None, "")] + FORMATS,
        "E-Invoice Format",
        help="The electronic invoice the party receives.\n"
        "Empty: XRechnung with a Leitweg-ID, else the company's default.")
    leitweg_id = fields.Char("Leitweg-ID",
        help="The buyer reference (BT-10) of a public-sector customer, "
        "required for XRechnung.")

    def get_einvoice_format(self, default):
        "The format the party receives when the company's default is default"
        if self.einvoice_format:
            return self.einvoice_format
        if self.leitweg_id:
            return 'xrechnung'
        return default

    @classmethod
    def validate_fields(cls, parties, field_names):
        super().validate_fields(parties, field_names)
        if field_names and 'leitweg_id' not in field_names:
            return
        for party in parties:
            if party.leitweg_id and not _valid_leitweg_id(party.leitweg_id):
                raise EinvoiceValidationError(gettext(
                        'recurring_invoice.msg_einvoice_leitweg_id_invalid',
                        party=party.rec_name,
                        leitweg_id=party.leitweg_id))


def _valid_leitweg_id(value):
    """Whether value is a Leitweg-ID: coarse address (2-12 digits), an
    optional fine address (up to 30 letters or digits) and two check digits
    (ISO 7064 MOD 97-10, as the KoSIT specification)"""
    parts = value.split('-')
    if len(parts) not in {2, 3}:
        return False
    coarse, check = parts[0], parts[-1]
    fine = parts[1] if len(parts) == 3 else ''
    if not (coarse.isdigit() and 2 <= len(coarse) <= 12):
        return False
    if not (len(check) == 2 and check.isdigit()):
        return False
    if len(fine) > 30 or not all(
            c.isascii() and c.isalnum() for c in fine):
        return False
    digits = ''.join(
        str(int(c, 36)) for c in (coarse + fine + check).upper())
    return int(digits) % 97 == 1


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    einvoice_format = fields.Function(fields.Selection(
            [(None, "")] + FORMATS, "E-Invoice Format",
            help="The electronic invoice the customer receives, as set on "
            "its party.\nEmpty: XRechnung with a Leitweg-ID, else the "
            "company's default."),
        'get_einvoice_format', setter='set_einvoice_format')

    @classmethod
    def get_einvoice_format(cls, subscriptions, name):
        return {s.id: s.party.einvoice_format if s.party else None
            for s in subscriptions}

    @classmethod
    def set_einvoice_format(cls, subscriptions, name, value):
        pool = Pool()
        Party = pool.get('party.party')
        parties = list({s.party for s in subscriptions if s.party})
        if parties:
            Party.write(parties, {'einvoice_format': value})

    @classmethod
    def _automatic_delivery_fields(cls):
        return super()._automatic_delivery_fields() | {'party'}

    @classmethod
    def check_automatic_delivery(cls, subscriptions, field_names=None):
        super().check_automatic_delivery(subscriptions, field_names)
        if field_names and not (
                field_names & cls._automatic_delivery_fields()):
            return
        subscriptions = [s for s in subscriptions if s.automatic_delivery]
        settings = company_einvoice({s.company for s in subscriptions})
        for subscription in subscriptions:
            format, _ = settings[subscription.company.id]
            format = subscription.party.get_einvoice_format(format)
            if format != 'none':
                check_parties(
                    subscription.company, subscription.party,
                    subscription.invoice_address, format)


def _missing_address_fields(address, fields_):
    pool = Pool()
    Address = pool.get('party.address')
    names = Address.fields_get(list(fields_))
    return [names[f]['string'] for f in fields_
        if not (address and getattr(address, f))]


def check_parties(company, party, address, format):
    """Raise EinvoiceError when the company or the party lacks what an
    e-invoice of the format needs"""
    pool = Pool()
    Party = pool.get('party.party')
    formats = dict(Party.fields_get(['einvoice_format'])[
            'einvoice_format']['selection'])
    format_name = formats.get(format, format)
    seller = company.party
    if not any(i.type in {'eu_vat', 'de_stnr'} for i in seller.identifiers):
        raise EinvoiceError(gettext(
                'recurring_invoice.msg_einvoice_seller_tax_id',
                company=company.rec_name, format=format_name))
    xrechnung = format == 'xrechnung'
    required = ['city', 'postal_code', 'country'] if xrechnung else [
        'country']
    for who, who_address in [
            (seller, seller.address_get('invoice')), (party, address)]:
        missing = _missing_address_fields(who_address, required)
        if missing:
            raise EinvoiceError(gettext(
                    'recurring_invoice.msg_einvoice_address',
                    party=who.rec_name, fields=', '.join(missing),
                    format=format_name))
    if xrechnung:
        if not party.leitweg_id:
            raise EinvoiceError(gettext(
                    'recurring_invoice.msg_einvoice_leitweg_id',
                    party=party.rec_name))
        missing = [
            gettext(f'recurring_invoice.msg_einvoice_contact_{t}')
            for t in ['phone', 'email']
            if not seller.contact_mechanism_get(t)]
        if missing:
            raise EinvoiceError(gettext(
                    'recurring_invoice.msg_einvoice_seller_contact',
                    company=company.rec_name, fields=', '.join(missing)))
        if not party.contact_mechanism_get('email'):
            raise EinvoiceError(gettext(
                    'recurring_invoice.msg_einvoice_buyer_email',
                    party=party.rec_name))


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    einvoice_format = fields.Function(fields.Selection(
            FORMATS, "E-Invoice Format",
            help="The electronic invoice delivered with this invoice."),
        'get_einvoice_format')
    einvoice_profile = fields.Function(fields.Selection(
            PROFILES, "ZUGFeRD Profile"), 'get_einvoice_format')
    einvoice = fields.Binary(
        "E-Invoice", filename='einvoice_filename', readonly=True,
        states={
            'invisible': ~Eval('einvoice'),
            },
        help="The validated CII XML delivered with the invoice: embedded "
        "in its PDF (ZUGFeRD) or beside it (XRechnung).")
    einvoice_filename = fields.Function(fields.Char(
            "E-Invoice Filename"), 'get_einvoice_filename')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._check_modify_exclude |= {'einvoice'}

    @classmethod
    def get_einvoice_format(cls, invoices, names):
        settings = company_einvoice({i.company for i in invoices})
        result = {n: {} for n in names}
        for invoice in invoices:
            format, profile = settings[invoice.company.id]
            if invoice.type != 'out':
                format = 'none'
            else:
                format = invoice.party.get_einvoice_format(format)
            if 'einvoice_format' in result:
                result['einvoice_format'][invoice.id] = format
            if 'einvoice_profile' in result:
                result['einvoice_profile'][invoice.id] = profile
        return result

    def get_einvoice_filename(self, name):
        if self.einvoice_format == 'xrechnung':
            return f'{self.number or self.id}-xrechnung.xml'
        return 'factur-x.xml'

    @classmethod
    def copy(cls, invoices, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('einvoice', None)
        return super().copy(invoices, default=default)

    @classmethod
    def _post(cls, invoices):
        cls.check_einvoice(invoices)
        super()._post(invoices)

    @classmethod
    def check_einvoice(cls, invoices):
        """Raise EinvoiceError when a customer invoice with an e-invoice lacks
        what the format needs, naming it"""
        for invoice in invoices:
            format = invoice.einvoice_format
            if format == 'none':
                continue
            if invoice.currency != invoice.company.currency:
                raise EinvoiceError(gettext(
                        'recurring_invoice.msg_einvoice_currency',
                        invoice=invoice.rec_name,
                        currency=invoice.currency.code,
                        company_currency=invoice.company.currency.code))
            check_parties(
                invoice.company, invoice.party, invoice.invoice_address,
                format)
            for line in invoice.lines:
                if line.type != 'line':
                    continue
                if line.unit and not line.unit.unece_code:
                    raise EinvoiceError(gettext(
                            'recurring_invoice.msg_einvoice_unit',
                            invoice=invoice.rec_name, unit=line.unit.rec_name,
                            line=line.rec_name))
                for tax in line.taxes:
                    if not (tax.unece_code and tax.unece_category_code):
                        raise EinvoiceError(gettext(
                                'recurring_invoice.msg_einvoice_tax',
                                invoice=invoice.rec_name,
                                tax=tax.rec_name))

    @classmethod
    def make_einvoices(cls, invoices):
        """Store the validated e-invoice of the posted invoices that need one
        and have none yet, and embed it in their PDF when it is made.
        Return {invoice: message} of those whose XML is invalid"""
        pool = Pool()
        EdocumentInvoice = pool.get('edocument.uncefact.invoice')
        Report = pool.get('account.invoice', type='report')
        failures, to_save = {}, []
        for invoice in cls.browse(invoices):
            if (invoice.state not in {'posted', 'paid'}
                    or invoice.einvoice_format == 'none'
                    or invoice.einvoice):
                continue
            try:
                xml = EdocumentInvoice(invoice).render(TEMPLATE)
                errors = validate(
                    xml, invoice.einvoice_format, invoice.einvoice_profile)
            except Exception as exception:
                logger.warning(
                    "e-invoice of %s failed", invoice.rec_name, exc_info=True)
                errors = [(exception.__class__.__name__, str(exception))]
            if errors:
                failures[invoice] = gettext(
                    'recurring_invoice.msg_einvoice_invalid',
                    invoice=invoice.rec_name,
                    errors='; '.join(
                        f'[{rule}] {text}' for rule, text in errors[:10]),
                    count=len(errors))
                continue
            invoice.einvoice = xml
            if (invoice.invoice_report_format == 'pdf'
                    and invoice.invoice_report_cache):
                invoice.invoice_report_cache = Report.embed_einvoice(
                    invoice, invoice.invoice_report_cache)
            to_save.append(invoice)
        cls.save(to_save)
        return failures


class InvoiceReport(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    @classmethod
    def _pdf_cache(cls, invoice, pdf):
        pdf = super()._pdf_cache(invoice, pdf)
        if invoice.einvoice:
            pdf = cls.embed_einvoice(invoice, pdf)
        return pdf

    @classmethod
    def embed_einvoice(cls, invoice, pdf):
        "Return the PDF/A-3 with the invoice's e-invoice embedded"
        import facturx
        level = ('en16931' if invoice.einvoice_format == 'xrechnung'
            else invoice.einvoice_profile)
        return facturx.generate_from_binary(
            bytes(pdf), bytes(invoice.einvoice), flavor='factur-x',
            level=level, check_xsd=False, lang=invoice.party_lang,
            pdf_metadata={
                'author': invoice.company.rec_name,
                'keywords': 'Factur-X, ZUGFeRD, Invoice',
                'title': f'{invoice.company.rec_name}: {invoice.number}',
                'subject': invoice.number,
                })


class RunLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.run.line'

    @classmethod
    def render_pdfs(cls, invoices):
        pool = Pool()
        Invoice = pool.get('account.invoice')
        failures = Invoice.make_einvoices(invoices)
        failures.update(super().render_pdfs(
                [i for i in invoices if i not in failures]) or {})
        return failures

    def get_email_files(self):
        files = super().get_email_files()
        invoice = self.invoice
        if invoice.einvoice_format == 'xrechnung' and invoice.einvoice:
            files.append((invoice.einvoice_filename, bytes(invoice.einvoice)))
        return files


class EdocumentInvoice(metaclass=PoolMeta):
    __name__ = 'edocument.uncefact.invoice'

    def render(self, template):
        xml = super().render(template)
        if template != TEMPLATE:
            return xml
        tree = etree.fromstring(xml)
        self.complete(tree)
        return etree.tostring(
            tree, xml_declaration=True, encoding='utf-8')

    @property
    def einvoice_guideline(self):
        if self.invoice.einvoice_format == 'xrechnung':
            return GUIDELINES['xrechnung']
        return GUIDELINES[self.invoice.einvoice_profile or 'en16931']

    @property
    def buyer_reference(self):
        "BT-10: the Leitweg-ID, else the customer's reference"
        return self.invoice.party.leitweg_id or self.invoice.reference

    @property
    def seller_email(self):
        return self.invoice.company.party.contact_mechanism_get('email')

    @property
    def seller_phone(self):
        return self.invoice.company.party.contact_mechanism_get('phone')

    @property
    def buyer_email(self):
        contact = getattr(self.invoice, 'contact', None)
        if contact and contact.type == 'email' and contact.value:
            return contact.value
        mechanism = self.invoice.party.contact_mechanism_get('email')
        return mechanism.value if mechanism else None

    @property
    def seller_tax_number(self):
        for identifier in self.invoice.company.party.identifiers:
            if identifier.type == 'de_stnr':
                return identifier.code

    @property
    def invoice_period(self):
        "BT-73/BT-74: the service period of the invoice or of its lines"
        invoice = self.invoice
        start = getattr(invoice, 'subscription_period_start', None)
        end = getattr(invoice, 'subscription_period_end', None)
        if start and end:
            return start, end
        periods = [self.line_period(l) for l in self.lines]
        if periods and all(periods):
            return min(p[0] for p in periods), max(p[1] for p in periods)

    @staticmethod
    def line_period(line):
        "BT-134/BT-135"
        start = getattr(line, 'service_start_date', None)
        end = getattr(line, 'service_end_date', None)
        if start and end:
            return start, end

    @property
    def direct_debit(self):
        """Return (mandate reference, debtor IBAN, creditor identifier) when
        the invoice is collected by direct debit"""
        return None

    def complete(self, tree):
        "Complete the CII of core's template for EN 16931 and XRechnung"
        # Empty groups the template always writes
        for path in [
                './/ram:SpecifiedLegalOrganization',
                './/ram:BuyerOrderReferencedDocument',
                './/ram:SellerOrderReferencedDocument']:
            for element in tree.iterfind(path, NS):
                if not ''.join(element.itertext()).strip():
                    _remove(element)
        for address in tree.iterfind('.//ram:PostalTradeAddress', NS):
            self._complete_address(address)
        # Not part of the EN 16931 profile
        for path in [
                './/ram:ApplicableHeaderTradeSettlement/ram:InvoiceDateTime',
                './/ram:SpecifiedTradeSettlementPaymentMeans/ram:ID']:
            for element in tree.iterfind(path, NS):
                _remove(element)
        # EN 16931 has the currency on the tax total only (CII-DT-031)
        for element in tree.iterfind('.//*[@currencyID]'):
            if _local(element) != 'TaxTotalAmount':
                del element.attrib['currencyID']
        self._complete_context(tree)
        self._complete_lines(tree)
        self._complete_agreement(tree)
        self._complete_settlement(tree)

    @staticmethod
    def _complete_address(address):
        """Write the address as the EN 16931 profile has it: postcode, up to
        three lines (the street with its number from the structured
        fields), city, country and subdivision name"""
        def text(name):
            element = _find(address, f'ram:{name}')
            return (element.text or '').strip() if element is not None else ''
        lines = [text(f'Line{n}') for n in [
                'One', 'Two', 'Three', 'Four', 'Five']]
        lines = [l for l in lines if l]
        street = ' '.join(filter(None, [
                    text('StreetName'), text('BuildingNumber')]))
        if street and street not in lines:
            lines.insert(0, street)
        for extra in [text('BuildingName'), text('PostOfficeBox')]:
            if extra and extra not in lines:
                lines.append(extra)
        if len(lines) > 3:
            lines[2:] = [', '.join(lines[2:])]
        values = [('PostcodeCode', text('PostcodeCode'))]
        values += list(zip(['LineOne', 'LineTwo', 'LineThree'], lines))
        values += [
            ('CityName', text('CityName')),
            ('CountryID', text('CountryID')),
            ('CountrySubDivisionName', text('CountrySubDivisionName')),
            ]
        for child in list(address):
            address.remove(child)
        for name, value in values:
            if value:
                address.append(_element(f'ram:{name}', value))

    def _complete_context(self, tree):
        context = _find(tree, 'rsm:ExchangedDocumentContext')
        if self.invoice.einvoice_format == 'xrechnung':
            parameter = _place(context, _element(
                    'ram:BusinessProcessSpecifiedDocumentContextParameter'))
            parameter.append(_element('ram:ID', BUSINESS_PROCESS))
        parameter = _place(context, _element(
                'ram:GuidelineSpecifiedDocumentContextParameter'))
        parameter.append(_element('ram:ID', self.einvoice_guideline))

    def _complete_lines(self, tree):
        items = tree.iterfind(
            'rsm:SupplyChainTradeTransaction'
            '/ram:IncludedSupplyChainTradeLineItem', NS)
        for item, line in zip(items, self.lines):
            code = _find(item, 'ram:SpecifiedTradeProduct/ram:ID')
            if code is not None:
                # The product code is the seller's item identifier (BT-155)
                code.tag = _tag('ram:SellerAssignedID')
            if _find(item, 'ram:SpecifiedTradeProduct') is None:
                product = _place(item, _element('ram:SpecifiedTradeProduct'))
                product.append(_element(
                        'ram:Name', (line.description or '').strip()
                        or line.rec_name))
            quantity = _find(
                item, 'ram:SpecifiedLineTradeDelivery/ram:BilledQuantity')
            if quantity is not None and not quantity.get('unitCode'):
                # A line without unit counts pieces (BR-23)
                quantity.set('unitCode', 'C62')
            period = self.line_period(line)
            if period:
                settlement = _find(item, 'ram:SpecifiedLineTradeSettlement')
                billing = _place(
                    settlement, _element('ram:BillingSpecifiedPeriod'))
                billing.append(_date('ram:StartDateTime', period[0]))
                billing.append(_date('ram:EndDateTime', period[1]))

    def _complete_party(self, party, email=None, contact=None,
            tax_number=None):
        if contact is not None:
            _place(party, contact)
        if email:
            uri = _place(party, _element('ram:URIUniversalCommunication'))
            uri.append(_element('ram:URIID', email, schemeID='EM'))
        if tax_number:
            registration = _place(
                party, _element('ram:SpecifiedTaxRegistration'))
            registration.append(
                _element('ram:ID', tax_number, schemeID='FC'))

    def _complete_agreement(self, tree):
        agreement = _find(
            tree, 'rsm:SupplyChainTradeTransaction'
            '/ram:ApplicableHeaderTradeAgreement')
        if self.buyer_reference:
            _place(agreement, _element(
                    'ram:BuyerReference', self.buyer_reference))
        seller_email = self.seller_email
        contact = None
        if seller_email or self.seller_phone:
            contact = _element('ram:DefinedTradeContact')
            contact.append(_element(
                    'ram:PersonName', self.invoice.company.party.name))
            if self.seller_phone:
                phone = _element('ram:TelephoneUniversalCommunication')
                phone.append(_element(
                        'ram:CompleteNumber', self.seller_phone.value))
                contact.append(phone)
            if seller_email:
                email = _element('ram:EmailURIUniversalCommunication')
                email.append(_element('ram:URIID', seller_email.value))
                contact.append(email)
        self._complete_party(
            _find(agreement, 'ram:SellerTradeParty'),
            email=seller_email.value if seller_email else None,
            contact=contact, tax_number=self.seller_tax_number)
        self._complete_party(
            _find(agreement, 'ram:BuyerTradeParty'), email=self.buyer_email)

    def _complete_settlement(self, tree):
        settlement = _find(
            tree, 'rsm:SupplyChainTradeTransaction'
            '/ram:ApplicableHeaderTradeSettlement')
        # BT-117 also when it is zero
        for tax in settlement.iterfind('ram:ApplicableTradeTax', NS):
            if _find(tax, 'ram:CalculatedAmount') is None:
                tax.insert(0, _element('ram:CalculatedAmount', '0.00'))
        means = settlement.findall(
            'ram:SpecifiedTradeSettlementPaymentMeans', NS)
        direct_debit = self.direct_debit
        if direct_debit:
            mandate, iban, creditor = direct_debit
            for element in means:
                _remove(element)
            mean = _place(settlement, _element(
                    'ram:SpecifiedTradeSettlementPaymentMeans'))
            mean.append(_element('ram:TypeCode', '59'))
            account = _element('ram:PayerPartyDebtorFinancialAccount')
            account.append(_element('ram:IBANID', iban))
            mean.append(account)
            if creditor:
                _place(settlement, _element(
                        'ram:CreditorReferenceID', creditor))
        else:
            payment_means = [
                m for m in self.invoice.payment_means if m.unece_code]
            for element, payment_mean in zip(means, payment_means):
                code = _find(element, 'ram:TypeCode').text
                if (code in {'30', '58'}
                        and payment_mean.instrument.__name__
                        == 'bank.account'
                        and _find(
                            element, 'ram:PayeePartyCreditorFinancialAccount')
                        is None):
                    iban = payment_mean.instrument.iban
                    if iban:
                        account = _place(element, _element(
                                'ram:PayeePartyCreditorFinancialAccount'))
                        account.append(_element(
                                'ram:IBANID', iban.replace(' ', '')))
        period = self.invoice_period
        if period:
            billing = _place(
                settlement, _element('ram:BillingSpecifiedPeriod'))
            billing.append(_date('ram:StartDateTime', period[0]))
            billing.append(_date('ram:EndDateTime', period[1]))
        # One payment terms group (EN 16931): the description and the first
        # due date; the instalments only in the extended profile
        terms = settlement.findall('ram:SpecifiedTradePaymentTerms', NS)
        for element in terms[1:]:
            _remove(element)
        if not terms and direct_debit:
            terms = [_place(settlement, _element(
                        'ram:SpecifiedTradePaymentTerms'))]
        if terms:
            term = terms[0]
            if self.invoice.einvoice_profile != 'extended' or (
                    self.invoice.einvoice_format == 'xrechnung'):
                for element in term.findall('ram:PartialPaymentAmount', NS):
                    _remove(element)
            if direct_debit:
                _place(term, _element(
                        'ram:DirectDebitMandateID', direct_debit[0]))


class EdocumentInvoiceSepa(metaclass=PoolMeta):
    __name__ = 'edocument.uncefact.invoice'

    @property
    def direct_debit(self):
        from .sepa import DirectDebitError, get_mandate, is_direct_debit
        invoice = self.invoice
        if invoice.type != 'out' or not is_direct_debit(invoice):
            return super().direct_debit
        try:
            mandate = get_mandate(invoice)
        except DirectDebitError:
            return super().direct_debit
        return (
            mandate.identification,
            mandate.account_number.number.replace(' ', ''),
            invoice.company.party.sepa_creditor_identifier_used)
