# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""SEPA direct debit as a delivery channel (registered only with
account_payment_sepa activated): the channel prepares the collection as
core's draft payments with the customer's mandate, grouped per run, and the
invoices of direct-debit contracts carry the pre-notification"""
from collections import defaultdict

from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.modules.company.model import CompanyValueMixin
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .exceptions import DirectDebitError


class Configuration(metaclass=PoolMeta):
    __name__ = 'sale.configuration'

    direct_debit_journal = fields.MultiValue(fields.Many2One(
            'account.payment.journal', "Direct Debit Journal",
            domain=[
                ('company', '=', Eval('context', {}).get('company', -1)),
                ('process_method', '=', 'sepa'),
                ],
            help="The SEPA payment journal of the collections that the "
            "direct-debit channel prepares."))

    @classmethod
    def multivalue_model(cls, field):
        pool = Pool()
        if field == 'direct_debit_journal':
            return pool.get('sale.configuration.direct_debit_journal')
        return super().multivalue_model(field)


class ConfigurationDirectDebitJournal(ModelSQL, CompanyValueMixin):
    __name__ = 'sale.configuration.direct_debit_journal'

    direct_debit_journal = fields.Many2One(
        'account.payment.journal', "Direct Debit Journal",
        ondelete='RESTRICT',
        domain=[
            ('company', '=', Eval('company', -1)),
            ('process_method', '=', 'sepa'),
            ])


def is_direct_debit(invoice):
    "Whether the invoice is collected by the direct-debit channel"
    delivery = invoice.get_subscription_delivery()
    return bool(
        invoice.type == 'out'
        and delivery and 'direct_debit' in (delivery.channels or []))


def get_mandate(invoice):
    """Return the valid SEPA mandate of the invoice's party with its company
    or raise DirectDebitError"""
    mandates = [m for m in invoice.party.sepa_mandates if m.is_valid]
    for mandate in mandates:
        if mandate.company == invoice.company:
            return mandate
    if mandates:
        raise DirectDebitError(gettext(
                'recurring_invoice.msg_direct_debit_mandate_company',
                invoice=invoice.rec_name, party=invoice.party.rec_name,
                mandate=mandates[0].identification or mandates[0].rec_name,
                company=mandates[0].company.rec_name,
                invoice_company=invoice.company.rec_name))
    raise DirectDebitError(gettext(
            'recurring_invoice.msg_direct_debit_no_mandate',
            invoice=invoice.rec_name, party=invoice.party.rec_name,
            company=invoice.company.rec_name))


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    @classmethod
    def _post(cls, invoices):
        # Before the invoices are posted, while they can be written: the
        # report printed from now on has the notice
        cls.set_direct_debit_notice(invoices)
        super()._post(invoices)

    @classmethod
    def set_direct_debit_notice(cls, invoices):
        """Set the pre-notification of the direct debit on the invoices of
        direct-debit contracts that have a valid mandate, at the end of
        their comment (those without a mandate fail in the delivery, with
        the reason); the caller saves them"""
        pool = Pool()
        Date = pool.get('ir.date')
        for invoice in invoices:
            if (invoice.state not in {'draft', 'validated'}
                    or not is_direct_debit(invoice)
                    or invoice.total_amount <= 0):
                continue
            try:
                mandate = get_mandate(invoice)
            except DirectDebitError:
                continue
            with Transaction().set_context(company=invoice.company.id):
                today = Date.today()
            date = invoice.invoice_date or today
            if invoice.payment_term:
                terms = invoice.payment_term.compute(
                    invoice.total_amount, invoice.currency, date)
            else:
                terms = [(date, invoice.total_amount)]
            notice = invoice.get_direct_debit_notice(
                [(max(d, today), a) for d, a in terms], mandate)
            comment = invoice.comment or ''
            if invoice.direct_debit_notice:
                # Posted again after a reset to draft
                comment = comment.replace(
                    invoice.direct_debit_notice, '').rstrip()
            invoice.direct_debit_notice = notice
            invoice.comment = '\n\n'.join(filter(None, [comment, notice]))

    def get_direct_debit_notice(self, terms, mandate):
        """Return the pre-notification text in the customer's language

        terms: the (collection date, amount) of the direct debits"""
        pool = Pool()
        Lang = pool.get('ir.lang')
        lang = Lang.get(self.party_lang)
        with Transaction().set_context(language=lang.code):
            collections = '; '.join(
                gettext('recurring_invoice.msg_direct_debit_notice_term',
                    amount=lang.currency(amount, self.currency),
                    date=lang.strftime(date))
                for date, amount in terms)
            return gettext('recurring_invoice.msg_direct_debit_notice',
                collections=collections,
                account=mandate.account_number.number,
                mandate=mandate.identification,
                creditor=(
                    self.company.party.sepa_creditor_identifier_used or ''))


class Run(metaclass=PoolMeta):
    __name__ = 'account.invoice.run'

    payment_groups = fields.Function(fields.Many2Many(
            'account.payment.group', None, None, "Payment Groups",
            help="The groups of the direct debits the run prepared."),
        'get_payment_groups')

    @classmethod
    def get_payment_groups(cls, runs, name):
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        groups = {r.id: set() for r in runs}
        for sub_ids in grouped_slice(
                [r.id for r in runs], backend.MAX_QUERY_PARAMS):
            for line in Line.search([
                        ('run', 'in', list(sub_ids)),
                        ('payment.group', '!=', None),
                        ]):
                groups[line.run.id].add(line.payment.group.id)
        return {k: sorted(v) for k, v in groups.items()}

    @classmethod
    def deliver_run_channels(cls, runs):
        super().deliver_run_channels(runs)
        cls.group_direct_debits(runs)

    @classmethod
    def group_direct_debits(cls, runs):
        """Put the draft payments that the runs prepared and that are in no
        group into one payment group per run and journal"""
        pool = Pool()
        Line = pool.get('account.invoice.run.line')
        Payment = pool.get('account.payment')
        Group = pool.get('account.payment.group')
        if not runs:
            return
        lines = Line.search([
                ('run', 'in', [r.id for r in runs]),
                ('channel', '=', 'direct_debit'),
                ('state', '=', 'done'),
                ('payment', '!=', None),
                ])
        move_lines = defaultdict(set)
        for line in lines:
            move_lines[line.run].update(
                l.id for l in line.invoice.lines_to_pay)
        groups, to_write = [], []
        for run, line_ids in move_lines.items():
            payments = []
            for sub_ids in grouped_slice(
                    sorted(line_ids), backend.MAX_QUERY_PARAMS):
                payments.extend(Payment.search([
                            ('line', 'in', list(sub_ids)),
                            ('group', '=', None),
                            ('state', '=', 'draft'),
                            ('kind', '=', 'receivable'),
                            ]))
            by_journal = defaultdict(list)
            for payment in payments:
                by_journal[payment.journal].append(payment)
            for journal, journal_payments in by_journal.items():
                groups.append(Group(
                        company=run.company, journal=journal,
                        kind='receivable'))
                to_write.append(journal_payments)
        if groups:
            Group.save(groups)
            args = []
            for group, payments in zip(groups, to_write):
                args.extend([payments, {'group': group.id}])
            Payment.write(*args)


class RunLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.run.line'

    payment = fields.Many2One(
        'account.payment', "Payment", readonly=True, ondelete='RESTRICT',
        states={
            'invisible': ~Eval('payment'),
            },
        help="The draft direct debit that collects the invoice.")

    @classmethod
    def deliver_direct_debit(cls, lines):
        """Prepare the collection of the invoices: a draft payment with the
        customer's mandate per line to pay, on its due date"""
        pool = Pool()
        Payment = pool.get('account.payment')
        payments, prepared = [], []
        for line in lines:
            try:
                line_payments = line.get_direct_debit_payments()
            except DirectDebitError as error:
                line.state = 'failed'
                line.message = error.message
                continue
            payments.extend(line_payments)
            prepared.append((line, line_payments))
        Payment.save(payments)
        for line, line_payments in prepared:
            if not line_payments:
                # Prepared by an earlier attempt
                line_payments = [
                    p for l in line.invoice.lines_to_pay for p in l.payments
                    if p.state != 'failed']
            line.payment = line_payments[0] if line_payments else None
            line.state = 'done'
            # Paid already or a total of zero
            line.message = None if line.payment else gettext(
                'recurring_invoice.msg_direct_debit_nothing_to_collect',
                invoice=line.invoice.rec_name)
            mandate = line.payment.sepa_mandate if line.payment else None
            line.recipient = mandate.identification if mandate else None

    def get_direct_debit_payments(self):
        """Return the new draft payments that collect the invoice of the
        line, raise DirectDebitError if it cannot be collected"""
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        Date = pool.get('ir.date')
        Payment = pool.get('account.payment')
        invoice = self.invoice
        if invoice.state not in {'posted', 'paid'}:
            raise DirectDebitError(gettext(
                    'recurring_invoice.msg_direct_debit_not_posted',
                    invoice=invoice.rec_name))
        if invoice.total_amount < 0:
            raise DirectDebitError(gettext(
                    'recurring_invoice.msg_direct_debit_credit_note',
                    invoice=invoice.rec_name))
        journal = Configuration(1).get_multivalue(
            'direct_debit_journal', company=invoice.company.id)
        if not journal:
            raise DirectDebitError(gettext(
                    'recurring_invoice.msg_direct_debit_no_journal',
                    invoice=invoice.rec_name,
                    company=invoice.company.rec_name))
        if journal.currency != invoice.currency:
            raise DirectDebitError(gettext(
                    'recurring_invoice.msg_direct_debit_currency',
                    invoice=invoice.rec_name, journal=journal.rec_name,
                    currency=invoice.currency.rec_name))
        mandate = get_mandate(invoice)
        with Transaction().set_context(company=invoice.company.id):
            today = Date.today()
        payments = []
        for line in invoice.lines_to_pay:
            if line.reconciliation or not line.payment_amount:
                continue
            if line.payment_amount < 0:
                continue
            payments.append(Payment(
                    company=invoice.company,
                    journal=journal,
                    kind='receivable',
                    party=invoice.party,
                    date=max(line.maturity_date or today, today),
                    amount=line.payment_amount,
                    line=line,
                    sepa_mandate=mandate))
        return payments


class PaymentGroup(metaclass=PoolMeta):
    __name__ = 'account.payment.group'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'process_payments': {
                    'invisible': ((Eval('process_method') != 'sepa')
                        | Bool(Eval('sepa_messages', []))),
                    'icon': 'tryton-launch',
                    'depends': ['process_method', 'sepa_messages'],
                    },
                })

    @classmethod
    @ModelView.button
    def process_payments(cls, groups):
        """Submit the draft payments of the groups that the invoice runs
        prepared and process them in their group as core's "Process
        Payments" does: the SEPA message is generated"""
        pool = Pool()
        Payment = pool.get('account.payment')
        for group in groups:
            payments = [
                p for p in group.payments
                if p.state in {'draft', 'submitted'}]
            drafts = [p for p in payments if p.state == 'draft']
            if drafts:
                Payment.submit(drafts)
            if payments:
                Payment.process(Payment.browse(payments), lambda: group)
