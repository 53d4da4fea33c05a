# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A persistent LibreOffice converter per process.

The trytond process (client, ``Converter``) starts this file as a script
with a Python that can import ``uno`` (Debian: ``/usr/bin/python3`` with
``python3-uno``; the venv's Python usually cannot).  The script (listener,
``serve``) starts ``soffice --accept=pipe,...`` with a user profile of its
own, connects to it through UNO and converts one document per request.
Client and listener talk JSON lines on the listener's stdin and stdout: no
TCP port, and the listener ends when the client goes away (end of stdin).

The client runs the listener in a new session, so killing its process
group kills LibreOffice too (a hang, a restart, the exit of the process).

Only the standard library is imported at module level: the listener runs
outside trytond.
"""
import atexit
import json
import logging
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

logger = logging.getLogger(__name__)

# Seconds to wait for LibreOffice to accept UNO connections, and for a ping
START_TIMEOUT = 60
PING_TIMEOUT = 5
# Seconds a listener gets to end LibreOffice cleanly on stop
STOP_TIMEOUT = 5

PDF_FILTERS = [
    ('com.sun.star.text.TextDocument', 'writer_pdf_Export'),
    ('com.sun.star.sheet.SpreadsheetDocument', 'calc_pdf_Export'),
    ('com.sun.star.presentation.PresentationDocument', 'impress_pdf_Export'),
    ('com.sun.star.drawing.DrawingDocument', 'draw_pdf_Export'),
    ]


def group_pids(pgid):
    """The pids of the live processes (zombies left out) of process group
    pgid, its leader included"""
    pids = []
    try:
        names = os.listdir('/proc')
    except OSError:
        # No procfs: the group as a whole
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat') as fp:
                stat = fp.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...
        fields = stat.rsplit(')', 1)[-1].split()
        if (len(fields) > 2 and fields[0] not in 'ZX'
                and int(fields[2]) == pgid):
            pids.append(int(name))
    return pids


def group_alive(pgid):
    return bool(group_pids(pgid))


class ConverterError(Exception):
    "A conversion failed; the reason is the message"


class ConverterStartError(ConverterError):
    "The listener or LibreOffice could not be started"


class Converter:
    """A LibreOffice listener owned by this process.

    Not thread-safe: callers serialize (``get_converter`` gives one per
    process with its lock)."""

    def __init__(self, python, soffice, max_documents=200, timeout=30,
            start_timeout=START_TIMEOUT):
        self.python = list(python)
        self.soffice = list(soffice)
        self.max_documents = max_documents
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.lock = threading.Lock()
        self.owner = os.getpid()
        self.process = None
        self.soffice_pid = None
        self.documents = 0
        self.starts = 0
        self.last_used = None
        self._buffer = b''
        self._profile = None
        self._log = None

    @property
    def pid(self):
        "The pid of the listener (None when stopped)"
        return self.process.pid if self.process else None

    @property
    def running(self):
        return bool(self.process) and self.process.poll() is None

    def start(self):
        "Start the listener and wait until LibreOffice accepts documents"
        self.stop()
        if self._profile is None:
            self._profile = tempfile.mkdtemp(
                prefix=f'trytond-recurring-invoice-uno-{os.getpid()}-')
        self._log = open(os.path.join(self._profile, 'listener.log'), 'w+b')
        args = self.python + [
            os.path.abspath(__file__),
            '--profile', pathlib.Path(self._profile, 'user').as_uri(),
            '--pipe', f'trytond-ri-{os.getpid()}-{id(self)}-{self.starts}',
            '--'] + self.soffice
        self.starts += 1
        self.documents = 0
        self._buffer = b''
        try:
            self.process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._log, start_new_session=True)
        except OSError as exception:
            self.process = None
            raise ConverterStartError(
                f"{args[0]}: {exception.strerror or exception}")
        try:
            reply = self._read(self.start_timeout)
        except ConverterError as exception:
            reason = self._log_tail() or str(exception)
            self.kill()
            raise ConverterStartError(reason) from exception
        if not reply.get('ready'):
            self.kill()
            raise ConverterStartError(reply.get('error') or repr(reply))
        self.soffice_pid = reply.get('soffice_pid')
        self.last_used = time.monotonic()
        logger.info(
            "LibreOffice listener %s started (soffice %s, profile %s)",
            self.pid, self.soffice_pid, self._profile)

    def ping(self):
        "True if LibreOffice answers a UNO call within PING_TIMEOUT"
        if not self.running:
            return False
        pid = self.pid
        try:
            return bool(self._request(
                    {'command': 'ping'}, min(PING_TIMEOUT, self.timeout)))
        except ConverterError as exception:
            logger.warning(
                "LibreOffice listener %s: no answer to ping: %s",
                pid, exception)
            return False

    def ensure(self):
        "Start the listener if it is not running or does not answer"
        started = self.process is not None
        if not self.ping():
            if started:
                logger.warning("LibreOffice listener dead or hung: restarting")
            self.start()

    def convert(self, source, target):
        """Convert the file source to the PDF target.

        A failure is tried once more, after a restart if LibreOffice hung
        (killed after timeout seconds) or died; raises ConverterError with
        the reason of the second failure and ConverterStartError when
        LibreOffice can not be restarted."""
        if not self.running or self.documents >= self.max_documents:
            if self.running:
                logger.info(
                    "LibreOffice listener %s converted %s documents: "
                    "restarting", self.pid, self.documents)
            self.start()
        for attempt in range(2):
            pid = self.pid
            try:
                self._request({
                        'command': 'convert',
                        'source': os.path.abspath(source),
                        'target': os.path.abspath(target),
                        }, self.timeout)
                return
            except ConverterError as exception:
                logger.warning(
                    "LibreOffice listener %s: %s failed (attempt %s): %s",
                    pid, os.path.basename(source), attempt + 1, exception)
                if not self.running:
                    # Killed after a timeout, or died
                    self.start()
                if attempt:
                    raise
            finally:
                self.documents += 1

    def _request(self, message, timeout):
        "Send message, return the reply; kill the listener on a timeout"
        if not self.running:
            raise ConverterError("converter not running")
        try:
            self.process.stdin.write(json.dumps(message).encode() + b'\n')
            self.process.stdin.flush()
        except OSError as exception:
            self.kill()
            raise ConverterError(f"converter gone: {exception}")
        reply = self._read(timeout)
        self.last_used = time.monotonic()
        if 'error' in reply:
            raise ConverterError(reply['error'])
        return reply

    def _read(self, timeout):
        "Read one reply line; on a timeout kill the listener"
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b'\n' not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise ConverterError(f"timed out after {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    status = self.process.wait()
                    # LibreOffice too, if it outlived the listener
                    self.kill()
                    raise ConverterError(
                        f"converter exited with status {status}")
                self._buffer += data
        line, self._buffer = self._buffer.split(b'\n', 1)
        return json.loads(line)

    def _log_tail(self):
        "The last line the listener wrote to its log"
        if not self._log:
            return ''
        try:
            self._log.flush()
            self._log.seek(0)
            lines = self._log.read().decode('utf-8', 'replace').splitlines()
        except (OSError, ValueError):
            return ''
        lines = [l.strip() for l in lines if l.strip()]
        return lines[-1] if lines else ''

    def kill(self):
        "Kill the listener and LibreOffice (the whole process group)"
        if self.process:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            # LibreOffice (orphaned now) gone before its profile is reused
            deadline = time.monotonic() + STOP_TIMEOUT
            while (group_alive(self.process.pid)
                    and time.monotonic() < deadline):
                time.sleep(0.02)
            self._close_pipes()
            self.process = None
            self.soffice_pid = None

    def stop(self):
        "End the listener: LibreOffice terminates, else it is killed"
        if self.process and self.owner == os.getpid():
            if self.running:
                try:
                    self.process.stdin.close()
                    self.process.wait(STOP_TIMEOUT)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self.kill()
        if self._log:
            self._log.close()
            self._log = None

    def close(self):
        "Stop and remove the profile"
        if self.owner != os.getpid():
            return
        self.stop()
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def _close_pipes(self):
        for pipe in [self.process.stdin, self.process.stdout]:
            try:
                pipe.close()
            except OSError:
                pass

    def forget(self):
        """Drop an inherited listener without stopping it (forked child:
        the listener belongs to the parent)"""
        if self.process:
            self._close_pipes()
        if self._log:
            self._log.close()
        self.process = self._log = self._profile = None


_converters = {}
_converters_lock = threading.Lock()


def get_converter(python, soffice, max_documents, timeout):
    """The converter of this process for these settings (not started).
    Another setting stops the former one."""
    key = (tuple(python), tuple(soffice))
    with _converters_lock:
        converter = _converters.get(os.getpid())
        if converter is not None and (converter.python, converter.soffice) \
                != tuple(map(list, key)):
            with converter.lock:
                converter.close()
            converter = None
        if converter is None:
            converter = Converter(python, soffice)
            _converters[os.getpid()] = converter
        converter.max_documents = max_documents
        converter.timeout = timeout
        return converter


def _close_all():
    for pid, converter in list(_converters.items()):
        if pid == os.getpid():
            converter.close()


def _forget_all():
    "After a fork: the child starts its own converter when it needs one"
    global _converters_lock
    _converters_lock = threading.Lock()
    for converter in _converters.values():
        converter.forget()
    _converters.clear()


atexit.register(_close_all)
if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_forget_all)


# ------------------------------------------------------------------ listener

def _send(message):
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()


def serve(profile, pipe, soffice):
    "Run LibreOffice and convert what stdin asks for (the listener)"
    try:
        import uno
        from com.sun.star.connection import NoConnectException
    except ImportError as exception:
        _send({'error': f"{sys.executable} can not import uno "
                f"(python3-uno not installed?): {exception}"})
        return 2
    connection = f'pipe,name={pipe};urp;StarOffice.ComponentContext'
    args = soffice + [
        f'-env:UserInstallation={profile}',
        '--headless', '--invisible', '--nologo', '--nodefault',
        '--norestore', '--nolockcheck', '--nofirststartwizard',
        f'--accept={connection}']
    try:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
            stderr=sys.stderr.fileno())
    except OSError as exception:
        _send({'error': f"{soffice[0]}: {exception.strerror or exception}"})
        return 2

    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        'com.sun.star.bridge.UnoUrlResolver', local)
    while True:
        try:
            context = resolver.resolve(f'uno:{connection}')
            break
        except NoConnectException:
            if process.poll() is not None:
                _send({'error': f"{soffice[0]} exited with status "
                        f"{process.returncode} before accepting connections"})
                return 2
            time.sleep(0.05)
    desktop = context.ServiceManager.createInstanceWithContext(
        'com.sun.star.frame.Desktop', context)
    _send({'ready': True, 'soffice_pid': process.pid})

    def property_values(**values):
        result = []
        for name, value in values.items():
            property_ = uno.createUnoStruct('com.sun.star.beans.PropertyValue')
            property_.Name, property_.Value = name, value
            result.append(property_)
        return tuple(result)

    def convert(source, target):
        document = desktop.loadComponentFromURL(
            uno.systemPathToFileUrl(source), '_blank', 0,
            property_values(Hidden=True, ReadOnly=True))
        if document is None:
            raise RuntimeError(f"LibreOffice could not load {source}")
        try:
            for service, filter_name in PDF_FILTERS:
                if document.supportsService(service):
                    break
            else:
                filter_name = 'writer_pdf_Export'
            # PDF/A-3b: the archive format that ZUGFeRD / Factur-X embeds
            # its XML in (the same for the soffice command of
            # invoice_pdf.py)
            document.storeToURL(
                uno.systemPathToFileUrl(target),
                property_values(
                    FilterName=filter_name,
                    FilterData=uno.Any(
                        '[]com.sun.star.beans.PropertyValue',
                        property_values(SelectPdfVersion=3))))
        finally:
            document.close(True)

    status = 0
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request['command'] == 'ping':
                desktop.getFrames().getCount()
            elif request['command'] == 'convert':
                convert(request['source'], request['target'])
            _send({'ok': True})
        except Exception as exception:
            message = getattr(exception, 'Message', '') or str(exception)
            _send({'error': f"{type(exception).__name__}: {message}"})
            if process.poll() is not None:
                status = 1
                break
    # End of stdin: the client stopped or went away
    try:
        desktop.terminate()
    except Exception:
        pass
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
    return status


def main(argv):
    # Not the directory of this file on sys.path: its modules are trytond's
    if sys.path and os.path.abspath(sys.path[0] or '.') == os.path.dirname(
            os.path.abspath(__file__)):
        del sys.path[0]
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--profile', required=True,
        help="URI of the LibreOffice user profile")
    parser.add_argument('--pipe', required=True,
        help="name of the UNO pipe")
    parser.add_argument('soffice', nargs='+',
        help="the soffice command")
    args = parser.parse_args(argv)
    return serve(args.profile, args.pipe, args.soffice)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
