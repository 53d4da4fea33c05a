# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The DATEV format library (datev_format.py): no database."""
import datetime
import io
import os
import unittest
import zipfile
from decimal import Decimal

from trytond.modules.recurring_invoice import datev_format
from trytond.modules.recurring_invoice.datev_format import (
    COLUMNS, HEADER_FIELDS, Booking, DatevFormatError, Document, Header,
    document_field, document_package, document_xml, extf, extf_filename,
    guid, read_extf)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))))
SHARED = os.path.join(ROOT, '..', 'shared', 'datev')
EXAMPLE = os.path.join(SHARED, 'EXTF_Buchungsstapel_example.csv')
XSD = os.path.join(SHARED, 'Document_v050.xsd')

GUID1 = '0F3A9C2E-5B71-4D8A-9E26-7C41B2D8A001'
GUID2 = '0F3A9C2E-5B71-4D8A-9E26-7C41B2D8A002'
NS = '{http://xml.datev.de/bedi/tps/document/v05.0}'


def header(**values):
    "The header of the example file"
    values = {
        'consultant_number': 1001,
        'client_number': 10000,
        'fiscal_year_start': datetime.date(2025, 1, 1),
        'account_length': 4,
        'date_from': datetime.date(2025, 2, 1),
        'date_to': datetime.date(2025, 2, 28),
        'created': datetime.datetime(2025, 3, 5, 14, 30, 0, 123456),
        'description': 'Rechnungsausgang 02/2025',
        'exported_by': 'Tryton',
        'chart': '03',
        **values}
    return Header(**values)


def booking(**values):
    values = {
        'amount': Decimal('119.00'),
        'debit_credit': 'S',
        'account': '10000',
        'contra_account': '8400',
        'document_date': datetime.date(2025, 2, 3),
        'document_field1': 'RE2025-0001',
        'text': 'Mueller GmbH RE2025-0001',
        'document_link': GUID1,
        **values}
    return Booking(**values)


def example_bookings():
    return [
        booking(),
        booking(
            amount=Decimal('53.50'), account='10001',
            contra_account='8300',
            document_date=datetime.date(2025, 2, 14),
            document_field1='RE2025-0002', text='Schmidt KG RE2025-0002',
            document_link=GUID2),
        ]


def row(data, number=0):
    "The row (dict) number of the bookings of data"
    return read_extf(data)[2][number]


def raw_fields(data, line):
    "The fields of a line as written (quotes kept); no ';' in values"
    return data.split(b'\r\n')[line].decode('cp1252').split(';')


class ExtfTestCase(unittest.TestCase):
    "EXTF Buchungsstapel"

    def test_header_fields(self):
        "31 header fields with the values"
        data = extf(header(), example_bookings())
        fields = raw_fields(data, 0)
        self.assertEqual(len(HEADER_FIELDS), 31)
        self.assertEqual(len(fields), 31)
        values, _, _ = read_extf(data)
        self.assertEqual(values[:6], [
                'EXTF', '700', '21', 'Buchungsstapel', '13',
                '20250305143000123'])
        self.assertEqual(fields[0], '"EXTF"')
        self.assertEqual(fields[5], '20250305143000123')
        self.assertEqual(len(fields[5]), 17)
        self.assertEqual(values[7], 'RE')
        self.assertEqual(values[8], 'Tryton')
        self.assertEqual(values[10:16], [
                '1001', '10000', '20250101', '4', '20250201', '20250228'])
        self.assertEqual(values[16], 'Rechnungsausgang 02/2025')
        self.assertEqual(values[18:22], ['1', '0', '0', 'EUR'])
        self.assertEqual(fields[26], '"03"')

    def test_timestamp_milliseconds(self):
        "Erzeugt am has 17 digits with zero padded milliseconds"
        data = extf(header(created=datetime.datetime(
                        2025, 3, 5, 1, 2, 3, 4000)), [])
        self.assertEqual(raw_fields(data, 0)[5], '20250305010203004')

    def test_header_cut(self):
        "Bezeichnung and Exportiert von are cut"
        data = extf(header(description='x' * 40, exported_by='y' * 40), [])
        values = read_extf(data)[0]
        self.assertEqual(values[16], 'x' * 30)
        self.assertEqual(values[8], 'y' * 25)

    def test_header_locked(self):
        "Festschreibung of the header"
        values = read_extf(extf(header(locked=True), []))[0]
        self.assertEqual(values[20], '1')

    def test_columns(self):
        "125 columns equal to row 2 of the example file"
        self.assertEqual(len(COLUMNS), 125)
        data = extf(header(), example_bookings())
        _, columns, rows = read_extf(data)
        self.assertEqual(columns, COLUMNS)
        self.assertTrue(all(len(r) == 125 for r in rows))
        for line in data.split(b'\r\n')[2:-1]:
            self.assertEqual(line.count(b';'), 124)
        if os.path.isfile(EXAMPLE):
            with open(EXAMPLE, 'rb') as fp:
                _, example_columns, _ = read_extf(fp.read())
            self.assertEqual(COLUMNS, example_columns)

    @unittest.skipUnless(
        os.path.isfile(EXAMPLE), f"{EXAMPLE} is missing")
    def test_example_file(self):
        "The bookings of the example file give the example file"
        with open(EXAMPLE, 'rb') as fp:
            example = fp.read()
        self.assertEqual(extf(header(), example_bookings()), example)

    def test_encoding_line_ends(self):
        "Windows-1252 and CR LF after every line, also the last"
        data = extf(header(), [booking(text='Müller & Söhne – 5 €')])
        self.assertTrue(data.endswith(b'\r\n'))
        self.assertEqual(data.count(b'\r\n'), 3)
        self.assertEqual(data.count(b'\n'), 3)
        self.assertIn('"Müller & Söhne – 5 €"'.encode('cp1252'), data)
        self.assertIn('Gegenkonto (ohne BU-Schlüssel)'.encode('cp1252'), data)
        self.assertNotIn(b'\xef\xbb\xbf', data)

    def test_unencodable(self):
        "Characters that cp1252 can not encode become '?'"
        data = extf(header(), [booking(text='Łódź Sp. z o.o.')])
        self.assertEqual(row(data)['Buchungstext'], '?ód? Sp. z o.o.')
        self.assertIn(b'"?\xf3d? Sp. z o.o."', data)
        # combining characters are composed first
        data = extf(header(), [booking(text='Mu\u0308ller')])
        self.assertEqual(row(data)['Buchungstext'], 'Müller')

    def test_quoting(self):
        "Text fields quoted with doubled quotes, numbers unquoted"
        data = extf(header(), [booking(text='Firma "Alpha"; Beta')])
        self.assertIn(b'"Firma ""Alpha""; Beta"', data)
        self.assertEqual(row(data)['Buchungstext'], 'Firma "Alpha"; Beta')
        fields = raw_fields(extf(header(), [booking(tax_key='9')]), 2)
        self.assertEqual(fields[0], '119,00')
        self.assertEqual(fields[1], '"S"')
        self.assertEqual(fields[6], '10000')
        self.assertEqual(fields[7], '8400')
        self.assertEqual(fields[8], '"9"')
        self.assertEqual(fields[9], '0302')
        self.assertEqual(fields[10], '"RE2025-0001"')
        self.assertEqual(fields[11], '')

    def test_text_control_characters(self):
        "Control characters become spaces and the text is cut to 60"
        data = extf(header(), [booking(text='a\r\nb\tc' + 'x' * 100)])
        text = row(data)['Buchungstext']
        self.assertEqual(text, ('a  b c' + 'x' * 100)[:60])
        self.assertEqual(data.count(b'\r\n'), 3)

    def test_decimal_comma(self):
        "Decimal comma, no thousands separator"
        data = extf(header(), [
                booking(amount=Decimal('1234567.5')),
                booking(amount=Decimal('9999999999.99')),
                booking(amount=Decimal('0.01')),
                booking(amount=7)])
        amounts = [r['Umsatz (ohne Soll/Haben-Kz)']
            for r in read_extf(data)[2]]
        self.assertEqual(
            amounts, ['1234567,50', '9999999999,99', '0,01', '7,00'])

    def test_round_trip(self):
        "read_extf gives back what extf wrote"
        data = extf(header(), example_bookings())
        values, columns, rows = read_extf(data)
        self.assertEqual(len(values), 31)
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[1]['Konto'], '10001')
        self.assertEqual(rows[1]['Gegenkonto (ohne BU-Schlüssel)'], '8300')
        self.assertEqual(rows[1]['Belegdatum'], '1402')
        self.assertEqual(rows[1]['Belegfeld 1'], 'RE2025-0002')
        self.assertEqual(rows[1]['WKZ Umsatz'], 'EUR')
        self.assertEqual(rows[1]['Buchungstext'], 'Schmidt KG RE2025-0002')
        self.assertEqual(
            {v for k, v in rows[1].items() if k not in {
                    'Umsatz (ohne Soll/Haben-Kz)', 'Soll/Haben-Kennzeichen',
                    'WKZ Umsatz', 'Konto', 'Gegenkonto (ohne BU-Schlüssel)',
                    'Belegdatum', 'Belegfeld 1', 'Buchungstext',
                    'Beleglink'}},
            {''})

    def test_amounts_sum(self):
        "The amounts of the rows sum with their S/H sign"
        bookings = [
            booking(amount=Decimal('100.00')),
            booking(amount=Decimal('19.00')),
            booking(amount=Decimal('30.50'), debit_credit='H'),
            ]
        rows = read_extf(extf(header(), bookings))[2]
        total = sum(
            Decimal(r['Umsatz (ohne Soll/Haben-Kz)'].replace(',', '.'))
            * (1 if r['Soll/Haben-Kennzeichen'] == 'S' else -1)
            for r in rows)
        self.assertEqual(total, Decimal('88.50'))

    def test_document_link(self):
        "Beleglink BEDI with the GUID, quotes doubled"
        data = extf(header(), [booking()])
        self.assertIn(('"BEDI ""%s"""' % GUID1).encode(), data)
        self.assertEqual(row(data)['Beleglink'], 'BEDI "%s"' % GUID1)
        self.assertEqual(raw_fields(data, 2)[19], '"BEDI ""%s"""' % GUID1)
        data = extf(header(), [booking(document_link='')])
        self.assertEqual(row(data)['Beleglink'], '')

    def test_service_period(self):
        "Leistungsdatum, Steuerperiode, Fälligkeit and Leistungszeitraum"
        data = extf(header(), [booking(
                        service_date=datetime.date(2025, 1, 31),
                        tax_period_date=datetime.date(2025, 2, 3),
                        due_date=datetime.date(2025, 3, 5),
                        service_period=(
                            datetime.date(2025, 1, 1),
                            datetime.date(2025, 1, 31)))])
        values = row(data)
        self.assertEqual(values['Leistungsdatum'], '31012025')
        self.assertEqual(values['Datum Zuord. Steuerperiode'], '03022025')
        self.assertEqual(values['Fälligkeit'], '05032025')
        self.assertEqual(
            values['Zusatzinformation - Art 1'], 'Leistungszeitraum')
        self.assertEqual(
            values['Zusatzinformation- Inhalt 1'], '01.01.2025-31.01.2025')
        fields = raw_fields(data, 2)
        self.assertEqual(fields[114], '31012025')
        self.assertEqual(fields[115], '03022025')
        self.assertEqual(fields[116], '05032025')
        self.assertEqual(fields[47], '"Leistungszeitraum"')
        self.assertEqual(fields[48], '"01.01.2025-31.01.2025"')

    def test_foreign_currency(self):
        "WKZ Umsatz, Kurs, Basis-Umsatz and WKZ Basis-Umsatz"
        data = extf(header(), [booking(
                        amount=Decimal('108.50'), currency='USD',
                        rate=Decimal('1.0850000'),
                        base_amount=Decimal('100.00'))])
        values = row(data)
        self.assertEqual(values['WKZ Umsatz'], 'USD')
        self.assertEqual(values['Kurs'], '1,085')
        self.assertEqual(values['Basis-Umsatz'], '100,00')
        self.assertEqual(values['WKZ Basis-Umsatz'], 'EUR')
        fields = raw_fields(data, 2)
        self.assertEqual(fields[2:6], ['"USD"', '1,085', '100,00', '"EUR"'])
        rate = row(extf(header(), [booking(
                        currency='JPY', rate=Decimal('162.1234567'),
                        base_amount=Decimal('1.00'))]))['Kurs']
        self.assertEqual(rate, '162,123457')
        rate = row(extf(header(), [booking(
                        currency='CHF', rate=Decimal('1'),
                        base_amount=Decimal('1.00'))]))['Kurs']
        self.assertEqual(rate, '1,00')

    def test_foreign_currency_errors(self):
        "A foreign currency needs rate and base amount"
        for values, field in [
                ({'currency': 'USD', 'base_amount': Decimal(1)}, 'rate'),
                ({'currency': 'USD', 'rate': Decimal(1)}, 'base_amount'),
                ({'rate': Decimal('1.1')}, 'rate'),
                ({'currency': 'USD', 'rate': Decimal('0.85'),
                        'base_amount': Decimal(1)}, 'rate'),
                ({'currency': 'usd', 'rate': Decimal('1.1'),
                        'base_amount': Decimal(1)}, 'currency'),
                ]:
            with self.subTest(values=values):
                with self.assertRaises(DatevFormatError) as cm:
                    extf(header(), [booking(**values)])
                self.assertEqual(cm.exception.field, field)

    def test_cost_center_locked(self):
        "KOST1 and Festschreibung"
        values = row(extf(header(locked=True), [
                    booking(cost_center='100 A', locked=True)]))
        self.assertEqual(values['KOST1 - Kostenstelle'], '100 A')
        self.assertEqual(values['Festschreibung'], '1')
        values = row(extf(header(), [booking()]))
        self.assertEqual(values['Festschreibung'], '')
        with self.assertRaises(DatevFormatError):
            extf(header(), [booking(locked=True)])
        with self.assertRaises(DatevFormatError):
            extf(header(), [booking(cost_center='a;b')])

    def assertError(self, field, **values):
        with self.assertRaises(DatevFormatError) as cm:
            extf(header(), [booking(), booking(**values)])
        self.assertEqual(cm.exception.field, field)
        self.assertEqual(cm.exception.index, 1)
        self.assertIn(field, str(cm.exception))
        self.assertIn('entry 2', str(cm.exception))
        return cm.exception

    def test_errors(self):
        "Values the format does not allow"
        error = self.assertError('amount', amount=Decimal(0))
        self.assertEqual(error.value, Decimal(0))
        self.assertEqual(error.reason, "must be positive")
        self.assertError('amount', amount=Decimal('-1.00'))
        self.assertError('amount', amount=Decimal('1.001'))
        self.assertError('amount', amount=Decimal('10000000000.00'))
        self.assertError('amount', amount=1.5)
        self.assertError('account', account='1000A')
        self.assertError('account', account='')
        self.assertError('account', account='123456')
        self.assertError('contra_account', contra_account='84 00')
        self.assertError('contra_account', contra_account='1234567890')
        self.assertError('document_field1', document_field1='R' * 37)
        self.assertError('document_field1', document_field1='RE 1')
        self.assertError('document_field2', document_field2='R' * 13)
        self.assertError('debit_credit', debit_credit='X')
        self.assertError('debit_credit', debit_credit='s')
        self.assertError(
            'tax_period_date', service_date=datetime.date(2025, 2, 1))
        self.assertError('tax_key', tax_key='12345')
        self.assertError('tax_key', tax_key='A9')
        self.assertError('document_link', document_link='not-a-guid')
        self.assertError(
            'document_date', document_date=datetime.date(2025, 3, 1))
        self.assertError(
            'service_period', service_period=(
                datetime.date(2025, 2, 2), datetime.date(2025, 2, 1)))

    def test_header_errors(self):
        "Header values the format does not allow"
        for values, field in [
                ({'consultant_number': 1000}, 'consultant_number'),
                ({'consultant_number': 10000000}, 'consultant_number'),
                ({'client_number': 0}, 'client_number'),
                ({'client_number': 100000}, 'client_number'),
                ({'account_length': 3}, 'account_length'),
                ({'account_length': 9}, 'account_length'),
                ({'date_to': datetime.date(2025, 1, 31)}, 'date_to'),
                ({'date_to': datetime.date(2026, 1, 1)}, 'date_from'),
                ({'fiscal_year_start': datetime.date(2025, 3, 1)},
                    'date_from'),
                ({'dictation': 'ABC'}, 'dictation'),
                ({'currency': 'EURO'}, 'currency'),
                ({'chart': 'SKR03'}, 'chart'),
                ({'origin': 'R'}, 'origin'),
                ({'application': 'x' * 17}, 'application'),
                ({'created': datetime.date(2025, 3, 5)}, 'created'),
                ]:
            with self.subTest(values=values):
                with self.assertRaises(DatevFormatError) as cm:
                    extf(header(**values), [])
                self.assertEqual(cm.exception.field, field)

    def test_document_field(self):
        "document_field replaces other characters by '-'"
        self.assertEqual(document_field('RE 2025/0001'), 'RE-2025/0001')
        self.assertEqual(document_field('Ä.b,c;d:e_f'), '--b-c-d-e-f')
        self.assertEqual(document_field('$&%*+-/'), '$&%*+-/')
        self.assertEqual(document_field(None), '')
        with self.assertRaises(DatevFormatError) as cm:
            document_field('x' * 37)
        self.assertEqual(cm.exception.field, 'document_field1')

    def test_filename(self):
        "The file name starts with EXTF_ and ends with .csv"
        filename = extf_filename(header())
        self.assertEqual(
            filename, 'EXTF_Buchungsstapel_202502_20250305143000.csv')

    def test_read_errors(self):
        "read_extf refuses what is not an EXTF file"
        with self.assertRaises(DatevFormatError):
            read_extf(b'')
        with self.assertRaises(DatevFormatError):
            read_extf(b'"XXXX";700\r\na;b\r\n')
        with self.assertRaises(DatevFormatError):
            read_extf(b'"EXTF";700\r\na;b\r\n1;2;3\r\n')

    def test_many_bookings(self):
        "10,000 bookings"
        bookings = example_bookings() * 5000
        data = extf(header(), bookings)
        self.assertEqual(data.count(b'\r\n'), 10002)


class DocumentTestCase(unittest.TestCase):
    "document.xml and the document package"

    def documents(self, count=2):
        return [
            Document(
                guid=guid('test', i), filename=f'RE2025-{i:04d}.pdf',
                data=b'%PDF-1.4 ' + str(i).encode(),
                description=f'RE2025-{i:04d} & <Co>',
                keywords='Rechnung',
                repository=('Rechnungsausgang', '2025', '02'))
            for i in range(1, count + 1)]

    def test_guid(self):
        "guid is deterministic, upper case, a uuid5"
        value = guid('database', 'account.invoice,1')
        self.assertEqual(value, guid('database', 'account.invoice,1'))
        self.assertNotEqual(value, guid('database', 'account.invoice,2'))
        self.assertNotEqual(value, guid('other', 'account.invoice,1'))
        self.assertEqual(value, value.upper())
        self.assertEqual(value[14], '5')

    def test_document_xml(self):
        "The elements of document.xml"
        from xml.etree import ElementTree
        xml = document_xml(
            self.documents(), datetime.datetime(2025, 3, 5, 14, 30, 1, 5),
            description='Februar', consultant_number=1001,
            client_number=10000)
        root = ElementTree.fromstring(xml)
        self.assertEqual(root.tag, NS + 'archive')
        self.assertEqual(root.get('version'), '5.0')
        self.assertEqual(root.get('generatingSystem'), 'Tryton')
        self.assertEqual(
            root.find(f'{NS}header/{NS}date').text, '2025-03-05T14:30:01')
        self.assertEqual(
            root.find(f'{NS}header/{NS}consultantNumber').text, '1001')
        documents = root.findall(f'{NS}content/{NS}document')
        self.assertEqual(len(documents), 2)
        document = documents[0]
        self.assertEqual(document.get('guid'), guid('test', 1))
        self.assertEqual(document.get('type'), '2')
        self.assertEqual(document.get('processID'), '1')
        self.assertEqual(
            document.find(f'{NS}description').text, 'RE2025-0001 & <Co>')
        extension = document.find(f'{NS}extension')
        self.assertEqual(extension.get(
                '{http://www.w3.org/2001/XMLSchema-instance}type'), 'File')
        self.assertEqual(extension.get('name'), 'RE2025-0001.pdf')
        levels = document.findall(f'{NS}repository/{NS}level')
        self.assertEqual(
            [(l.get('id'), l.get('name')) for l in levels],
            [('1', 'Rechnungsausgang'), ('2', '2025'), ('3', '02')])

    @unittest.skipUnless(
        os.path.isfile(XSD),
        f"the DATEV schema is missing: {os.path.normpath(XSD)}")
    def test_document_xml_schema(self):
        "document.xml validates against Document_v050.xsd"
        from lxml import etree
        schema = etree.XMLSchema(etree.parse(XSD))
        documents = self.documents(3)
        documents[1].description = 'x' * 50
        documents[1].repository = ('y' * 40,)
        documents[2].description = ''
        documents[2].keywords = ''
        documents[2].repository = ()
        for kwargs in [
                {'description': 'Rechnungsausgang 02/2025',
                    'consultant_number': 9999999, 'client_number': 99999,
                    'generating_system': 'Tryton Turnus'},
                {'generating_system': None},
                ]:
            with self.subTest(kwargs=kwargs):
                xml = document_xml(
                    documents, datetime.datetime(2025, 3, 5, 14, 30),
                    **kwargs)
                document = etree.fromstring(xml)
                schema.assertValid(document)
        self.assertEqual(len(document.find(
                    f'{NS}content/{NS}document/{NS}repository')), 3)

    def test_document_errors(self):
        "Documents the format does not allow"
        created = datetime.datetime(2025, 3, 5)
        for values, field in [
                ({'guid': 'x'}, 'guid'),
                ({'filename': ''}, 'filename'),
                ({'filename': 'x' * 252 + '.pdf'}, 'filename'),
                ({'filename': 'invoice.exe'}, 'filename'),
                ({'filename': 'document.xml'}, 'filename'),
                ({'filename': '../x.pdf'}, 'filename'),
                ({'filename': '/tmp/x.pdf'}, 'filename'),
                ({'filename': 'a\\x.pdf'}, 'filename'),
                ({'keywords': 'k' * 256}, 'keywords'),
                ({'repository': ('a', 'b', 'c', 'd')}, 'repository'),
                ({'repository': ('a', '')}, 'repository'),
                ]:
            with self.subTest(values=values):
                document = self.documents(1)[0]
                for name, value in values.items():
                    setattr(document, name, value)
                with self.assertRaises(DatevFormatError) as cm:
                    document_xml([document], created)
                self.assertEqual(cm.exception.field, field)
        with self.assertRaises(DatevFormatError):
            document_xml([], created)
        with self.assertRaises(DatevFormatError):
            document_xml(self.documents(1), created, consultant_number=999)
        with self.assertRaises(DatevFormatError):
            document_xml(
                self.documents(1), created, generating_system='x' * 41)

    def test_too_many_documents(self):
        "At most 4999 documents"
        document = self.documents(1)[0]
        created = datetime.datetime(2025, 3, 5)
        document_xml([document] * 4999, created)
        with self.assertRaises(DatevFormatError) as cm:
            document_xml([document] * 5000, created)
        self.assertEqual(cm.exception.field, 'documents')
        with self.assertRaises(DatevFormatError):
            document_package([document] * 5000, created=created)

    def test_package(self):
        "The ZIP holds document.xml and the files"
        documents = self.documents()
        created = datetime.datetime(2025, 3, 5, 14, 30)
        data = document_package(documents, created=created)
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            self.assertIsNone(package.testzip())
            self.assertEqual(package.namelist(), [
                    'document.xml', 'RE2025-0001.pdf', 'RE2025-0002.pdf'])
            for info in package.infolist():
                self.assertEqual(info.compress_type, zipfile.ZIP_DEFLATED)
                self.assertEqual(info.date_time, (2025, 3, 5, 14, 30, 0))
            self.assertEqual(
                package.read('document.xml'),
                document_xml(documents, created=created))
            self.assertEqual(package.read('RE2025-0002.pdf'), b'%PDF-1.4 2')
        self.assertEqual(
            document_package(documents, created=created), data)

    def test_package_duplicate(self):
        "Duplicate file names are refused"
        documents = self.documents()
        documents[1].filename = documents[0].filename.upper()
        with self.assertRaises(DatevFormatError) as cm:
            document_package(
                documents, created=datetime.datetime(2025, 3, 5))
        self.assertEqual(cm.exception.field, 'filename')
        self.assertEqual(cm.exception.index, 1)

    def test_no_tryton(self):
        "The library does not import Tryton"
        with open(datev_format.__file__) as fp:
            source = fp.read()
        self.assertNotIn('import trytond', source)
        self.assertNotIn('from trytond', source)
