# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The invoice PDF rendered for many invoices with one LibreOffice start.

Core converts each report with its own ``soffice`` start (about 1 s); here
the ODT files of a batch are written to one directory and converted by one
``soffice --convert-to pdf`` call.  The PDF is stored as the invoice report
cache, so later prints, mails and uploads use the same file.
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

import trytond.config as config
from trytond.i18n import gettext
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .exceptions import PDFConversionError, PDFConverterMissingError

logger = logging.getLogger(__name__)

# Files per soffice call, and its timeout: base + per file (seconds)
PDF_BATCH_SIZE = 50
PDF_TIMEOUT = 60
PDF_TIMEOUT_PER_FILE = 2

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


def _run_soffice(command, directory, filenames):
    """Convert filenames (in directory) to PDF in directory/pdf.
    Returns an error text or None."""
    outdir = os.path.join(directory, 'pdf')
    args = command + [
        '-env:UserInstallation=%s' % _profile_uri(),
        '--headless', '--norestore', '--nolockcheck', '--nodefault',
        '--convert-to', 'pdf', '--outdir', outdir] + filenames
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
        action = ActionReport(
            ModelData.get_id('account_invoice', 'report_invoice'))
        cls.check_access(action, Invoice.__name__, [i.id for i in invoices])

        for sub_invoices in grouped_slice(invoices, PDF_BATCH_SIZE):
            sub_invoices = list(sub_invoices)
            with tempfile.TemporaryDirectory(
                    prefix='trytond-invoice-pdf-') as directory:
                filenames = cls._write_report_files(
                    action, sub_invoices, directory)
                error = None
                for _ in range(2):
                    todo = [f for i, f in filenames.items()
                        if not cls._pdf_path(directory, f).exists()]
                    if not todo:
                        break
                    error = _run_soffice(command, directory, todo)
                    if error:
                        logger.warning("soffice failed: %s", error)
                converted, failed = [], []
                for invoice, filename in filenames.items():
                    path = cls._pdf_path(directory, filename)
                    if path.exists():
                        invoice.invoice_report_cache = (
                            Invoice.invoice_report_cache.cast(
                                path.read_bytes()))
                        invoice.invoice_report_format = 'pdf'
                        converted.append(invoice)
                    else:
                        failed.append(invoice)
            Invoice.save(converted)
            if failed:
                if not error:
                    error = "no PDF for %s of %s files" % (
                        len(failed), len(filenames))
                raise PDFConversionError(gettext(
                        'recurring_invoice.msg_pdf_conversion_failed',
                        invoices=', '.join(i.rec_name for i in failed[:5]),
                        count=len(failed),
                        reason=error))

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
        return pathlib.Path(directory, 'pdf', filename).with_suffix('.pdf')
