# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The persistent LibreOffice converter (converter.py) with a real
LibreOffice: no database.

Skipped when soffice or a Python with uno (python3-uno) is missing, unless
CI=true: then they fail.
"""
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import trytond.config as config
from trytond.modules.recurring_invoice import invoice_pdf
from trytond.modules.recurring_invoice.converter import (
    Converter, ConverterError, ConverterStartError, get_converter,
    group_pids)

PYTHON = [invoice_pdf.CONVERTER_PYTHON]
LOGGER = 'trytond.modules.recurring_invoice.converter'
SOFFICE = ['soffice']

FODT = '''<?xml version="1.0" encoding="UTF-8"?>
<office:document
 xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 office:version="1.2"
 office:mimetype="application/vnd.oasis.opendocument.text">
 <office:body><office:text><text:p>%s</text:p></office:text></office:body>
</office:document>
'''


def _missing():
    "Why the converter can not run here, or None"
    if not shutil.which(SOFFICE[0]):
        return "soffice not installed"
    if not shutil.which(PYTHON[0]):
        return f"{PYTHON[0]} not installed"
    if subprocess.run(PYTHON + ['-c', 'import uno'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        return f"{PYTHON[0]} can not import uno (python3-uno)"


MISSING = _missing()
if MISSING and os.environ.get('CI') == 'true':
    raise RuntimeError(f"CI: the LibreOffice converter must run: {MISSING}")


def _group_pids(pgid):
    "The pids of the live processes of process group pgid but its leader"
    return [p for p in group_pids(pgid) if p != pgid]


def _state(pid):
    "The state letter of process pid (None when it is gone)"
    try:
        with open(f'/proc/{pid}/stat') as fp:
            return fp.read().rsplit(')', 1)[-1].split()[0]
    except OSError:
        return None


def _stop_group(pgid, timeout=10):
    """Stop the processes of group pgid but its leader (LibreOffice of a
    listener) and wait until they are stopped; the processes LibreOffice
    starts meanwhile (a busy machine) are stopped too"""
    deadline = time.monotonic() + timeout
    while True:
        pids = _group_pids(pgid)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        if pids and all(_state(p) in {'T', 't', None} for p in pids):
            time.sleep(0.2)
            if set(_group_pids(pgid)) <= set(pids):
                return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of group {pgid} not stopped")
        time.sleep(0.1)


@unittest.skipIf(MISSING, MISSING)
class ConverterTestCase(unittest.TestCase):
    "The persistent converter"

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='test-converter-')
        self.addCleanup(shutil.rmtree, self.directory, True)

    def converter(self, **kwargs):
        converter = Converter(PYTHON, SOFFICE, **kwargs)
        self.addCleanup(converter.close)
        return converter

    def document(self, text):
        path = os.path.join(self.directory, f'{text}.fodt')
        with open(path, 'w') as fp:
            fp.write(FODT % text)
        return path

    def assertPDF(self, path, text):
        from pypdf import PdfReader
        with open(path, 'rb') as fp:
            content = fp.read()
        self.assertTrue(content.startswith(b'%PDF'))
        reader = PdfReader(io.BytesIO(content))
        self.assertIn(text, reader.pages[0].extract_text())

    def convert(self, converter, text):
        target = os.path.join(self.directory, f'{text}.pdf')
        converter.convert(self.document(text), target)
        self.assertPDF(target, text)

    def test_convert(self):
        "One LibreOffice converts several documents"
        converter = self.converter()
        converter.start()
        pid = converter.pid
        for text in ['first', 'second', 'third']:
            self.convert(converter, text)
        self.assertEqual(converter.pid, pid)
        self.assertEqual(converter.starts, 1)
        self.assertEqual(converter.documents, 3)
        self.assertTrue(converter.ping())

    def test_convert_invoice_template(self):
        "The invoice template of account_invoice converts"
        from trytond.modules import account_invoice
        source = os.path.join(
            os.path.dirname(account_invoice.__file__), 'invoice.fodt')
        target = os.path.join(self.directory, 'invoice.pdf')
        converter = self.converter()
        converter.convert(source, target)
        with open(target, 'rb') as fp:
            content = fp.read()
        self.assertTrue(content.startswith(b'%PDF'))
        # PDF/A-3b, the base of ZUGFeRD / Factur-X
        from pypdf import PdfReader
        metadata = PdfReader(io.BytesIO(content)).trailer['/Root'][
            '/Metadata'].get_object().get_data()
        self.assertRegex(metadata, rb'pdfaid:part[>="]+3')
        self.assertRegex(metadata, rb'pdfaid:conformance[>="]+B')

    def test_restart_after_max_documents(self):
        "A new LibreOffice after max_documents documents"
        converter = self.converter(max_documents=2)
        self.convert(converter, 'one')
        pid = converter.pid
        self.convert(converter, 'two')
        self.assertEqual(converter.pid, pid)
        self.convert(converter, 'three')
        self.assertNotEqual(converter.pid, pid)
        self.assertEqual(converter.starts, 2)
        self.assertEqual(converter.documents, 1)
        # The former one is gone, LibreOffice included
        self.assertFalse(os.path.exists(f'/proc/{pid}'))
        self.assertEqual(_group_pids(pid), [])

    def test_hang(self):
        "A hung LibreOffice is killed and the document retried"
        converter = self.converter(timeout=3)
        converter.start()
        pid = converter.pid
        soffice_pids = _group_pids(pid)
        self.assertTrue(soffice_pids)
        for soffice_pid in soffice_pids:
            os.kill(soffice_pid, signal.SIGSTOP)
        started = time.monotonic()
        with self.assertLogs(LOGGER, 'WARNING') as logs:
            self.convert(converter, 'retried')
        self.assertIn('timed out after 3 s', logs.output[0])
        self.assertLess(time.monotonic() - started, 3 + 30)
        self.assertNotEqual(converter.pid, pid)
        self.assertEqual(converter.starts, 2)
        self.assertEqual(_group_pids(pid), [])

    def test_hang_health_check(self):
        "The health check restarts a hung LibreOffice"
        converter = self.converter(timeout=2)
        converter.start()
        pid = converter.pid
        _stop_group(pid)
        with self.assertLogs(LOGGER, 'WARNING'):
            self.assertFalse(converter.ping())
        converter.ensure()
        self.assertNotEqual(converter.pid, pid)
        # The short timeout was for the health check: the first PDF/A of a
        # new LibreOffice may take longer on a busy machine
        converter.timeout = 30
        self.convert(converter, 'after')

    def test_dead(self):
        "The health check restarts a killed LibreOffice"
        converter = self.converter()
        converter.start()
        pid = converter.pid
        for soffice_pid in _group_pids(pid):
            os.kill(soffice_pid, signal.SIGKILL)
        with self.assertLogs(LOGGER, 'WARNING'):
            converter.ensure()
        self.assertNotEqual(converter.pid, pid)
        self.assertEqual(converter.starts, 2)
        self.convert(converter, 'alive')

    def test_failing_document(self):
        "A document LibreOffice can not load fails after one retry"
        converter = self.converter()
        source = os.path.join(self.directory, 'missing.odt')
        with self.assertRaises(ConverterError) as context, \
                self.assertLogs(LOGGER, 'WARNING'):
            converter.convert(
                source, os.path.join(self.directory, 'missing.pdf'))
        self.assertNotIsInstance(context.exception, ConverterStartError)
        self.assertIn('type detection failed', str(context.exception))
        # LibreOffice answered: no restart
        self.assertEqual(converter.starts, 1)
        # The next document converts
        self.convert(converter, 'next')

    def test_fork(self):
        "A forked child does not use nor stop the converter of its parent"
        converter = get_converter(PYTHON, SOFFICE, 10, 30)
        self.addCleanup(converter.close)
        converter.start()
        pid = os.fork()
        if not pid:
            # The child: its own converter, not started
            child = get_converter(PYTHON, SOFFICE, 10, 30)
            os._exit(0 if child is not converter and not child.running
                else 1)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertIs(get_converter(PYTHON, SOFFICE, 10, 30), converter)
        self.assertTrue(converter.ping())

    def test_python_missing(self):
        "A missing Python can not start"
        converter = Converter(['/nonexistent/python3'], SOFFICE)
        with self.assertRaises(ConverterStartError) as context:
            converter.start()
        self.assertIn('/nonexistent/python3', str(context.exception))

    def test_python_without_uno(self):
        "A Python without uno (python3-uno missing) can not start"
        if not subprocess.run([sys.executable, '-c', 'import uno'],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).returncode:
            self.skipTest(f"{sys.executable} can import uno")
        converter = self.converter()
        converter.python = [sys.executable]
        with self.assertRaises(ConverterStartError) as context:
            converter.start()
        self.assertIn('can not import uno', str(context.exception))

    def test_soffice_failing(self):
        "A soffice that exits says so"
        converter = self.converter()
        converter.soffice = ['false']
        with self.assertRaises(ConverterStartError) as context:
            converter.start()
        self.assertIn('exited with status 1', str(context.exception))


@unittest.skipIf(MISSING, MISSING)
class ConvertTestCase(unittest.TestCase):
    "invoice_pdf._convert: persistent converter or one-shot soffice"

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='test-convert-')
        self.addCleanup(shutil.rmtree, self.directory, True)
        if not config.has_section('recurring_invoice'):
            config.add_section('recurring_invoice')
        for option, default in [
                ('converter', 'auto'),
                ('converter_python', invoice_pdf.CONVERTER_PYTHON)]:
            self.addCleanup(config.set, 'recurring_invoice', option,
                config.get('recurring_invoice', option, default=default))
        self.addCleanup(invoice_pdf._start_failures.clear)
        self.filenames = []
        for text in ['alpha', 'beta']:
            with open(os.path.join(self.directory, f'{text}.fodt'), 'w') as fp:
                fp.write(FODT % text)
            self.filenames.append(f'{text}.fodt')

    def converted(self):
        return sorted(os.listdir(os.path.join(self.directory, 'pdf')))

    def test_persistent(self):
        "auto converts with the persistent converter of the process"
        config.set('recurring_invoice', 'converter', 'auto')
        self.assertEqual(
            invoice_pdf._convert(SOFFICE, self.directory, self.filenames), {})
        self.assertEqual(self.converted(), ['alpha.pdf', 'beta.pdf'])
        converter = invoice_pdf._persistent_converter(SOFFICE, 'auto')
        self.assertTrue(converter.running)
        self.assertEqual(converter.owner, os.getpid())

    def test_fallback(self):
        "auto falls back to one soffice start when the server can not start"
        config.set('recurring_invoice', 'converter', 'auto')
        config.set('recurring_invoice', 'converter_python', '/nonexistent/py')
        with self.assertLogs(invoice_pdf.logger, 'WARNING') as logs:
            self.assertEqual(invoice_pdf._convert(
                    SOFFICE, self.directory, self.filenames), {})
        self.assertIn('/nonexistent/py', logs.output[0])
        self.assertEqual(self.converted(), ['alpha.pdf', 'beta.pdf'])
        # The next batch does not try to start it again
        self.assertIsNone(invoice_pdf._persistent_converter(SOFFICE, 'auto'))

    def test_persistent_not_starting(self):
        "persistent mode: the files fail with the reason"
        config.set('recurring_invoice', 'converter', 'persistent')
        config.set('recurring_invoice', 'converter_python', '/nonexistent/py')
        with self.assertLogs(invoice_pdf.logger, 'ERROR'):
            failures = invoice_pdf._convert(
                SOFFICE, self.directory, self.filenames)
        self.assertEqual(sorted(failures), self.filenames)
        self.assertIn('could not start', failures['alpha.fodt'])
        self.assertIn('/nonexistent/py', failures['alpha.fodt'])

    def test_soffice_mode(self):
        "soffice mode: one soffice start per batch"
        config.set('recurring_invoice', 'converter', 'soffice')
        self.assertIsNone(
            invoice_pdf._persistent_converter(SOFFICE, 'soffice'))
        self.assertEqual(
            invoice_pdf._convert(SOFFICE, self.directory, self.filenames), {})
        self.assertEqual(self.converted(), ['alpha.pdf', 'beta.pdf'])
