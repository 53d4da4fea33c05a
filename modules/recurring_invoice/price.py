# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Price revisions: dated prices of contract lines, price indexes, and
the billing of periods that span a price change"""
import datetime as dt
import tempfile
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.modules.product import price_digits
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.report import Report
from trytond.tools import grouped_slice
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from turnus.recurrence import to_datetime

from .exceptions import (
    PriceRevisionError, PriceRevisionValidationError, PriceRevisionWarning)
from .invoice_pdf import _convert, _pdf_path, _soffice_command
from .invoice_run import _addresses, merge_pdfs

METHODS = [
    ('percentage', "Percentage"),
    ('amount', "Amount"),
    ('index', "Index"),
    ]
INDEX_DIGITS = (16, 4)


def default_revision_date(today, notice_days):
    """Return the first of January of next year, or the first day of a
    month at least notice_days after today if that is later"""
    date = dt.date(today.year + 1, 1, 1)
    earliest = today + dt.timedelta(days=notice_days or 0)
    while date < earliest:
        date = (date + dt.timedelta(days=31)).replace(day=1)
    return date


class Configuration(metaclass=PoolMeta):
    __name__ = 'sale.configuration'

    price_notice_days = fields.Integer(
        "Price Notice Days",
        domain=[
            ('price_notice_days', '>=', 0),
            ],
        help="How many days before a price revision takes effect the "
        "customers must be told.")

    price_email_template = fields.Many2One(
        'ir.email.template', "Price Change E-mail Template",
        domain=[
            ('model.name', '=', 'sale.subscription'),
            ],
        help="The e-mail that announces a price revision to the "
        "customers.")

    @classmethod
    def default_price_notice_days(cls):
        return 42

    @classmethod
    def default_price_email_template(cls):
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        try:
            return ModelData.get_id(
                'recurring_invoice', 'email_template_price_change')
        except KeyError:
            return None


class PriceIndex(ModelSQL, ModelView):
    __name__ = 'sale.subscription.price_index'

    name = fields.Char("Name", required=True)
    values = fields.One2Many(
        'sale.subscription.price_index.value', 'index', "Values",
        order=[('date', 'DESC')])

    def get_value(self, date):
        "Return the value of the index on date: the last one published"
        values = [v for v in self.values if v.date <= date]
        if values:
            return max(values, key=lambda v: v.date).value


class PriceIndexValue(ModelSQL, ModelView):
    __name__ = 'sale.subscription.price_index.value'

    index = fields.Many2One(
        'sale.subscription.price_index', "Index", required=True,
        ondelete='CASCADE')
    date = fields.Date("Date", required=True,
        help="The first day the value applies.")
    value = fields.Numeric(
        "Value", digits=INDEX_DIGITS, required=True,
        domain=[
            ('value', '>', 0),
            ])

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('date', 'DESC'))
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.index, Index.Equality()), (t.date, Index.Range())))

    @classmethod
    def validate_fields(cls, values, field_names):
        super().validate_fields(values, field_names)
        cls.check_unique_date(values, field_names)

    @classmethod
    def check_unique_date(cls, values, field_names=None):
        if field_names and not (field_names & {'index', 'date'}):
            return
        for sub_values in grouped_slice(values, backend.MAX_QUERY_PARAMS):
            sub_values = list(sub_values)
            others = cls.search([
                    ('index', 'in', list({v.index.id for v in sub_values})),
                    ('date', 'in', list({v.date for v in sub_values})),
                    ])
            keys = defaultdict(list)
            for value in others:
                keys[(value.index, value.date)].append(value)
            for value in sub_values:
                if len(keys[(value.index, value.date)]) > 1:
                    raise PriceRevisionValidationError(gettext(
                            'recurring_invoice.msg_price_index_value_unique',
                            index=value.index.rec_name, date=value.date))


class LinePrice(ModelSQL, ModelView):
    __name__ = 'sale.subscription.line.price'

    line = fields.Many2One(
        'sale.subscription.line', "Line", required=True, readonly=True,
        ondelete='CASCADE')
    date = fields.Date("Date", required=True, readonly=True,
        help="The first day the price is billed.")
    unit_price = fields.Numeric(
        "Unit Price", digits=price_digits, required=True, readonly=True)
    quantity = fields.Float(
        "Quantity", digits='unit', readonly=True,
        help="The quantity billed from the date; empty: the line's.")
    unit = fields.Function(fields.Many2One(
            'product.uom', "Unit"), 'on_change_with_unit')
    revision = fields.Many2One(
        'sale.subscription.price_revision', "Revision", readonly=True,
        ondelete='RESTRICT')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('date', 'ASC'))
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.line, Index.Equality()), (t.date, Index.Range())))

    @fields.depends('line', '_parent_line.unit')
    def on_change_with_unit(self, name=None):
        return self.line.unit if self.line else None


class PriceRevision(ModelSQL, ModelView):
    __name__ = 'sale.subscription.price_revision'

    date = fields.Date("Date", required=True, readonly=True)
    method = fields.Selection(
        METHODS, "Method", required=True, readonly=True)
    value = fields.Numeric("Value", digits=(16, 4), readonly=True)
    index = fields.Many2One(
        'sale.subscription.price_index', "Index", readonly=True,
        ondelete='RESTRICT')
    prices = fields.One2Many(
        'sale.subscription.line.price', 'revision', "Prices", readonly=True)
    letter_pdf = fields.Binary(
        "Letters", readonly=True, filename='letter_pdf_name',
        help="The announcements to the customers who get letters, to "
        "print.")
    letter_pdf_name = fields.Function(
        fields.Char("Letters Name"), 'get_letter_pdf_name')

    def get_letter_pdf_name(self, name):
        return f'price-letters-{self.date}-{self.id}.pdf'

    def get_rec_name(self, name):
        pool = Pool()
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        method = dict(self.__class__.method.selection)[self.method]
        if self.method == 'index':
            value = self.index.rec_name if self.index else ''
        else:
            value = lang.format_number(self.value or 0)
        return '%s %s %s' % (lang.strftime(self.date), method, value)


class Line(metaclass=PoolMeta):
    __name__ = 'sale.subscription.line'

    revise_prices = fields.Boolean(
        "Revise Prices",
        help="If unchecked, price revisions leave the line out.")
    prices = fields.One2Many(
        'sale.subscription.line.price', 'line', "Prices", readonly=True)

    @classmethod
    def default_revise_prices(cls):
        return True

    @classmethod
    def copy(cls, lines, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('prices', None)
        return super().copy(lines, default=default)

    def get_unit_price(self, date):
        "Return the unit price billed on date"
        prices = [p for p in self.prices if p.date <= date]
        if prices:
            return max(prices, key=lambda p: p.date).unit_price
        if self.prices:
            # Before the first revision: the first price
            return min(self.prices, key=lambda p: p.date).unit_price
        return super().get_unit_price(date)

    def get_quantity(self, date):
        "Return the quantity billed on date"
        prices = [p for p in self.prices
            if p.quantity is not None and p.date <= date]
        if prices:
            return max(prices, key=lambda p: p.date).quantity
        prices = [p for p in self.prices if p.quantity is not None]
        if prices:
            return min(prices, key=lambda p: p.date).quantity
        return super().get_quantity(date)

    def get_price_dates(self, start, end):
        "Return the days after start up to end on which the price changes"
        return sorted(p.date for p in self.prices if start < p.date <= end)

    def get_revision_base(self, date):
        "Return the date and price a revision on date starts from"
        prices = [p for p in self.prices if p.date < date]
        if prices:
            price = max(prices, key=lambda p: p.date)
            return price.date, price.unit_price
        return self.start_date, self.get_unit_price(self.start_date)


class Subscription(metaclass=PoolMeta):
    __name__ = 'sale.subscription'

    price_changes = fields.Function(fields.Text(
            "Price Changes",
            help="The lines of the revision of the context: the old and "
            "the new price."),
        'get_price_changes_text')
    price_revision_date = fields.Function(fields.Date(
            "Price Revision Date",
            help="The date of the revision of the context."),
        'get_price_changes_text')

    @classmethod
    def get_price_changes_text(cls, subscriptions, name):
        """The lines the revision of the context (price_revision) changes,
        one per line: description, old and new unit price; or its date"""
        pool = Pool()
        Lang = pool.get('ir.lang')
        Revision = pool.get('sale.subscription.price_revision')
        revision_id = Transaction().context.get('price_revision')
        result = {s.id: None for s in subscriptions}
        if not revision_id:
            return result
        revision = Revision(revision_id)
        if name == 'price_revision_date':
            return {s.id: revision.date for s in subscriptions}
        lang = Lang.get()
        # All the contracts of the customer: one announcement each
        texts = defaultdict(list)
        for price in sorted(revision.prices,
                key=lambda p: (p.line.subscription.id, p.line.id)):
            line = price.line
            contract = line.subscription
            old = line.get_unit_price(revision.date - dt.timedelta(days=1))
            texts[contract.invoice_party or contract.party].append(
                '%s, %s: %s → %s' % (
                    contract.rec_name,
                    line.description or line.service.product.rec_name,
                    lang.currency(old, contract.currency, grouping=True),
                    lang.currency(
                        price.unit_price, contract.currency, grouping=True)))
        for subscription in subscriptions:
            party = subscription.invoice_party or subscription.party
            if party in texts:
                result[subscription.id] = '\n'.join(texts[party])
        return result

    @classmethod
    def announce_price_revision(cls, revision):
        """E-mail each customer of the contracts of the revision its new
        prices, from the template of the sale configuration, logged on its
        first contract; return those contracts"""
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        Email = pool.get('ir.email')
        Template = pool.get('ir.email.template')
        config = Configuration(1)
        template = config.price_email_template
        if not template:
            return []
        # One announcement per customer, on its first contract
        customers = {}
        for subscription in sorted(
                {p.line.subscription for p in revision.prices},
                key=lambda s: s.id):
            customers.setdefault(
                subscription.invoice_party or subscription.party,
                subscription)
        announced, letters = [], []
        for party, subscription in customers.items():
            if party.invoice_delivery == 'letter':
                letters.append(subscription)
                continue
            language = party.lang.code if party.lang else None
            with Transaction().set_context(
                    language=language, price_revision=revision.id):
                # Read in the language of the customer
                values = Template(template.id).get(cls(subscription.id))
            to = _addresses(values.get('to'))
            if not to:
                # Without address the customer gets a letter
                letters.append(subscription)
                continue
            Email.send(
                to=to, cc=_addresses(values.get('cc')),
                bcc=_addresses(values.get('bcc')),
                subject=values.get('subject', ''),
                body=values.get('body', ''),
                record=(cls.__name__, subscription.id),
                reports=values.get('reports'))
            announced.append(subscription)
        if letters:
            cls.write_price_letters(revision, letters)
            announced.extend(letters)
        return announced

    @classmethod
    def write_price_letters(cls, revision, subscriptions):
        """Render the announcement letter of the revision for each contract
        as PDF, attached to the contract, and all of them in one PDF on the
        revision to print"""
        pool = Pool()
        ActionReport = pool.get('ir.action.report')
        Attachment = pool.get('ir.attachment')
        Lang = pool.get('ir.lang')
        ModelData = pool.get('ir.model.data')
        PriceLetter = pool.get('sale.subscription.price_letter', type='report')
        action = ActionReport(ModelData.get_id(
                'recurring_invoice', 'report_price_letter'))
        data = {'model': cls.__name__, 'action_id': action.id}
        command = _soffice_command()
        documents, attachments = [], []
        lang = Lang.get()
        with tempfile.TemporaryDirectory(
                prefix='trytond-price-letter-') as directory:
            filenames = {}
            with Transaction().set_context(price_revision=revision.id):
                for subscription in subscriptions:
                    oext, content, _, _ = PriceLetter.execute(
                        [subscription.id], data)
                    filename = f'{subscription.id}.{oext}'
                    with open(f'{directory}/{filename}', 'wb') as file:
                        file.write(content)
                    filenames[subscription] = filename
            failures = _convert(command, directory, list(filenames.values()))
            for subscription, filename in filenames.items():
                path = _pdf_path(directory, filename)
                if filename in failures or not path.exists():
                    raise PriceRevisionError(gettext(
                            'recurring_invoice.msg_price_letter_failed',
                            subscription=subscription.rec_name,
                            reason=failures.get(filename) or ''))
                document = path.read_bytes()
                documents.append(document)
                attachments.append(Attachment(
                        resource=subscription,
                        name=gettext(
                            'recurring_invoice.msg_price_letter_name',
                            date=lang.strftime(revision.date, '%Y-%m-%d')),
                        type='data', data=document))
        Attachment.save(attachments)
        revision.letter_pdf = merge_pdfs(documents)
        revision.save()

    @classmethod
    def revise_prices(cls, lines, date, method, value=None, index=None,
            digits=2, notify=False):
        """Revise the unit prices of the lines from date on: return the
        revision; drafts that bill days from date on are billed again; with
        notify the customers are told"""
        pool = Pool()
        Revision = pool.get('sale.subscription.price_revision')
        LinePrice = pool.get('sale.subscription.line.price')
        Line = pool.get('sale.subscription.line')
        changes = cls.get_price_changes(lines, date, method, value=value,
            index=index, digits=digits)
        cls.check_price_revision(changes, date)
        revision = Revision(
            date=date, method=method, value=value, index=index)
        revision.save()
        # Stored as the database keeps them, whatever the backend
        exp = Decimal(1).scaleb(-price_digits[1])
        prices, to_write = [], []
        for line, old_price, new_price in changes:
            if not line.prices:
                # The price billed before the first revision
                prices.append(LinePrice(
                        line=line, date=line.start_date,
                        unit_price=line.unit_price.quantize(exp),
                        quantity=line.quantity))
            prices.append(LinePrice(
                    line=line, date=date, unit_price=new_price.quantize(exp),
                    quantity=line.get_quantity(date), revision=revision))
        for sub_prices in grouped_slice(prices, 100):
            LinePrice.save(list(sub_prices))
        # The line shows its latest price: the new one (no row is later)
        latest = defaultdict(list)
        for line, _, new_price in changes:
            price = new_price.quantize(exp)
            if price != line.unit_price:
                latest[price].append(line)
        for price, price_lines in latest.items():
            for sub_lines in grouped_slice(
                    price_lines, backend.MAX_QUERY_PARAMS):
                to_write.extend([list(sub_lines), {'unit_price': price}])
        if to_write:
            Line.write(*to_write)
        cls.rebill_drafts([l for l, _, _ in changes], date)
        if notify:
            cls.announce_price_revision(revision)
        return revision

    @classmethod
    def get_price_changes(cls, lines, date, method, value=None, index=None,
            digits=2):
        """Return (line, old price, new price) for the lines revised on
        date: the running lines that may be revised and run on date"""
        pool = Pool()
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        exp = Decimal(1).scaleb(-digits)
        if method == 'percentage' and value is not None and value < -100:
            raise PriceRevisionError(gettext(
                    'recurring_invoice.msg_price_percentage',
                    value=lang.format_number(value)))
        if method in {'percentage', 'amount'} and value is None:
            raise PriceRevisionError(gettext(
                    'recurring_invoice.msg_price_no_value'))
        if method == 'index':
            if not index:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_no_index'))
            current = index.get_value(date)
            if current is None:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_index_missing',
                        index=index.rec_name, date=lang.strftime(date)))
        changes = []
        for line in lines:
            subscription = line.subscription
            if (not line.revise_prices
                    or subscription.state not in {
                        'draft', 'quotation', 'running'}
                    or (line.end_date and line.end_date < date)
                    or (subscription.end_date
                        and subscription.end_date < date)):
                continue
            base_date, old_price = line.get_revision_base(date)
            if method == 'percentage':
                new_price = old_price * (1 + value / 100)
            elif method == 'amount':
                new_price = old_price + value
            else:
                base = index.get_value(base_date)
                if base is None:
                    raise PriceRevisionError(gettext(
                            'recurring_invoice.msg_price_index_missing',
                            index=index.rec_name,
                            date=lang.strftime(base_date)))
                new_price = old_price * current / base
            new_price = new_price.quantize(exp, rounding=ROUND_HALF_EVEN)
            if new_price < 0:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_negative',
                        line=line.rec_name,
                        subscription=subscription.rec_name,
                        price=lang.format_number(new_price)))
            changes.append((line, old_price, new_price))
        return changes

    @classmethod
    def check_price_revision(cls, changes, date):
        """Refuse a revision of lines that posted invoices billed from date
        on, or that have a price from date already"""
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        Lang = pool.get('ir.lang')
        lang = Lang.get()
        lines = [l for l, _, _ in changes]
        for sub_lines in grouped_slice(lines, backend.MAX_QUERY_PARAMS):
            posted = InvoiceLine.search([
                    ('origin', 'in', [
                            str(l) for l in sub_lines]),
                    ('invoice.state', 'in', ['posted', 'paid']),
                    ('service_end_date', '>=', date),
                    ], limit=1)
            if posted:
                posted, = posted
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_posted',
                        line=posted.origin.rec_name,
                        subscription=posted.origin.subscription.rec_name,
                        invoice=posted.invoice.rec_name,
                        end=lang.strftime(posted.service_end_date),
                        date=lang.strftime(date)))
        for line in lines:
            # Revisions and changes follow one another: each starts from
            # the last
            later = [p.date for p in line.prices
                if p.date >= date
                and (p.revision or p.date != line.start_date)]
            if later:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_same_date',
                        line=line.rec_name,
                        subscription=line.subscription.rec_name,
                        date=lang.strftime(max(later))))

    @classmethod
    def rebill_drafts(cls, lines, date):
        """Bill the lines again on the draft invoices that bill days from
        date on, with the prices of their days; posted ones never change"""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        InvoiceLine = pool.get('account.invoice.line')
        groups = defaultdict(list)
        for sub_lines in grouped_slice(lines, backend.MAX_QUERY_PARAMS):
            for invoice_line in InvoiceLine.search([
                        ('origin', 'in', [str(l) for l in sub_lines]),
                        ('invoice.type', '=', 'out'),
                        ('invoice.state', '=', 'draft'),
                        ('invoice.subscription_kind', '=', 'standard'),
                        ('service_end_date', '>=', date),
                        ], order=[('id', 'ASC')]):
                groups[(invoice_line.invoice, invoice_line.origin)].append(
                    invoice_line)
        to_save, to_delete, invoices = [], [], set()
        for (invoice, line), invoice_lines in groups.items():
            if invoice.delivery_lines:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_draft_delivery',
                        invoice=invoice.rec_name,
                        subscription=line.subscription.rec_name))
            subscription = line.subscription
            first = invoice_lines[0]
            periods = [p for p in invoice.subscription_periods
                if p.subscription == subscription
                and p.start <= first.service_start_date
                and (not p.end or first.service_end_date <= p.end)]
            if not periods:
                continue
            period = periods[0]
            _, full_end = subscription.get_period(period.start)
            # The line as the night makes it, before its service period
            new = InvoiceLine(
                invoice=invoice, company=invoice.company,
                currency=invoice.currency, unit=first.unit,
                product=first.product, unit_price=line.unit_price,
                description=line.description or '', origin=line)
            new.on_change_invoice()
            new.type = 'line'
            new.quantity = first.quantity
            new.on_change_product()
            parts = subscription._get_period_invoice_lines(
                new, period.start, period.end, full_end,
                subscription._get_period_segments(period.start, period.end))
            # The first part stays the line its consumptions invoiced
            for name in ['unit_price', 'description', 'service_start_date',
                    'service_end_date']:
                setattr(first, name, getattr(parts[0], name))
            parts[0] = first
            for part in parts:
                part.sequence = first.sequence
            to_save.extend(parts)
            to_delete.extend(invoice_lines[1:])
            invoices.add(invoice)
        if to_delete:
            InvoiceLine.delete(to_delete)
        if to_save:
            InvoiceLine.save(to_save)
            Invoice.update_taxes(list(invoices))


class PriceLetter(Report):
    __name__ = 'sale.subscription.price_letter'

    @classmethod
    def execute(cls, ids, data):
        with Transaction().set_context(address_with_party=True):
            return super().execute(ids, data)


class RevisePricesStart(ModelView):
    __name__ = 'sale.subscription.revise_prices.start'

    date = fields.Date(
        "Date", required=True,
        help="The first day billed at the new prices.")
    method = fields.Selection(METHODS, "Method", required=True)
    value = fields.Numeric(
        "Value", digits=(16, 4),
        states={
            'invisible': Eval('method') == 'index',
            'required': Eval('method').in_(['percentage', 'amount']),
            },
        help="Percentage: the prices change by this many percent.\n"
        "Amount: this amount is added to each unit price.")
    index = fields.Many2One(
        'sale.subscription.price_index', "Index",
        states={
            'invisible': Eval('method') != 'index',
            'required': Eval('method') == 'index',
            },
        help="The prices follow the index from the value of the last "
        "revision (or the start) of each line to its value on the date.")
    notify = fields.Boolean(
        "Announce",
        help="If checked, each customer is e-mailed the new prices of its "
        "contracts.")
    digits = fields.Integer(
        "Digits", required=True,
        domain=[
            ('digits', '>=', 0),
            ('digits', '<=', price_digits[1]),
            ],
        help="The new prices are rounded to this many decimals.")


class RevisePricesPreview(ModelView):
    __name__ = 'sale.subscription.revise_prices.preview'

    lines = fields.One2Many(
        'sale.subscription.revise_prices.preview.line', None, "Prices",
        readonly=True)


class RevisePricesPreviewLine(ModelView):
    __name__ = 'sale.subscription.revise_prices.preview.line'

    subscription = fields.Many2One(
        'sale.subscription', "Contract", readonly=True)
    line = fields.Many2One(
        'sale.subscription.line', "Line", readonly=True)
    old_price = fields.Numeric(
        "Old Price", digits=price_digits, readonly=True)
    new_price = fields.Numeric(
        "New Price", digits=price_digits, readonly=True)
    difference = fields.Numeric(
        "Difference per Year", digits=(16, 2), readonly=True,
        help="What the line bills more (or less) in a year from the date.")


class RevisePrices(Wizard):
    __name__ = 'sale.subscription.revise_prices'
    start = StateView(
        'sale.subscription.revise_prices.start',
        'recurring_invoice.subscription_revise_prices_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Preview", 'preview', 'tryton-forward', default=True),
            ])
    preview = StateView(
        'sale.subscription.revise_prices.preview',
        'recurring_invoice.subscription_revise_prices_preview_view_form', [
            Button("Back", 'start', 'tryton-back'),
            Button("Revise", 'revise', 'tryton-ok', default=True),
            ])
    revise = StateTransition()

    def default_start(self, fields):
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        Date = pool.get('ir.date')
        Subscription = pool.get('sale.subscription')
        today = Date.today()
        ids = Transaction().context.get('active_ids') or []
        currency = Subscription(ids[0]).currency if ids else None
        days = Configuration(1).price_notice_days
        return {
            'date': default_revision_date(today, days),
            'method': 'percentage',
            'notify': True,
            'digits': currency.digits if currency else 2,
            }

    def _lines(self):
        """The lines of the contracts, read in slices: a slice shares its
        cache (prices, contract) instead of reading them per contract"""
        pool = Pool()
        Line = pool.get('sale.subscription.line')
        lines = []
        ids = Transaction().context.get('active_ids') or []
        for sub_ids in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            lines.extend(Line.search([
                        ('subscription', 'in', list(sub_ids)),
                        ], order=[('subscription', 'ASC'), ('id', 'ASC')]))
        return lines

    def _changes(self):
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        start = self.start
        lines = self._lines()
        changes = Subscription.get_price_changes(
            lines, start.date, start.method, value=start.value,
            index=start.index, digits=start.digits)
        Subscription.check_price_revision(changes, start.date)
        return changes

    def default_preview(self, fields):
        date = self.start.date
        year = dt.date(date.year + 1, date.month, min(date.day, 28))
        exp = Decimal(1).scaleb(-price_digits[1])
        lines = []
        for line, old_price, new_price in self._changes():
            count = 1
            if line.consumption_recurrence:
                rruleset = line.consumption_recurrence.rruleset(
                    to_datetime(line.start_date))
                count = len(rruleset.between(
                        to_datetime(date),
                        to_datetime(year - dt.timedelta(days=1)), inc=True))
            difference = ((new_price - old_price)
                * Decimal(str(line.quantity or 0)) * count)
            lines.append({
                    'subscription': line.subscription.id,
                    'line': line.id,
                    'old_price': old_price.quantize(exp),
                    'new_price': new_price.quantize(exp),
                    'difference': difference.quantize(Decimal('0.01')),
                    })
        return {'lines': lines}

    def transition_revise(self):
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        Date = pool.get('ir.date')
        Lang = pool.get('ir.lang')
        ModelData = pool.get('ir.model.data')
        Subscription = pool.get('sale.subscription')
        User = pool.get('res.user')
        Warning = pool.get('res.user.warning')
        start = self.start
        today = Date.today()
        days = Configuration(1).price_notice_days or 0
        earliest = today + dt.timedelta(days=days)
        if start.date < earliest:
            lang = Lang.get()
            group = ModelData.get_id(
                'recurring_invoice', 'group_recurring_invoicing_admin')
            user = User(Transaction().user)
            if group not in {g.id for g in user.groups}:
                raise PriceRevisionError(gettext(
                        'recurring_invoice.msg_price_short_notice',
                        date=lang.strftime(start.date), days=days,
                        earliest=lang.strftime(earliest)))
            key = Warning.format(
                'price_short_notice', list(self.records))
            if Warning.check(key):
                raise PriceRevisionWarning(key, gettext(
                        'recurring_invoice.msg_price_short_notice_warning',
                        date=lang.strftime(start.date), days=days,
                        earliest=lang.strftime(earliest)))
        lines = self._lines()
        Subscription.revise_prices(
            lines, start.date, start.method, value=start.value,
            index=start.index, digits=start.digits, notify=start.notify)
        return 'end'
