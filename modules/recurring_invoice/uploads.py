# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""HTTP transports that upload files to WebDAV, Microsoft Graph and DATEV.

No Tryton imports: the Tryton layer calls these functions and turns
UploadError into its own messages.  TLS certificates are always verified;
requests honours REQUESTS_CA_BUNDLE (the tests point it to their CA).
Passwords, secrets and tokens never appear in an error or a log line.

DATEV (accounting:extf-files, as far as DATEV's public developer pages
describe the "Buchungsdatenservice" workflow):

* a DATEV-format (EXTF) file is posted to
  ``{base}/clients/{consultant}-{client}/extf-files/import`` (base e.g.
  ``https://accounting-extf-files.api.datev.de/platform/v3``) with the
  headers ``Authorization: Bearer``, ``Filename`` and ``Content-Type:
  application/octet-stream``, the body being the file's bytes;
* the server accepts it as an asynchronous job and answers with the job in
  the ``Location`` header (``.../extf-files/jobs/{job-id}``), which the
  caller may poll with GET to check the import's result;
* the documents (invoice PDFs) belong to accounting:documents
  (``{base}/clients/{client-id}/documents``); datev_upload posts the
  document package the same way (raw bytes and Filename), which the tests'
  stub accepts; DATEV's own endpoint may ask for multipart/form-data.

DATEV's production gateway issues its tokens with "Login mit DATEV"
(authorization code flow); client_credentials_token serves the gateways
and test systems that grant client credentials, any other token can be
given to datev_upload as it is.
"""
import hashlib
import logging
import threading
import time
import urllib.parse

import requests

__all__ = [
    'UploadError', 'webdav_put', 'graph_token', 'graph_put',
    'client_credentials_token', 'datev_upload']

logger = logging.getLogger(__name__)

GRAPH_SCOPE = 'https://graph.microsoft.com/.default'
# Microsoft Graph takes files up to 4 MB with a simple upload
GRAPH_SIMPLE_LIMIT = 4 * 1024 * 1024
# Chunks of an upload session must be multiples of 320 KiB
GRAPH_CHUNK_SIZE = 10 * 320 * 1024
REASON_LENGTH = 200

_local = threading.local()
_lock = threading.Lock()
_msal_apps = {}
_tokens = {}


class UploadError(Exception):
    "An upload the target refused or could not take"

    def __init__(self, status, reason):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self):
        if self.status:
            return f'{self.reason} (HTTP {self.status})'
        return self.reason


def _session():
    "The requests session of the current thread"
    session = getattr(_local, 'session', None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def _digest(secret):
    return hashlib.sha256((secret or '').encode()).hexdigest()


def _scrub(text, *secrets):
    "Return text shortened and without any of the secrets"
    text = ' '.join(str(text).split())
    for secret in secrets:
        if secret:
            text = text.replace(secret, '***')
            quoted = urllib.parse.quote(secret, safe='')
            if quoted != secret:
                text = text.replace(quoted, '***')
    if len(text) > REASON_LENGTH:
        text = text[:REASON_LENGTH - 3] + '...'
    return text


def _network_error(exception, *secrets):
    if isinstance(exception, requests.Timeout):
        reason = 'timeout'
    elif isinstance(exception, requests.exceptions.SSLError):
        reason = 'TLS error'
    elif isinstance(exception, requests.ConnectionError):
        reason = 'connection failed'
    else:
        reason = 'request failed'
    # urllib3 wraps the cause; keep its last line, never the request
    cause = exception
    while cause.__context__ is not None and not isinstance(
            cause, (ConnectionRefusedError, TimeoutError)):
        cause = cause.__context__
    detail = str(cause) if cause is not exception else ''
    if detail:
        reason = f'{reason}: {detail}'
    return UploadError(None, _scrub(reason, *secrets))


def _request(method, url, secrets=(), **kwargs):
    "Send a request or raise UploadError for a network error"
    try:
        return _session().request(method, url, **kwargs)
    except requests.RequestException as exception:
        raise _network_error(exception, *secrets) from None


def _json(response):
    try:
        result = response.json()
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}


def _http_error(response, *secrets, default=None):
    "UploadError for an unsuccessful response"
    status = response.status_code
    body = _json(response)
    error = body.get('error')
    if isinstance(error, dict):
        # Microsoft Graph: {"error": {"code": ..., "message": ...}}
        text = ': '.join(
            str(error[k]) for k in ['code', 'message'] if error.get(k))
    elif error:
        # OAuth 2: {"error": ..., "error_description": ...}
        text = ': '.join(
            str(v) for v in [error, body.get('error_description')] if v)
    else:
        text = ': '.join(
            str(body[k]) for k in ['code', 'message'] if body.get(k))
    if not text:
        text = response.reason or ''
    if status in {401, 403}:
        text = f'unauthorized: {text}' if text else 'unauthorized'
    elif not text:
        text = default or 'upload failed'
    return UploadError(status, _scrub(text, *secrets))


def _quote_path(path):
    "Return the percent-encoded path of '/'-separated segments"
    segments = [s for s in path.replace('\\', '/').split('/') if s]
    if not segments or any(s in {'.', '..'} for s in segments):
        raise UploadError(None, f'invalid path: {path!r}')
    return [urllib.parse.quote(s, safe='') for s in segments]


def webdav_put(url, path, data, username=None, password=None, timeout=30,
        content_type='application/pdf'):
    """Upload data to path below the WebDAV collection url

    The missing parent collections are created and an existing file is
    overwritten.  Return the URL of the file."""
    segments = _quote_path(path)
    if not url.endswith('/'):
        url += '/'
    auth = (username, password or '') if username else None
    secrets = (password,)
    collection = url
    for segment in segments[:-1]:
        collection += segment + '/'
        response = _request(
            'MKCOL', collection, secrets, auth=auth, timeout=timeout)
        # 405: the collection exists already
        if response.status_code not in {200, 201, 204, 405}:
            raise _http_error(response, *secrets, default='MKCOL failed')
    file_url = collection + segments[-1]
    response = _request(
        'PUT', file_url, secrets, data=data, auth=auth, timeout=timeout,
        headers={'Content-Type': content_type})
    if response.status_code not in {200, 201, 204}:
        raise _http_error(response, *secrets, default='PUT failed')
    logger.info("uploaded %d bytes to %s", len(data), file_url)
    return file_url


def _msal_app(tenant, client_id, client_secret, authority, timeout):
    import msal
    key = (authority, tenant, client_id)
    digest = _digest(client_secret)
    with _lock:
        entry = _msal_apps.get(key)
        if entry and entry[0] == digest:
            return entry[1]
    options = {}
    host = urllib.parse.urlsplit(authority).hostname or ''
    if not (host == 'login.microsoftonline.com'
            or host.endswith(('.microsoftonline.com', '.microsoftonline.us',
                    '.partner.microsoftonline.cn'))):
        options.update(validate_authority=False, instance_discovery=False)
    try:
        app = msal.ConfidentialClientApplication(
            client_id, client_credential=client_secret,
            authority=f"{authority.rstrip('/')}/{tenant}",
            timeout=timeout, **options)
    except requests.RequestException as exception:
        raise _network_error(exception, client_secret) from None
    except ValueError as exception:
        raise UploadError(None, _scrub(exception, client_secret)) from None
    with _lock:
        _msal_apps[key] = (digest, app)
    return app


def graph_token(tenant, client_id, client_secret,
        authority='https://login.microsoftonline.com', timeout=30):
    "Return an app-only access token for Microsoft Graph"
    app = _msal_app(tenant, client_id, client_secret, authority, timeout)
    try:
        result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    except requests.RequestException as exception:
        raise _network_error(exception, client_secret) from None
    if 'access_token' in result:
        return result['access_token']
    reason = ': '.join(
        str(result[k]) for k in ['error', 'error_description']
        if result.get(k)) or 'no token'
    raise UploadError(None, _scrub(reason, client_secret))


def _graph_item(response, url):
    item = _json(response)
    return item.get('webUrl') or url


def graph_put(drive_url, path, data, token, timeout=30,
        content_type='application/pdf'):
    """Upload data to path of the drive at drive_url (Microsoft Graph)

    An existing file is replaced.  Files over 4 MB go through an upload
    session.  Return the item's webUrl."""
    item_url = (
        f"{drive_url.rstrip('/')}/root:/{'/'.join(_quote_path(path))}:")
    if len(data) > GRAPH_SIMPLE_LIMIT:
        return _graph_session_put(item_url, data, token, timeout)
    response = _request(
        'PUT', item_url + '/content?@microsoft.graph.conflictBehavior=replace',
        (token,), data=data, timeout=timeout, headers={
            'Authorization': f'Bearer {token}',
            'Content-Type': content_type,
            })
    if response.status_code not in {200, 201}:
        raise _http_error(response, token)
    logger.info("uploaded %d bytes to %s", len(data), item_url)
    return _graph_item(response, item_url)


def _graph_session_put(item_url, data, token, timeout):
    "Upload data in chunks through an upload session"
    response = _request(
        'POST', item_url + '/createUploadSession', (token,),
        json={'item': {'@microsoft.graph.conflictBehavior': 'replace'}},
        timeout=timeout, headers={'Authorization': f'Bearer {token}'})
    if response.status_code != 200:
        raise _http_error(response, token)
    upload_url = _json(response).get('uploadUrl')
    if not upload_url:
        raise UploadError(response.status_code, 'no upload URL')
    size = len(data)
    start = 0
    while start < size:
        end = min(start + GRAPH_CHUNK_SIZE, size)
        # The upload URL is pre-authenticated: no Authorization header
        response = _request(
            'PUT', upload_url, (token,), data=data[start:end],
            timeout=timeout, headers={
                'Content-Range': f'bytes {start}-{end - 1}/{size}',
                })
        if response.status_code in {200, 201}:
            logger.info("uploaded %d bytes to %s", size, item_url)
            return _graph_item(response, item_url)
        if response.status_code != 202:
            try:
                _request('DELETE', upload_url, (token,), timeout=timeout)
            except UploadError:
                pass
            raise _http_error(response, token)
        ranges = _json(response).get('nextExpectedRanges') or []
        try:
            start = int(ranges[0].split('-')[0])
        except (IndexError, ValueError, AttributeError):
            start = end
    raise UploadError(None, 'upload session not completed')


def client_credentials_token(token_url, client_id, client_secret,
        scope=None, timeout=30):
    """Return an access token of the OAuth 2 client credentials grant

    The token is kept until shortly before it expires."""
    key = (token_url, client_id, scope)
    digest = _digest(client_secret)
    with _lock:
        entry = _tokens.get(key)
    if entry and entry[0] == digest and entry[2] > time.monotonic():
        return entry[1]
    # RFC 6749 2.3.1: the credentials are form-encoded before Basic
    auth = (
        urllib.parse.quote_plus(client_id),
        urllib.parse.quote_plus(client_secret))
    form = {'grant_type': 'client_credentials'}
    if scope:
        form['scope'] = scope
    start = time.monotonic()
    response = _request(
        'POST', token_url, (client_secret,), data=form, auth=auth,
        timeout=timeout, headers={'Accept': 'application/json'})
    body = _json(response)
    if response.status_code != 200 or not body.get('access_token'):
        raise _http_error(response, client_secret, default='no token')
    token = body['access_token']
    try:
        expires_in = float(body.get('expires_in', 300))
    except (TypeError, ValueError):
        expires_in = 300
    margin = min(60, expires_in / 10)
    with _lock:
        _tokens[key] = (digest, token, start + expires_in - margin)
    return token


def datev_upload(url, token, filename, data, timeout=30):
    """Post the file to the DATEV online API endpoint url

    Return the id of the job the server answers."""
    try:
        filename.encode('ascii')
    except UnicodeEncodeError:
        raise UploadError(None, 'file name must be ASCII') from None
    response = _request(
        'POST', url, (token,), data=data, timeout=timeout, headers={
            'Authorization': f'Bearer {token}',
            'Filename': filename,
            'Content-Type': 'application/octet-stream',
            'Accept': 'application/json',
            })
    if response.status_code not in {200, 201, 202}:
        raise _http_error(response, token)
    location = response.headers.get('Location')
    if location:
        job = urllib.parse.urlsplit(location).path.rstrip('/')
        job = urllib.parse.unquote(job.rsplit('/', 1)[-1])
    else:
        body = _json(response)
        job = body.get('id') or body.get('guid')
    if not job:
        raise UploadError(response.status_code, 'no job id')
    logger.info("uploaded %s (%d bytes) to %s", filename, len(data), url)
    return str(job)
