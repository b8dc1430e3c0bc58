"""Parses the real server's /v1/metrics with the official Prometheus text parser and with
kms-go's rules (every family has samples; every family except the three request counters
has exactly one), after a known number of requests.

    python check.py path/to/kes
"""
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

KES = sys.argv[1]
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok     {what}")
    else:
        failed += 1
        print(f"FAILED {what}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


with tempfile.TemporaryDirectory() as d:
    run = lambda *a: subprocess.run([KES, *a], cwd=d, check=True, capture_output=True, text=True).stdout
    run("identity", "new", "--ip", "127.0.0.1", "localhost")
    run("identity", "new", "--key", "client.key", "--cert", "client.crt", "admin")
    admin = run("identity", "of", "client.crt").strip()
    port = free_port()
    with open(os.path.join(d, "config.yml"), "w") as f:
        f.write(f"address: 127.0.0.1:{port}\nadmin:\n  identity: {admin}\ntls:\n  key: private.key\n  cert: public.crt\n"
                f"keystore:\n  fs:\n    path: keys\n")
    srv = subprocess.Popen([KES, "server", "--config", "config.yml", "--no-mlock"], cwd=d,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(d, "public.crt"))
        ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
        def get(path, method="GET"):
            req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", method=method)
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
        for _ in range(100):
            try:
                get("/version")
                break
            except OSError:
                time.sleep(0.1)
        check(get("/v1/key/create/m", "PUT")[0] == 200, "key created over mTLS with an Ed25519 client certificate")
        for _ in range(3):
            get("/v1/key/describe/none")
        status, text = get("/v1/metrics")
        check(status == 200, "GET /v1/metrics answers 200")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        check(True, f"the official Prometheus parser accepts the output ({len(families)} families)")
        for name in ["kes_http_request_success", "kes_http_request_error", "kes_http_request_active",
                     "kes_http_response_time", "kes_log_error_events", "kes_log_audit_events",
                     "kes_system_up_time", "kes_system_num_cpu", "kes_system_num_cpu_used",
                     "kes_system_num_threads", "kes_system_mem_heap_used", "kes_system_mem_heap_objects",
                     "kes_system_mem_stack_used"]:
            check(name in families and families[name].samples, f"family {name} present with samples")
        errors = {s.labels.get("code"): s.value for s in families["kes_http_request_error"].samples
                  if s.name.endswith("_total") or s.name == "kes_http_request_error"}
        check(errors.get("404") == 3.0, f"kes_http_request_error{{code=404}} counts exactly 3 ({errors})")
        check(families["kes_http_response_time"].type == "histogram", "kes_http_response_time is a histogram")
        buckets = [s.labels["le"] for s in families["kes_http_response_time"].samples if s.name.endswith("_bucket")]
        check(buckets == ["0.01", "0.05", "0.1", "0.25", "0.5", "1", "1.5", "3", "5", "10", "+Inf"],
              f"upstream's buckets, labels as Go formats them ({buckets})")
        singles = [n for n, f in families.items()
                   if n not in ("kes_http_request_success", "kes_http_request_error", "kes_http_request_failure", "kes_http_response_time")
                   and f.type != "summary"
                   and len([s for s in f.samples if not s.name.endswith("_created")]) != 1]
        check(not singles, f"kms-go's rule: one sample per other family (violations: {singles})")
        check(families["kes_system_num_threads"].samples[0].value >= 3, "kes_system_num_threads is a real value")
        status, body = get("/v1/status")
        st = json.loads(body)
        check(status == 200 and st["mem_heap_used"] > 0 and st["keystore_latency"] >= 1, "status carries real figures")
    finally:
        srv.terminate()
        srv.wait(timeout=10)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
