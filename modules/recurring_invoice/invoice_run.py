# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import io
import logging
from collections import defaultdict
from email.utils import getaddresses

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Workflow, fields
from trytond.model.exceptions import AccessError
from trytond.modules.company.model import employee_field, set_employee
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, TransactionError

from .exceptions import DeliveryError, RunConfirmWarning

logger = logging.getLogger(__name__)

# Run lines delivered in one transaction
DELIVERY_BATCH_SIZE = 50


class Run(Workflow, ModelSQL, ModelView):
    __name__ = 'account.invoice.run'

    company = fields.Many2One(
        'company.company', "Company", required=True, readonly=True)
    kind = fields.Selection([
            ('automatic', "Automatic"),
            ('manual', "Manual"),
            ], "Kind", required=True, readonly=True)
    date = fields.Date("Date", required=True, readonly=True)
    lines = fields.One2Many(
        'account.invoice.run.line', 'run', "Lines", readonly=True)
    email_count = fields.Function(
        fields.Integer("E-mailed"), 'get_counts')
    letter_count = fields.Function(
        fields.Integer("Letters"), 'get_counts')
    direct_debit_count = fields.Function(
        fields.Integer("Direct Debits"), 'get_counts')
    failed_count = fields.Function(
        fields.Integer("Failed"), 'get_counts')
    letter_pdf = fields.Binary(
        "Letters PDF", readonly=True, filename='letter_pdf_name',
        help="The invoices to print and post, in one PDF.")
    letter_pdf_name = fields.Function(
        fields.Char("Letters PDF Name"), 'get_letter_pdf_name')
    confirmed_by = employee_field("Confirmed By", states=['done'])
    confirmed_at = fields.DateTime("Confirmed At", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('built', "Built"),
            ('executed', "Executed"),
            ('done', "Done"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('executed', 'executed'),
            ('executed', 'done'),
            }
        cls._buttons.update({
                'execute': {
                    'invisible': Eval('state') != 'executed',
                    'icon': 'tryton-refresh',
                    'depends': ['state'],
                    },
                'confirm': {
                    'invisible': Eval('state') != 'executed',
                    'icon': 'tryton-ok',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_kind(cls):
        return 'automatic'

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def get_counts(cls, runs, names):
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        line = Line.__table__()
        cursor = Transaction().connection.cursor()
        result = {name: {r.id: 0 for r in runs} for name in names}
        for sub_ids in grouped_slice(
                [r.id for r in runs], backend.MAX_QUERY_PARAMS):
            cursor.execute(*line.select(
                    line.run, line.channel, line.state,
                    where=fields.SQL_OPERATORS['in'](line.run, list(sub_ids))))
            for run_id, channel, state in cursor:
                if state == 'failed':
                    name = 'failed_count'
                elif state in {'done', 'manual'}:
                    name = f'{channel}_count'
                else:
                    continue
                if name in result:
                    result[name][run_id] += 1
        return result

    def get_letter_pdf_name(self, name):
        return f'letters-{self.date}-{self.id}.pdf'

    @classmethod
    def build_letter_pdf(cls, runs):
        "Merge the invoices to send by letter into one PDF per run"
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        for run in runs:
            lines = Line.search([
                    ('run', '=', run.id),
                    ('channel', '=', 'letter'),
                    ('state', 'in', ['manual', 'done']),
                    ], order=[('id', 'ASC')])
            documents = [
                line.invoice.invoice_report_cache for line in lines
                if line.invoice.invoice_report_format == 'pdf'
                and line.invoice.invoice_report_cache]
            run.letter_pdf = merge_pdfs(documents) if documents else None
        cls.save(runs)

    def get_rec_name(self, name):
        pool = Pool()
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        return '%s %s' % (
            dict(self.fields_get(['kind'])['kind']['selection'])[self.kind],
            lang.strftime(self.date))

    @classmethod
    def check_modification(cls, mode, runs, values=None, external=False):
        super().check_modification(
            mode, runs, values=values, external=external)
        if mode in {'write', 'delete'}:
            for run in runs:
                if run.state == 'done':
                    raise AccessError(gettext(
                            'recurring_invoice.msg_run_done',
                            run=run.rec_name))

    @classmethod
    def create_automatic(cls, date, invoices):
        """Create the protocol of the nightly delivery of invoices
        and return it (None if nothing to deliver)"""
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        if not invoices:
            return
        run = cls(kind='automatic', date=date, state='executed')
        run.save()
        lines = []
        for invoice in sorted(invoices, key=lambda i: (i.invoice_date, i.id)):
            lines.extend(Line.get_lines(run, invoice))
        Line.save(lines)
        return run

    @classmethod
    @ModelView.button
    @Workflow.transition('executed')
    def execute(cls, runs):
        "Deliver again what is pending or failed"
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        lines = Line.search([
                ('run', 'in', [r.id for r in runs]),
                ('state', 'in', ['pending', 'failed']),
                ])
        Line.deliver(lines)

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    @set_employee('confirmed_by')
    def confirm(cls, runs):
        pool = Pool()
        Warning = pool.get('res.user.warning')
        failed = [r for r in runs if r.failed_count]
        if failed:
            key = Warning.format('confirm_failed', failed)
            if Warning.check(key):
                raise RunConfirmWarning(key, gettext(
                        'recurring_invoice.msg_run_confirm_failed',
                        runs=', '.join(r.rec_name for r in failed[:5])))
        for run in runs:
            run.confirmed_at = dt.datetime.now()
        cls.save(runs)

    def notify(self):
        "Tell the users subscribed to the nightly run what it did"
        pool = Pool()
        Cron = pool.get('ir.cron')
        Cron.notify(
            'tryton-notification', 'recurring_invoice.act_invoice_run',
            self.id, 'recurring_invoice.msg_run_notification',
            date=self.date, email=self.email_count,
            letter=self.letter_count, direct_debit=self.direct_debit_count,
            failed=self.failed_count)


class RunLine(ModelSQL, ModelView):
    __name__ = 'account.invoice.run.line'

    run = fields.Many2One(
        'account.invoice.run', "Run", required=True, ondelete='CASCADE',
        readonly=True)
    invoice = fields.Many2One(
        'account.invoice', "Invoice", required=True, readonly=True,
        ondelete='RESTRICT')
    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    party = fields.Function(
        fields.Many2One('party.party', "Party"), 'get_party')
    channel = fields.Selection(
        'get_channels', "Channel", required=True, readonly=True)
    recipient = fields.Char("Recipient", readonly=True)
    state = fields.Selection([
            ('pending', "Pending"),
            ('done', "Done"),
            ('failed', "Failed"),
            ('manual', "Manual"),
            ('skipped', "Skipped"),
            ], "State", required=True, readonly=True, sort=False)
    message = fields.Text("Message", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('run')
        cls._order = [('channel', 'ASC'), ('id', 'ASC')]
        cls._buttons.update({
                'tick': {
                    'invisible': Eval('state') != 'manual',
                    'icon': 'tryton-ok',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def get_channels(cls):
        pool = Pool()
        Delivery = pool.get('sale.subscription.delivery')
        return Delivery.get_channels()

    @classmethod
    def default_state(cls):
        return 'pending'

    def get_party(self, name):
        return self.invoice.party.id

    @classmethod
    def check_modification(cls, mode, lines, values=None, external=False):
        super().check_modification(
            mode, lines, values=values, external=external)
        if mode in {'write', 'delete'}:
            for line in lines:
                if line.run.state == 'done':
                    raise AccessError(gettext(
                            'recurring_invoice.msg_run_done',
                            run=line.run.rec_name))

    @classmethod
    @ModelView.button
    def tick(cls, lines):
        "Mark manual lines as done by staff"
        cls.write([line for line in lines if line.state == 'manual'], {
                'state': 'done',
                })

    @classmethod
    def get_lines(cls, run, invoice):
        "Return the protocol lines to deliver the invoice"
        subscription = invoice.subscription
        delivery = subscription.standard_delivery
        lines = []
        for channel in delivery.channels:
            lines.append(cls(
                    run=run, invoice=invoice, subscription=subscription,
                    channel=channel, state='pending'))
        return lines

    @classmethod
    def deliver(cls, lines):
        """Post the invoices and deliver the pending or failed lines, each
        slice in its own transaction that locks its lines"""
        pool = Pool()
        Run = pool.get('account.invoice.run')
        transaction = Transaction()
        ids = list(map(int, lines))
        # The lines may be newer than the current transaction
        with transaction.new_transaction(readonly=True):
            run_ids = sorted({line.run.id for line in cls.browse(ids)})
        for sub_ids in grouped_slice(ids, DELIVERY_BATCH_SIZE):
            cls._deliver_slice(list(sub_ids))
        if run_ids:
            with transaction.new_transaction():
                Run.build_letter_pdf(Run.browse(run_ids))

    @classmethod
    def _deliver_slice(cls, ids, retry=5):
        transaction = Transaction()
        extras = {'_lock_records': {cls._table: list(ids)}}
        for _ in range(retry):
            try:
                slice_transaction = transaction.new_transaction(**extras)
            except backend.DatabaseOperationalError:
                logger.info(
                    "skip %d lines locked by another process", len(ids))
                return
            try:
                with slice_transaction:
                    cls._deliver(cls.browse(ids))
            except TransactionError as exception:
                # Posting needs more locks: start again with them
                exception.fix(extras)
                continue
            except PostError as exception:
                invoices = cls._invoices_of(ids)
                if len(invoices) > 1:
                    # Post the others, fail only the lines of the invoice
                    # that cannot be posted
                    for invoice_ids in invoices.values():
                        cls._deliver_slice(invoice_ids)
                else:
                    cls._fail(ids, exception.exception)
            except Exception as exception:
                # e.g. the mail server refused the connection at commit
                logger.info("delivery failed", exc_info=True)
                cls._fail(ids, exception)
            return

    @classmethod
    def _invoices_of(cls, ids):
        "Return the line ids grouped by invoice id"
        with Transaction().new_transaction(readonly=True):
            invoices = defaultdict(list)
            for line in cls.browse(ids):
                invoices[line.invoice.id].append(line.id)
            return dict(invoices)

    @classmethod
    def _fail(cls, ids, exception):
        "Mark the undelivered lines failed with the reason"
        with Transaction().new_transaction():
            lines = [
                line for line in cls.browse(ids)
                if line.state in {'pending', 'failed'}]
            cls.write(lines, {
                    'state': 'failed',
                    'message': _message(exception),
                    })

    @classmethod
    def _deliver(cls, lines):
        pool = Pool()
        Invoice = pool.get('account.invoice')
        Date = pool.get('ir.date')
        lines = [
            line for line in lines if line.state in {'pending', 'failed'}]
        to_post = {
            line.invoice for line in lines
            if line.invoice.state in {'draft', 'validated'}
            and line.subscription.standard_delivery.post}
        failed = {}
        # An invoice is dated the day it is issued: invoices of past
        # periods (catch up, retries) get today, their service period stays
        today = Date.today()
        for invoice in to_post:
            if invoice.invoice_date and invoice.invoice_date < today:
                invoice.invoice_date = today
        to_post = sorted(to_post, key=lambda i: (
                i.subscription_period_start or i.invoice_date, i.id))
        try:
            Invoice.save(to_post)
            with Transaction().set_context(_skip_warnings=True):
                Invoice.post(to_post)
        except TransactionError:
            raise
        except Exception as exception:
            raise PostError(exception) from exception
        to_render = {
            line.invoice for line in lines
            if line.invoice not in failed
            and line.channel in cls._pdf_channels()}
        try:
            cls.render_pdfs(list(to_render))
        except TransactionError:
            raise
        except UserError as exception:
            # No converter: fail fast, a later retry renders them
            for invoice in to_render:
                failed.setdefault(invoice, _message(exception))
        by_channel = defaultdict(list)
        for line in lines:
            if line.invoice in failed and (
                    line.channel in cls._pdf_channels()
                    or line.invoice.state not in {'posted', 'paid'}):
                line.state = 'failed'
                line.message = failed[line.invoice]
            else:
                by_channel[line.channel].append(line)
        for channel, channel_lines in by_channel.items():
            getattr(cls, f'deliver_{channel}')(channel_lines)
        cls.save(lines)

    @classmethod
    def _pdf_channels(cls):
        "The channels that deliver the invoice document"
        return {'email', 'letter'}

    @classmethod
    def render_pdfs(cls, invoices):
        "Store the PDF of the posted invoices as their report cache"
        pool = Pool()
        InvoiceReport = pool.get('account.invoice', type='report')
        invoices = [i for i in invoices if i.state in {'posted', 'paid'}]
        if invoices:
            InvoiceReport.render_pdf_cache(invoices)

    @classmethod
    def deliver_email(cls, lines):
        "Send the invoices by e-mail with their template"
        pool = Pool()
        Email = pool.get('ir.email')
        Template = pool.get('ir.email.template')
        for line in lines:
            invoice = line.invoice
            delivery = line.subscription.standard_delivery
            try:
                with Transaction().set_context(
                        language=invoice.party_lang):
                    # Read in the language of the customer
                    template = Template(delivery.email_template.id)
                    values = template.get(invoice)
                to = _addresses(values.get('to'))
                if (invoice.contact and invoice.contact.type == 'email'
                        and invoice.contact.value):
                    to = invoice.contact.value
                if not to:
                    raise DeliveryError(gettext(
                            'recurring_invoice.msg_delivery_no_email',
                            party=invoice.party.rec_name))
                cc = _addresses([values.get('cc'), delivery.email_cc])
                bcc = _addresses([values.get('bcc'), delivery.email_bcc])
                Email.send(
                    to=to, cc=cc, bcc=bcc,
                    subject=values.get('subject', ''),
                    body=values.get('body', ''),
                    record=(invoice.__name__, invoice.id),
                    reports=values.get('reports'))
            except TransactionError:
                raise
            except Exception as exception:
                line.state = 'failed'
                line.message = _message(exception)
            else:
                line.state = 'done'
                line.recipient = ', '.join(
                    a for _, a in getaddresses([to, cc, bcc]) if a)
                line.message = None

    @classmethod
    def deliver_letter(cls, lines):
        "Letters are printed and posted by staff"
        for line in lines:
            line.state = 'manual'

    @classmethod
    def deliver_direct_debit(cls, lines):
        "Direct debits are collected by staff"
        for line in lines:
            line.state = 'manual'


class PostError(Exception):
    "Posting failed: deliver the invoices one by one"

    def __init__(self, exception):
        super().__init__(exception)
        self.exception = exception


def merge_pdfs(documents):
    "Return one PDF of the documents one after the other"
    from pypdf import PdfWriter
    writer = PdfWriter()
    for document in documents:
        writer.append(io.BytesIO(document))
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def _addresses(values):
    "Return the addresses of values (strings or lists) as one string"
    if not values:
        return ''
    if isinstance(values, str):
        values = [values]
    result = []
    for value in values:
        if isinstance(value, (list, tuple)):
            result.append(_addresses(value))
        elif value:
            result.append(value)
    return ', '.join(filter(None, result))


def _message(exception):
    return (getattr(exception, 'message', None) or str(exception)
        or repr(exception))
