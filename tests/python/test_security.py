"""Who may do what, tried from outside: a grpcio client generated from proto/ talks to the real
server over TLS (certificates made by rcgen, `myelin-test-certs`), with bearer tokens whose salted
hashes are computed here the way an operator's script would, and grpcio's own call credentials.
No project helper stands between the test and the wire."""
from __future__ import annotations

import http.client
import json
import os
import queue
import re
import secrets
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from common import live
from conftest import ROOT, make_certs, myelin_bin, token_hash

CHANNELS = ["C3", "Cz", "C4", "Pz"]  # fixture-linear: 128 Hz, 1 s windows
RATE = 128.0
PRINCIPALS = {  # name -> scopes
    "rig-a": ["ingest", "decode"],
    "rig-b": ["ingest", "decode"],
    "ingest-only": ["ingest"],
    "dashboard": ["observe"],
    "ops": ["admin"],
    "experiment": ["decode"],  # attaches to rig-a's sessions (sessions_of)
}
SESSIONS_OF = {"experiment": ["rig-a"]}






class Secured:
    """A server with TLS (mutual TLS optional for clients), five token principals and one
    principal named by its client certificate; its JSON log kept for the audit checks."""

    def __init__(self, tmp: Path, extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
        """`extra`: more lines for the config file (whole sections other than [server], [tls]
        and [auth]); `env`: more MYELIN_* overrides."""
        self.certs = make_certs(tmp / "certs", "lab-pc", "stranger")
        self.tokens = {name: "myelin_" + secrets.token_hex(32) for name in PRINCIPALS}
        lines = [
            "[server]", 'log_format = "json"',
            "[tls]", f'cert = "{self.certs / "server.pem"}"', f'key = "{self.certs / "server.key"}"',
            f'client_ca = "{self.certs / "ca.pem"}"',
            "[auth]", "metrics_open = false",
        ]
        for name, scopes in PRINCIPALS.items():
            lines += ["[[auth.principals]]", f'name = "{name}"', f"scopes = {json.dumps(scopes)}",
                      f'token_hashes = ["{token_hash(self.tokens[name])}"]', f"sessions_of = {json.dumps(SESSIONS_OF.get(name, []))}"]
        lines += ["[[auth.principals]]", 'name = "lab"', 'scopes = ["decode"]', 'certificate_cn = "lab-pc"', *extra]
        self.config = tmp / "secure.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log_path = tmp / "server.log"
        self.log = open(self.log_path, "w")
        self.server = live.Server(myelin_bin(), args=["--config", str(self.config)], stderr=self.log,
                                  env={"RUST_LOG": "warn", **(env or {})})
        self.grpc, self.http = self.server.grpc, self.server.http

    def credentials(self, client: str | None = None, ca: Path | None = None) -> grpc.ChannelCredentials:
        key = cert = None
        if client:
            key = (self.certs / f"{client}.key").read_bytes()
            cert = (self.certs / f"{client}.pem").read_bytes()
        return grpc.ssl_channel_credentials((ca or self.certs / "ca.pem").read_bytes(), key, cert)

    def channel(self, principal: str | None = None, token: str | None = None, client: str | None = None) -> grpc.Channel:
        credentials = self.credentials(client)
        token = token or (self.tokens[principal] if principal else None)
        if token:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return grpc.secure_channel(self.grpc, credentials, options=[("grpc.ssl_target_name_override", "localhost")])

    def audit(self) -> list[dict]:
        self.log.flush()
        lines = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("target") == "audit"]

    def stop(self):
        self.server.stop()
        self.log.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    s = Secured(tmp_path_factory.mktemp("secured"))
    yield s
    s.stop()


def header(session: str) -> pb.StreamHeader:
    return pb.StreamHeader(session_id=session, stream_name=session, modality=pb.MODALITY_EEG,
                           channels=[pb.Channel(label=c, type="EEG", unit="microvolts") for c in CHANNELS],
                           nominal_rate_hz=RATE, clock=pb.CLOCK_SOURCE_UNIX)


class Stream:
    """One Ingest call from a queue; its replies drained on a thread."""

    def __init__(self, channel, session: str):
        self.requests: queue.Queue = queue.Queue()
        self.requests.put(pb.IngestRequest(header=header(session)))
        self.error = None
        self.call = rpc.IngestStub(channel).Stream(iter(self.requests.get, None))
        self.next = 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            for _ in self.call:
                pass
        except grpc.RpcError as e:
            self.error = e

    def push(self, seconds: float):
        n = int(seconds * RATE)
        samples = np.random.default_rng(self.next).standard_normal((n, len(CHANNELS))).astype("<f4")
        self.requests.put(pb.IngestRequest(chunk=pb.SampleChunk(
            first_sample_index=self.next, n_samples=n, samples=samples.tobytes(),
            regular=pb.RegularTimestamps(first_seconds=1000.0 + self.next / RATE, rate_hz=RATE))))
        self.next += n

    def close(self):
        self.requests.put(None)


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()


def sliding(session: str) -> pb.AttachRequest:
    return pb.AttachRequest(session_id=session, model_id="fixture-linear", latency_budget_ms=5000,
                            window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=0.25)))


def sessions_seen(channel) -> set[str]:
    return {s.session_id for s in rpc.DecodingStub(channel).ListSessions(pb.ListSessionsRequest()).sessions}


def test_calls_without_valid_credentials_are_unauthenticated_and_health_stays_open(secured):
    with secured.channel() as anonymous, secured.channel(token="myelin_" + "0" * 64) as forged:
        for channel in (anonymous, forged):
            decoding = rpc.DecodingStub(channel)
            assert code_of(lambda: decoding.ListModels(pb.ListModelsRequest())) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(lambda: decoding.ListSessions(pb.ListSessionsRequest())) == grpc.StatusCode.UNAUTHENTICATED
            ingest = rpc.IngestStub(channel).Stream(iter([pb.IngestRequest(header=header("nobody"))]))
            assert code_of(lambda: list(ingest)) == grpc.StatusCode.UNAUTHENTICATED
        # Health checks need no credentials (orchestrators probe without them).
        reply = health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest(service="myelin.v1.Decoding"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # A token in some other shape than `Bearer <token>` is refused too.
    with secured.channel() as channel:
        decoding = rpc.DecodingStub(channel)
        for value in (secured.tokens["ops"], f"Basic {secured.tokens['ops']}", "Bearer "):
            call = lambda: decoding.ListModels(pb.ListModelsRequest(), metadata=[("authorization", value)])  # noqa: E731
            assert code_of(call) == grpc.StatusCode.UNAUTHENTICATED, value
    assert secured.server.proc.poll() is None


def test_a_principal_without_the_scope_is_permission_denied(secured):
    with secured.channel("ingest-only") as ingest_only, secured.channel("dashboard") as dashboard:
        assert code_of(lambda: rpc.DecodingStub(ingest_only).Attach(sliding("x"))) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: rpc.DecodingStub(ingest_only).Subscribe(pb.SubscribeRequest()).next()) \
            == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: rpc.DecodingStub(dashboard).Attach(sliding("x"))) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: rpc.DecodingStub(dashboard).Detach(pb.DetachRequest(attachment_id="att-0"))) \
            == grpc.StatusCode.PERMISSION_DENIED
        refused = rpc.IngestStub(dashboard).Stream(iter([pb.IngestRequest(header=header("dash"))]))
        assert code_of(lambda: list(refused)) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: rpc.DecodingStub(dashboard).ConnectLsl(pb.ConnectLslRequest(session_id="x", data_name="x"))) \
            == grpc.StatusCode.PERMISSION_DENIED
        # Listing models needs only to be someone.
        assert len(rpc.DecodingStub(ingest_only).ListModels(pb.ListModelsRequest()).models) > 0


def test_principals_own_their_sessions_and_attachments(secured):
    with secured.channel("rig-a") as a, secured.channel("rig-b") as b, secured.channel("ops") as ops, \
            secured.channel("dashboard") as dashboard:
        stream = Stream(a, "owned-a")
        stream.push(2.0)
        wait_for(lambda: "owned-a" in sessions_seen(a), "rig-a's session never appeared")
        attached = rpc.DecodingStub(a).Attach(sliding("owned-a"))
        # Unguessable: 128 random bits, not a counter; and the session it routes by.
        assert re.fullmatch(r"att-[0-9a-f]{32}@owned-a", attached.attachment_id), attached.attachment_id
        second = rpc.DecodingStub(a).Attach(sliding("owned-a"))
        assert second.attachment_id != attached.attachment_id
        listed = {s.session_id: s for s in rpc.DecodingStub(a).ListSessions(pb.ListSessionsRequest()).sessions}
        assert listed["owned-a"].owner == "rig-a"
        assert {x.owner for x in listed["owned-a"].attachments} == {"rig-a"}

        other = rpc.DecodingStub(b)
        att = attached.attachment_id
        assert code_of(lambda: other.Detach(pb.DetachRequest(attachment_id=att))) == grpc.StatusCode.PERMISSION_DENIED
        calibrate = pb.CalibrateRequest(attachment_id=att, target_codes=[2], non_target_codes=[1], max_epochs=10)
        assert code_of(lambda: list(other.Calibrate(calibrate))) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: other.Subscribe(pb.SubscribeRequest(attachment_id=att)).next()) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: other.Subscribe(pb.SubscribeRequest(session_id="owned-a")).next()) \
            == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: other.Subscribe(pb.SubscribeRequest()).next()) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: other.Attach(sliding("owned-a"))) == grpc.StatusCode.PERMISSION_DENIED
        assert "owned-a" not in sessions_seen(b)
        # B cannot take the session id over while A streams it...
        takeover = rpc.IngestStub(b).Stream(iter([pb.IngestRequest(header=header("owned-a"))]))
        assert code_of(lambda: list(takeover)) == grpc.StatusCode.PERMISSION_DENIED
        # ...and none of this disturbed A: its attachment still decodes, for A.
        predictions = rpc.DecodingStub(a).Subscribe(pb.SubscribeRequest(attachment_id=att))
        stream.push(2.0)
        assert predictions.next().attachment_id == att
        predictions.cancel()

        # observe reads everything; admin may change what is not its own.
        assert "owned-a" in sessions_seen(dashboard)
        watching = rpc.DecodingStub(dashboard).Subscribe(pb.SubscribeRequest(session_id="owned-a"))
        stream.push(1.0)
        assert watching.next().session_id == "owned-a"
        watching.cancel()
        rpc.DecodingStub(ops).Detach(pb.DetachRequest(attachment_id=second.attachment_id))

        # When A's stream dies, A may resume its session; B still may not take it.
        stream.close()
        wait_for(lambda: not {s.session_id: s for s in rpc.DecodingStub(a).ListSessions(pb.ListSessionsRequest()).sessions}
                 ["owned-a"].live, "rig-a's session never ended")
        takeover = rpc.IngestStub(b).Stream(iter([pb.IngestRequest(header=header("owned-a"))]))
        assert code_of(lambda: list(takeover)) == grpc.StatusCode.PERMISSION_DENIED
        resumed = Stream(a, "owned-a")
        resumed.push(1.0)
        wait_for(lambda: {s.session_id: s for s in rpc.DecodingStub(a).ListSessions(pb.ListSessionsRequest()).sessions}
                 ["owned-a"].live, "rig-a could not resume its session")
        resumed.close()
        assert stream.error is None and resumed.error is None


def test_an_observe_token_subscribes_to_everything_but_cannot_attach(secured):
    with secured.channel("rig-a") as a, secured.channel("dashboard") as dashboard:
        stream = Stream(a, "observed")
        stream.push(1.0)
        wait_for(lambda: "observed" in sessions_seen(a), "session never appeared")
        rpc.DecodingStub(a).Attach(sliding("observed"))
        everything = rpc.DecodingStub(dashboard).Subscribe(pb.SubscribeRequest())
        got = []
        reader = threading.Thread(target=lambda: got.append(everything.next()), daemon=True)
        reader.start()
        time.sleep(0.3)
        stream.push(2.0)
        reader.join(10)
        assert got and got[0].session_id == "observed"
        everything.cancel()
        assert code_of(lambda: rpc.DecodingStub(dashboard).Attach(sliding("observed"))) == grpc.StatusCode.PERMISSION_DENIED
        stream.close()


def test_a_plaintext_client_cannot_talk_to_the_tls_port(secured):
    with grpc.insecure_channel(secured.grpc) as plain:
        call = lambda: rpc.DecodingStub(plain).ListModels(pb.ListModelsRequest(), timeout=5)  # noqa: E731
        assert code_of(call) == grpc.StatusCode.UNAVAILABLE
    # The HTTP port answers a plaintext request with a TLS alert, never with an HTTP response.
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)) as raised:
        urllib.request.urlopen(f"http://{secured.http}/metrics", timeout=5).read()
    assert not isinstance(raised.value, urllib.error.HTTPError), raised.value
    assert secured.server.proc.poll() is None


def test_mutual_tls_names_a_principal_and_refuses_an_unknown_certificate(secured):
    # A client certificate signed by the configured CA, CN=lab-pc: principal "lab", no token.
    with secured.channel(client="client-lab-pc") as lab:
        assert len(rpc.DecodingStub(lab).ListModels(pb.ListModelsRequest()).models) > 0
        assert code_of(lambda: rpc.IngestStub(lab).Stream(iter([pb.IngestRequest(header=header("lab"))])).next()) \
            == grpc.StatusCode.PERMISSION_DENIED  # decode only
    # Signed by the CA but naming no principal, with no token: UNAUTHENTICATED.
    with secured.channel(client="client-stranger") as stranger:
        assert code_of(lambda: rpc.DecodingStub(stranger).ListModels(pb.ListModelsRequest())) == grpc.StatusCode.UNAUTHENTICATED
    # Signed by a CA the server does not trust: refused at the handshake, even with a valid token.
    credentials = grpc.composite_channel_credentials(secured.credentials(client="rogue-client"),
                                                     grpc.access_token_call_credentials(secured.tokens["ops"]))
    with grpc.secure_channel(secured.grpc, credentials, options=[("grpc.ssl_target_name_override", "localhost")]) as rogue:
        assert code_of(lambda: rpc.DecodingStub(rogue).ListModels(pb.ListModelsRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_metrics_need_an_observe_token_when_closed(secured):
    context = ssl.create_default_context(cafile=str(secured.certs / "ca.pem"))
    context.check_hostname = False  # the address is 127.0.0.1; the CA is what is checked
    url = f"https://{secured.http}/metrics"
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url, context=context, timeout=5)
    assert raised.value.code == 401 and raised.value.headers["WWW-Authenticate"].startswith("Bearer")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secured.tokens['rig-a']}"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, context=context, timeout=5)
    assert raised.value.code == 403
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secured.tokens['dashboard']}"})
    text = urllib.request.urlopen(request, context=context, timeout=5).read().decode()
    refused = [line for line in text.splitlines() if line.startswith("myelin_calls_refused_total{")]
    assert any('reason="unauthenticated"' in line for line in refused), refused
    # /healthz stays open for liveness probes.
    assert urllib.request.urlopen(f"https://{secured.http}/healthz", context=context, timeout=5).status == 200


def test_the_audit_log_has_one_line_per_control_action_with_the_principal(secured):
    before = len(secured.audit())
    with secured.channel("rig-a") as a, secured.channel("rig-b") as b:
        stream = Stream(a, "audited")
        stream.push(1.0)
        wait_for(lambda: "audited" in sessions_seen(a), "session never appeared")
        attached = rpc.DecodingStub(a).Attach(sliding("audited"))
        att = attached.attachment_id
        assert code_of(lambda: rpc.DecodingStub(b).Detach(pb.DetachRequest(attachment_id=att))) == grpc.StatusCode.PERMISSION_DENIED
        # Sliding windows cannot be calibrated: the attempt is audited with its outcome.
        calibrate = pb.CalibrateRequest(attachment_id=att, target_codes=[2], non_target_codes=[1], max_epochs=10)
        assert code_of(lambda: list(rpc.DecodingStub(a).Calibrate(calibrate))) == grpc.StatusCode.INVALID_ARGUMENT
        lsl = pb.ConnectLslRequest(session_id="audited-lsl", data_name="no-such-stream", timeout_s=0.2)
        assert code_of(lambda: rpc.DecodingStub(a).ConnectLsl(lsl)) in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
                                                                      grpc.StatusCode.DEADLINE_EXCEEDED)
        rpc.DecodingStub(a).Detach(pb.DetachRequest(attachment_id=att))
        stream.close()
    wait_for(lambda: len(secured.audit()) >= before + 6, "audit lines missing")
    lines = [(e["fields"].get("principal"), e["fields"].get("action"), e["fields"].get("resource", ""), e["fields"].get("outcome"))
             for e in secured.audit()[before:]]
    mine = [line for line in lines if "audited" in line[2] or att in line[2]]
    expected = [
        ("rig-a", "open_session", "ok"),
        ("rig-a", "attach", "ok"),
        ("rig-b", "detach", "refused"),
        ("rig-a", "calibrate", "failed"),
        ("rig-a", "connect_lsl", "failed"),
        ("rig-a", "detach", "ok"),
    ]
    assert [(p, action, outcome) for p, action, _, outcome in mine] == expected, mine


def test_a_renewed_certificate_and_changed_principals_are_taken_after_sighup(tmp_path):
    first = make_certs(tmp_path / "first")
    second = make_certs(tmp_path / "second")
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    for name in ("server.pem", "server.key"):
        (live_dir / name).write_bytes((first / name).read_bytes())
    old_token, new_token = ("myelin_" + secrets.token_hex(32) for _ in range(2))
    principals = tmp_path / "principals.toml"

    def principals_with(token: str):
        principals.write_text(f'[[principals]]\nname = "ops"\nscopes = ["admin"]\ntoken_hashes = ["{token_hash(token)}"]\n')

    principals_with(old_token)
    config = tmp_path / "reload.toml"
    config.write_text("\n".join([
        "[tls]", f'cert = "{live_dir / "server.pem"}"', f'key = "{live_dir / "server.key"}"',
        "[auth]", f'principals_file = "{principals}"',
    ]) + "\n")
    server = live.Server(myelin_bin(), args=["--config", str(config)])

    def answer(ca: Path, token: str) -> grpc.StatusCode:
        credentials = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(ca.read_bytes()),
                                                         grpc.access_token_call_credentials(token))
        with grpc.secure_channel(server.grpc, credentials, options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
            try:
                rpc.DecodingStub(channel).ListModels(pb.ListModelsRequest(), timeout=5)
                return grpc.StatusCode.OK
            except grpc.RpcError as error:
                return error.code()

    try:
        assert answer(first / "ca.pem", old_token) == grpc.StatusCode.OK
        assert answer(second / "ca.pem", old_token) == grpc.StatusCode.UNAVAILABLE  # not its certificate
        for name in ("server.pem", "server.key"):
            (live_dir / name).write_bytes((second / name).read_bytes())
        principals_with(new_token)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: answer(second / "ca.pem", new_token) == grpc.StatusCode.OK,
                 "the renewed certificate and the new token were not taken after SIGHUP")
        assert answer(first / "ca.pem", new_token) == grpc.StatusCode.UNAVAILABLE
        assert answer(second / "ca.pem", old_token) == grpc.StatusCode.UNAUTHENTICATED
        # A broken principals file on the next SIGHUP leaves the principals in use.
        principals.write_text("[[principals]]\nname = 7\n")
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert answer(second / "ca.pem", new_token) == grpc.StatusCode.OK
        assert server.proc.poll() is None
    finally:
        server.stop()


def public_start(extra_env: dict[str, str]) -> subprocess.Popen:
    env = dict(os.environ, MYELIN_SERVER__GRPC_ADDR="0.0.0.0:0", MYELIN_SERVER__HTTP_ADDR="127.0.0.1:0", RUST_LOG="warn",
               **extra_env)
    return subprocess.Popen([myelin_bin(), "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_public_address_without_tls_and_tokens_is_refused_unless_allowed():
    refused = public_start({})
    out, err = refused.communicate(timeout=60)
    assert refused.returncode != 0
    message = [line for line in err.splitlines() if "refusing to serve" in line]
    assert len(message) == 1, err
    assert "server.grpc_addr = 0.0.0.0:0" in message[0] and "tls.cert" in message[0] and "auth.principals" in message[0]
    assert "allow_insecure_public" in message[0]
    assert "myelin ready" not in out

    allowed = public_start({"MYELIN_SERVER__ALLOW_INSECURE_PUBLIC": "true"})
    try:
        ready = allowed.stdout.readline()
        assert ready.startswith("myelin ready "), ready
        grpc_addr = dict(kv.split("=", 1) for kv in ready.split()[2:])["grpc"]
        port = grpc_addr.rsplit(":", 1)[1]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert len(rpc.DecodingStub(channel).ListModels(pb.ListModelsRequest()).models) > 0
    finally:
        allowed.terminate()
        _, err = allowed.communicate(timeout=30)
    assert any("allow_insecure_public" in line and "WARN" in line for line in err.splitlines()), err


def test_the_clients_take_a_ca_and_a_token(secured):
    """myelin-cli, `myelin replay --server` and the myelin-client package, each as its user runs it."""
    address = f"localhost:{secured.grpc.rsplit(':', 1)[1]}"
    cli = Path(myelin_bin()).with_name("myelin-cli")
    ca = str(secured.certs / "ca.pem")
    env = {k: v for k, v in os.environ.items() if k not in ("MYELIN_TOKEN", "MYELIN_CA")}
    listed = subprocess.run([str(cli), "--server", f"https://{address}", "--ca", ca, "--token", secured.tokens["ops"], "models"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "fixture-linear" in listed.stdout, listed.stderr
    refused = subprocess.run([str(cli), "--server", f"https://{address}", "--ca", ca, "sessions"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused.stderr
    # MYELIN_TOKEN and MYELIN_CA in the environment do the same.
    from_env = subprocess.run([str(cli), "--server", address, "sessions"], env=dict(env, MYELIN_TOKEN=secured.tokens["ops"], MYELIN_CA=ca),
                              capture_output=True, text=True, timeout=60)
    assert from_env.returncode == 0, from_env.stderr
    # Mutual TLS from the CLI: the certificate names principal "lab".
    (cert, key) = (secured.certs / "client-lab-pc.pem", secured.certs / "client-lab-pc.key")
    with_cert = subprocess.run([str(cli), "--server", address, "--ca", ca, "--cert", str(cert), "--key", str(key), "models"],
                               env=env, capture_output=True, text=True, timeout=60)
    assert with_cert.returncode == 0, with_cert.stderr

    recording = ROOT / "models/data/p300/subject1_session1_2017-02-04-15_45_13.csv.gz"
    replayed = subprocess.run([myelin_bin(), "replay", str(recording), "--server", address, "--session", "replayed-tls",
                               "--speed", "200", "--ca", ca], env=dict(env, MYELIN_TOKEN=secured.tokens["rig-a"]),
                              capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 0 and "replayed" in replayed.stderr, replayed.stderr

    import myelin
    with myelin.Client(address, token=secured.tokens["rig-a"], ca=ca) as client:
        sessions = {s.session_id: s for s in client.sessions()}
        assert "replayed-tls" in sessions and sessions["replayed-tls"].samples_received > 0
    with myelin.Client(address, token=secured.tokens["rig-b"], ca=ca) as client:
        assert "replayed-tls" not in {s.session_id for s in client.sessions()}
        with pytest.raises(myelin.MyelinError) as raised:
            client.attach("replayed-tls", "erp-linear-muse", marker_codes=[1, 2])
        assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    with myelin.Client(address, ca=ca, certificate=(str(cert), str(key))) as client:
        assert any(m.id == "fixture-linear" for m in client.models())


def test_tokens_without_tls_on_loopback_and_the_test_helpers_channel(tmp_path, secured):
    """Authentication alone is allowed on loopback; models/common/live.channel() carries the
    token over plaintext (an interceptor) and over TLS (call credentials), from arguments or
    MYELIN_TOKEN / MYELIN_CA."""
    token = "myelin_" + secrets.token_hex(32)
    config = tmp_path / "tokens-only.toml"
    config.write_text(f'[[auth.principals]]\nname = "ops"\nscopes = ["admin"]\ntoken_hashes = ["{token_hash(token)}"]\n')
    server = live.Server(myelin_bin(), args=["--config", str(config)])
    try:
        with live.channel(server.grpc, token=token) as channel:
            assert rpc.DecodingStub(channel).ListSessions(pb.ListSessionsRequest()) is not None
            list(rpc.IngestStub(channel).Stream(iter([pb.IngestRequest(header=header("helper"))])))
        with live.channel(server.grpc, token="") as channel:
            assert code_of(lambda: rpc.DecodingStub(channel).ListModels(pb.ListModelsRequest())) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop()
    address = f"localhost:{secured.grpc.rsplit(':', 1)[1]}"
    with live.channel(address, token=secured.tokens["dashboard"], ca=str(secured.certs / "ca.pem")) as channel:
        assert len(rpc.DecodingStub(channel).ListModels(pb.ListModelsRequest()).models) > 0


def test_a_principal_sharing_a_session_sees_only_its_own_attachments(secured):
    """experiment (decode, sessions_of = rig-a) attaches to rig-a's session: each sees the other's
    session traffic only for its own attachments."""
    with secured.channel("rig-a") as a, secured.channel("experiment") as e, secured.channel("rig-b") as b:
        stream = Stream(a, "shared")
        stream.push(2.0)
        wait_for(lambda: "shared" in sessions_seen(a), "session never appeared")
        rigs = rpc.DecodingStub(a).Attach(sliding("shared")).attachment_id
        mine = rpc.DecodingStub(e).Attach(sliding("shared")).attachment_id
        assert code_of(lambda: rpc.DecodingStub(b).Attach(sliding("shared"))) == grpc.StatusCode.PERMISSION_DENIED
        listed = {s.session_id: s for s in rpc.DecodingStub(e).ListSessions(pb.ListSessionsRequest()).sessions}
        assert [x.attachment_id for x in listed["shared"].attachments] == [mine]
        listed = {s.session_id: s for s in rpc.DecodingStub(a).ListSessions(pb.ListSessionsRequest()).sessions}
        assert [x.attachment_id for x in listed["shared"].attachments] == [rigs]
        experiment = rpc.DecodingStub(e)
        assert code_of(lambda: experiment.Subscribe(pb.SubscribeRequest(attachment_id=rigs)).next()) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: experiment.Detach(pb.DetachRequest(attachment_id=rigs))) == grpc.StatusCode.PERMISSION_DENIED
        seen = {"experiment": [], "rig-a": []}
        calls = {"experiment": experiment.Subscribe(pb.SubscribeRequest(session_id="shared")),
                 "rig-a": rpc.DecodingStub(a).Subscribe(pb.SubscribeRequest(session_id="shared"))}

        def read(name):
            try:
                for p in calls[name]:
                    seen[name].append(p.attachment_id)
            except grpc.RpcError:
                pass

        readers = [threading.Thread(target=read, args=(name,), daemon=True) for name in calls]
        for reader in readers:
            reader.start()
        time.sleep(0.3)
        stream.push(3.0)
        wait_for(lambda: len(seen["experiment"]) >= 8 and len(seen["rig-a"]) >= 8, "predictions did not arrive")
        time.sleep(0.3)
        for call in calls.values():
            call.cancel()
        assert set(seen["experiment"]) == {mine} and set(seen["rig-a"]) == {rigs}, seen
        stream.close()


def test_lsl_outlets_are_for_admins_when_authentication_is_on(secured):
    with secured.channel("rig-a") as a:
        stream = Stream(a, "outlets")
        stream.push(1.0)
        wait_for(lambda: "outlets" in sessions_seen(a), "session never appeared")
        request = sliding("outlets")
        request.lsl_outlet = True
        assert code_of(lambda: rpc.DecodingStub(a).Attach(request)) == grpc.StatusCode.PERMISSION_DENIED
        stream.close()


def test_clients_refuse_to_leak_a_token(secured):
    import myelin
    with pytest.raises(ValueError, match="in clear"):
        myelin.Client("192.0.2.1:50051", token=secured.tokens["ops"])
    cli = Path(myelin_bin()).with_name("myelin-cli")
    env = {k: v for k, v in os.environ.items() if k not in ("MYELIN_TOKEN", "MYELIN_CA")}
    for args in (["--server", "192.0.2.1:50051", "--token", "myelin_x"],
                 ["--server", f"http://{secured.grpc}", "--ca", str(secured.certs / "ca.pem")]):
        run = subprocess.run([str(cli), *args, "models"], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and ("in clear" in run.stderr or "means TLS" in run.stderr), run.stderr


def test_the_dashboard_needs_an_observe_token_and_its_assets_do_not(secured):
    context = ssl.create_default_context(cafile=str(secured.certs / "ca.pem"))
    context.check_hostname = False
    base = f"https://{secured.http}"

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(base + path, context=context, timeout=5) as reply:
                reply.read(64)  # /events streams: its first bytes are enough
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code

    assert status("/") == 401 and status("/events") == 401
    assert status(f"/?token={secured.tokens['rig-a']}") == 403
    assert status(f"/?token={secured.tokens['dashboard']}") == 200
    assert status(f"/events?token={secured.tokens['dashboard']}") == 200
    assert status("/assets/uPlot.iife.min.js") == 200
    with urllib.request.urlopen(f"{base}/?token={secured.tokens['dashboard']}", context=context, timeout=5) as reply:
        assert reply.headers["Referrer-Policy"] == "no-referrer" and reply.headers["Cache-Control"] == "no-store"
