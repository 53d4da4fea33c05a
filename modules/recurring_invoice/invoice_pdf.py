# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The invoice PDF rendered for many invoices by one LibreOffice.

Core converts each report with its own ``soffice`` start (about 1 s); here
the ODT files of a batch are written to one directory and converted by the
persistent LibreOffice of the process (converter.py: started once, checked
before each batch, restarted after converter_max_documents documents or
when it hangs), or, when it can not start, by one
``soffice --convert-to pdf`` call per batch.  The PDF is stored as the
invoice report cache, so later prints, mails and uploads use the same file.
"""
import atexit
import logging
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import trytond.config as config
from trytond.i18n import gettext
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .converter import ConverterError, ConverterStartError, get_converter
from .exceptions import (
    PDFConversionError, PDFConverterConfigError, PDFConverterMissingError)

logger = logging.getLogger(__name__)

# Files per soffice call, and its timeout: base + per file (seconds)
PDF_BATCH_SIZE = 50
PDF_TIMEOUT = 60
PDF_TIMEOUT_PER_FILE = 2

# The persistent converter: how it may be run, its defaults, and the seconds
# after which a process that could not start it tries again
CONVERTERS = {'auto', 'persistent', 'soffice'}
CONVERTER_PYTHON = '/usr/bin/python3'
CONVERTER_MAX_DOCUMENTS = 200
CONVERTER_TIMEOUT = 30
CONVERTER_RETRY_START = 300
# {(pid, python, soffice): monotonic time of the failed start}
_start_failures = {}

# One LibreOffice user profile per process: parallel conversions sharing a
# profile fail.  The threads of a process take turns.
_profile_lock = threading.Lock()
_profiles = {}


def _profile_uri():
    "The URI of the LibreOffice user profile of this process"
    pid = os.getpid()
    if pid not in _profiles:
        path = pathlib.Path(
            tempfile.gettempdir(), f'trytond-recurring-invoice-soffice-{pid}')
        atexit.register(_remove_profile, pid, path)
        _profiles[pid] = path.as_uri()
    return _profiles[pid]


def _remove_profile(pid, path):
    # A forked child runs the atexit functions of its parent
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def _soffice_command():
    "The configured soffice command as a list, raise if it is not installed"
    command = shlex.split(config.get(
            'recurring_invoice', 'soffice', default='soffice'))
    if not command or not shutil.which(command[0]):
        raise PDFConverterMissingError(gettext(
                'recurring_invoice.msg_pdf_converter_missing',
                command=command[0] if command else ''))
    return command


# PDF/A-3b (as converter.py exports): the archive format that ZUGFeRD /
# Factur-X embeds its XML in
PDF_A_FILTER = (
    'pdf:writer_pdf_Export:{"SelectPdfVersion":{"type":"long","value":"3"}}')


def _run_soffice(command, directory, filenames):
    """Convert filenames (in directory) to PDF in directory/pdf.
    Returns an error text or None."""
    outdir = os.path.join(directory, 'pdf')
    args = command + [
        '-env:UserInstallation=%s' % _profile_uri(),
        '--headless', '--norestore', '--nolockcheck', '--nodefault',
        '--convert-to', PDF_A_FILTER, '--outdir', outdir] + filenames
    timeout = PDF_TIMEOUT + PDF_TIMEOUT_PER_FILE * len(filenames)
    with _profile_lock:
        # A new session to kill soffice.bin too (soffice is a wrapper)
        try:
            process = subprocess.Popen(
                args, cwd=directory, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)
        except OSError as exception:
            return str(exception)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return f"timed out after {timeout} s"
    if process.returncode:
        lines = output.decode('utf-8', 'replace').strip().splitlines()
        return ': '.join(
            ["exit status %s" % process.returncode] + lines[-1:])


def _pdf_path(directory, filename):
    return pathlib.Path(directory, 'pdf', filename).with_suffix('.pdf')


def _converter_mode():
    mode = config.get('recurring_invoice', 'converter', default='auto')
    if mode not in CONVERTERS:
        raise PDFConverterConfigError(gettext(
                'recurring_invoice.msg_pdf_converter_unknown',
                converter=mode, converters=', '.join(sorted(CONVERTERS))))
    return mode


def _persistent_converter(command, mode):
    """The persistent converter of this process for command, or None when
    the one-shot path converts (mode soffice, or auto after a failed start
    less than CONVERTER_RETRY_START seconds ago)"""
    if mode == 'soffice':
        return None
    python = shlex.split(config.get(
            'recurring_invoice', 'converter_python',
            default=CONVERTER_PYTHON)) or ['']
    failed = _start_failures.get((os.getpid(), tuple(python), tuple(command)))
    if (mode == 'auto' and failed is not None
            and time.monotonic() - failed < CONVERTER_RETRY_START):
        return None
    try:
        max_documents = config.getint(
            'recurring_invoice', 'converter_max_documents',
            default=CONVERTER_MAX_DOCUMENTS)
        timeout = config.getfloat(
            'recurring_invoice', 'converter_timeout',
            default=CONVERTER_TIMEOUT)
    except ValueError as exception:
        raise PDFConverterConfigError(gettext(
                'recurring_invoice.msg_pdf_converter_option',
                reason=str(exception))) from exception
    return get_converter(python, command, max(max_documents, 1), timeout)


def _start_failed(converter, mode, exception):
    "Remember a failed start; in auto mode log once that soffice converts"
    key = (os.getpid(), tuple(converter.python), tuple(converter.soffice))
    if mode == 'auto':
        if key not in _start_failures:
            logger.warning(
                "persistent LibreOffice converter not available, "
                "converting with one soffice start per batch: %s", exception)
        _start_failures[key] = time.monotonic()
    else:
        logger.error(
            "persistent LibreOffice converter not available: %s", exception)


def _convert(command, directory, filenames):
    """Convert filenames (in directory) to PDF in directory/pdf.
    Returns {filename: reason} of the files without PDF (reason None if
    unknown)."""
    os.makedirs(os.path.join(directory, 'pdf'), exist_ok=True)
    mode = _converter_mode()
    converter = _persistent_converter(command, mode)
    failures = {}
    todo = list(filenames)
    if converter is not None:
        with converter.lock:
            try:
                # Health check: dead or hung (no answer) restarts it
                converter.ensure()
                while todo:
                    filename = todo[0]
                    try:
                        converter.convert(
                            os.path.join(directory, filename),
                            _pdf_path(directory, filename))
                    except ConverterStartError:
                        raise
                    except ConverterError as exception:
                        failures[filename] = str(exception)
                    todo.pop(0)
            except ConverterStartError as exception:
                _start_failed(converter, mode, exception)
                if mode == 'persistent':
                    for filename in todo:
                        failures[filename] = (
                            "LibreOffice converter could not start: %s"
                            % exception)
                    todo = []
            else:
                _start_failures.pop((os.getpid(), tuple(converter.python),
                        tuple(converter.soffice)), None)
    # One-shot path: one soffice start for all, one more for the missing
    error = None
    for _ in range(2):
        todo = [f for f in todo
            if not _pdf_path(directory, f).exists()]
        if not todo:
            break
        error = _run_soffice(command, directory, todo)
        if error:
            logger.warning("soffice failed: %s", error)
    for filename in todo:
        failures[filename] = error
    return failures


class InvoiceReport(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    @classmethod
    def render_pdf_cache(cls, invoices):
        """Store a PDF as report cache of the posted customer invoices that
        have none yet.

        An existing cache in another format (the ODT stored by
        print_invoice) is converted, not rendered again.  On failure the
        PDFs of the batches converted so far are saved, then
        PDFConverterMissingError or PDFConversionError is raised."""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        ActionReport = pool.get('ir.action.report')
        ModelData = pool.get('ir.model.data')

        invoices = [i for i in Invoice.browse(invoices)
            if i.invoice_report_versioned and i.invoice_report_format != 'pdf']
        if not invoices:
            return
        command = _soffice_command()
        _converter_mode()
        action = ActionReport(
            ModelData.get_id('account_invoice', 'report_invoice'))
        cls.check_access(action, Invoice.__name__, [i.id for i in invoices])

        for sub_invoices in grouped_slice(invoices, PDF_BATCH_SIZE):
            sub_invoices = list(sub_invoices)
            with tempfile.TemporaryDirectory(
                    prefix='trytond-invoice-pdf-') as directory:
                filenames = cls._write_report_files(
                    action, sub_invoices, directory)
                failures = _convert(command, directory, list(
                        filenames.values()))
                converted, failed = [], []
                for invoice, filename in filenames.items():
                    path = cls._pdf_path(directory, filename)
                    if filename not in failures and path.exists():
                        invoice.invoice_report_cache = (
                            Invoice.invoice_report_cache.cast(
                                cls._pdf_cache(invoice, path.read_bytes())))
                        invoice.invoice_report_format = 'pdf'
                        converted.append(invoice)
                    else:
                        failed.append(invoice)
            Invoice.save(converted)
            if failed:
                reasons = []
                for invoice in failed:
                    reason = failures.get(filenames[invoice])
                    if reason and reason not in reasons:
                        reasons.append(reason)
                if not reasons:
                    reasons = ["no PDF for %s of %s files" % (
                            len(failed), len(filenames))]
                raise PDFConversionError(gettext(
                        'recurring_invoice.msg_pdf_conversion_failed',
                        invoices=', '.join(i.rec_name for i in failed[:5]),
                        count=len(failed),
                        reason='; '.join(reasons[:3])))

    @classmethod
    def _pdf_cache(cls, invoice, pdf):
        "Return what is stored as the PDF of the invoice converted to pdf"
        return pdf

    @classmethod
    def _write_report_files(cls, action, invoices, directory):
        """Write the report of the invoices in directory: their cache or else
        the template rendered as InvoiceReport._execute does, unconverted.
        Returns {invoice: filename}"""
        filenames = {}
        to_render = []
        for invoice in invoices:
            if invoice.invoice_report_cache:
                filenames[invoice] = cls._write_report_file(
                    directory, invoice,
                    invoice.invoice_report_format or action.template_extension,
                    invoice.invoice_report_cache)
            else:
                to_render.append(invoice)
        if to_render:
            data = {'model': 'account.invoice', 'action_id': action.id}
            # Nothing is saved while rendering, so the records of all the
            # invoices share their cache
            with Transaction().set_context(address_with_party=True):
                records = cls._get_records(
                    [i.id for i in to_render], data['model'], data)
                for invoice, record in zip(to_render, records):
                    header = dict(cls.header_key(record, data))
                    # set_lang of the template may change the context
                    with Transaction().set_context(Transaction().context):
                        report_context = cls.get_context(
                            [record], header, data)
                        content = cls.render(action, report_context)
                    filenames[invoice] = cls._write_report_file(
                        directory, invoice, action.template_extension,
                        content)
        return filenames

    @staticmethod
    def _write_report_file(directory, invoice, extension, content):
        filename = '%s.%s' % (invoice.id, extension)
        if isinstance(content, str):
            content = content.encode('utf-8')
        with open(os.path.join(directory, filename), 'wb') as fp:
            fp.write(content)
        return filename

    @staticmethod
    def _pdf_path(directory, filename):
        return _pdf_path(directory, filename)
