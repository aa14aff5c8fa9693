"""A Google Cloud Storage emulator that TensorFlow, Beam and google-cloud-storage all reach.

`gcp-storage-emulator` (PyPI) serves GCS's JSON, upload and download APIs over plain HTTP.
- google-cloud-storage, and with it Beam's `gs://` file system (apache_beam.io.gcp.gcsio),
  honour STORAGE_EMULATOR_HOST.
- TensorFlow's built-in `gs://` file system (the one TFX's fileio and tf.io.gfile use) has its
  endpoints fixed (https://www.googleapis.com/storage/v1/ and .../upload/storage/v1/) and no
  emulator variable. Its libcurl honours `https_proxy` and TF reads CURL_CA_BUNDLE, so a
  CONNECT proxy here terminates TLS with a certificate made for www.googleapis.com and relays
  the bytes to the emulator; GOOGLE_AUTH_TOKEN_FOR_TESTING is TF's own switch for a fixed
  access token. (TF_USE_MODULAR_FILESYSTEM=1 swaps in tensorflow-io-gcs-filesystem, which reads
  CLOUD_STORAGE_EMULATOR_ENDPOINT, but 0.37.1 crashes here: a null getenv() passed to
  absl::SimpleAtoi unless all five GCS_READ_CACHE_* / GCS_STAT_CACHE_* variables are set
  (tensorflow/io#2020), then heap corruption on any read of more than ~140 kB.)

Three gaps of the emulator are mended here, in the test process only:
- an upload with an empty body (TF writes `folder/` markers that way) failed with a TypeError;
- a body sent with both `Transfer-Encoding: chunked` and `Content-Length` (TF's resumable
  uploads) was stored with its chunk framing: chunked wins, as HTTP/1.1 says;
- `Expect: 100-continue` was never answered (libcurl then waits a second per upload);
- object links were built from the client's Host header (www.googleapis.com for TF, which
  Python clients then cannot reach): they are built from the emulator's own address.
Google's OAuth token endpoint (https://oauth2.googleapis.com/token, through the proxy) is
answered too: Beam asks google.auth for default credentials and, without any, retries for
~30 s before it connects anonymously; with the user credentials file here it gets a token.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects

GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")


def _with_empty_body(handler):
    def handle(request, response, storage, *args, **kwargs):
        if request.data is None:
            request._data = b""
        return handler(request, response, storage, *args, **kwargs)

    return handle


def _token(request, response, storage, *args, **kwargs):
    response.json({"access_token": "emulator", "token_type": "Bearer", "expires_in": 3600})


_original_read_raw_data = server._read_raw_data
_original_request_init = server.Request.__init__


def _read_raw_data(request_handler):
    if (request_handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        del request_handler.headers["Content-Length"]
    return _original_read_raw_data(request_handler)


def _request_init(self, request_handler, method):
    _original_request_init(self, request_handler, method)
    host, port = request_handler.server.server_address[:2]
    self._base_url = f"http://{host}:{port}"
    self._full_url = self._base_url + self._path


class _RequestHandler(server.RequestHandler):
    def parse_request(self):
        parsed = super().parse_request()
        if parsed and (self.headers.get("Expect") or "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        return parsed


def _mend_emulator() -> None:
    if getattr(server, "_tfx_image_mended", False):
        return
    # One warning per download ("Content handled as string"): noise in the test's log.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    patched = {
        objects.xml_upload: _with_empty_body(objects.xml_upload),
        objects.insert: _with_empty_body(objects.insert),
    }
    server.HANDLERS = (
        (r"^/token$", {server.POST: _token}),
        *(
            (regex, {method: patched.get(h, h) for method, h in handlers.items()})
            for regex, handlers in server.HANDLERS
        ),
    )
    server._read_raw_data = _read_raw_data
    server.Request.__init__ = _request_init
    server.RequestHandler = _RequestHandler
    server._tfx_image_mended = True


def _certificate(folder: str) -> tuple[str, str, str]:
    """A certificate authority and a certificate it signed for Google's API hosts:
    (authority file, certificate chain file, key file)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, public_key, signing_key, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GCS emulator test CA")])
    ca = build(
        ca_name, ca_name, ca_key.public_key(), ca_key,
        [(x509.BasicConstraints(ca=True, path_length=0), True)],
    )  # fmt: skip
    leaf = build(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])]),
        ca_name,
        key.public_key(),
        ca_key,
        [
            (x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
        ],
    )
    paths = [os.path.join(folder, name) for name in ("ca.pem", "chain.pem", "key.pem")]
    pem = serialization.Encoding.PEM
    contents = [
        ca.public_bytes(pem),
        leaf.public_bytes(pem) + ca.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    ]
    for path, content in zip(paths, contents):
        with open(path, "wb") as f:
            f.write(content)
    return paths[0], paths[1], paths[2]


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(1 << 16):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _TLSProxy:
    """An HTTP CONNECT proxy that answers TLS for Google's hosts and relays to the emulator."""

    def __init__(self, context: ssl.SSLContext, upstream: tuple[str, int]):
        self.context, self.upstream = context, upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            host = head.split(b" ", 2)[1].split(b":")[0].decode()
            if not head.startswith(b"CONNECT ") or host not in GOOGLE_HOSTS:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return
            with tls, socket.create_connection(self.upstream) as upstream:
                back = threading.Thread(target=_pump, args=(upstream, tls), daemon=True)
                back.start()
                _pump(tls, upstream)
                back.join()

    def close(self) -> None:
        self.listener.close()


@contextmanager
def gcs_emulator(folder: str, buckets: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Start the emulator (in memory) and the proxy; yield the environment that points
    TensorFlow, Beam and google-cloud-storage at them. `folder` holds the certificate and
    the credentials file."""
    _mend_emulator()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    emulator = server.Server("127.0.0.1", port, in_memory=True)
    for bucket in buckets:
        server.buckets.create_bucket(bucket, emulator._storage)
    emulator.start()
    authority, chain, key = _certificate(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    proxy = _TLSProxy(context, ("127.0.0.1", port))
    credentials = os.path.join(folder, "credentials.json")
    with open(credentials, "w") as f:  # google.auth's user credentials, refreshed at /token
        # (google.auth ignores a token_uri here: the refresh goes to oauth2.googleapis.com)
        json.dump(
            {
                "type": "authorized_user",
                "client_id": "emulator",
                "client_secret": "emulator",
                "refresh_token": "emulator",
            },
            f,
        )
    try:
        yield {
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
            "https_proxy": f"http://127.0.0.1:{proxy.port}",
            "no_proxy": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": authority,  # TF's libcurl
            "REQUESTS_CA_BUNDLE": authority,  # requests (google.auth's token refresh)
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "GOOGLE_APPLICATION_CREDENTIALS": credentials,
            "GOOGLE_CLOUD_PROJECT": "emulator",
        }
    finally:
        proxy.close()
        emulator.stop()
