"""Certifies the project's fake Key Vault with the official Azure SDK for Python.

Starts the standalone fake (`target/debug/examples/fake_vault`), then drives it with
azure-keyvault-secrets + azure-identity exactly as an application would: client-secret and
App Service managed-identity credentials, set/get/list (paged)/versions, delete with the
SDK's poller, deleted-secret reads, the 409 on a soft-deleted name, recover with its poller,
purge, not-found and bad-credential errors, and the SDK's retries on injected 429/503.
Certificate credentials: azure-identity's CertificateCredential (MSAL signs RS256 with an
`x5t` SHA-1 thumbprint, as azure-identity hands it only that) and MSAL given the public
certificate (PS256 with `x5t#S256`, the path kes uses) authenticate against the fake's
signature check with a registered certificate and are refused with an unregistered one.

Usage: certify.py PATH_TO_FAKE_VAULT_BINARY. Exits non-zero on the first failure.
"""

import datetime
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import base64

import msal
import requests
from azure.core.credentials import AccessToken

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.identity import CertificateCredential, ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

CHECKS = []


def check(name):
    def wrap(fn):
        CHECKS.append((name, fn))
        return fn

    return wrap


def make_cert_pem(path):
    """A self-signed RSA-2048 certificate and its unencrypted PKCS#8 key, in one PEM file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kes-sdk-client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def start_fake(binary, client_cert):
    env = dict(os.environ)
    env["FAKE_VAULT_CLIENT_CERT"] = client_cert
    # A real deletion window and recovery delay, so the SDK pollers actually poll.
    env["FAKE_VAULT_DELETE_DELAY_MS"] = "400"
    env["FAKE_VAULT_RECOVER_DELAY_MS"] = "400"
    proc = subprocess.Popen([binary], stdout=subprocess.PIPE, env=env, text=True)
    info = {}
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("fake vault exited before READY")
        line = line.strip()
        if line == "READY":
            return proc, info
        key, _, value = line.partition("=")
        info[key] = value
    raise SystemExit("fake vault did not become ready")


class Ctx:
    def __init__(self, info):
        self.info = info
        self.ca = info["CA_FILE"]
        self.url = info["VAULT_URL"]
        self.cred = ClientSecretCredential(
            info["TENANT_ID"],
            info["CLIENT_ID"],
            info["CLIENT_SECRET"],
            authority=info["AUTHORITY"],
            disable_instance_discovery=True,
            connection_verify=self.ca,
        )
        self.client = self.make_client(self.cred)

    def make_client(self, cred, **kw):
        # The fake runs on 127.0.0.1, which the challenge's resource domain cannot cover.
        return SecretClient(
            self.url,
            cred,
            verify_challenge_resource=False,
            connection_verify=self.ca,
            retry_backoff_factor=0.1,
            **kw,
        )

    def control(self, path, body=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.loads(r.read())


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


@check("set, get latest, get by version")
def t_set_get(c):
    s1 = c.client.set_secret("sdk-one", "value-1")
    expect(s1.value == "value-1", f"set returned {s1.value!r}")
    expect(s1.properties.version and len(s1.properties.version) == 32, "32-char version id")
    expect(s1.properties.enabled is True, "enabled attribute")
    expect(s1.properties.recovery_level == "Recoverable+Purgeable", s1.properties.recovery_level)
    got = c.client.get_secret("sdk-one")
    expect(got.value == "value-1" and got.properties.version == s1.properties.version, "get latest")
    s2 = c.client.set_secret("sdk-one", "value-2")
    expect(s2.properties.version != s1.properties.version, "a second set makes a new version")
    expect(c.client.get_secret("sdk-one").value == "value-2", "latest is the second value")
    expect(c.client.get_secret("sdk-one", s1.properties.version).value == "value-1", "get by version")
    versions = list(c.client.list_properties_of_secret_versions("sdk-one"))
    expect(sorted(v.version for v in versions) == sorted([s1.properties.version, s2.properties.version]), "versions listed")
    expect(all(v.created_on is not None for v in versions), "versions carry created")


@check("list with nextLink paging (page size 25)")
def t_list(c):
    names = {f"sdk-page-{i:02d}" for i in range(30)}
    for n in sorted(names):
        c.client.set_secret(n, "x")
    before = c.control("/_fake/counts").get("list", 0)
    listed = {p.name for p in c.client.list_properties_of_secrets()}
    pages = c.control("/_fake/counts").get("list", 0) - before
    expect(names <= listed, f"missing {sorted(names - listed)[:5]}")
    expect("sdk-one" in listed, "earlier secret listed")
    expect(pages >= 2, f"listing used {pages} page request(s); expected nextLink paging")
    props = [p for p in c.client.list_properties_of_secrets() if p.name == "sdk-page-00"]
    expect(len(props) == 1 and props[0].enabled, "item attributes")


@check("update properties (PATCH)")
def t_update(c):
    p = c.client.update_secret_properties("sdk-one", content_type="text/plain", tags={"a": "b"})
    expect(p.content_type == "text/plain" and p.tags == {"a": "b"}, "updated properties")
    expect(c.client.get_secret("sdk-one").value == "value-2", "value unchanged by update")


@check("delete with the SDK poller, deleted reads, 409 on reuse")
def t_delete(c):
    c.client.set_secret("sdk-del", "to-delete")
    before = c.control("/_fake/counts").get("get-deleted", 0)
    poller = c.client.begin_delete_secret("sdk-del")
    # result() returns at once; wait() polls GET /deletedsecrets until the deletion is done.
    poller.wait()
    deleted = poller.result()
    expect(deleted.name == "sdk-del" and deleted.recovery_id.endswith("/deletedsecrets/sdk-del"), "deleted secret")
    polls = c.control("/_fake/counts").get("get-deleted", 0) - before
    expect(polls >= 2, f"the poller saw the deletion window ({polls} polls)")
    expect(deleted.deleted_date is not None and deleted.scheduled_purge_date is not None, "deletion dates")
    d = c.client.get_deleted_secret("sdk-del")
    expect(d.name == "sdk-del", "get deleted")
    expect("sdk-del" in {x.name for x in c.client.list_deleted_secrets()}, "list deleted")
    try:
        c.client.get_secret("sdk-del")
        raise AssertionError("a deleted secret must not be readable")
    except ResourceNotFoundError:
        pass
    try:
        c.client.set_secret("sdk-del", "again")
        raise AssertionError("set on a soft-deleted name must fail")
    except HttpResponseError as e:
        expect(e.status_code == 409, f"status {e.status_code}")
        expect("deleted but recoverable" in str(e.message), e.message)


@check("recover with the SDK poller")
def t_recover(c):
    poller = c.client.begin_recover_deleted_secret("sdk-del")
    poller.wait()
    recovered = poller.result()
    expect(recovered.name == "sdk-del", "recovered properties")
    expect(c.client.get_secret("sdk-del").value == "to-delete", "value back after recovery")


@check("purge and not-found errors")
def t_purge(c):
    c.client.begin_delete_secret("sdk-del").wait()
    c.client.purge_deleted_secret("sdk-del")
    try:
        c.client.get_deleted_secret("sdk-del")
        raise AssertionError("purged secret still deleted-readable")
    except ResourceNotFoundError:
        pass
    try:
        c.client.get_secret("never-existed")
        raise AssertionError("missing secret readable")
    except ResourceNotFoundError as e:
        expect(e.status_code == 404, "404")
    # The name is free again after the purge.
    expect(c.client.set_secret("sdk-del", "fresh").value == "fresh", "name reusable after purge")


@check("wrong client secret is an authentication error")
def t_bad_secret(c):
    bad = ClientSecretCredential(
        c.info["TENANT_ID"],
        c.info["CLIENT_ID"],
        "wrong-secret",
        authority=c.info["AUTHORITY"],
        disable_instance_discovery=True,
        connection_verify=c.ca,
    )
    try:
        c.make_client(bad).get_secret("sdk-one")
        raise AssertionError("wrong secret accepted")
    except ClientAuthenticationError as e:
        expect("AADSTS7000215" in str(e), str(e)[:200])


@check("CertificateCredential (RS256, x5t) with a registered certificate, with and without x5c")
def t_certificate(c):
    cred = CertificateCredential(
        c.info["TENANT_ID"],
        c.info["CLIENT_ID"],
        c.cert_pem,
        authority=c.info["AUTHORITY"],
        disable_instance_discovery=True,
        connection_verify=c.ca,
    )
    expect(c.make_client(cred).get_secret("sdk-one").value == "value-2", "value via certificate")
    chain = CertificateCredential(
        c.info["TENANT_ID"],
        c.info["CLIENT_ID"],
        c.cert_pem,
        send_certificate_chain=True,
        authority=c.info["AUTHORITY"],
        disable_instance_discovery=True,
        connection_verify=c.ca,
    )
    expect(c.make_client(chain).get_secret("sdk-one").value == "value-2", "value with x5c")


class CapturingSession(requests.Session):
    """MSAL's HTTP client; keeps the client assertions it posts."""

    def __init__(self, ca):
        super().__init__()
        self.ca = ca
        self.assertions = []

    def request(self, method, url, data=None, **kw):
        if isinstance(data, dict) and "client_assertion" in data:
            self.assertions.append(data["client_assertion"])
        kw["verify"] = self.ca
        return super().request(method, url, data=data, **kw)


class MsalCredential:
    """A TokenCredential over MSAL's confidential client (for SecretClient)."""

    def __init__(self, app):
        self.app = app

    def get_token(self, *scopes, **kw):
        r = self.app.acquire_token_for_client(list(scopes))
        if "access_token" not in r:
            raise ClientAuthenticationError(r.get("error_description", str(r)))
        return AccessToken(r["access_token"], int(time.time()) + int(r["expires_in"]))


def jwt_header(jwt):
    if isinstance(jwt, bytes):
        jwt = jwt.decode()
    h = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))


def msal_app(c, pem_path):
    with open(pem_path) as f:
        pem = f.read()
    cert = pem[: pem.index("-----BEGIN PRIVATE KEY")]
    session = CapturingSession(c.ca)
    app = msal.ConfidentialClientApplication(
        c.info["CLIENT_ID"],
        client_credential={"private_key": pem, "public_certificate": cert},
        authority=c.info["AUTHORITY"] + "/" + c.info["TENANT_ID"],
        instance_discovery=False,
        http_client=session,
        # Fresh tokens per test: no cache shared with other checks.
        token_cache=msal.TokenCache(),
    )
    return app, session


@check("MSAL PS256 assertion (x5t#S256) with a registered certificate")
def t_msal_ps256(c):
    app, session = msal_app(c, c.cert_pem)
    expect(c.make_client(MsalCredential(app)).get_secret("sdk-one").value == "value-2", "value via MSAL")
    expect(session.assertions, "MSAL posted a client assertion")
    h = jwt_header(session.assertions[0])
    expect(h.get("alg") == "PS256" and "x5t#S256" in h, f"PS256 header: {h.keys()} {h.get('alg')}")
    bad, _ = msal_app(c, c.other_cert_pem)
    r = bad.acquire_token_for_client(["https://vault.azure.net/.default"])
    expect("AADSTS700027" in r.get("error_description", ""), str(r)[:200])


@check("CertificateCredential with an unregistered certificate: AADSTS700027")
def t_bad_certificate(c):
    bad = CertificateCredential(
        c.info["TENANT_ID"],
        c.info["CLIENT_ID"],
        c.other_cert_pem,
        authority=c.info["AUTHORITY"],
        disable_instance_discovery=True,
        connection_verify=c.ca,
    )
    try:
        c.make_client(bad).get_secret("sdk-one")
        raise AssertionError("unregistered certificate accepted")
    except ClientAuthenticationError as e:
        expect("AADSTS700027" in str(e), str(e)[:200])


@check("managed identity through the App Service endpoint")
def t_app_service(c):
    os.environ["IDENTITY_ENDPOINT"] = c.info["IDENTITY_ENDPOINT"]
    os.environ["IDENTITY_HEADER"] = c.info["IDENTITY_HEADER"]
    try:
        mi = ManagedIdentityCredential()
        expect(c.make_client(mi).get_secret("sdk-one").value == "value-2", "value via managed identity")
    finally:
        del os.environ["IDENTITY_ENDPOINT"]
        del os.environ["IDENTITY_HEADER"]


@check("SDK retries injected 429 (Retry-After) and 503")
def t_retries(c):
    c.control("/_fake/reset", {})
    c.control("/_fake/fault", {"op": "get", "fault": "429", "retry_after": "1", "times": 1})
    t0 = time.time()
    expect(c.client.get_secret("sdk-one").value == "value-2", "value after 429")
    took = time.time() - t0
    expect(took >= 0.9, f"Retry-After honoured ({took:.2f}s)")
    expect(c.control("/_fake/counts").get("get") == 2, "one retry after 429")
    c.control("/_fake/fault", {"op": "get", "fault": "5xx", "status": 503, "times": 2})
    expect(c.client.get_secret("sdk-one").value == "value-2", "value after two 503s")
    expect(c.control("/_fake/counts").get("get") == 5, "two retries after 503s")
    c.control("/_fake/fault", {"op": "get", "fault": "403", "times": 1})
    try:
        c.client.get_secret("sdk-one")
        raise AssertionError("403 must surface")
    except HttpResponseError as e:
        expect(e.status_code == 403 and "ForbiddenByPolicy" in str(e), str(e)[:200])


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    tmp = tempfile.TemporaryDirectory(prefix="kes-sdk-cert-")
    cert_pem = make_cert_pem(os.path.join(tmp.name, "client.pem"))
    proc, info = start_fake(sys.argv[1], cert_pem)
    failed = 0
    try:
        c = Ctx(info)
        c.cert_pem = cert_pem
        c.other_cert_pem = make_cert_pem(os.path.join(tmp.name, "other.pem"))
        for name, fn in CHECKS:
            try:
                fn(c)
                print(f"ok     {name}")
            except Exception as e:  # report and go on, so one run shows every failure
                failed += 1
                print(f"FAILED {name}: {type(e).__name__}: {e}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        tmp.cleanup()
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
