# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import logging
import os
from collections import defaultdict
from decimal import Decimal

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.modules.company.model import (
    CompanyMultiValueMixin, CompanyValueMixin)
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, If
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, record_cache_size
from trytond.wizard import Button, StateAction, StateView, Wizard

from . import datev_format
from .exceptions import (
    AutomaticDeliveryError, DatevError, DatevValidationError)
from .invoice_run import invoice_filename
from .uploads import UploadError, client_credentials_token, datev_upload

logger = logging.getLogger(__name__)

CHARTS = [
    (None, ""),
    ('skr03', "SKR 03"),
    ('skr04', "SKR 04"),
    ]


class Configuration(CompanyMultiValueMixin, metaclass=PoolMeta):
    __name__ = 'account.configuration'

    datev_consultant_number = fields.MultiValue(fields.Integer(
            "DATEV Consultant Number",
            domain=[If(Eval('datev_consultant_number'),
                    [('datev_consultant_number', '>=', 1001),
                        ('datev_consultant_number', '<=', 9999999)],
                    [])],
            help="The tax advisor's number at DATEV (Beraternummer)."))
    datev_client_number = fields.MultiValue(fields.Integer(
            "DATEV Client Number",
            domain=[If(Eval('datev_client_number'),
                    [('datev_client_number', '>=', 1),
                        ('datev_client_number', '<=', 99999)],
                    [])],
            help="The company's number at its tax advisor (Mandantennummer)."))
    datev_account_length = fields.MultiValue(fields.Integer(
            "DATEV G/L Account Length",
            domain=[
                ('datev_account_length', '>=', 4),
                ('datev_account_length', '<=', 8),
                ],
            help="The digits of the general ledger accounts at DATEV "
            "(Sachkontenlänge); debtor accounts have one more."))
    datev_chart = fields.MultiValue(fields.Selection(
            CHARTS, "DATEV Chart of Accounts",
            help="The standard chart the accounts follow."))
    datev_target = fields.MultiValue(fields.Many2One(
            'account.datev.target', "DATEV Target",
            help="Where the exports are sent; "
            "leave empty to download them from the export."))

    @classmethod
    def multivalue_model(cls, field):
        pool = Pool()
        if field.startswith('datev_'):
            return pool.get('account.configuration.datev')
        return super().multivalue_model(field)

    @classmethod
    def default_datev_account_length(cls, **pattern):
        return cls.multivalue_model(
            'datev_account_length').default_datev_account_length()

    @classmethod
    def default_datev_chart(cls, **pattern):
        return None


class ConfigurationDatev(ModelSQL, CompanyValueMixin):
    __name__ = 'account.configuration.datev'

    datev_consultant_number = fields.Integer("DATEV Consultant Number")
    datev_client_number = fields.Integer("DATEV Client Number")
    datev_account_length = fields.Integer("DATEV G/L Account Length")
    datev_chart = fields.Selection(CHARTS, "DATEV Chart of Accounts")
    datev_target = fields.Many2One(
        'account.datev.target', "DATEV Target", ondelete='RESTRICT')

    @classmethod
    def default_datev_account_length(cls):
        return 4


class Account(metaclass=PoolMeta):
    __name__ = 'account.account'

    datev_automatic = fields.Boolean(
        "DATEV Automatic Account",
        help="If checked, DATEV derives the tax from the account "
        "(Automatikkonto, e.g. 8400 in SKR 03): "
        "its bookings carry no tax key.")

    @classmethod
    def default_datev_automatic(cls):
        return False


class Tax(metaclass=PoolMeta):
    __name__ = 'account.tax'

    datev_tax_key = fields.Char(
        "DATEV Tax Key", size=4,
        help="The tax key (BU-Schlüssel) of the bookings with this tax "
        "on accounts that are not automatic, e.g. 3 for 19 % VAT.")

    @classmethod
    def validate_fields(cls, taxes, field_names):
        super().validate_fields(taxes, field_names)
        if not field_names or 'datev_tax_key' in field_names:
            for tax in taxes:
                if tax.datev_tax_key and not tax.datev_tax_key.isdigit():
                    raise DatevValidationError(gettext(
                            'recurring_invoice.msg_datev_tax_key_digits',
                            tax=tax.rec_name, key=tax.datev_tax_key))


class Party(metaclass=PoolMeta):
    __name__ = 'party.party'

    datev_account = fields.Char(
        "DATEV Account",
        help="The customer's debtor account at DATEV (Debitorenkonto); "
        "empty: the invoice's receivable account.")

    @classmethod
    def validate_fields(cls, parties, field_names):
        super().validate_fields(parties, field_names)
        if not field_names or 'datev_account' in field_names:
            for party in parties:
                if party.datev_account and not (
                        party.datev_account.isdigit()
                        and len(party.datev_account) <= 9):
                    raise DatevValidationError(gettext(
                            'recurring_invoice.msg_datev_party_account',
                            party=party.rec_name,
                            account=party.datev_account))


class DatevTarget(ModelSQL, ModelView):
    "Where DATEV exports go: a consultant adds a kind and its send method"
    __name__ = 'account.datev.target'

    name = fields.Char("Name", required=True)
    kind = fields.Selection('get_kinds', "Kind", required=True)
    path = fields.Char(
        "Folder",
        states={
            'invisible': Eval('kind') != 'folder',
            'required': Eval('kind') == 'folder',
            },
        help="A local folder or a mounted share, e.g. the folder that "
        "DATEV Belegtransfer sends to DATEV Unternehmen online.")
    url = fields.Char(
        "URL",
        states={
            'invisible': Eval('kind') != 'http',
            'required': Eval('kind') == 'http',
            },
        help="The base URL of DATEV's online interface, "
        "e.g. https://accounting-extf-files.api.datev.de/platform/v3.")
    token_url = fields.Char(
        "Token URL",
        states={
            'invisible': Eval('kind') != 'http',
            'required': Eval('kind') == 'http',
            },
        help="The OAuth2 token endpoint (client credentials).")
    client_id = fields.Char(
        "Client ID",
        states={
            'invisible': Eval('kind') != 'http',
            'required': Eval('kind') == 'http',
            })
    client_secret = fields.Char(
        "Client Secret",
        states={
            'invisible': Eval('kind') != 'http',
            },
        help="Readable by the accounting administrators only; or leave it "
        "empty and set option datev_client_secret of section "
        "recurring_invoice in the configuration file.")
    scope = fields.Char(
        "Scope",
        states={
            'invisible': Eval('kind') != 'http',
            })

    @classmethod
    def get_kinds(cls):
        "Return the kinds of target; extend it with a send_<kind> method"
        return [
            ('folder', "Folder"),
            ('http', "DATEV Online API"),
            ]

    @classmethod
    def default_kind(cls):
        return 'folder'

    def get_client_secret(self):
        "Return the secret from the record or the configuration file"
        from trytond import config
        return self.client_secret or config.get(
            'recurring_invoice', 'datev_client_secret', default='')

    def send(self, export):
        """Send the files of the export; return where they went
        Raise UploadError or OSError when the target does not take them"""
        return getattr(self, f'send_{self.kind}')(export)

    def send_folder(self, export):
        path = self.path
        if not os.path.isdir(path) or not os.access(path, os.W_OK):
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_folder_missing',
                    target=self.rec_name, path=path))
        written = []
        for name, data in export.get_files():
            filename = os.path.join(path, name)
            temporary = filename + '.part'
            with open(temporary, 'wb') as file:
                file.write(data)
            # The upload tool never sees half a file
            os.replace(temporary, filename)
            written.append(filename)
        return ', '.join(written)

    def send_http(self, export):
        token = client_credentials_token(
            self.token_url, self.client_id, self.get_client_secret(),
            scope=self.scope or None)
        client = '%s-%s' % (
            export.consultant_number, export.client_number)
        base = self.url.rstrip('/')
        jobs = []
        for name, data in export.get_files():
            if name.lower().endswith('.zip'):
                url = f'{base}/clients/{client}/documents'
            else:
                url = f'{base}/clients/{client}/extf-files/import'
            jobs.append(datev_upload(url, token, name, data))
        return ', '.join(filter(None, map(str, jobs))) or base


class DatevExport(ModelSQL, ModelView):
    "One handover to DATEV: a Buchungsstapel and its document package"
    __name__ = 'account.datev.export'
    _rec_name = 'extf_filename'

    company = fields.Many2One(
        'company.company', "Company", required=True, readonly=True)
    kind = fields.Selection([
            ('period', "Period"),
            ('run', "Nightly Run"),
            ], "Kind", required=True, readonly=True)
    date_from = fields.Date("From Date", required=True, readonly=True)
    date_to = fields.Date("To Date", required=True, readonly=True)
    run = fields.Many2One(
        'account.invoice.run', "Run", readonly=True, ondelete='RESTRICT')
    forced = fields.Boolean(
        "Exported Again", readonly=True,
        help="Exported although the period or its invoices "
        "were exported before.")
    consultant_number = fields.Integer("Consultant Number", readonly=True)
    client_number = fields.Integer("Client Number", readonly=True)
    invoices = fields.Many2Many(
        'account.datev.export-account.invoice', 'export', 'invoice',
        "Invoices", readonly=True)
    booking_count = fields.Integer("Bookings", readonly=True)
    document_count = fields.Integer("Documents", readonly=True)
    total = fields.Numeric(
        "Total", digits=(16, 2), readonly=True,
        help="The sum of the bookings in the company currency, "
        "credit notes negative.")
    extf_file = fields.Binary(
        "Booking File", filename='extf_filename', file_id='extf_file_id',
        readonly=True)
    extf_file_id = fields.Char("Booking File ID", readonly=True)
    extf_filename = fields.Char("Booking File Name", readonly=True)
    document_package = fields.Binary(
        "Document Package", filename='package_filename',
        file_id='document_package_id', readonly=True)
    document_package_id = fields.Char("Document Package ID", readonly=True)
    package_filename = fields.Char("Package File Name", readonly=True)
    message = fields.Text("Message", readonly=True)
    who = fields.Many2One('res.user', "Exported by", readonly=True)
    when = fields.DateTime("Exported at", readonly=True)
    target = fields.Many2One(
        'account.datev.target', "Target", readonly=True,
        ondelete='RESTRICT')
    transfer_state = fields.Selection([
            ('none', "Download"),
            ('done', "Transferred"),
            ('failed', "Failed"),
            ], "Transfer", required=True, readonly=True)
    transfer_message = fields.Text("Transfer Message", readonly=True)
    transferred_at = fields.DateTime("Transferred at", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('when', 'DESC'), ('id', 'DESC')]
        cls._buttons.update({
                'transfer': {
                    'invisible': ~Eval('target')
                    | (Eval('transfer_state') == 'done'),
                    'depends': ['target', 'transfer_state'],
                    'icon': 'tryton-forward',
                    },
                })

    @classmethod
    def default_transfer_state(cls):
        return 'none'

    @classmethod
    def default_forced(cls):
        return False

    @classmethod
    def check_modification(cls, mode, exports, values=None, external=False):
        super().check_modification(
            mode, exports, values=values, external=external)
        transfer = {'transfer_state', 'transfer_message', 'transferred_at'}
        if (mode == 'delete'
                or (mode == 'write' and external
                    and set(values or {}) - transfer)):
            for export in exports:
                raise AccessError(gettext(
                        'recurring_invoice.msg_datev_export_modify',
                        export=export.rec_name))

    def get_files(self):
        "Return the (name, data) files of the export"
        files = [(self.extf_filename, self.extf_file)]
        if self.document_package:
            files.append((self.package_filename, self.document_package))
        return files

    @classmethod
    @ModelView.button
    def transfer(cls, exports):
        "Send the files of the exports to their target"
        now = dt.datetime.now()
        for export in exports:
            if not export.target:
                continue
            try:
                where = export.target.send(export)
            except (UploadError, OSError, UserError) as exception:
                logger.info("DATEV export %s not transferred",
                    export.rec_name, exc_info=True)
                export.transfer_state = 'failed'
                export.transfer_message = gettext(
                    'recurring_invoice.msg_datev_transfer_failed',
                    target=export.target.rec_name,
                    reason=getattr(exception, 'message', None)
                    or str(exception))
            else:
                export.transfer_state = 'done'
                export.transfer_message = where
                export.transferred_at = now
        cls.save(exports)

    @classmethod
    def get_configuration(cls, company):
        """Return the DATEV settings of the company
        Raise DatevError when a number is missing"""
        pool = Pool()
        Configuration = pool.get('account.configuration')
        config = Configuration(1)
        pattern = {'company': company.id}
        values = {
            name: config.get_multivalue(name, **pattern)
            for name in [
                'datev_consultant_number', 'datev_client_number',
                'datev_account_length', 'datev_chart', 'datev_target']}
        if not values['datev_consultant_number']:
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_no_consultant_number',
                    company=company.rec_name))
        if not values['datev_client_number']:
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_no_client_number',
                    company=company.rec_name))
        if not values['datev_account_length']:
            values['datev_account_length'] = 4
        return values

    @classmethod
    def exported_invoices(cls, invoice_ids):
        """Return the ids among invoice_ids that an export (transferred or
        to download) already holds"""
        pool = Pool()
        Rel = pool.get('account.datev.export-account.invoice')
        rel = Rel.__table__()
        export = cls.__table__()
        cursor = Transaction().connection.cursor()
        result = set()
        for sub_ids in grouped_slice(invoice_ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*rel.join(export,
                    condition=rel.export == export.id
                    ).select(rel.invoice,
                    where=rel.invoice.in_(list(sub_ids))
                    & (export.transfer_state != 'failed')))
            result.update(i for i, in cursor)
        return result

    @classmethod
    def get_invoices(cls, company, date_from, date_to):
        "Return the posted customer invoices booked between the dates"
        pool = Pool()
        Invoice = pool.get('account.invoice')
        return Invoice.search([
                ('company', '=', company.id),
                ('type', '=', 'out'),
                ('state', 'in', ['posted', 'paid']),
                ('move.date', '>=', date_from),
                ('move.date', '<=', date_to),
                ], order=[('move.date', 'ASC'), ('number', 'ASC'),
                ('id', 'ASC')])

    @classmethod
    def check_invoices(cls, invoices, settings):
        """Return {invoice: message} of the invoices DATEV cannot take and
        {invoice: bookings} of the others"""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        errors, bookings = {}, {}
        size = record_cache_size(Transaction())
        for sub_invoices in grouped_slice(invoices, size):
            sub_invoices = Invoice.browse(list(sub_invoices))
            for invoice in sub_invoices:
                try:
                    bookings[invoice] = invoice.get_datev_bookings(settings)
                except (UserError, datev_format.DatevFormatError) as error:
                    errors[invoice] = _reason(invoice, error)
        return errors, bookings

    @classmethod
    def create_export(
            cls, company, invoices, date_from=None, date_to=None,
            kind='period', run=None, forced=False, documents=True):
        """Create and return the exports of the invoices, one per fiscal
        year (DATEV takes a Buchungsstapel of one fiscal year).
        Raise DatevError when an invoice cannot be exported."""
        settings = cls.get_configuration(company)
        errors, bookings = cls.check_invoices(invoices, settings)
        if errors:
            messages = list(errors.values())
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_invoices_refused',
                    count=len(messages),
                    messages='\n'.join(messages[:5])))
        return cls._create_exports(
            company, bookings, settings, date_from=date_from,
            date_to=date_to, kind=kind, run=run, forced=forced,
            documents=documents)

    @classmethod
    def _create_exports(
            cls, company, bookings, settings, date_from=None, date_to=None,
            kind='period', run=None, forced=False, documents=True):
        pool = Pool()
        FiscalYear = pool.get('account.fiscalyear')
        by_year = defaultdict(list)
        dates = {i.move.date for i in bookings}
        fiscalyears = FiscalYear.search([
                ('company', '=', company.id),
                ('start_date', '<=', max(dates, default=None)),
                ('end_date', '>=', min(dates, default=None)),
                ]) if dates else []
        for invoice in bookings:
            date = invoice.move.date
            for fiscalyear in fiscalyears:
                if fiscalyear.start_date <= date <= fiscalyear.end_date:
                    break
            else:
                # raises the error of core
                fiscalyear = FiscalYear.find(company.id, date=date)
            by_year[fiscalyear].append(invoice)
        exports = []
        for fiscalyear, invoices in sorted(
                by_year.items(), key=lambda i: i[0].start_date):
            dates = [i.move.date for i in invoices]
            start = max(date_from or min(dates), fiscalyear.start_date)
            end = min(date_to or max(dates), fiscalyear.end_date)
            invoices = sorted(invoices, key=lambda i: (
                    i.move.date, i.number or '', i.id))
            # A document.xml holds at most MAX_DOCUMENTS documents
            size = datev_format.MAX_DOCUMENTS if documents else len(invoices)
            for index in range(0, len(invoices), size):
                exports.append(cls._create_export(
                        company, fiscalyear, start, end,
                        invoices[index:index + size], bookings, settings,
                        kind=kind, run=run, forced=forced,
                        documents=documents))
        return exports

    @classmethod
    def _create_export(
            cls, company, fiscalyear, date_from, date_to, invoices,
            bookings, settings, kind, run, forced, documents):
        pool = Pool()
        Invoice = pool.get('account.invoice')
        User = pool.get('res.user')
        RunLine = pool.get('account.invoice.run.line')
        transaction = Transaction()
        now = dt.datetime.now()
        user = User(transaction.user) if transaction.user else None
        attached, missing = [], []
        if documents:
            to_render = [
                i for i in invoices if i.invoice_report_format != 'pdf']
            if to_render:
                try:
                    RunLine.render_pdfs(to_render)
                except UserError:
                    logger.info("PDFs for DATEV not rendered", exc_info=True)
            # The PDFs rendered are read again
            for invoice in Invoice.browse([i.id for i in invoices]):
                if (invoice.invoice_report_format == 'pdf'
                        and invoice.invoice_report_cache):
                    attached.append(invoice)
                else:
                    missing.append(invoice)
        rows, package = [], []
        attached_ids = {i.id for i in attached}
        for invoice in invoices:
            link = ''
            if invoice.id in attached_ids:
                link = invoice.datev_guid
            for booking in bookings[invoice]:
                booking.document_link = link
                rows.append(booking)
        for invoice in attached:
            package.append(datev_format.Document(
                    guid=invoice.datev_guid,
                    filename=invoice_filename(invoice),
                    data=invoice.invoice_report_cache,
                    description=(invoice.number or '')[:40],
                    repository=(
                        "Rechnungsausgang",
                        str(invoice.move.date.year),
                        '%02d' % invoice.move.date.month)))
        header = datev_format.Header(
            consultant_number=settings['datev_consultant_number'],
            client_number=settings['datev_client_number'],
            fiscal_year_start=fiscalyear.start_date,
            account_length=settings['datev_account_length'],
            date_from=date_from,
            date_to=date_to,
            created=now,
            description=gettext(
                'recurring_invoice.msg_datev_description',
                date_from=date_from.strftime('%d.%m.%Y'),
                date_to=date_to.strftime('%d.%m.%Y'))[:30],
            exported_by=(user.rec_name if user else 'Tryton')[:25],
            currency=company.currency.code,
            chart={'skr03': '03', 'skr04': '04'}.get(
                settings['datev_chart'] or '', ''),
            application='Tryton Turnus')
        try:
            extf = datev_format.extf(header, rows)
            document_package = datev_format.document_package(
                package, created=now,
                description=header.description,
                consultant_number=header.consultant_number,
                client_number=header.client_number,
                generating_system='Tryton Turnus') if package else None
        except datev_format.DatevFormatError as error:
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_format',
                    reason=str(error))) from error
        filename = datev_format.extf_filename(header)
        message = None
        if missing:
            message = gettext(
                'recurring_invoice.msg_datev_documents_missing',
                count=len(missing),
                invoices=', '.join(i.rec_name for i in missing[:10]))
        total = Decimal(0)
        for booking in rows:
            amount = (booking.base_amount
                if booking.base_amount is not None else booking.amount)
            total += amount if booking.debit_credit == 'S' else -amount
        export = cls(
            company=company, kind=kind, date_from=date_from,
            date_to=date_to, run=run, forced=forced,
            consultant_number=header.consultant_number,
            client_number=header.client_number,
            invoices=[i.id for i in invoices],
            booking_count=len(rows), document_count=len(package),
            total=total,
            extf_file=extf, extf_filename=filename,
            document_package=document_package,
            package_filename=(
                filename.rsplit('.', 1)[0] + '_Belege.zip'
                if document_package else None),
            message=message, who=user, when=now,
            target=settings['datev_target'],
            transfer_state='none')
        export.save()
        return export


class DatevExportInvoice(ModelSQL):
    __name__ = 'account.datev.export-account.invoice'

    export = fields.Many2One(
        'account.datev.export', "Export", required=True,
        ondelete='CASCADE')
    invoice = fields.Many2One(
        'account.invoice', "Invoice", required=True, ondelete='RESTRICT')


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    datev_exports = fields.Many2Many(
        'account.datev.export-account.invoice', 'invoice', 'export',
        "DATEV Exports", readonly=True)

    @classmethod
    def copy(cls, invoices, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('datev_exports', None)
        return super().copy(invoices, default=default)

    @property
    def datev_guid(self):
        "The GUID of the invoice's document at DATEV, the same every time"
        database = Transaction().database.name
        return datev_format.guid(database, f'{self.__name__},{self.id}')

    def get_datev_bookings(self, settings):
        """Return the DATEV bookings of the posted invoice: one per revenue
        account and taxes, the gross amounts summing to its total
        Raise DatevError when DATEV cannot take it"""
        pool = Pool()
        Currency = pool.get('currency.currency')
        length = settings['datev_account_length']
        lines = [l for l in self.lines if l.type == 'line']
        groups = defaultdict(lambda: {'base': Decimal(0), 'tax': Decimal(0)})
        tax_bases = defaultdict(Decimal)
        for line in lines:
            key = (line.account, tuple(sorted(t.id for t in line.taxes)))
            groups[key]['base'] += line.amount
            for tax in line.taxes:
                tax_bases[tax.id] += line.amount
        # Each tax line of the invoice is shared by its groups by base
        for invoice_tax in self.taxes:
            if not invoice_tax.tax:
                continue
            tax_id = invoice_tax.tax.id
            keys = [k for k in groups if tax_id in k[1]]
            left = invoice_tax.amount
            base = tax_bases[tax_id]
            for i, key in enumerate(keys):
                if i == len(keys) - 1 or not base:
                    share = left
                else:
                    share = self.currency.round(
                        invoice_tax.amount * groups[key]['base'] / base)
                groups[key]['tax'] += share
                left -= share
        debtor = self.party.datev_account
        if debtor:
            self._check_datev_account(debtor, length + 1)
        else:
            debtor = self._check_datev_account(
                self.account.code, length, self.account)
        foreign = self.currency != self.company.currency
        rate = None
        if foreign:
            with Transaction().set_context(date=self.currency_date):
                try:
                    rate = Currency.compute(
                        self.company.currency, Decimal(1), self.currency,
                        round=False)
                except UserError as error:
                    raise DatevError(gettext(
                            'recurring_invoice.msg_datev_no_rate',
                            invoice=self.rec_name,
                            currency=self.currency.code,
                            company_currency=self.company.currency.code,
                            date=self.currency_date)) from error
            rate = rate.quantize(Decimal('0.000001'))
        due_dates = [
            l.maturity_date for l in (self.lines_to_pay or [])
            if l.maturity_date]
        service_ends = [l.service_end_date for l in lines
            if getattr(l, 'service_end_date', None)]
        service_starts = [l.service_start_date for l in lines
            if getattr(l, 'service_start_date', None)]
        period_start = self.subscription_period_start or (
            min(service_starts) if service_starts else None)
        period_end = self.subscription_period_end or (
            max(service_ends) if service_ends else None)
        text = ' '.join(filter(None, [
                    self.party.rec_name, self.number]))
        bookings = []
        for (account, tax_ids), amounts in groups.items():
            gross = amounts['base'] + amounts['tax']
            if not gross:
                continue
            contra = self._check_datev_account(account.code, length, account)
            tax_key = ''
            if tax_ids and not account.datev_automatic:
                keys = {t.datev_tax_key for t in line_taxes(lines, account,
                            tax_ids) if t.datev_tax_key}
                if len(keys) > 1:
                    raise DatevError(gettext(
                            'recurring_invoice.msg_datev_tax_keys',
                            invoice=self.rec_name, account=account.code))
                tax_key = keys.pop() if keys else ''
            booking = datev_format.Booking(
                amount=abs(gross),
                debit_credit='S' if gross > 0 else 'H',
                account=debtor,
                contra_account=contra,
                document_date=self.move.date,
                document_field1=datev_format.document_field(
                    self.number or ''),
                text=text,
                tax_key=tax_key,
                due_date=min(due_dates) if due_dates else None,
                service_date=period_end,
                tax_period_date=self.invoice_date if period_end else None,
                service_period=(period_start, period_end)
                if period_start and period_end else None)
            if foreign:
                booking.currency = self.currency.code
                booking.rate = rate
                with Transaction().set_context(date=self.currency_date):
                    booking.base_amount = abs(Currency.compute(
                            self.currency, gross, self.company.currency))
                booking.base_currency = self.company.currency.code
            bookings.append(booking)
        return bookings

    def _check_datev_account(self, code, length, account=None):
        "Return the code, raise DatevError if DATEV cannot take it"
        if not code or not code.isdigit():
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_account_code',
                    invoice=self.rec_name,
                    account=account.rec_name if account else code))
        if len(code) > length:
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_account_length',
                    invoice=self.rec_name, account=code,
                    digits=len(code), length=length))
        return code


def line_taxes(lines, account, tax_ids):
    "Return the taxes of the lines on account with the tax ids"
    for line in lines:
        if line.account == account and tuple(
                sorted(t.id for t in line.taxes)) == tax_ids:
            return line.taxes
    return []


def _reason(invoice, error):
    if isinstance(error, datev_format.DatevFormatError):
        return gettext(
            'recurring_invoice.msg_datev_invoice_format',
            invoice=invoice.rec_name, reason=str(error))
    return error.message


class DatevExportCreateStart(ModelView):
    __name__ = 'account.datev.export.create.start'

    company = fields.Many2One('company.company', "Company", required=True)
    date_from = fields.Date(
        "From Date", required=True,
        domain=[If(Eval('date_to'), ('date_from', '<=', Eval('date_to')),
                ())])
    date_to = fields.Date(
        "To Date", required=True,
        domain=[If(Eval('date_from'), ('date_to', '>=', Eval('date_from')),
                ())])
    force = fields.Boolean(
        "Export Again",
        help="If checked, the period is exported even if it was before, "
        "with every invoice: DATEV then books them twice "
        "unless the tax advisor removes the earlier stapel.")
    documents = fields.Boolean(
        "With Documents",
        help="If checked, the invoice PDFs go with the bookings "
        "in a DATEV document package.")

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_date_from(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        first = Date.today().replace(day=1)
        return (first - dt.timedelta(days=1)).replace(day=1)

    @classmethod
    def default_date_to(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        return Date.today().replace(day=1) - dt.timedelta(days=1)

    @classmethod
    def default_force(cls):
        return False

    @classmethod
    def default_documents(cls):
        return True


class DatevExportCreate(Wizard):
    "Export to DATEV"
    __name__ = 'account.datev.export.create'

    start = StateView(
        'account.datev.export.create.start',
        'recurring_invoice.datev_export_create_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Export", 'export', 'tryton-ok', default=True),
            ])
    export = StateAction('recurring_invoice.act_datev_export_form')

    def do_export(self, action):
        pool = Pool()
        Export = pool.get('account.datev.export')
        FiscalYear = pool.get('account.fiscalyear')
        start = self.start
        company = start.company
        if start.date_from > start.date_to:
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_dates',
                    date_from=start.date_from, date_to=start.date_to))
        first = FiscalYear.find(
            company.id, date=start.date_from, test_state=False)
        last = FiscalYear.find(
            company.id, date=start.date_to, test_state=False)
        if first != last:
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_fiscal_years',
                    date_from=start.date_from, date_to=start.date_to))
        Export.get_configuration(company)
        if not start.force:
            exported = Export.search([
                    ('company', '=', company.id),
                    ('kind', '=', 'period'),
                    ('transfer_state', '!=', 'failed'),
                    ('date_from', '<=', start.date_to),
                    ('date_to', '>=', start.date_from),
                    ], limit=1)
            if exported:
                export, = exported
                raise DatevError(gettext(
                        'recurring_invoice.msg_datev_period_exported',
                        date_from=start.date_from, date_to=start.date_to,
                        export=export.rec_name,
                        export_from=export.date_from,
                        export_to=export.date_to))
        invoices = Export.get_invoices(
            company, start.date_from, start.date_to)
        if not start.force:
            exported = Export.exported_invoices([i.id for i in invoices])
            invoices = [i for i in invoices if i.id not in exported]
        if not invoices:
            raise DatevError(gettext(
                    'recurring_invoice.msg_datev_no_invoices',
                    date_from=start.date_from, date_to=start.date_to))
        exports = Export.create_export(
            company, invoices, date_from=start.date_from,
            date_to=start.date_to, kind='period', forced=start.force,
            documents=start.documents)
        Export.transfer([e for e in exports if e.target])
        action['res_id'] = [e.id for e in exports]
        return action, {}


class RunLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.run.line'

    datev_export = fields.Many2One(
        'account.datev.export', "DATEV Export", readonly=True,
        ondelete='RESTRICT',
        states={
            'invisible': Eval('channel') != 'datev',
            })

    @classmethod
    def _pdf_channels(cls):
        return super()._pdf_channels() | {'datev'}

    @classmethod
    def _run_channels(cls):
        return super()._run_channels() | {'datev'}

    @classmethod
    def deliver_datev(cls, lines):
        """The DATEV lines wait for the other lines of their run: the run
        exports them in one Buchungsstapel (Run.deliver_run_channels)"""
        for line in lines:
            line.state = 'pending'
            line.message = None


class Run(metaclass=PoolMeta):
    __name__ = 'account.invoice.run'

    datev_exports = fields.One2Many(
        'account.datev.export', 'run', "DATEV Exports", readonly=True)
    datev_count = fields.Function(
        fields.Integer("Exported to DATEV"), 'get_counts')

    @classmethod
    def deliver_run_channels(cls, runs):
        super().deliver_run_channels(runs)
        cls.deliver_datev(runs)

    @classmethod
    def deliver_datev(cls, runs):
        """Export the pending DATEV lines of each run as one Buchungsstapel
        (one per fiscal year) and send it to the company's target"""
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        for run in runs:
            ids = [l.id for l in Line.search([
                        ('run', '=', run.id),
                        ('channel', '=', 'datev'),
                        ('state', '=', 'pending'),
                        ], order=[('id', 'ASC')])]
            if not ids:
                continue
            # Two workers that finish the run together: one exports, the
            # other cannot lock the lines (DatabaseOperationalError)
            with Transaction().new_transaction(
                    _lock_records={Line._table: ids}):
                cls._deliver_datev(cls(run.id), ids)

    @classmethod
    def _deliver_datev(cls, run, ids):
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        Export = pool.get('account.datev.export')
        lines = [l for l in Line.browse(ids) if l.state == 'pending']
        posted = [l for l in lines
            if l.invoice.state in {'posted', 'paid'}]
        for line in lines:
            if line not in posted:
                line.state = 'failed'
                line.message = gettext(
                    'recurring_invoice.msg_datev_not_posted',
                    invoice=line.invoice.rec_name)
        try:
            settings = Export.get_configuration(run.company)
        except DatevError as error:
            for line in posted:
                line.state = 'failed'
                line.message = error.message
            Line.save(lines)
            return
        by_invoice = defaultdict(list)
        for line in posted:
            by_invoice[line.invoice].append(line)
        errors, bookings = Export.check_invoices(
            list(by_invoice), settings)
        for invoice, message in errors.items():
            for line in by_invoice[invoice]:
                line.state = 'failed'
                line.message = message
        if bookings:
            try:
                exports = Export._create_exports(
                    run.company, bookings, settings, kind='run',
                    run=run)
            except DatevError as error:
                exports = []
                for invoice in bookings:
                    for line in by_invoice[invoice]:
                        line.state = 'failed'
                        line.message = error.message
            Export.transfer([e for e in exports if e.target])
            for export in exports:
                for invoice in export.invoices:
                    for line in by_invoice[invoice]:
                        line.datev_export = export
                        if export.transfer_state == 'failed':
                            line.state = 'failed'
                            line.message = export.transfer_message
                        else:
                            line.state = 'done'
                            line.recipient = (
                                export.transfer_message
                                or export.extf_filename)
                            line.message = None
        Line.save(lines)


class Delivery(metaclass=PoolMeta):
    __name__ = 'sale.subscription.delivery'

    @classmethod
    def get_channels(cls):
        return super().get_channels() + [('datev', "DATEV")]


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    @classmethod
    def check_automatic_delivery(cls, subscriptions, field_names=None):
        pool = Pool()
        Export = pool.get('account.datev.export')
        super().check_automatic_delivery(
            subscriptions, field_names=field_names)
        if field_names and not (
                field_names & cls._automatic_delivery_fields()):
            return
        checked = set()
        for subscription in subscriptions:
            if (not subscription.automatic_delivery
                    or subscription.company in checked
                    or not any(
                        'datev' in (d.channels or [])
                        for d in subscription.get_automatic_deliveries())):
                continue
            try:
                Export.get_configuration(subscription.company)
            except DatevError as error:
                raise AutomaticDeliveryError(gettext(
                        'recurring_invoice.msg_automatic_delivery_datev',
                        subscription=subscription.rec_name,
                        reason=error.message)) from error
            checked.add(subscription.company)
