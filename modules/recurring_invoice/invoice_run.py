# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import io
import logging
import random
import re
import smtplib
import time
import zipfile
from collections import defaultdict
from email.utils import getaddresses

from sql.aggregate import Sum
from sql.conditionals import Coalesce

from trytond import backend, config
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Workflow, fields
from trytond.model.exceptions import AccessError
from trytond.modules.company.model import employee_field, set_employee
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.sendmail import SMTPDataManager, send_message
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, TransactionError

from .exceptions import (
    DeliveryError, InvoiceRunError, InvoiceRunValidationError,
    RunConfirmWarning)

logger = logging.getLogger(__name__)

# Run lines delivered in one transaction
DELIVERY_BATCH_SIZE = 50
# Seconds to wait before taking the locks of a slice again (times the
# attempt, with jitter)
LOCK_WAIT = 0.2
# Restarts of a slice with the locks that posting asks for
MAX_RESTARTS = 10
# The locks that posting asked for, learnt by the process per database:
# the tables (journal periods) and the records of the tables that every
# slice locks the same (the invoice and move sequences)
_POST_LOCKS = defaultdict(lambda: {'tables': set(), 'records': {}})
POST_LOCK_SHARED_RECORDS = {'ir_sequence', 'ir_sequence_strict'}
# Run lines saved at once (SQLite limits the depth of an expression)
SAVE_BATCH_SIZE = 200


class Run(Workflow, ModelSQL, ModelView):
    __name__ = 'account.invoice.run'

    # the criteria of a manual run, editable until it is executed
    _criteria_states = {
        'invisible': Eval('kind') != 'manual',
        'readonly': ~Eval('state').in_(['draft', 'built']),
        }
    _criteria_required_states = _criteria_states | {
        'required': Eval('kind') == 'manual',
        }
    # the e-mail settings of a manual run, editable until it is done
    _manual_states = {
        'invisible': Eval('kind') != 'manual',
        'readonly': Eval('state') == 'done',
        }
    _manual_required_states = _manual_states | {
        'required': Eval('kind') == 'manual',
        }

    company = fields.Many2One(
        'company.company', "Company", required=True, readonly=True)
    kind = fields.Selection([
            ('automatic', "Automatic"),
            ('manual', "Manual"),
            ], "Kind", required=True, readonly=True)
    date = fields.Date("Date", required=True, readonly=True)
    date_from = fields.Date(
        "Invoice Date From",
        states=_criteria_required_states,
        help="The first invoice date of the invoices of the run.")
    date_to = fields.Date(
        "Invoice Date To",
        states=_criteria_required_states,
        help="The last invoice date of the invoices of the run.")
    output = fields.Selection([
            ('email', "Send by E-mail"),
            ('pdf', "PDF for Download"),
            ], "Output",
        states=_criteria_required_states,
        help="How the invoices are delivered: e-mailed, "
        "or as PDFs to download and print.")
    respect_delivery_preference = fields.Boolean(
        "Respect Delivery Preference",
        states=_criteria_states,
        help="If checked, customers who want e-mail get an e-mail and "
        "customers who want letters get a PDF, whatever the output.")
    include_sent = fields.Boolean(
        "Include Sent Invoices",
        states=_criteria_states,
        help="If checked, invoices that were already delivered are "
        "delivered again.")
    include_drafts = fields.Boolean(
        "Include Drafts",
        states=_criteria_states,
        help="If checked, the draft invoices of the period enter the run "
        "and are posted when it is executed.")
    email_template = fields.Many2One(
        'ir.email.template', "E-mail Template",
        domain=[
            ('model.name', '=', 'account.invoice'),
            ],
        states=_manual_required_states)
    email_cc = fields.Char(
        "E-mail Cc",
        states=_manual_states,
        help="Internal addresses that receive a copy, comma separated.")
    email_bcc = fields.Char(
        "E-mail Bcc",
        states=_manual_states,
        help="Internal addresses that receive a hidden copy, "
        "comma separated.")
    excluded_invoices = fields.Many2Many(
        'account.invoice.run-excluded-account.invoice', 'run', 'invoice',
        "Removed Invoices",
        domain=[
            ('company', '=', Eval('company', -1)),
            ('type', '=', 'out'),
            ],
        states=_criteria_states,
        help="The invoices removed from the run: rebuilding keeps them "
        "out. Remove an invoice from this list to let it in again.")
    lines = fields.One2Many(
        'account.invoice.run.line', 'run', "Lines",
        states={
            'readonly': ((Eval('kind') != 'manual')
                | (Eval('state') != 'built')),
            },
        help="The protocol: one line per invoice and channel.\n"
        "In a built run, remove the lines of invoices that must not be "
        "delivered.")
    line_count = fields.Function(
        fields.Integer("Lines"), 'get_progress')
    done_line_count = fields.Function(
        fields.Integer("Lines Done"), 'get_progress')
    progress = fields.Function(
        fields.Float("Progress", digits=(1, 4)), 'get_progress')
    zip_file = fields.Binary(
        "PDFs (ZIP)", readonly=True, filename='zip_file_name',
        states={
            'invisible': Eval('kind') != 'manual',
            },
        help="The PDFs of the invoices of the run, in one ZIP file.")
    zip_file_name = fields.Function(
        fields.Char("PDFs (ZIP) Name"), 'get_zip_file_name')

    email_count = fields.Function(
        fields.Integer("E-mailed"), 'get_counts')
    letter_count = fields.Function(
        fields.Integer("Letters"), 'get_counts')
    direct_debit_count = fields.Function(
        fields.Integer("Direct Debits"), 'get_counts')
    failed_count = fields.Function(
        fields.Integer("Failed"), 'get_counts')
    generation_time = fields.Float(
        "Generation", digits=(16, 2), readonly=True,
        help="Seconds the nightly run took to create the invoices.")
    generated_count = fields.Integer(
        "Invoices Created", readonly=True,
        help="The invoices the nightly run created.")
    posting_time = fields.Function(fields.Float(
            "Posting", digits=(16, 2),
            help="Seconds spent posting the invoices of the lines."),
        'get_timings')
    rendering_time = fields.Function(fields.Float(
            "Rendering", digits=(16, 2),
            help="Seconds spent rendering the PDFs of the lines."),
        'get_timings')
    sending_time = fields.Function(fields.Float(
            "Sending", digits=(16, 2),
            help="Seconds spent delivering the lines by their channels."),
        'get_timings')
    notified = fields.Boolean(
        "Notified", readonly=True,
        help="The subscribed users were told what the run did.")
    pending_count = fields.Function(
        fields.Integer(
            "Pending",
            help="Lines not delivered yet: Execute delivers them."),
        'get_counts')
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

    del _criteria_states, _criteria_required_states
    del _manual_states, _manual_required_states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'built'),
            ('built', 'built'),
            ('built', 'executed'),
            ('executed', 'executed'),
            ('executed', 'done'),
            }
        cls._buttons.update({
                'build': {
                    'invisible': ((Eval('kind') != 'manual')
                        | (Eval('state') != 'draft')),
                    'icon': 'tryton-forward',
                    'depends': ['kind', 'state'],
                    },
                'rebuild': {
                    'invisible': ((Eval('kind') != 'manual')
                        | (Eval('state') != 'built')),
                    'icon': 'tryton-refresh',
                    'depends': ['kind', 'state'],
                    },
                'execute': {
                    'invisible': ~Eval('state').in_(['built', 'executed']),
                    'icon': If(Eval('state') == 'built',
                        'tryton-launch', 'tryton-refresh'),
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
        return 'manual'

    @classmethod
    def default_date(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        return Date.today()

    @classmethod
    def default_output(cls):
        return 'email'

    @classmethod
    def default_respect_delivery_preference(cls):
        return True

    @classmethod
    def default_include_sent(cls):
        return False

    @classmethod
    def default_include_drafts(cls):
        return False

    @classmethod
    def default_email_template(cls):
        pool = Pool()
        Delivery = pool.get('sale.subscription.delivery')
        return Delivery.default_email_template()

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
                if state in {'failed', 'pending'}:
                    name = f'{state}_count'
                elif state in {'done', 'manual'}:
                    name = f'{channel}_count'
                else:
                    continue
                if name in result:
                    result[name][run_id] += 1
        return result

    @classmethod
    def get_timings(cls, runs, names):
        "The sums of the stage timings of the lines"
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        line = Line.__table__()
        cursor = Transaction().connection.cursor()
        columns = {
            'posting_time': line.posting_time,
            'rendering_time': line.rendering_time,
            'sending_time': line.sending_time,
            }
        names = [n for n in names if n in columns]
        result = {name: {r.id: 0.0 for r in runs} for name in names}
        for sub_ids in grouped_slice(
                [r.id for r in runs], backend.MAX_QUERY_PARAMS):
            cursor.execute(*line.select(
                    line.run, *[Sum(Coalesce(columns[n], 0)) for n in names],
                    where=fields.SQL_OPERATORS['in'](line.run, list(sub_ids)),
                    group_by=[line.run]))
            for run_id, *values in cursor:
                for name, value in zip(names, values):
                    result[name][run_id] = round(float(value or 0), 2)
        return result

    @classmethod
    def get_progress(cls, runs, names):
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        line = Line.__table__()
        cursor = Transaction().connection.cursor()
        counts = {r.id: [0, 0] for r in runs}
        for sub_ids in grouped_slice(
                [r.id for r in runs], backend.MAX_QUERY_PARAMS):
            cursor.execute(*line.select(
                    line.run, line.state,
                    where=fields.SQL_OPERATORS['in'](line.run, list(sub_ids))))
            for run_id, state in cursor:
                counts[run_id][0] += 1
                if state != 'pending':
                    counts[run_id][1] += 1
        result = {name: {} for name in names}
        for run_id, (total, done) in counts.items():
            if 'line_count' in result:
                result['line_count'][run_id] = total
            if 'done_line_count' in result:
                result['done_line_count'][run_id] = done
            if 'progress' in result:
                result['progress'][run_id] = (
                    round(done / total, 4) if total else None)
        return result

    def get_letter_pdf_name(self, name):
        return f'letters-{self.date}-{self.id}.pdf'

    def get_zip_file_name(self, name):
        return f'invoices-{self.date}-{self.id}.zip'

    @classmethod
    def validate_fields(cls, runs, field_names):
        super().validate_fields(runs, field_names)
        cls.check_period(runs, field_names)

    @classmethod
    def check_period(cls, runs, field_names=None):
        if field_names and not (field_names & {'date_from', 'date_to'}):
            return
        for run in runs:
            if (run.date_from and run.date_to
                    and run.date_from > run.date_to):
                raise InvoiceRunValidationError(gettext(
                        'recurring_invoice.msg_run_period',
                        run=run.rec_name,
                        date_from=run.date_from, date_to=run.date_to))

    def check_company(self):
        "Raise if the run is not of the user's current company"
        company_id = Transaction().context.get('company')
        if company_id is not None and self.company.id != company_id:
            raise InvoiceRunError(gettext(
                    'recurring_invoice.msg_run_other_company',
                    run=self.rec_name, company=self.company.rec_name))

    @classmethod
    def build_files(cls, runs):
        "Build the files of the runs to download"
        cls.build_letter_pdf(runs)
        cls.build_zip_file([r for r in runs if r.kind == 'manual'])

    @classmethod
    def build_zip_file(cls, runs):
        "Put the PDFs of the delivered invoices of each run in one ZIP file"
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        for run in runs:
            # also the failed ones, e.g. to post those without e-mail
            lines = Line.search([
                    ('run', '=', run.id),
                    ('channel', 'in', list(Line._pdf_channels())),
                    ('state', 'in', ['manual', 'done', 'failed']),
                    ], order=[('id', 'ASC')])
            # each invoice once, in the order of the lines
            invoices = list({line.invoice.id: line.invoice
                    for line in lines}.values())
            documents = [
                (invoice_filename(i), i.invoice_report_cache)
                for i in invoices
                if i.invoice_report_format == 'pdf'
                and i.invoice_report_cache]
            run.zip_file = zip_documents(documents) if documents else None
        cls.save(runs)

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

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('//page[@id="criteria"]', 'states', {
                    'invisible': Eval('kind') != 'manual',
                    }),
            ]

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
        if mode == 'delete':
            for run in runs:
                if run.state not in {'draft', 'built'}:
                    raise AccessError(gettext(
                            'recurring_invoice.msg_run_delete_executed',
                            run=run.rec_name))

    @classmethod
    def preprocess_values(cls, mode, values):
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        values = super().preprocess_values(mode, values)
        if mode == 'write' and values.get('lines'):
            # Staff removed lines: rebuilding keeps their invoices out
            ids = [
                id_ for action in values['lines'] if action[0] == 'delete'
                for id_ in action[1]]
            invoices = sorted({
                    line.invoice.id for line in Line.browse(ids)
                    if line.run.kind == 'manual'})
            if invoices:
                values['excluded_invoices'] = list(
                    values.get('excluded_invoices', [])) + [
                    ('add', invoices)]
        return values

    @classmethod
    def copy(cls, runs, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('lines', None)
        default.setdefault('state', 'draft')
        default.setdefault('kind', 'manual')
        default.setdefault('date', cls.default_date())
        default.setdefault('letter_pdf', None)
        default.setdefault('zip_file', None)
        default.setdefault('confirmed_by', None)
        default.setdefault('notified', False)
        default.setdefault('generation_time', None)
        default.setdefault('generated_count', None)
        default.setdefault('confirmed_at', None)
        return super().copy(runs, default=default)

    def get_invoices(self):
        "Return the invoices the manual run collects"
        pool = Pool()
        Invoice = pool.get('account.invoice')
        states = ['posted', 'paid']
        if self.include_drafts:
            states += ['draft', 'validated']
        domain = [
            ('company', '=', self.company.id),
            ('type', '=', 'out'),
            ('invoice_date', '>=', self.date_from),
            ('invoice_date', '<=', self.date_to),
            ('state', 'in', states),
            ('ignore_in_invoice_runs', '=', False),
            ('party.ignore_in_invoice_runs', '=', False),
            ]
        if not self.include_sent:
            domain.append(('sent_date', '=', None))
        excluded = {i.id for i in self.excluded_invoices}
        return [i for i in Invoice.search(domain, order=[
                    ('invoice_date', 'ASC'), ('number', 'ASC'),
                    ('id', 'ASC')])
            if i.id not in excluded]

    def get_channel(self, invoice):
        "Return the channel of the invoice in the manual run"
        if self.respect_delivery_preference:
            return invoice.party.invoice_delivery or 'email'
        return {'email': 'email', 'pdf': 'letter'}[self.output]

    @classmethod
    @ModelView.button
    @Workflow.transition('built')
    def build(cls, runs):
        "Collect the invoices of the manual runs: one line per invoice"
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        runs = [r for r in runs if r.kind == 'manual']
        for run in runs:
            run.check_company()
        # Rebuilding starts again: nothing of a built run is delivered
        Line.delete(Line.search([('run', 'in', [r.id for r in runs])]))
        lines = []
        for run in runs:
            invoices = run.get_invoices()
            if not invoices:
                raise InvoiceRunError(gettext(
                        'recurring_invoice.msg_run_no_invoices',
                        run=run.rec_name,
                        date_from=run.date_from, date_to=run.date_to))
            for invoice in invoices:
                lines.append(Line(
                        run=run, invoice=invoice,
                        subscription=invoice.subscription,
                        channel=run.get_channel(invoice), state='pending'))
        for sub_lines in grouped_slice(lines, SAVE_BATCH_SIZE):
            Line.save(list(sub_lines))
        cls.write(runs, {'letter_pdf': None, 'zip_file': None})

    @classmethod
    @ModelView.button
    def rebuild(cls, runs):
        "Collect the invoices again with the same criteria"
        cls.build(runs)

    @classmethod
    def create_automatic(cls, date, invoices, **values):
        """Create the protocol of the nightly delivery of invoices
        and return it (None if nothing to deliver)

        values: more field values of the run, e.g. the generation's
        figures"""
        if not invoices:
            return
        run = cls(kind='automatic', date=date, state='executed', **values)
        run.save()
        run.add_lines(invoices)
        return run

    def add_lines(self, invoices):
        "Add the protocol lines to deliver the invoices"
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        lines = []
        for invoice in sorted(
                invoices, key=lambda i: (i.invoice_date or dt.date.min, i.id)):
            lines.extend(Line.get_lines(self, invoice))
        for sub_lines in grouped_slice(lines, SAVE_BATCH_SIZE):
            Line.save(list(sub_lines))

    @classmethod
    @ModelView.button
    @Workflow.transition('executed')
    def execute(cls, runs):
        """Deliver what is pending or failed

        The lines are delivered by queue tasks that run after the state is
        committed: by the workers when they are configured, otherwise at
        the end of the request, in slices that commit one by one."""
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        for run in runs:
            run.check_company()
        lines = Line.search([
                ('run', 'in', [r.id for r in runs]),
                ('state', 'in', ['pending', 'failed']),
                ], order=[('id', 'ASC')])
        if not lines:
            # Only the files, e.g. after lines were ticked
            cls.build_files(runs)
            return
        with Transaction().set_context(queue_batch=True):
            Line.__queue__.deliver(lines)

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    @set_employee('confirmed_by')
    def confirm(cls, runs):
        pool = Pool()
        Warning = pool.get('res.user.warning')
        for run in runs:
            if run.pending_count:
                # Confirmed, its lines would never be delivered
                raise InvoiceRunError(gettext(
                        'recurring_invoice.msg_run_confirm_pending',
                        run=run.rec_name, count=run.pending_count))
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

    @classmethod
    def deliver_run_channels(cls, runs):
        """Deliver the lines of the channels that take the whole run at once
        (RunLine._run_channels), once every other line was tried"""
        pass

    @classmethod
    def finish(cls, runs):
        """Notify once the automatic runs whose every line was tried: the
        write makes two workers that finish a run together conflict"""
        to_notify = [
            r for r in runs if r.kind == 'automatic' and not r.notified]
        if to_notify:
            cls.write(to_notify, {'notified': True})
            for run in to_notify:
                run.notify()

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
    channel_string = channel.translated('channel')
    recipient = fields.Char("Recipient", readonly=True)
    state = fields.Selection([
            ('pending', "Pending"),
            ('done', "Done"),
            ('failed', "Failed"),
            ('manual', "Manual"),
            ('skipped', "Skipped"),
            ], "State", required=True, readonly=True, sort=False)
    message = fields.Text("Message", readonly=True)
    posting_time = fields.Float(
        "Posting", readonly=True,
        help="Its share of the seconds its slice spent posting.")
    rendering_time = fields.Float(
        "Rendering", readonly=True,
        help="Its share of the seconds its slice spent rendering PDFs.")
    sending_time = fields.Float(
        "Sending", readonly=True,
        help="Its share of the seconds its channel took in its slice.")
    run_state = fields.Function(
        fields.Selection('get_run_states', "Run State"), 'get_run_state')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('run')
        cls._order = [('channel', 'ASC'), ('id', 'ASC')]
        cls._buttons.update({
                'tick': {
                    'invisible': ((Eval('state') != 'manual')
                        | (Eval('run_state') == 'done')),
                    'icon': 'tryton-ok',
                    'depends': ['state', 'run_state'],
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
    def get_run_states(cls):
        pool = Pool()
        Run = pool.get('account.invoice.run')
        return Run.fields_get(['state'])['state']['selection']

    def get_run_state(self, name):
        return self.run.state

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
        if mode == 'delete' and external:
            for line in lines:
                if line.run.state != 'built':
                    raise AccessError(gettext(
                            'recurring_invoice.msg_run_line_delete',
                            line=line.rec_name, run=line.run.rec_name))

    def get_rec_name(self, name):
        return '%s (%s)' % (self.invoice.rec_name, self.channel_string)

    def get_delivery(self):
        """Return the delivery settings of the line's invoice in an
        automatic run (sale.subscription.delivery or None): the one place
        where the pipeline asks how an invoice is delivered"""
        return self.invoice.get_subscription_delivery()

    def must_post(self):
        "Return whether the delivery posts the draft invoice of the line"
        if self.run.kind == 'manual':
            return bool(self.run.include_drafts)
        delivery = self.get_delivery()
        if self.invoice.send_date or not delivery:
            # Staff set the day to send it
            return True
        return bool(delivery.post)

    def get_email_settings(self):
        """Return the e-mail template, Cc and Bcc of the line: the run's
        for a manual run, else the delivery settings of the invoice (the
        default template for an invoice sent on its send date without
        them)"""
        pool = Pool()
        Delivery = pool.get('sale.subscription.delivery')
        Template = pool.get('ir.email.template')
        if self.run.kind == 'manual':
            settings = self.run
        else:
            settings = self.get_delivery()
        if not settings or not settings.email_template:
            template_id = Delivery.default_email_template()
            return Template(template_id) if template_id else None, None, None
        return settings.email_template, settings.email_cc, settings.email_bcc

    @classmethod
    @ModelView.button
    def tick(cls, lines):
        "Mark manual lines as done by staff"
        cls.write([line for line in lines if line.state == 'manual'], {
                'state': 'done',
                })

    @classmethod
    def get_lines(cls, run, invoice):
        """Return the protocol lines to deliver the invoice: by the channels
        of its delivery settings, or on its send date by the customer's
        delivery preference"""
        if invoice.send_date:
            channels = [invoice.party.invoice_delivery or 'email']
        else:
            delivery = invoice.get_subscription_delivery()
            channels = delivery.channels if delivery else []
        lines = []
        for channel in channels:
            lines.append(cls(
                    run=run, invoice=invoice,
                    subscription=invoice.subscription,
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
        locked = None
        for sub_ids in grouped_slice(ids, DELIVERY_BATCH_SIZE):
            try:
                cls._deliver_slice(list(sub_ids))
            except backend.DatabaseOperationalError as exception:
                # The others go out; these wait for the next attempt
                locked = exception
        if run_ids:
            # The files once every line of the run was tried: several
            # workers deliver the slices of one run
            try:
                with transaction.new_transaction():
                    # One query per run (a task has one or two): whether
                    # any line is still pending, not the lines themselves
                    finished = [
                        r for r in Run.browse(run_ids)
                        if not cls.search([
                                ('run', '=', r.id),
                                ('state', '=', 'pending'),
                                ('channel', 'not in',
                                    list(cls._run_channels())),
                                ], limit=1, order=[])]
                    Run.deliver_run_channels(finished)
                    Run.build_files(finished)
                    Run.finish(finished)
            except backend.DatabaseOperationalError:
                # Another worker finished the run at the same time and
                # wrote its files: it saw every line delivered too
                logger.info("files of runs %s built by another process",
                    run_ids, exc_info=True)
        if locked is not None:
            # The queue task is retried, then rescheduled: its lines are
            # never left pending as if they were delivered
            raise locked

    @classmethod
    def requeue_stalled(cls, timeout=None):
        """Queue again the pending lines of the delivery tasks that a worker
        took and never finished

        Tryton's queue never gives a task to another worker once one took
        it: a worker killed during a task would leave its lines pending
        until the next night. A task taken longer than timeout seconds ago
        (default: option delivery_task_timeout of section
        recurring_invoice) is stalled; the lines that no other task holds
        are queued again. Delivering a line twice is harmless: a slice
        locks its lines and delivers only the pending or failed ones."""
        pool = Pool()
        Queue = pool.get('ir.queue')
        if timeout is None:
            timeout = config.getint(
                'recurring_invoice', 'delivery_task_timeout', default=1800)
        now = dt.datetime.now()
        cutoff = now - dt.timedelta(seconds=timeout)
        stalled, held, active = [], set(), set()
        for task in Queue.search([('finished_at', '=', None)]):
            data = task.data or {}
            if (data.get('model') != cls.__name__
                    or data.get('method') != 'deliver'):
                continue
            ids = data.get('instances') or []
            if isinstance(ids, int):
                ids = [ids]
            if task.dequeued_at and task.dequeued_at < cutoff:
                stalled.append(task)
                held.update(ids)
            else:
                # Waiting, rescheduled or running
                active.update(ids)
        if not stalled:
            return
        lines = []
        for sub_ids in grouped_slice(
                sorted(held - active), backend.MAX_QUERY_PARAMS):
            lines.extend(cls.search([
                        ('id', 'in', list(sub_ids)),
                        ('state', '=', 'pending'),
                        ], order=[('id', 'ASC')]))
        logger.warning(
            "%d delivery tasks taken before %s never finished: "
            "%d pending lines queued again", len(stalled), cutoff, len(lines))
        Queue.write(stalled, {'finished_at': now})
        if lines:
            with Transaction().set_context(queue_batch=True):
                cls.__queue__.deliver(lines)

    @classmethod
    def _deliver_slice(cls, ids, retry=None):
        """Post the invoices of the lines, then deliver the lines

        Each step runs in a transaction that locks the lines: posting, which
        serializes on the invoice sequence, commits before the PDFs are
        rendered and sent, so the sequence is never locked through
        LibreOffice or the mail server. When the locks cannot be taken
        (another process delivers or posts at the same time), wait and try
        again; after retry attempts raise DatabaseOperationalError: the
        lines are still pending."""
        try:
            cls._locked(ids, cls._post_slice, retry=retry)
        except backend.DatabaseOperationalError:
            raise
        except PostError as exception:
            invoices = cls._invoices_of(ids)
            if len(invoices) > 1:
                # Post the others, fail only the lines of the invoice that
                # cannot be posted
                for invoice_ids in invoices.values():
                    cls._deliver_slice(invoice_ids, retry=retry)
            else:
                cls._fail(ids, exception.exception)
            return
        except Exception as exception:
            _log_failure("posting of %d lines failed", len(ids),
                exception=exception)
            cls._fail(ids, exception)
            return
        try:
            mails = cls._locked(ids, cls._deliver, retry=retry)
        except backend.DatabaseOperationalError:
            raise
        except Exception as exception:
            # e.g. the mail server refused the connection at commit
            _log_failure("delivery of %d lines failed", len(ids),
                exception=exception)
            cls._fail(ids, exception)
        else:
            if mails and mails.failed:
                cls._fail_mails(mails.failed)

    @classmethod
    def _locked(cls, ids, method, retry=None):
        """Call method with the lines of ids in a new transaction that locks
        them, restarted with the locks that posting asks for and tried again
        on lock and serialization failures"""
        transaction = Transaction()
        if retry is None:
            retry = config.getint('database', 'retry')
        extras = {'_lock_records': {cls._table: list(ids)}}
        learnt = None
        if method == cls._post_slice:
            # What posting locked before (the sequences): taken at the
            # start, posting does not stop to ask for it
            learnt = _POST_LOCKS[transaction.database.name]
            if not learnt['records']:
                # The first slice of the process
                learnt['records'].update(cls._post_locks(ids))
            if learnt['tables']:
                extras['_lock_tables'] = sorted(learnt['tables'])
            for table, table_ids in learnt['records'].items():
                extras['_lock_records'][table] = sorted(table_ids)
        count = restarts = 0
        while True:
            try:
                slice_transaction = transaction.new_transaction(**extras)
            except backend.DatabaseOperationalError:
                if count >= retry:
                    logger.info(
                        "%d lines still locked after %d attempts",
                        len(ids), count + 1)
                    raise
                count += 1
                time.sleep(LOCK_WAIT * count * (1 + random.random()))
                continue
            try:
                with slice_transaction:
                    return method(cls.browse(ids))
            except TransactionError as exception:
                # Posting needs more locks: start again with them
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise
                exception.fix(extras)
                if learnt is not None:
                    learnt['tables'].update(extras.get('_lock_tables', []))
                    for table, table_ids in extras['_lock_records'].items():
                        if table in POST_LOCK_SHARED_RECORDS:
                            learnt['records'].setdefault(
                                table, set()).update(table_ids)
            except backend.DatabaseOperationalError:
                # e.g. a serialization failure: try again
                if count >= retry:
                    raise
                count += 1
                time.sleep(LOCK_WAIT * count * (1 + random.random()))

    @classmethod
    def _post_locks(cls, ids):
        """Return the records that posting the invoices of the lines locks:
        {table: ids} of the invoice and move sequences"""
        pool = Pool()
        Date = pool.get('ir.date')
        Period = pool.get('account.period')
        records = defaultdict(set)
        with Transaction().new_transaction(readonly=True):
            today = Date.today()
            for line in cls.browse(ids):
                invoice = line.invoice
                if invoice.state not in {'draft', 'validated'}:
                    continue
                # Dated as _post_lines dates it
                invoice.invoice_date = today
                try:
                    sequence, date = invoice._number_sequence()
                    period = Period.find(invoice.company, date=date)
                    sequences = [sequence, period.move_sequence_used]
                except UserError:
                    # Posting fails with the reason
                    continue
                for sequence in sequences:
                    records[sequence.__class__._table].add(sequence.id)
        return records

    @classmethod
    def _post_slice(cls, lines):
        "Post the invoices of the lines and store the time it took"
        lines, _ = cls._post_lines(lines)
        cls.save(lines)

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
    def _fail_mails(cls, failed):
        """Mark failed the lines whose mail the server did not take after
        the commit, {line id: reason}; their invoices are not sent"""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        with Transaction().new_transaction():
            lines = [l for l in cls.browse(list(failed)) if l.state == 'done']
            for line in lines:
                line.state = 'failed'
                line.message = gettext(
                    'recurring_invoice.msg_run_line_mail_not_taken',
                    invoice=line.invoice.rec_name,
                    reason=failed[line.id])
            cls.save(lines)
            unsent = [
                l.invoice for l in lines
                if not any(
                    o.channel in cls._sent_channels()
                    and o.state in {'done', 'manual'}
                    for o in l.invoice.delivery_lines)]
            if unsent:
                Invoice.write(unsent, {
                        'sent_date': None,
                        'sent_channel': None,
                        })

    @classmethod
    def _post_lines(cls, lines):
        """Post the draft invoices that the lines must post and return the
        lines to deliver and the lines skipped"""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        Date = pool.get('ir.date')
        lines = [
            line for line in lines if line.state in {'pending', 'failed'}]
        # A manual run does not deliver again what was sent since it was
        # built (e.g. by another run)
        skipped = [
            line for line in lines
            if line.run.kind == 'manual' and not line.run.include_sent
            and line.invoice.sent_date]
        for line in skipped:
            line.state = 'skipped'
            line.message = gettext(
                'recurring_invoice.msg_run_line_already_sent',
                invoice=line.invoice.rec_name,
                date=line.invoice.sent_date)
        lines = [line for line in lines if line not in skipped]
        to_post = {
            line.invoice for line in lines
            if line.invoice.state in {'draft', 'validated'}
            and line.must_post()}
        # An invoice is dated the day it is issued: invoices of past
        # periods (catch up, retries) get today, their service period stays
        today = Date.today()
        for invoice in to_post:
            # Planned ahead, an invoice sent on its send date is issued then
            if invoice.send_date or (
                    invoice.invoice_date and invoice.invoice_date < today):
                invoice.invoice_date = today
        to_post = sorted(to_post, key=lambda i: (
                i.subscription_period_start or i.invoice_date, i.id))
        started = time.monotonic()
        try:
            Invoice.save(to_post)
            with Transaction().set_context(_skip_warnings=True):
                Invoice.post(to_post)
        except (TransactionError, backend.DatabaseOperationalError):
            # Temporary: the slice is tried again
            raise
        except Exception as exception:
            raise PostError(exception) from exception
        if to_post:
            _share(lines, 'posting_time', time.monotonic() - started)
        return lines, skipped

    @classmethod
    def _deliver(cls, lines):
        "Post what is not posted yet, render the PDFs and deliver the lines"
        pool = Pool()
        Date = pool.get('ir.date')
        Invoice = pool.get('account.invoice')
        lines, skipped = cls._post_lines(lines)
        failed = {}
        to_render = list({
                line.invoice: None for line in lines
                if line.channel in cls._pdf_channels()})
        started = time.monotonic()
        reason = None
        try:
            failed.update(cls.render_pdfs(to_render))
        except (TransactionError, backend.DatabaseOperationalError):
            raise
        except UserError as exception:
            # No converter, or some documents failed: the PDFs made are
            # kept, a later retry renders the others
            reason = _message(exception)
        rendered = Invoice.browse([i.id for i in to_render])
        for invoice, fresh in zip(to_render, rendered):
            if invoice not in failed and not (
                    fresh.invoice_report_format == 'pdf'
                    and fresh.invoice_report_cache):
                failed[invoice] = reason or gettext(
                    'recurring_invoice.msg_run_line_no_pdf',
                    invoice=invoice.rec_name)
        _share([l for l in lines if l.invoice in to_render],
            'rendering_time', time.monotonic() - started)
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
            started = time.monotonic()
            getattr(cls, f'deliver_{channel}')(channel_lines)
            _share(channel_lines, 'sending_time', time.monotonic() - started)
        cls.save(lines + skipped)
        cls.mark_sent(lines, Date.today())
        return Transaction().join(DeliveryMails(strict=True))

    @classmethod
    def _sent_channels(cls):
        "The channels that mark the invoice as sent"
        return {'email', 'letter'}

    @classmethod
    def mark_sent(cls, lines, date):
        "Store on the invoices of the delivered lines when and how"
        pool = Pool()
        Invoice = pool.get('account.invoice')
        by_channel = defaultdict(set)
        for line in lines:
            if (line.channel in cls._sent_channels()
                    and line.state in {'done', 'manual'}):
                by_channel[line.channel].add(line.invoice)
        to_write = []
        for channel, invoices in sorted(by_channel.items()):
            to_write.extend([list(invoices), {
                        'sent_date': date,
                        'sent_channel': channel,
                        }])
        if to_write:
            Invoice.write(*to_write)

    @classmethod
    def _run_channels(cls):
        """The channels delivered once per run, when every other line of
        the run was tried (Run.deliver_run_channels)"""
        return set()

    @classmethod
    def _pdf_channels(cls):
        "The channels that deliver the invoice document"
        return {'email', 'letter'}

    @classmethod
    def render_pdfs(cls, invoices):
        """Store the PDF of the posted invoices as their report cache.
        Return {invoice: message} of the invoices that cannot be delivered
        (their lines fail with the message)"""
        pool = Pool()
        InvoiceReport = pool.get('account.invoice', type='report')
        invoices = [i for i in invoices if i.state in {'posted', 'paid'}]
        if invoices:
            InvoiceReport.render_pdf_cache(invoices)
        return {}

    def get_email_files(self):
        "Return the (name, data) of the files the e-mail attaches too"
        return []

    @classmethod
    def deliver_email(cls, lines):
        "Send the invoices by e-mail with their template"
        pool = Pool()
        Email = pool.get('ir.email')
        Template = pool.get('ir.email.template')
        # ir.email queues its mails in this one (it is equal to its own)
        mails = Transaction().join(DeliveryMails(strict=True))
        for line in lines:
            invoice = line.invoice
            email_template, email_cc, email_bcc = line.get_email_settings()
            try:
                if not email_template:
                    raise DeliveryError(gettext(
                            'recurring_invoice.msg_delivery_no_template',
                            invoice=invoice.rec_name))
                with Transaction().set_context(
                        language=invoice.party_lang):
                    # Read in the language of the customer
                    template = Template(email_template.id)
                    values = template.get(invoice)
                to = _addresses(values.get('to'))
                if (invoice.contact and invoice.contact.type == 'email'
                        and invoice.contact.value):
                    to = invoice.contact.value
                if not to:
                    raise DeliveryError(gettext(
                            'recurring_invoice.msg_delivery_no_email',
                            party=invoice.party.rec_name))
                cc = _addresses([values.get('cc'), email_cc])
                bcc = _addresses([values.get('bcc'), email_bcc])
                queued = len(mails.queue)
                Email.send(
                    to=to, cc=cc, bcc=bcc,
                    subject=values.get('subject', ''),
                    body=values.get('body', ''),
                    record=(invoice.__name__, invoice.id),
                    reports=values.get('reports'),
                    files=line.get_email_files() or None)
                for index in range(queued, len(mails.queue)):
                    mails.lines[index] = line.id
            except (TransactionError, backend.DatabaseOperationalError):
                raise
            except Exception as exception:
                _log_failure("e-mail of %s failed", line.rec_name,
                    exception=exception)
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


class DeliveryMails(SMTPDataManager):
    """The mails of a delivery slice, sent after its commit as Tryton sends
    them, one by one: a mail the server does not take is remembered with
    its line (failed), the others are still sent"""

    def __init__(self, uri=None, strict=False):
        super().__init__(uri=uri, strict=strict)
        self.lines = {}
        self.failed = {}

    def tpc_vote(self, trans):
        # Joined by the slice: connect only if it has mails
        if self.queue:
            super().tpc_vote(trans)

    def tpc_finish(self, trans):
        if self._server is None:
            return
        for index, (from_addr, to_addrs, msg) in enumerate(self.queue):
            try:
                server = send_message(
                    msg, from_addr, to_addrs, server=self._server,
                    strict=True)
            except Exception as exception:
                if isinstance(exception, smtplib.SMTPResponseException):
                    error = exception.smtp_error
                    if isinstance(error, bytes):
                        error = error.decode('utf-8', 'replace')
                    reason = '%s %s' % (exception.smtp_code, error)
                else:
                    reason = _message(exception)
                logger.warning("mail %s not taken: %s",
                    msg['Message-ID'], reason)
                if index in self.lines:
                    self.failed[self.lines[index]] = reason
            else:
                if server:
                    self._server = server
        try:
            self._server.quit()
        except Exception:
            self._server.close()
        self._finish()


class PostError(Exception):
    "Posting failed: deliver the invoices one by one"

    def __init__(self, exception):
        super().__init__(exception)
        self.exception = exception


class RunExcludedInvoice(ModelSQL):
    __name__ = 'account.invoice.run-excluded-account.invoice'

    run = fields.Many2One(
        'account.invoice.run', "Run", required=True, ondelete='CASCADE')
    invoice = fields.Many2One(
        'account.invoice', "Invoice", required=True, ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('run')


def invoice_filename(invoice):
    "Return the file name of the invoice PDF in an archive"
    name = re.sub(r'[^\w.-]+', '_', invoice.number or str(invoice.id))
    return f'{name}.pdf'


def zip_documents(documents):
    "Return a ZIP file of the (filename, content) documents"
    output = io.BytesIO()
    names = set()
    with zipfile.ZipFile(output, 'w', zipfile.ZIP_DEFLATED) as archive:
        for filename, content in documents:
            stem, suffix = filename.rsplit('.', 1)
            name, i = filename, 1
            while name in names:
                i += 1
                name = f'{stem}-{i}.{suffix}'
            names.add(name)
            archive.writestr(name, content)
    return output.getvalue()


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


def _share(lines, name, seconds):
    "Add to each line its share of the seconds its slice spent on a stage"
    if lines:
        share = round(seconds / len(lines), 4)
        for line in lines:
            setattr(line, name, (getattr(line, name, None) or 0) + share)


def _log_failure(message, *args, exception):
    """Log why lines failed: what users or the outside world cause (bad
    data, the mail server) as information, anything else as an error with
    its traceback, for it is a bug"""
    expected = (UserError, smtplib.SMTPException, OSError)
    if isinstance(exception, expected):
        logger.info(message, *args, exc_info=True)
    else:
        logger.error(message, *args, exc_info=True)


def _message(exception):
    return (getattr(exception, 'message', None) or str(exception)
        or repr(exception))
