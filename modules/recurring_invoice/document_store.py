# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import logging
import re
import string

from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, TransactionError

from .exceptions import (
    AutomaticDeliveryError, DocumentStoreError,
    DocumentStoreValidationError)
from .uploads import UploadError, graph_put, graph_token, webdav_put

logger = logging.getLogger(__name__)

PATTERN_FIELDS = [
    'year', 'month', 'day', 'number', 'party', 'party_code', 'company',
    'contract', 'filename']
_UNSAFE = re.compile(r'[\x00-\x1f\\/:*?"<>|]+')


def _segment(value):
    "Return value usable as one segment of a path"
    value = _UNSAFE.sub('_', str(value or '')).strip().strip('.')
    return value or '_'


class DocumentStore(ModelSQL, ModelView):
    """Where invoice documents are stored: a consultant adds a kind with its
    upload_<kind> method"""
    __name__ = 'document.store'

    name = fields.Char("Name", required=True)
    company = fields.Many2One('company.company', "Company", required=True)
    kind = fields.Selection('get_kinds', "Kind", required=True)
    url = fields.Char(
        "URL", required=True,
        help="WebDAV: the folder (collection) to upload into, "
        "e.g. https://cloud.example.com/remote.php/dav/files/erp/Invoices/\n"
        "SharePoint: the drive, e.g. "
        "https://graph.microsoft.com/v1.0/sites/{site-id}/drive")
    path_pattern = fields.Char(
        "Path Pattern", required=True,
        help="The folder and file name of each document below the URL, "
        "with the fields {year}, {month}, {day} (of the invoice date), "
        "{number}, {party}, {party_code}, {company}, {contract} and "
        "{filename}.")
    username = fields.Char(
        "User Name",
        states={
            'invisible': Eval('kind') != 'webdav',
            })
    password = fields.Char(
        "Password",
        states={
            'invisible': Eval('kind') != 'webdav',
            },
        help="Readable by the administrators only.")
    tenant = fields.Char(
        "Tenant",
        states={
            'invisible': Eval('kind') != 'sharepoint',
            'required': Eval('kind') == 'sharepoint',
            },
        help="The Microsoft Entra tenant (directory) ID or domain.")
    client_id = fields.Char(
        "Client ID",
        states={
            'invisible': Eval('kind') != 'sharepoint',
            'required': Eval('kind') == 'sharepoint',
            },
        help="The application (client) ID of the app registration with "
        "the application permission Sites.ReadWrite.All or Sites.Selected.")
    client_secret = fields.Char(
        "Client Secret",
        states={
            'invisible': Eval('kind') != 'sharepoint',
            },
        help="Readable by the administrators only.")
    authority = fields.Char(
        "Authority",
        states={
            'invisible': Eval('kind') != 'sharepoint',
            'required': Eval('kind') == 'sharepoint',
            },
        help="The Microsoft identity platform, "
        "https://login.microsoftonline.com for the public cloud.")

    @classmethod
    def get_kinds(cls):
        "Return the kinds of store; extend it with an upload_<kind> method"
        return [
            ('webdav', "WebDAV"),
            ('sharepoint', "SharePoint Online"),
            ]

    @classmethod
    def default_kind(cls):
        return 'webdav'

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_path_pattern(cls):
        return '{year}/{party}/{number}.pdf'

    @classmethod
    def default_authority(cls):
        return 'https://login.microsoftonline.com'

    @classmethod
    def validate_fields(cls, stores, field_names):
        super().validate_fields(stores, field_names)
        if not field_names or 'path_pattern' in field_names:
            for store in stores:
                store.check_path_pattern()

    def check_path_pattern(self):
        "Raise DocumentStoreValidationError if the pattern is not valid"
        try:
            names = [
                name for _, name, _, _
                in string.Formatter().parse(self.path_pattern)
                if name is not None]
        except ValueError as error:
            raise DocumentStoreValidationError(gettext(
                    'recurring_invoice.msg_document_store_pattern',
                    store=self.rec_name, pattern=self.path_pattern,
                    reason=str(error),
                    fields=', '.join('{%s}' % f for f in PATTERN_FIELDS)))
        unknown = [n for n in names if n not in PATTERN_FIELDS]
        if unknown:
            raise DocumentStoreValidationError(gettext(
                    'recurring_invoice.msg_document_store_pattern',
                    store=self.rec_name, pattern=self.path_pattern,
                    reason=', '.join('{%s}' % n for n in unknown),
                    fields=', '.join('{%s}' % f for f in PATTERN_FIELDS)))

    def get_path(self, invoice, filename):
        "Return the path of the invoice's document in the store"
        date = invoice.invoice_date
        values = {
            'year': date.year if date else '',
            'month': '%02d' % date.month if date else '',
            'day': '%02d' % date.day if date else '',
            'number': invoice.number or invoice.id,
            'party': invoice.party.name or invoice.party.rec_name,
            'party_code': invoice.party.code,
            'company': invoice.company.rec_name,
            'contract': (
                invoice.subscription.rec_name
                if getattr(invoice, 'subscription', None) else ''),
            'filename': filename,
            }
        # Each value is one segment: a name with a slash is no folder
        values = {k: _segment(v) for k, v in values.items()}
        path = self.path_pattern.format(**values)
        segments = [_segment(s) for s in path.split('/') if s.strip()]
        return '/'.join(segments)

    def upload(self, path, data):
        """Upload data to path and return its URL
        Raise UploadError when the store does not take it"""
        return getattr(self, f'upload_{self.kind}')(path, data)

    def upload_webdav(self, path, data):
        return webdav_put(
            self.url, path, data, username=self.username or None,
            password=self.password or None)

    def upload_sharepoint(self, path, data):
        token = graph_token(
            self.tenant, self.client_id, self.client_secret or '',
            authority=self.authority.rstrip('/'))
        return graph_put(self.url.rstrip('/'), path, data, token)


class Delivery(metaclass=PoolMeta):
    __name__ = 'sale.subscription.delivery'

    document_store = fields.Many2One(
        'document.store', "Document Store", ondelete='RESTRICT',
        states={
            'invisible': ~Eval('channels', []).contains('document_store'),
            'required': Eval('channels', []).contains('document_store'),
            },
        help="Where the invoice PDFs are uploaded.")

    @classmethod
    def get_channels(cls):
        return super().get_channels() + [
            ('document_store', "Document Store")]


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    @classmethod
    def check_automatic_delivery(cls, subscriptions, field_names=None):
        super().check_automatic_delivery(
            subscriptions, field_names=field_names)
        if field_names and not (
                field_names & cls._automatic_delivery_fields()):
            return
        for subscription in subscriptions:
            if not subscription.automatic_delivery:
                continue
            for delivery in subscription.get_automatic_deliveries():
                if ('document_store' in (delivery.channels or [])
                        and not delivery.document_store):
                    raise AutomaticDeliveryError(gettext(
                            'recurring_invoice'
                            '.msg_automatic_delivery_document_store',
                            subscription=subscription.rec_name))


class RunLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.run.line'

    @classmethod
    def _pdf_channels(cls):
        return super()._pdf_channels() | {'document_store'}

    def get_document_store(self):
        "Return the document store of the line"
        delivery = self.get_delivery()
        if delivery:
            return delivery.document_store

    @classmethod
    def deliver_document_store(cls, lines):
        """Upload the PDFs of the invoices to the document store of their
        contract; the same invoice always goes to the same path, so a
        retry overwrites it"""
        from .invoice_run import invoice_filename
        for line in lines:
            invoice = line.invoice
            store = line.get_document_store()
            try:
                if not store:
                    raise DocumentStoreError(gettext(
                            'recurring_invoice.msg_document_store_missing',
                            invoice=invoice.rec_name))
                path = store.get_path(invoice, invoice_filename(invoice))
                url = store.upload(path, invoice.invoice_report_cache)
            except (TransactionError, backend.DatabaseOperationalError):
                raise
            except (UploadError, DocumentStoreError) as error:
                logger.info("upload of %s failed", line.rec_name,
                    exc_info=True)
                line.state = 'failed'
                line.message = gettext(
                    'recurring_invoice.msg_document_store_upload_failed',
                    invoice=invoice.rec_name,
                    store=store.rec_name if store else '',
                    reason=getattr(error, 'message', None) or str(error))
            else:
                line.state = 'done'
                line.recipient = url
                line.message = None


class Run(metaclass=PoolMeta):
    __name__ = 'account.invoice.run'

    document_store_count = fields.Function(
        fields.Integer("Uploaded"), 'get_counts')
