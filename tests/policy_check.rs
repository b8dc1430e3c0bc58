//! The policy dry-run gives the server's own decisions: one table of identities × requests
//! (admin, prefix `*`, exact, deny wins, no matching pattern, no policy, skip_auth, 404,
//! 405) checked through the library, `kes policy check --config`, `kes policy check`
//! against the running server, the `POST /v1/policy/check` route, and the real request.

mod common;

use common::{ClientId, TestServer, client_id};

struct Row {
    who: &'static str,
    method: &'static str,
    path: &'static str,
    allowed: bool,
    decision: &'static str,
    /// What the real request answers.
    status: u16,
}

const fn row(
    who: &'static str,
    method: &'static str,
    path: &'static str,
    allowed: bool,
    decision: &'static str,
    status: u16,
) -> Row {
    Row { who, method, path, allowed, decision, status }
}

const TABLE: &[Row] = &[
    row("admin", "DELETE", "/v1/key/delete/x", true, "admin identity (bypasses all policies)", 404),
    row(
        "app",
        "PUT",
        "/v1/key/create/app-1",
        true,
        "policy 'app' allow pattern '/v1/key/create/app*'",
        200,
    ),
    row(
        "app",
        "PUT",
        "/v1/key/create/app-secret-1",
        false,
        "policy 'app' deny pattern '/v1/key/create/app-secret*' (deny wins)",
        403,
    ),
    row(
        "app",
        "PUT",
        "/v1/key/create/other",
        false,
        "policy 'app' has no allow pattern matching the path",
        403,
    ),
    row("app", "GET", "/v1/status", true, "policy 'app' allow pattern '/v1/status'", 200),
    row("app", "GET", "/v1/status/", false, "no such API (404)", 404),
    row(
        "exact",
        "GET",
        "/v1/key/describe/only",
        true,
        "policy 'exact' allow pattern '/v1/key/describe/only'",
        404,
    ),
    row(
        "exact",
        "GET",
        "/v1/key/describe/only2",
        false,
        "policy 'exact' has no allow pattern matching the path",
        403,
    ),
    row("none", "GET", "/v1/status", false, "no policy for this identity", 403),
    row(
        "none",
        "GET",
        "/v1/ready",
        true,
        "route '/v1/ready' checks no policy (authentication off for it)",
        200,
    ),
    row(
        "app",
        "GET",
        "/v1/key/create/app-1",
        false,
        "method not allowed (405); the API expects PUT",
        405,
    ),
    row("app", "GET", "/v1/nope", false, "no such API (404)", 404),
];

struct Setup {
    srv: TestServer,
    app: ClientId,
    exact: ClientId,
    none: ClientId,
}

impl Setup {
    fn new() -> Setup {
        let (app, exact, none) = (client_id(), client_id(), client_id());
        let extra = format!(
            "policy:\n  app:\n    allow: [/v1/key/create/app*, /v1/status]\n    deny: [/v1/key/create/app-secret*]\n    identities: [{}]\n  exact:\n    allow: [/v1/key/describe/only]\n    identities: [{}]\napi:\n  /v1/ready: {{skip_auth: true}}\n",
            app.identity, exact.identity
        );
        Setup { srv: TestServer::start(&extra), app, exact, none }
    }

    fn id(&self, who: &str) -> &ClientId {
        match who {
            "admin" => &self.srv.admin,
            "app" => &self.app,
            "exact" => &self.exact,
            _ => &self.none,
        }
    }
}

fn kes(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    common::kes_in(&std::env::temp_dir(), args, env)
}

fn expected_line(r: &Row) -> String {
    format!("{}: {}\n", if r.allowed { "allowed" } else { "denied" }, r.decision)
}

#[test]
fn dry_run_decisions_equal_the_servers_everywhere() {
    let s = Setup::new();
    let config = s.srv.dir.join("config.yml");
    let cfg = kes::config::load(&config).unwrap();
    let (policies, routes) = kes::server::authorization(&cfg);
    let cert_file = s.srv.dir.join("app.crt");
    std::fs::write(&cert_file, &s.app.cert_pem).unwrap();
    let (admin_crt, admin_key) = (s.srv.dir.join("admin.crt"), s.srv.dir.join("admin.key"));
    std::fs::write(&admin_crt, &s.srv.admin.cert_pem).unwrap();
    std::fs::write(&admin_key, &s.srv.admin.key_pem).unwrap();
    let online = [
        ("KES_SERVER", format!("https://127.0.0.1:{}", s.srv.addr.port())),
        ("KES_CLIENT_CERT", admin_crt.display().to_string()),
        ("KES_CLIENT_KEY", admin_key.display().to_string()),
        ("SSL_CERT_FILE", s.srv.dir.join("server.crt").display().to_string()),
    ];
    for r in TABLE {
        let what = format!("{} {} {}", r.who, r.method, r.path);
        let identity = s.id(r.who).identity.clone();

        // The library.
        let v = kes::api::explain(
            &routes,
            &policies,
            &kes::auth::Identity::new(identity.clone()),
            &Default::default(),
            &kes::http::Method::parse(r.method),
            r.path,
        );
        assert_eq!((v.allowed(), v.to_string().as_str()), (r.allowed, r.decision), "{what}");

        // The CLI on the config file, naming the client by identity (by certificate for app).
        let subject =
            if r.who == "app" { cert_file.display().to_string() } else { identity.clone() };
        let (code, out, err) = kes(
            &["policy", "check", "--config", config.to_str().unwrap(), &subject, r.method, r.path],
            &[],
        );
        assert_eq!((code, err.as_str()), (0, ""), "{what}");
        assert_eq!(out, expected_line(r), "{what}");

        // The CLI against the running server, and the route it calls.
        let (code, out, err) = kes(&["policy", "check", &identity, r.method, r.path], &online);
        assert_eq!((code, err.as_str()), (0, ""), "{what}");
        assert_eq!(out, expected_line(r), "{what}");
        let body = serde_json::json!({"identity": identity, "method": r.method, "path": r.path});
        let reply = s.srv.admin().post("/v1/policy/check", &body.to_string());
        assert_eq!(reply.status, 200, "{what}");
        let j = reply.json();
        assert_eq!(j["allowed"], r.allowed, "{what}");
        assert_eq!(j["decision"], r.decision, "{what}");

        // The real request.
        let mut c = s.srv.client(Some(s.id(r.who)));
        let real = c.request(r.method, r.path, None);
        assert_eq!(real.status, r.status, "{what}: {}", real.text());
        if !r.allowed && r.status == 403 {
            assert_eq!(real.message(), "not authorized: insufficient permissions");
        }
    }
}

#[test]
fn the_route_reports_pattern_fields_and_refuses_bad_input() {
    let s = Setup::new();
    let check = |id: &ClientId, body: &str| s.srv.client(Some(id)).post("/v1/policy/check", body);
    let body = format!(
        r#"{{"identity":"{}","method":"PUT","path":"/v1/key/create/app-secret-9"}}"#,
        s.app.identity
    );
    let r = check(&s.srv.admin, &body);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "{\"allowed\":false,\"decision\":\"policy 'app' deny pattern '/v1/key/create/app-secret*' (deny wins)\",\"policy\":\"app\",\"effect\":\"deny\",\"pattern\":\"/v1/key/create/app-secret*\"}\n"
    );
    // Only the admin (or a policy allowing /v1/policy/check) may ask.
    let r = check(&s.app, &body);
    assert_eq!((r.status, r.message()), (403, "not authorized: insufficient permissions".into()));
    for bad in [
        "",
        "{}",
        r#"{"identity":"a","method":"GET"}"#,
        r#"{"identity":"a","method":"GET","path":"v1/status"}"#,
        r#"{"identity":"a","method":"get","path":"/v1/status"}"#,
        r#"{"identity":"a","method":"GET","path":"/v1/status","x":1}"#,
    ] {
        let r = check(&s.srv.admin, bad);
        assert_eq!(
            (r.status, r.message()),
            (400, "invalid policy check: expected {\"identity\",\"method\",\"path\"}".into()),
            "{bad}"
        );
    }
    let long = "a".repeat(kes::api::handlers::policy::MAX_CHECK_IDENTITY + 1);
    let r = check(&s.srv.admin, &format!(r#"{{"identity":"{long}","method":"GET","path":"/"}}"#));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        // Echoed input is cut to a bounded length (issue 9).
        format!(
            "identity '{}' is empty, too long or contains invalid characters",
            kes::api::error::echo(&long)
        )
    );
    // A body over the route's limit is not read past it.
    let huge = format!(
        r#"{{"identity":"{}","method":"GET","path":"/{}"}}"#,
        s.app.identity,
        "x".repeat(kes::api::routes::MAX_POLICY_CHECK_BODY + 1000)
    );
    let r = check(&s.srv.admin, &huge);
    assert_eq!(r.status, 400);
}
