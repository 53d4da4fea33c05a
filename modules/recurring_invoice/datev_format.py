# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The DATEV formats: EXTF Buchungsstapel and the document package.

Pure Python (no Tryton): the Tryton layer builds ``Header``, ``Booking``
and ``Document`` values and calls ``extf``, ``document_package``.
See doc/datev.md for the rules and their sources.
"""
import csv
import datetime
import io
import re
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    'DatevFormatError', 'Header', 'Booking', 'Document',
    'HEADER_FIELDS', 'COLUMNS', 'ENCODING',
    'extf', 'extf_filename', 'read_extf', 'document_field', 'guid',
    'document_xml', 'document_package']

ENCODING = 'cp1252'
NEWLINE = '\r\n'
FORMAT_VERSION = 13
MAX_DOCUMENTS = 4999
DOCUMENT_NAMESPACE = 'http://xml.datev.de/bedi/tps/document/v05.0'
XSI_NAMESPACE = 'http://www.w3.org/2001/XMLSchema-instance'
# Belegkreis of document.xml: 1 Rechnungseingang, 2 Rechnungsausgang
DOCUMENT_TYPE = '2'
DOCUMENT_PROCESS_ID = '1'
DOCUMENT_EXTENSIONS = {
    'pdf', 'xml', 'tif', 'tiff', 'bmp', 'csv', 'doc', 'docx', 'gif',
    'jpeg', 'jpg', 'ods', 'odt', 'pkcs7', 'png', 'rtf', 'txt', 'xls',
    'xlsx'}

HEADER_FIELDS = [
    'DATEV-Format-KZ', 'Versionsnummer', 'Datenkategorie', 'Formatname',
    'Formatversion', 'Erzeugt am', 'Importiert', 'Herkunft',
    'Exportiert von', 'Importiert von', 'Berater', 'Mandant', 'WJ-Beginn',
    'Sachkontenlänge', 'Datum vom', 'Datum bis', 'Bezeichnung',
    'Diktatkürzel', 'Buchungstyp', 'Rechnungslegungszweck',
    'Festschreibung', 'WKZ', 'reserviert', 'Derivatskennzeichen',
    'reserviert', 'reserviert', 'SKR', 'Branchenlösung-Id', 'reserviert',
    'reserviert', 'Anwendungsinformation']

COLUMNS = [
    'Umsatz (ohne Soll/Haben-Kz)', 'Soll/Haben-Kennzeichen', 'WKZ Umsatz',
    'Kurs', 'Basis-Umsatz', 'WKZ Basis-Umsatz', 'Konto',
    'Gegenkonto (ohne BU-Schlüssel)', 'BU-Schlüssel', 'Belegdatum',
    'Belegfeld 1', 'Belegfeld 2', 'Skonto', 'Buchungstext', 'Postensperre',
    'Diverse Adressnummer', 'Geschäftspartnerbank', 'Sachverhalt',
    'Zinssperre', 'Beleglink',
    ] + [
    f'Beleginfo - {k} {i}' for i in range(1, 9) for k in ['Art', 'Inhalt']
    ] + [
    'KOST1 - Kostenstelle', 'KOST2 - Kostenstelle', 'Kost-Menge',
    'EU-Land u. UStID (Bestimmung)', 'EU-Steuersatz (Bestimmung)',
    'Abw. Versteuerungsart', 'Sachverhalt L+L', 'Funktionsergänzung L+L',
    'BU 49 Hauptfunktionstyp', 'BU 49 Hauptfunktionsnummer',
    'BU 49 Funktionsergänzung',
    ] + [
    f'Zusatzinformation{s}{k} {i}' for i in range(1, 21)
    for s, k in [(' - ', 'Art'), ('- ', 'Inhalt')]
    ] + [
    'Stück', 'Gewicht', 'Zahlweise', 'Forderungsart', 'Veranlagungsjahr',
    'Zugeordnete Fälligkeit', 'Skontotyp', 'Auftragsnummer',
    'Buchungstyp (Anzahlungen)', 'USt-Schlüssel (Anzahlungen)',
    'EU-Land (Anzahlungen)', 'Sachverhalt L+L (Anzahlungen)',
    'EU-Steuersatz (Anzahlungen)', 'Erlöskonto (Anzahlungen)',
    'Herkunft-Kz', 'Buchungs GUID', 'KOST-Datum', 'SEPA-Mandatsreferenz',
    'Skontosperre', 'Gesellschaftername', 'Beteiligtennummer',
    'Identifikationsnummer', 'Zeichnernummer', 'Postensperre bis',
    'Bezeichnung SoBil-Sachverhalt', 'Kennzeichen SoBil-Buchung',
    'Festschreibung', 'Leistungsdatum', 'Datum Zuord. Steuerperiode',
    'Fälligkeit', 'Generalumkehr (GU)', 'Steuersatz', 'Land',
    'Abrechnungsreferenz', 'BVV-Position', 'EU-Land u. UStID (Ursprung)',
    'EU-Steuersatz (Ursprung)', 'Abw. Skontokonto']
assert len(HEADER_FIELDS) == 31 and len(COLUMNS) == 125

_AMOUNT = COLUMNS.index('Umsatz (ohne Soll/Haben-Kz)')
_DEBIT_CREDIT = COLUMNS.index('Soll/Haben-Kennzeichen')
_CURRENCY = COLUMNS.index('WKZ Umsatz')
_RATE = COLUMNS.index('Kurs')
_BASE_AMOUNT = COLUMNS.index('Basis-Umsatz')
_BASE_CURRENCY = COLUMNS.index('WKZ Basis-Umsatz')
_ACCOUNT = COLUMNS.index('Konto')
_CONTRA_ACCOUNT = COLUMNS.index('Gegenkonto (ohne BU-Schlüssel)')
_TAX_KEY = COLUMNS.index('BU-Schlüssel')
_DOCUMENT_DATE = COLUMNS.index('Belegdatum')
_DOCUMENT_FIELD1 = COLUMNS.index('Belegfeld 1')
_DOCUMENT_FIELD2 = COLUMNS.index('Belegfeld 2')
_TEXT = COLUMNS.index('Buchungstext')
_DOCUMENT_LINK = COLUMNS.index('Beleglink')
_COST_CENTER = COLUMNS.index('KOST1 - Kostenstelle')
_INFO_TYPE1 = COLUMNS.index('Zusatzinformation - Art 1')
_INFO_CONTENT1 = COLUMNS.index('Zusatzinformation- Inhalt 1')
_LOCKED = COLUMNS.index('Festschreibung')
_SERVICE_DATE = COLUMNS.index('Leistungsdatum')
_TAX_PERIOD_DATE = COLUMNS.index('Datum Zuord. Steuerperiode')
_DUE_DATE = COLUMNS.index('Fälligkeit')

SERVICE_PERIOD = 'Leistungszeitraum'

_DIGITS = re.compile(r'[0-9]{1,9}')
_TAX_KEY_RE = re.compile(r'[0-9]{1,4}')
_CURRENCY_RE = re.compile(r'[A-Z]{3}')
_DOCUMENT_FIELD_CHARS = r'A-Za-z0-9$&%*+\-/'
_DOCUMENT_FIELD1_RE = re.compile(f'[{_DOCUMENT_FIELD_CHARS}]{{0,36}}')
_DOCUMENT_FIELD2_RE = re.compile(f'[{_DOCUMENT_FIELD_CHARS}]{{0,12}}')
_NOT_DOCUMENT_FIELD = re.compile(f'[^{_DOCUMENT_FIELD_CHARS}]')
_COST_CENTER_RE = re.compile(r'[\w ]{0,36}')
_GUID_RE = re.compile(
    r'[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}'
    r'-[0-9A-Fa-f]{12}')
_DICTATION_RE = re.compile(r'[A-Z]{0,2}')
_ORIGIN_RE = re.compile(r'[A-Z0-9]{2}')
_CHART_RE = re.compile(r'([0-9]{2})?')
_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f]')
_CENT = Decimal('0.01')
_RATE_PLACES = Decimal('0.000001')
_MAX_AMOUNT = Decimal(10) ** 10


class DatevFormatError(ValueError):
    "A value the format does not allow"

    def __init__(self, field, value, reason):
        super().__init__(field, value, reason)
        self.field = field
        self.value = value
        self.reason = reason
        # the position of the booking or document in its list, if known
        self.index = None

    def __str__(self):
        where = f' (entry {self.index + 1})' if self.index is not None else ''
        return f'{self.field}{where}: {self.reason}: {self.value!r}'


@dataclass
class Header:
    "The header (row 1) of an EXTF Buchungsstapel"
    consultant_number: int
    client_number: int
    fiscal_year_start: datetime.date
    account_length: int
    date_from: datetime.date
    date_to: datetime.date
    created: datetime.datetime
    description: str = ''
    exported_by: str = ''
    dictation: str = ''
    currency: str = 'EUR'
    chart: str = ''
    origin: str = 'RE'
    locked: bool = False
    application: str = ''


@dataclass
class Booking:
    "A row of an EXTF Buchungsstapel"
    amount: Decimal
    debit_credit: str
    account: str
    contra_account: str
    document_date: datetime.date
    document_field1: str = ''
    document_field2: str = ''
    text: str = ''
    currency: str = ''
    rate: Decimal = None
    base_amount: Decimal = None
    base_currency: str = ''
    tax_key: str = ''
    document_link: str = ''
    service_date: datetime.date = None
    tax_period_date: datetime.date = None
    due_date: datetime.date = None
    service_period: tuple = None
    cost_center: str = ''
    locked: bool = False


@dataclass
class Document:
    "A file of the document package"
    guid: str
    filename: str
    data: bytes
    description: str = ''
    keywords: str = ''
    repository: tuple = ()


def document_field(value):
    "Return value as Belegfeld 1: other characters replaced by '-'"
    value = _NOT_DOCUMENT_FIELD.sub('-', value or '')
    if len(value) > 36:
        raise DatevFormatError(
            'document_field1', value, "longer than 36 characters")
    return value


def guid(namespace_text, name):
    "Return a deterministic upper-case GUID for name within namespace_text"
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, str(namespace_text))
    return str(uuid.uuid5(namespace, str(name))).upper()


def _text(value, length=None):
    "Return value cleaned of control characters and cut to length"
    if not value:
        return ''
    value = unicodedata.normalize('NFC', str(value))
    value = _CONTROL.sub(' ', value)
    if length is not None:
        value = value[:length]
    return value


def _quote(value):
    return '"' + value.replace('"', '""') + '"'


def _check(regex, field, value, reason):
    if not isinstance(value, str) or not regex.fullmatch(value):
        raise DatevFormatError(field, value, reason)
    return value


def _decimal(field, value):
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            value = Decimal(value)
        except InvalidOperation:
            raise DatevFormatError(field, value, "not a number")
    if not isinstance(value, Decimal) or not value.is_finite():
        raise DatevFormatError(field, value, "not a Decimal")
    return value


def _amount(field, value):
    "Return value as a positive amount with 2 decimals and decimal comma"
    value = _decimal(field, value)
    if value <= 0:
        raise DatevFormatError(field, value, "must be positive")
    rounded = value.quantize(_CENT)
    if rounded != value:
        raise DatevFormatError(field, value, "more than 2 decimals")
    if rounded >= _MAX_AMOUNT:
        raise DatevFormatError(field, value, "more than 10 integer digits")
    return f'{rounded:f}'.replace('.', ',')


def _rate(value):
    "Return the rate with 2 to 6 decimals (rounded to 6) and decimal comma"
    value = _decimal('rate', value)
    rounded = value.quantize(_RATE_PLACES)
    if not (1 <= rounded < 10000):
        raise DatevFormatError(
            'rate', value, "must be at least 1 and below 10000")
    text = f'{rounded:f}'.rstrip('0')
    integer, decimals = text.split('.')
    return integer + ',' + decimals.ljust(2, '0')


def _date(field, value):
    if (not isinstance(value, datetime.date)
            or isinstance(value, datetime.datetime)):
        raise DatevFormatError(field, value, "not a date")
    return value


def _add_year(date):
    try:
        return date.replace(year=date.year + 1)
    except ValueError:
        # 29 February
        return date.replace(year=date.year + 1, day=28)


def _check_header(header):
    for field, low, high in [
            ('consultant_number', 1001, 9999999),
            ('client_number', 1, 99999),
            ('account_length', 4, 8)]:
        value = getattr(header, field)
        if (not isinstance(value, int) or isinstance(value, bool)
                or not low <= value <= high):
            raise DatevFormatError(
                field, value, f"must be an integer from {low} to {high}")
    for field in ['fiscal_year_start', 'date_from', 'date_to']:
        _date(field, getattr(header, field))
    if not isinstance(header.created, datetime.datetime):
        raise DatevFormatError(
            'created', header.created, "not a date and time")
    if header.date_from > header.date_to:
        raise DatevFormatError(
            'date_to', header.date_to, "before date_from")
    if not (header.fiscal_year_start <= header.date_from
            and header.date_to < _add_year(header.fiscal_year_start)):
        raise DatevFormatError(
            'date_from', (header.date_from, header.date_to),
            "not within the fiscal year starting "
            f"{header.fiscal_year_start:%Y-%m-%d}")
    _check(_DICTATION_RE, 'dictation', header.dictation,
        "at most 2 capital letters")
    _check(_CURRENCY_RE, 'currency', header.currency,
        "not an ISO currency code")
    _check(_CHART_RE, 'chart', header.chart, "not 2 digits or empty")
    _check(_ORIGIN_RE, 'origin', header.origin,
        "not 2 capital letters or digits")
    if len(header.application or '') > 16:
        raise DatevFormatError(
            'application', header.application, "longer than 16 characters")


def _header_row(header):
    _check_header(header)
    created = header.created
    created = (
        created.strftime('%Y%m%d%H%M%S')
        + '%03d' % (created.microsecond // 1000))
    return ';'.join([
            '"EXTF"', '700', '21', '"Buchungsstapel"', str(FORMAT_VERSION),
            created, '', _quote(header.origin),
            _quote(_text(header.exported_by, 25)), '""',
            str(header.consultant_number), str(header.client_number),
            header.fiscal_year_start.strftime('%Y%m%d'),
            str(header.account_length),
            header.date_from.strftime('%Y%m%d'),
            header.date_to.strftime('%Y%m%d'),
            _quote(_text(header.description, 30)),
            _quote(header.dictation),
            '1',  # Buchungstyp: Finanzbuchführung
            '0',  # Rechnungslegungszweck: unabhängig
            '1' if header.locked else '0',
            _quote(header.currency),
            '', '""', '', '',
            _quote(header.chart),
            '', '', '""',
            _quote(_text(header.application, 16)),
            ])


def _booking_row(booking, header):
    row = [''] * 125
    row[_AMOUNT] = _amount('amount', booking.amount)
    if booking.debit_credit not in {'S', 'H'}:
        raise DatevFormatError(
            'debit_credit', booking.debit_credit, "not 'S' or 'H'")
    row[_DEBIT_CREDIT] = '"' + booking.debit_credit + '"'

    currency = booking.currency or header.currency
    _check(_CURRENCY_RE, 'currency', currency, "not an ISO currency code")
    row[_CURRENCY] = '"' + currency + '"'
    if currency != header.currency:
        if booking.rate is None:
            raise DatevFormatError(
                'rate', booking.rate, "needed for a foreign currency")
        if booking.base_amount is None:
            raise DatevFormatError(
                'base_amount', booking.base_amount,
                "needed for a foreign currency")
    elif booking.rate is not None:
        raise DatevFormatError(
            'rate', booking.rate, "only for a foreign currency")
    if booking.rate is not None:
        row[_RATE] = _rate(booking.rate)
    if booking.base_amount is not None:
        row[_BASE_AMOUNT] = _amount('base_amount', booking.base_amount)
        base_currency = booking.base_currency or header.currency
        _check(_CURRENCY_RE, 'base_currency', base_currency,
            "not an ISO currency code")
        row[_BASE_CURRENCY] = '"' + base_currency + '"'
    elif booking.base_currency:
        raise DatevFormatError(
            'base_currency', booking.base_currency,
            "only with a base amount")

    max_length = header.account_length + 1
    for field, index in [
            ('account', _ACCOUNT),
            ('contra_account', _CONTRA_ACCOUNT)]:
        value = _check(_DIGITS, field, getattr(booking, field),
            "not 1 to 9 digits")
        if len(value) > max_length:
            raise DatevFormatError(
                field, value, f"longer than {max_length} digits")
        row[index] = value

    # Always quoted, also when empty (as in the example file)
    row[_TAX_KEY] = '""'
    if booking.tax_key:
        row[_TAX_KEY] = '"' + _check(_TAX_KEY_RE, 'tax_key',
            booking.tax_key, "not 1 to 4 digits") + '"'

    date = _date('document_date', booking.document_date)
    if not header.date_from <= date <= header.date_to:
        raise DatevFormatError(
            'document_date', date, "outside of the header's dates")
    row[_DOCUMENT_DATE] = date.strftime('%d%m')

    if booking.document_field1:
        row[_DOCUMENT_FIELD1] = '"' + _check(
            _DOCUMENT_FIELD1_RE, 'document_field1',
            booking.document_field1,
            "more than 36 characters or not of A-Z a-z 0-9 $ & % * + - /"
            ) + '"'
    if booking.document_field2:
        row[_DOCUMENT_FIELD2] = '"' + _check(
            _DOCUMENT_FIELD2_RE, 'document_field2',
            booking.document_field2,
            "more than 12 characters or not of A-Z a-z 0-9 $ & % * + - /"
            ) + '"'
    if booking.text:
        row[_TEXT] = _quote(_text(booking.text, 60))
    if booking.document_link:
        link = _check(_GUID_RE, 'document_link', booking.document_link,
            "not a GUID")
        row[_DOCUMENT_LINK] = '"BEDI ""' + link + '"""'
    if booking.cost_center:
        value = _check(_COST_CENTER_RE, 'cost_center',
            booking.cost_center,
            "more than 36 characters or not letters, digits, spaces")
        try:
            value.encode(ENCODING)
        except UnicodeEncodeError:
            raise DatevFormatError(
                'cost_center', value, f"not encodable in {ENCODING}")
        row[_COST_CENTER] = '"' + value + '"'
    if booking.service_period:
        try:
            start, end = booking.service_period
        except (TypeError, ValueError):
            raise DatevFormatError(
                'service_period', booking.service_period,
                "not a (start, end) pair")
        _date('service_period', start)
        _date('service_period', end)
        if start > end:
            raise DatevFormatError(
                'service_period', booking.service_period,
                "start after end")
        row[_INFO_TYPE1] = '"' + SERVICE_PERIOD + '"'
        row[_INFO_CONTENT1] = (
            f'"{start:%d.%m.%Y}-{end:%d.%m.%Y}"')

    if booking.locked:
        if not header.locked:
            raise DatevFormatError(
                'locked', booking.locked, "the header is not locked")
        row[_LOCKED] = '1'
    if booking.service_date is not None:
        if booking.tax_period_date is None:
            raise DatevFormatError(
                'tax_period_date', booking.tax_period_date,
                "needed with a service date")
        row[_SERVICE_DATE] = _date(
            'service_date', booking.service_date).strftime('%d%m%Y')
    if booking.tax_period_date is not None:
        row[_TAX_PERIOD_DATE] = _date(
            'tax_period_date', booking.tax_period_date).strftime('%d%m%Y')
    if booking.due_date is not None:
        row[_DUE_DATE] = _date(
            'due_date', booking.due_date).strftime('%d%m%Y')
    return ';'.join(row)


def extf(header, bookings):
    """Return the EXTF Buchungsstapel of the bookings as bytes

    Windows-1252, CR LF after every line.  Characters of free texts that
    Windows-1252 can not encode are replaced by '?'.
    """
    lines = [_header_row(header), ';'.join(COLUMNS)]
    for index, booking in enumerate(bookings):
        try:
            lines.append(_booking_row(booking, header))
        except DatevFormatError as exception:
            exception.index = index
            raise
    lines.append('')
    return NEWLINE.join(lines).encode(ENCODING, errors='replace')


def extf_filename(header):
    "Return the file name of the EXTF Buchungsstapel"
    return (
        f'EXTF_Buchungsstapel_{header.date_from:%Y%m}_'
        f'{header.created:%Y%m%d%H%M%S}.csv')


def read_extf(data):
    "Return header fields, column names and rows (dict) of an EXTF file"
    text = data.decode(ENCODING)
    reader = csv.reader(io.StringIO(text, newline=''), delimiter=';')
    try:
        header = next(reader)
        columns = next(reader)
    except StopIteration:
        raise DatevFormatError('data', data[:40], "not an EXTF file")
    if not header or header[0] not in {'EXTF', 'DTVF'}:
        raise DatevFormatError('data', header[:1], "not an EXTF file")
    rows = []
    for line in reader:
        if len(line) != len(columns):
            raise DatevFormatError(
                'data', len(line), f"not {len(columns)} fields")
        rows.append(dict(zip(columns, line)))
    return header, columns, rows


def _xml_text(value, length=None):
    return escape(_text(value, length))


def _xml_attribute(value, length=None):
    return quoteattr(_text(value, length))


def _xml_date(value):
    if not isinstance(value, datetime.datetime):
        raise DatevFormatError('created', value, "not a date and time")
    # The schema does not allow a time zone
    return value.strftime('%Y-%m-%dT%H:%M:%S')


def _document_element(document):
    if not isinstance(document.guid, str) or not _GUID_RE.fullmatch(
            document.guid):
        raise DatevFormatError('guid', document.guid, "not a GUID")
    filename = document.filename
    if (not isinstance(filename, str) or not 1 <= len(filename) <= 255
            or _CONTROL.search(filename)):
        raise DatevFormatError(
            'filename', filename, "not 1 to 255 characters")
    if (filename.startswith('/') or '\\' in filename
            or '..' in filename.split('/')):
        raise DatevFormatError(
            'filename', filename, "not a relative path in the ZIP")
    if filename.rsplit('.', 1)[-1].lower() not in DOCUMENT_EXTENSIONS:
        raise DatevFormatError(
            'filename', filename, "not an extension DATEV accepts")
    if filename.lower() == 'document.xml':
        raise DatevFormatError('filename', filename, "reserved name")
    if len(document.keywords or '') > 255:
        raise DatevFormatError(
            'keywords', document.keywords, "longer than 255 characters")
    repository = tuple(document.repository or ())
    if len(repository) > 3:
        raise DatevFormatError(
            'repository', repository, "more than 3 levels")
    parts = [
        f'<document guid="{document.guid}" type="{DOCUMENT_TYPE}" '
        f'processID="{DOCUMENT_PROCESS_ID}">']
    description = _text(document.description, 40).strip()
    if description:
        parts.append(f'<description>{escape(description)}</description>')
    keywords = _text(document.keywords).strip()
    if keywords:
        parts.append(f'<keywords>{escape(keywords)}</keywords>')
    parts.append(
        f'<extension xsi:type="File" name={_xml_attribute(filename)}/>')
    if repository:
        parts.append('<repository>')
        for level, name in enumerate(repository, 1):
            name = _text(name, 30).strip()
            if not name:
                raise DatevFormatError(
                    'repository', repository, "empty level name")
            parts.append(
                f'<level id="{level}" name={quoteattr(name)}/>')
        parts.append('</repository>')
    parts.append('</document>')
    return ''.join(parts)


def document_xml(
        documents, created, description='', consultant_number=None,
        client_number=None, generating_system='Tryton'):
    "Return the document.xml (XML-Schnittstelle online 5.0) as bytes"
    documents = list(documents)
    if not documents:
        raise DatevFormatError('documents', 0, "no document")
    if len(documents) > MAX_DOCUMENTS:
        raise DatevFormatError(
            'documents', len(documents),
            f"more than {MAX_DOCUMENTS} documents")
    if generating_system is not None and not (
            1 <= len(generating_system) <= 40):
        raise DatevFormatError(
            'generating_system', generating_system,
            "not 1 to 40 characters")
    archive = (
        f'<archive xmlns="{DOCUMENT_NAMESPACE}" '
        f'xmlns:xsi="{XSI_NAMESPACE}" '
        f'xsi:schemaLocation="{DOCUMENT_NAMESPACE} Document_v050.xsd" '
        'version="5.0"')
    if generating_system is not None:
        archive += f' generatingSystem={_xml_attribute(generating_system)}'
    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
        archive + '>',
        '<header>',
        f'<date>{_xml_date(created)}</date>',
        ]
    description = _text(description, 255).strip()
    if description:
        parts.append(f'<description>{escape(description)}</description>')
    for field, value, low, high, tag in [
            ('consultant_number', consultant_number, 1001, 9999999,
                'consultantNumber'),
            ('client_number', client_number, 1, 99999, 'clientNumber')]:
        if value is None:
            continue
        if (not isinstance(value, int) or isinstance(value, bool)
                or not low <= value <= high):
            raise DatevFormatError(
                field, value, f"must be an integer from {low} to {high}")
        parts.append(f'<{tag}>{value}</{tag}>')
    parts.append('</header>')
    parts.append('<content>')
    for index, document in enumerate(documents):
        try:
            parts.append(_document_element(document))
        except DatevFormatError as exception:
            exception.index = index
            raise
    parts.append('</content>')
    parts.append('</archive>')
    return ('\n'.join(parts) + '\n').encode('utf-8')


def document_package(documents, **kwargs):
    "Return the ZIP of document.xml and the documents' files as bytes"
    documents = list(documents)
    xml = document_xml(documents, **kwargs)
    names = set()
    for index, document in enumerate(documents):
        key = document.filename.lower()
        if key in names:
            exception = DatevFormatError(
                'filename', document.filename, "duplicate file name")
            exception.index = index
            raise exception
        names.add(key)
        if not isinstance(document.data, (bytes, bytearray)):
            exception = DatevFormatError(
                'data', type(document.data).__name__, "not bytes")
            exception.index = index
            raise exception
    created = kwargs['created']
    date_time = (
        max(created.year, 1980), created.month, created.day,
        created.hour, created.minute, created.second)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as package:
        for name, data in [('document.xml', xml)] + [
                (d.filename, d.data) for d in documents]:
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            package.writestr(info, bytes(data))
    return buffer.getvalue()
