# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The HTTP transports (uploads.py) against real local servers: no
database."""
import os
import time
import unittest

from trytond.modules.recurring_invoice import uploads
from trytond.modules.recurring_invoice.tests.servers import (
    DatevStub, GraphStub, WebDAVServer, free_port)
from trytond.modules.recurring_invoice.uploads import UploadError

PDF = b'%PDF-1.4\n% test\n'


class WebDAVTestCase(unittest.TestCase):
    "Upload to WebDAV"

    @classmethod
    def setUpClass(cls):
        cls.server = WebDAVServer(username='dav', password='p4ss-w0rd')
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    def put(self, path, data=PDF, **kwargs):
        kwargs.setdefault('username', 'dav')
        kwargs.setdefault('password', 'p4ss-w0rd')
        return uploads.webdav_put(
            self.server.url, path, data, timeout=5, **kwargs)

    def test_creates_folders(self):
        "Upload creates the missing folders"
        url = self.put('2026/01/RE-1.pdf')
        self.assertEqual(url, self.server.url + '2026/01/RE-1.pdf')
        self.assertIn('2026/01/RE-1.pdf', self.server.files())
        self.assertEqual(self.server.read('2026/01/RE-1.pdf'), PDF)

    def test_overwrite(self):
        "Upload to the same path overwrites the file"
        self.put('over/RE-2.pdf', b'first')
        self.put('over/RE-2.pdf', b'second')
        self.assertEqual(
            [f for f in self.server.files() if f.startswith('over/')],
            ['over/RE-2.pdf'])
        self.assertEqual(self.server.read('over/RE-2.pdf'), b'second')

    def test_umlauts_spaces(self):
        "Upload to a path with umlauts and spaces"
        url = self.put('2026/Müller GmbH/RE 3 ä.pdf')
        self.assertIn('2026/Müller GmbH/RE 3 ä.pdf', self.server.files())
        self.assertIn('M%C3%BCller%20GmbH/RE%203%20%C3%A4.pdf', url)
        self.assertEqual(self.server.read('2026/Müller GmbH/RE 3 ä.pdf'), PDF)

    def test_wrong_password(self):
        "Wrong password raises UploadError 401 without the password"
        with self.assertRaises(UploadError) as cm:
            self.put('secret/RE-4.pdf', password='wr0ng-pa55')
        self.assertEqual(cm.exception.status, 401)
        self.assertIn('unauthorized', str(cm.exception))
        self.assertNotIn('wr0ng-pa55', str(cm.exception))
        self.assertNotIn('wr0ng-pa55', repr(cm.exception))
        self.assertNotIn('secret/RE-4.pdf', self.server.files())

    def test_invalid_path(self):
        "A path with '..' is refused"
        with self.assertRaises(UploadError):
            self.put('../RE-5.pdf')

    def test_server_down(self):
        "Server down raises UploadError without status"
        url = f'http://127.0.0.1:{free_port()}/dav/'
        with self.assertRaises(UploadError) as cm:
            uploads.webdav_put(
                url, 'a/RE-6.pdf', PDF, username='dav',
                password='p4ss-w0rd', timeout=2)
        self.assertIsNone(cm.exception.status)
        self.assertNotIn('p4ss-w0rd', str(cm.exception))


class _CATestCase(unittest.TestCase):
    "Trust the CA of the stubs while the test class runs"

    @classmethod
    def start(cls, server):
        server.__enter__()
        cls.addClassCleanup(server.__exit__, None, None, None)
        if getattr(server, 'ca_file', None):
            previous = os.environ.get('REQUESTS_CA_BUNDLE')
            os.environ['REQUESTS_CA_BUNDLE'] = server.ca_file
            cls.addClassCleanup(_restore, 'REQUESTS_CA_BUNDLE', previous)
        return server


def _restore(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


class GraphTestCase(_CATestCase):
    "Upload to Microsoft Graph"

    @classmethod
    def setUpClass(cls):
        cls.stub = cls.start(
            GraphStub(client_id='app', client_secret='s3cret'))

    def setUp(self):
        self.stub.mode = 'ok'
        uploads._msal_apps.clear()

    @property
    def drive_url(self):
        return f'{self.stub.graph_url}/drives/b!drive'

    def token(self, secret='s3cret'):
        return uploads.graph_token(
            'tenant-1', 'app', secret, authority=self.stub.authority,
            timeout=5)

    def test_upload_overwrite_token_reused(self):
        "Upload twice with one token request and overwrite"
        requests_before = self.stub.token_requests
        url = uploads.graph_put(
            self.drive_url, '2026/Müller GmbH/RE-1.pdf', b'first',
            self.token(), timeout=5)
        uploads.graph_put(
            self.drive_url, '2026/Müller GmbH/RE-1.pdf', b'second',
            self.token(), timeout=5)
        self.assertEqual(self.stub.token_requests - requests_before, 1)
        self.assertEqual(
            [p for p in self.stub.files if p.startswith('2026/')],
            ['2026/Müller GmbH/RE-1.pdf'])
        self.assertEqual(
            self.stub.files['2026/Müller GmbH/RE-1.pdf'], b'second')
        self.assertIn('M%C3%BCller%20GmbH/RE-1.pdf', url)

    def test_site_drive(self):
        "Upload to the drive of a site"
        uploads.graph_put(
            f'{self.stub.graph_url}/sites/site-1/drive', 'site/RE-2.pdf',
            PDF, self.token(), timeout=5)
        self.assertEqual(self.stub.files['site/RE-2.pdf'], PDF)

    def test_upload_session(self):
        "Upload a file over 4 MB through an upload session"
        data = os.urandom(uploads.GRAPH_SIMPLE_LIMIT + 1000)
        url = uploads.graph_put(
            self.drive_url, 'big/RE-3.pdf', data, self.token(), timeout=5)
        self.assertEqual(self.stub.files['big/RE-3.pdf'], data)
        self.assertTrue(url.endswith('big/RE-3.pdf'))

    def test_wrong_secret(self):
        "Wrong secret raises UploadError without the secret"
        with self.assertRaises(UploadError) as cm:
            self.token(secret='wr0ng-s3cret')
        self.assertIn('invalid_client', str(cm.exception))
        self.assertNotIn('wr0ng-s3cret', str(cm.exception))
        self.assertNotIn('wr0ng-s3cret', repr(cm.exception))
        # The right secret works after the wrong one
        self.assertTrue(self.token())

    def test_unauthorized(self):
        "Unauthorized upload raises UploadError 401"
        token = self.token()
        self.stub.mode = 'unauthorized'
        with self.assertRaises(UploadError) as cm:
            uploads.graph_put(
                self.drive_url, 'no/RE-4.pdf', PDF, token, timeout=5)
        self.assertEqual(cm.exception.status, 401)
        self.assertIn('InvalidAuthenticationToken', str(cm.exception))
        self.assertNotIn(token, str(cm.exception))
        self.assertNotIn('no/RE-4.pdf', self.stub.files)

    def test_invalid_token(self):
        "Unknown token raises UploadError 401"
        with self.assertRaises(UploadError) as cm:
            uploads.graph_put(
                self.drive_url, 'no/RE-5.pdf', PDF, 'forged', timeout=5)
        self.assertEqual(cm.exception.status, 401)

    def test_error(self):
        "Service error raises UploadError 503 with Graph's error"
        token = self.token()
        self.stub.mode = 'error'
        with self.assertRaises(UploadError) as cm:
            uploads.graph_put(
                self.drive_url, 'err/RE-6.pdf', PDF, token, timeout=5)
        self.assertEqual(cm.exception.status, 503)
        self.assertIn('serviceNotAvailable', str(cm.exception))

    def test_upload_session_error(self):
        "Service error on an upload session raises UploadError 503"
        token = self.token()
        self.stub.mode = 'error'
        data = bytes(uploads.GRAPH_SIMPLE_LIMIT + 1)
        with self.assertRaises(UploadError) as cm:
            uploads.graph_put(
                self.drive_url, 'err/RE-8.pdf', data, token, timeout=5)
        self.assertEqual(cm.exception.status, 503)
        self.assertNotIn('err/RE-8.pdf', self.stub.files)

    def test_untrusted_certificate(self):
        "A server certificate that is not trusted raises UploadError"
        previous = os.environ.pop('REQUESTS_CA_BUNDLE', None)
        self.addCleanup(_restore, 'REQUESTS_CA_BUNDLE', previous)
        with self.assertRaises(UploadError) as cm:
            uploads.graph_put(
                self.drive_url, 'tls/RE-7.pdf', PDF, 'token', timeout=5)
        self.assertIsNone(cm.exception.status)
        self.assertNotIn('tls/RE-7.pdf', self.stub.files)


class DatevTestCase(_CATestCase):
    "Upload to DATEV"

    @classmethod
    def setUpClass(cls):
        cls.stub = cls.start(
            DatevStub(client_id='datev', client_secret='s3cret'))

    def setUp(self):
        self.stub.mode = 'ok'
        uploads._tokens.clear()

    def token(self, secret='s3cret', scope='accounting:extf-files'):
        return uploads.client_credentials_token(
            self.stub.token_url, 'datev', secret, scope=scope, timeout=5)

    def test_extf_upload(self):
        "Upload an EXTF file and get the job id"
        requests_before = self.stub.token_requests
        token = self.token()
        self.assertEqual(self.token(), token)
        self.assertEqual(self.stub.token_requests - requests_before, 1)
        job = uploads.datev_upload(
            f'{self.stub.url}/clients/455148-1/extf-files/import', token,
            'EXTF_Buchungsstapel.csv', b'"EXTF";700;21', timeout=5)
        self.assertRegex(job, r'^[0-9a-f]{32}$')
        self.assertEqual(self.stub.uploads[-1], (
                '455148-1', 'EXTF_Buchungsstapel.csv', b'"EXTF";700;21'))

    def test_document_package(self):
        "Upload a document package and get its id"
        job = uploads.datev_upload(
            f'{self.stub.url}/clients/455148-1/documents', self.token(),
            'Belege.zip', b'PK\x03\x04', timeout=5)
        self.assertTrue(job)
        self.assertEqual(
            self.stub.uploads[-1][1:], ('Belege.zip', b'PK\x03\x04'))

    def test_token_expiry(self):
        "A token is requested again when it expires"
        token = self.token()
        key = (self.stub.token_url, 'datev', 'accounting:extf-files')
        digest, _, _ = uploads._tokens[key]
        uploads._tokens[key] = (digest, token, time.monotonic() - 1)
        self.assertNotEqual(self.token(), token)

    def test_wrong_secret(self):
        "Wrong secret raises UploadError 401 without the secret"
        with self.assertRaises(UploadError) as cm:
            self.token(secret='wr0ng:s3cret')
        self.assertEqual(cm.exception.status, 401)
        self.assertIn('invalid_client', str(cm.exception))
        self.assertNotIn('wr0ng', str(cm.exception))

    def test_unauthorized(self):
        "Unauthorized upload raises UploadError 401 without the token"
        token = self.token()
        self.stub.mode = 'unauthorized'
        with self.assertRaises(UploadError) as cm:
            uploads.datev_upload(
                f'{self.stub.url}/clients/455148-1/extf-files/import',
                token, 'EXTF_1.csv', b'EXTF', timeout=5)
        self.assertEqual(cm.exception.status, 401)
        self.assertNotIn(token, str(cm.exception))

    def test_error(self):
        "Service error raises UploadError 503"
        token = self.token()
        self.stub.mode = 'error'
        with self.assertRaises(UploadError) as cm:
            uploads.datev_upload(
                f'{self.stub.url}/clients/455148-1/extf-files/import',
                token, 'EXTF_1.csv', b'EXTF', timeout=5)
        self.assertEqual(cm.exception.status, 503)
