# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Real servers on 127.0.0.1 for the upload tests (no mocks)

Each server is a context manager: it starts on a free port in a daemon
thread in __enter__ and stops in __exit__.

* WebDAVServer: wsgidav on a temporary directory served by cheroot
* GraphStub: HTTPS stub of the Microsoft identity platform (OpenID
  configuration, client credentials token) and of Microsoft Graph's drive
  uploads; requests must trust its ``ca_file`` (REQUESTS_CA_BUNDLE)
* DatevStub: HTTP stub of a client credentials token endpoint and of
  DATEV's accounting:extf-files import
"""
import base64
import datetime as dt
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import urllib.parse

__all__ = ['free_port', 'WebDAVServer', 'GraphStub', 'DatevStub']

_cert_lock = threading.Lock()
_cert_files = None


def free_port():
    "Return a TCP port of 127.0.0.1 that is free now"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class _Server:
    "Base of the servers: a context manager"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


class WebDAVServer(_Server):
    "A WebDAV server (wsgidav, cheroot) with basic authentication"

    def __init__(self, username='dav', password='secret'):
        self.username = username
        self.password = password
        self.root = None
        self.url = None
        self._server = None
        self._thread = None

    def start(self):
        from cheroot import wsgi
        from wsgidav.fs_dav_provider import FilesystemProvider
        from wsgidav.wsgidav_app import WsgiDAVApp
        self.root = tempfile.mkdtemp(prefix='turnus-dav-')
        config = {
            'host': '127.0.0.1',
            'port': 0,
            'provider_mapping': {'/dav': FilesystemProvider(self.root)},
            'simple_dc': {'user_mapping': {'*': {
                        self.username: {'password': self.password},
                        }}},
            'http_authenticator': {
                'accept_basic': True,
                'accept_digest': False,
                'default_to_digest': False,
                },
            'verbose': 0,
            'logging': {'enable': False},
            'dir_browser': {'enable': False},
            'property_manager': True,
            'lock_storage': True,
            }
        app = WsgiDAVApp(config)
        self._server = wsgi.Server(
            ('127.0.0.1', 0), app, numthreads=4, timeout=5,
            shutdown_timeout=1)
        ready = threading.Event()

        def run():
            # Prepared in this daemon thread, cheroot's workers are daemon
            # threads too: a test that fails before stop() never hangs
            try:
                self._server.prepare()
            finally:
                ready.set()
            self._server.serve()
        self._thread = threading.Thread(
            target=run, name='webdav-server', daemon=True)
        self._thread.start()
        ready.wait(10)
        port = self._server.bind_addr[1]
        self.url = f'http://127.0.0.1:{port}/dav/'
        return self

    def stop(self):
        if self._server:
            self._server.stop()
            self._thread.join(5)
            self._server = self._thread = None
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    def files(self):
        "Return the sorted relative paths of the stored files"
        result = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                result.append(
                    os.path.relpath(path, self.root).replace(os.sep, '/'))
        return sorted(result)

    def read(self, path):
        "Return the bytes of the stored file at the relative path"
        with open(os.path.join(self.root, *path.split('/')), 'rb') as fp:
            return fp.read()


def _certificate():
    "Return the paths of a CA certificate and a server certificate and key"
    global _cert_files
    with _cert_lock:
        if _cert_files:
            return _cert_files
        import atexit
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, 'Turnus test CA')])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(
            ca_key.public_key())
        ca_cert = (x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
            .subject_name(x509.Name(
                    [x509.NameAttribute(NameOID.COMMON_NAME, '127.0.0.1')]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                        x509.DNSName('localhost'),
                        x509.IPAddress(ipaddress.ip_address('127.0.0.1')),
                        ]), critical=False)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None),
                critical=True)
            .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=False,
                    crl_sign=False, content_commitment=False,
                    key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False,
                    decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier
                .from_issuer_subject_key_identifier(ca_ski),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
        directory = tempfile.mkdtemp(prefix='turnus-tls-')
        atexit.register(shutil.rmtree, directory, True)
        ca_file = os.path.join(directory, 'ca.pem')
        cert_file = os.path.join(directory, 'server.pem')
        key_file = os.path.join(directory, 'server.key')
        with open(ca_file, 'wb') as fp:
            fp.write(ca_cert.public_bytes(serialization.Encoding.PEM))
        with open(cert_file, 'wb') as fp:
            fp.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_file, 'wb') as fp:
            fp.write(key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()))
        _cert_files = ca_file, cert_file, key_file
        return _cert_files


class _Handler(http.server.BaseHTTPRequestHandler):
    "Request handler that passes the requests to its server's stub"
    # HTTP/1.0: one request a connection, no thread waits on a client
    protocol_version = 'HTTP/1.0'
    timeout = 5

    def log_message(self, format, *args):
        pass

    def _dispatch(self):
        stub = self.server.stub
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        try:
            status, headers, payload = stub.handle(
                self.command, urllib.parse.unquote(split.path),
                urllib.parse.parse_qs(split.query), self.headers, body)
        except Exception as exception:
            status, headers, payload = 500, {}, {'error': {
                    'code': 'internalError', 'message': str(exception)}}
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            headers.setdefault('Content-Type', 'application/json')
        payload = payload or b''
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class _HTTPStub(_Server):
    "A stub served by http.server, with TLS when tls is set"
    tls = False
    name = 'stub'

    def __init__(self):
        self.mode = 'ok'
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self.ca_file = None
        self.base_url = None

    def start(self):
        httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        httpd.stub = self
        scheme = 'http'
        if self.tls:
            self.ca_file, cert_file, key_file = _certificate()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            httpd.socket = context.wrap_socket(
                httpd.socket, server_side=True)
            scheme = 'https'
        self._httpd = httpd
        self.base_url = f'{scheme}://127.0.0.1:{httpd.server_address[1]}'
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={'poll_interval': 0.05},
            name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = self._thread = None

    def handle(self, method, path, query, headers, body):
        raise NotImplementedError

    @staticmethod
    def _bearer(headers):
        value = headers.get('Authorization') or ''
        if value[:7].lower() == 'bearer ':
            return value[7:].strip()


class GraphStub(_HTTPStub):
    """HTTPS stub of the Microsoft identity platform and Graph drives

    mode: 'ok', 'unauthorized' (uploads get 401) or 'error' (uploads get
    503)"""
    tls = True
    name = 'graph-stub'
    _item = re.compile(
        r'^/v1\.0/(?:drives/[^/]+|sites/[^/]+/drive)/root:/(.+):/'
        r'(content|createUploadSession)$')

    def __init__(self, mode='ok', client_id='app', client_secret='s3cret'):
        super().__init__()
        self.mode = mode
        self.client_id = client_id
        self.client_secret = client_secret
        self.files = {}
        self.token_requests = 0
        self.tokens = set()
        self._sessions = {}

    @property
    def authority(self):
        return self.base_url

    @property
    def graph_url(self):
        return f'{self.base_url}/v1.0'

    def handle(self, method, path, query, headers, body):
        parts = path.split('/')
        if (method == 'GET' and len(parts) == 5
                and path.endswith('/v2.0/.well-known/openid-configuration')):
            return 200, {}, self._openid_configuration(parts[1])
        if (method == 'POST' and len(parts) == 5
                and path.endswith('/oauth2/v2.0/token')):
            return self._token(headers, body)
        if method == 'PUT' and path.startswith('/upload/'):
            return self._session_put(path[len('/upload/'):], headers, body)
        match = self._item.match(path)
        if match:
            if method == 'PUT' and match.group(2) == 'content':
                return self._upload(match.group(1), headers, body)
            if method == 'POST' and match.group(2) == 'createUploadSession':
                return self._create_session(match.group(1), headers)
        return 404, {}, {'error': {
                'code': 'itemNotFound', 'message': f'{method} {path}'}}

    def _openid_configuration(self, tenant):
        base = f'{self.authority}/{tenant}'
        return {
            'issuer': f'{base}/v2.0',
            'authorization_endpoint': f'{base}/oauth2/v2.0/authorize',
            'token_endpoint': f'{base}/oauth2/v2.0/token',
            'token_endpoint_auth_methods_supported': [
                'client_secret_post', 'client_secret_basic'],
            'response_types_supported': ['code', 'id_token', 'token'],
            'subject_types_supported': ['pairwise'],
            'id_token_signing_alg_values_supported': ['RS256'],
            'jwks_uri': f'{base}/discovery/v2.0/keys',
            'tenant_region_scope': 'EU',
            }

    def _token(self, headers, body):
        form = urllib.parse.parse_qs(body.decode())
        client_id = (form.get('client_id') or [None])[0]
        client_secret = (form.get('client_secret') or [None])[0]
        basic = _basic(headers)
        if basic:
            client_id, client_secret = basic
        with self._lock:
            self.token_requests += 1
        if (form.get('grant_type') or [None])[0] != 'client_credentials':
            return 400, {}, {
                'error': 'unsupported_grant_type',
                'error_description': 'AADSTS70003: grant type not supported'}
        if (client_id != self.client_id
                or client_secret != self.client_secret):
            return 401, {}, {
                'error': 'invalid_client',
                'error_description': (
                    'AADSTS7000215: Invalid client secret provided.')}
        token = 'graph-' + secrets.token_urlsafe(16)
        with self._lock:
            self.tokens.add(token)
        return 200, {}, {
            'token_type': 'Bearer', 'expires_in': 3599,
            'ext_expires_in': 3599, 'access_token': token}

    def _refused(self, headers):
        "Return the error response of an upload or None"
        if (self.mode == 'unauthorized'
                or self._bearer(headers) not in self.tokens):
            return 401, {}, {'error': {
                    'code': 'InvalidAuthenticationToken',
                    'message': 'Access token validation failure.'}}
        if self.mode == 'error':
            return self._service_error()

    @staticmethod
    def _service_error():
        return 503, {'Retry-After': '1'}, {'error': {
                'code': 'serviceNotAvailable',
                'message': 'The service is not available.'}}

    def _store(self, path, data):
        with self._lock:
            created = path not in self.files
            self.files[path] = data
        name = path.rsplit('/', 1)[-1]
        return 201 if created else 200, {}, {
            'id': 'item-' + str(abs(hash(path)) % 10 ** 8),
            'name': name,
            'size': len(data),
            'webUrl': (
                f'{self.base_url}/sites/test/Shared%20Documents/'
                + urllib.parse.quote(path)),
            }

    def _upload(self, path, headers, body):
        return self._refused(headers) or self._store(path, body)

    def _create_session(self, path, headers):
        refused = self._refused(headers)
        if refused:
            return refused
        session = secrets.token_urlsafe(12)
        with self._lock:
            self._sessions[session] = [path, bytearray()]
        return 200, {}, {
            'uploadUrl': f'{self.base_url}/upload/{session}',
            'expirationDateTime': (
                dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
                ).isoformat(),
            'nextExpectedRanges': ['0-'],
            }

    def _session_put(self, session, headers, body):
        if self.mode == 'error':
            return self._service_error()
        with self._lock:
            entry = self._sessions.get(session)
        if entry is None:
            return 404, {}, {'error': {
                    'code': 'itemNotFound', 'message': 'no upload session'}}
        match = re.match(
            r'bytes (\d+)-(\d+)/(\d+)$', headers.get('Content-Range') or '')
        if not match:
            return 400, {}, {'error': {
                    'code': 'invalidRequest', 'message': 'Content-Range'}}
        start, end, total = map(int, match.groups())
        path, data = entry
        if start != len(data) or end - start + 1 != len(body):
            return 416, {}, {'error': {
                    'code': 'invalidRange', 'message': 'bad range'}}
        data.extend(body)
        if len(data) < total:
            return 202, {}, {'nextExpectedRanges': [f'{len(data)}-']}
        with self._lock:
            self._sessions.pop(session, None)
        return self._store(path, bytes(data))


def _basic(headers):
    "Return the form-decoded (client_id, secret) of Basic auth or None"
    value = headers.get('Authorization') or ''
    if value[:6].lower() != 'basic ':
        return None
    try:
        decoded = base64.b64decode(value[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, _, secret = decoded.partition(':')
    return (
        urllib.parse.unquote_plus(client_id),
        urllib.parse.unquote_plus(secret))


class DatevStub(_HTTPStub):
    """HTTP stub of a token endpoint and DATEV's file imports

    ``POST /token``: client credentials with HTTP Basic;
    ``POST /clients/{client}/extf-files/import``: an EXTF file;
    ``POST /clients/{client}/documents``: a document package.
    mode: 'ok', 'unauthorized' (uploads get 401) or 'error' (503)"""
    name = 'datev-stub'
    _upload_path = re.compile(
        r'^/clients/([^/]+)/(extf-files/import|documents)$')

    def __init__(self, client_id='datev', client_secret='s3cret',
            mode='ok'):
        super().__init__()
        self.mode = mode
        self.client_id = client_id
        self.client_secret = client_secret
        self.uploads = []
        self.token_requests = 0
        self.tokens = set()

    @property
    def url(self):
        return self.base_url

    @property
    def token_url(self):
        return f'{self.base_url}/token'

    def handle(self, method, path, query, headers, body):
        if method == 'POST' and path == '/token':
            return self._token(headers, body)
        match = self._upload_path.match(path)
        if method == 'POST' and match:
            return self._upload(
                match.group(1), match.group(2), headers, body)
        if method == 'GET' and '/extf-files/jobs/' in path:
            return 200, {}, {
                'id': path.rsplit('/', 1)[-1], 'result': 'succeeded'}
        return 404, {}, {'error': 'not_found', 'error_description': path}

    def _token(self, headers, body):
        with self._lock:
            self.token_requests += 1
        form = urllib.parse.parse_qs(body.decode())
        if (form.get('grant_type') or [None])[0] != 'client_credentials':
            return 400, {}, {'error': 'unsupported_grant_type'}
        if _basic(headers) != (self.client_id, self.client_secret):
            return 401, {'WWW-Authenticate': 'Basic realm="datev"'}, {
                'error': 'invalid_client',
                'error_description': 'client authentication failed'}
        token = 'datev-' + secrets.token_urlsafe(16)
        with self._lock:
            self.tokens.add(token)
        return 200, {}, {
            'access_token': token, 'token_type': 'Bearer',
            'expires_in': 900}

    def _upload(self, client, kind, headers, body):
        if (self.mode == 'unauthorized'
                or self._bearer(headers) not in self.tokens):
            return 401, {}, {
                'error': 'invalid_token',
                'error_description': 'The access token is invalid.'}
        if self.mode == 'error':
            return 503, {}, {
                'error': 'service_unavailable',
                'error_description': 'The service is not available.'}
        filename = headers.get('Filename')
        if not filename:
            return 400, {}, {
                'error': 'invalid_request',
                'error_description': 'header Filename missing'}
        job = secrets.token_hex(16)
        with self._lock:
            self.uploads.append((client, filename, body))
        if kind == 'documents':
            return 201, {}, {'id': job}
        return 202, {
            'Location': f'{self.base_url}/clients/{client}/extf-files/jobs/'
            f'{job}'}, b''
