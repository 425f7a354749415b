//! Authentication and TLS with the real clients: tokio-postgres and psql over
//! pgwire (SCRAM-SHA-256, and SCRAM-SHA-256-PLUS bound to the certificate over
//! TLS), curl and reqwest over HTTP(S); and the refusal to serve other machines
//! without authentication.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::server::TestServer;

/// `sluice hash-password` for `password`, as a user would make a users file.
fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sluice hash-password");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A users file with `ann` (a verifier) and `bob` (a plain password).
fn users_file(dir: &Path) -> std::path::PathBuf {
    let verifier = hash_password("ann's secret");
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(!verifier.contains("ann's secret"));
    let path = dir.join("users");
    std::fs::write(
        &path,
        format!("# who may connect\nann:{verifier}\nbob:bob-pw\n"),
    )
    .unwrap();
    path
}

async fn pg_connect(
    server: &TestServer,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut conn = format!(
        "host=127.0.0.1 port={} user={user} dbname=sluice",
        server.pg_port
    );
    if let Some(p) = password {
        conn.push_str(&format!(" password='{}'", p.replace('\'', "\\'")));
    }
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} {}", d.code().code(), d.message()))
        .unwrap_or_else(|| e.to_string())
}

/// psql with `conn` (a libpq connection string) and `password`; (success, output).
fn psql(conn: &str, password: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .arg(conn)
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_authenticates_with_a_user_of_the_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--users-file", users.to_str().unwrap()],
    );

    // pgwire, tokio-postgres: SCRAM-SHA-256 with the verifier and the plain password.
    for (user, password) in [("ann", "ann's secret"), ("bob", "bob-pw")] {
        let client = pg_connect(&server, user, Some(password))
            .await
            .unwrap_or_else(|e| panic!("{user}: {}\n{}", sqlstate(&e), server.log_tail()));
        let rows = client.simple_query("SELECT 41 + 1 AS x").await.unwrap();
        assert!(format!("{rows:?}").contains("42"), "{rows:?}");
    }
    // A wrong password and an unknown user read the same.
    for (user, password) in [
        ("ann", Some("bob-pw")),
        ("eve", Some("ann's secret")),
        ("ann", None),
    ] {
        let err = pg_connect(&server, user, password)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} got in with {password:?}"));
        if password.is_some() {
            assert_eq!(
                sqlstate(&err),
                format!("28P01 password authentication failed for user \"{user}\""),
            );
        }
    }
    // psql, the real libpq client.
    let conn = format!(
        "host=127.0.0.1 port={} user=ann dbname=sluice",
        server.pg_port
    );
    let (ok, out) = psql(&conn, "ann's secret", "SELECT 7 * 6");
    assert!(ok && out.trim() == "42", "{out}");
    let (ok, out) = psql(&conn, "wrong", "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed for user \"ann\""),
        "{out}"
    );

    // HTTP: basic auth on everything but /healthz.
    let http = reqwest::Client::new();
    let ksql = |user: Option<(&str, &str)>| {
        let mut req = http
            .post(format!("{}/ksql", server.http()))
            .json(&serde_json::json!({"ksql": "SHOW STREAMS;"}));
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        req.send()
    };
    let resp = ksql(None).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error_code"], 40100, "{body}");
    for wrong in [("ann", "bob-pw"), ("eve", "ann's secret")] {
        assert_eq!(ksql(Some(wrong)).await.unwrap().status().as_u16(), 401);
    }
    for right in [("ann", "ann's secret"), ("bob", "bob-pw")] {
        assert_eq!(ksql(Some(right)).await.unwrap().status().as_u16(), 200);
    }
    let metrics = http
        .get(format!("{}/metrics", server.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 401);
    let health = http
        .get(format!("{}/healthz", server.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_protects_both_listeners_and_binds_scram_to_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--users-file",
            users.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );

    // psql verifying the certificate, with channel binding required: the
    // SCRAM exchange is bound to this TLS connection (SCRAM-SHA-256-PLUS).
    let base = format!(
        "host=localhost port={} user=ann dbname=sluice sslrootcert={}",
        server.pg_port,
        cert.display()
    );
    let (ok, out) = psql(
        &format!("{base} sslmode=verify-full channel_binding=require"),
        "ann's secret",
        "SELECT 6 * 7",
    );
    assert!(ok && out.trim() == "42", "{out}\n{}", server.log_tail());
    // The session really is encrypted: psql's \conninfo says so.
    let out = Command::new("psql")
        .arg(format!("{base} sslmode=verify-full"))
        .args(["-X", "-c", "\\conninfo"])
        .env("PGPASSWORD", "ann's secret")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("SSL connection (protocol: TLSv1."), "{info}");
    // Wrong passwords fail over TLS too.
    let (ok, out) = psql(&format!("{base} sslmode=require"), "nope", "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );

    // HTTPS with curl, verifying the certificate; plain HTTP is not served.
    let url = format!("https://127.0.0.1:{}/ksql", server.http_port);
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&cert)
        .args(["-u", "bob:bob-pw", "-H", "Content-Type: application/json"])
        .args(["-d", r#"{"ksql": "SHOW STREAMS;"}"#])
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(body.is_array(), "{body}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", server.http_port))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

enum Outcome {
    Exited {
        success: bool,
        stderr: String,
    },
    /// It accepted a connection on `probe`.
    Listening,
}

/// Runs `sluice serve` with `args` until it exits or answers on `probe`.
fn serve_outcome(data_dir: &Path, args: &[&str], probe: u16) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Outcome::Exited {
                success: status.success(),
                stderr: String::from_utf8_lossy(&out.stderr).into(),
            };
        }
        if std::net::TcpStream::connect(("127.0.0.1", probe)).is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome::Listening;
        }
        assert!(
            Instant::now() < deadline,
            "sluice neither exited nor listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refused(outcome: Outcome) -> String {
    match outcome {
        Outcome::Exited {
            success: false,
            stderr,
        } => stderr,
        Outcome::Exited {
            success: true,
            stderr,
        } => panic!("exited successfully: {stderr}"),
        Outcome::Listening => panic!("it listened"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn other_machines_are_served_only_with_authentication_or_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (pg_port, http_port) = (free_port(), free_port());
    let pg = format!("0.0.0.0:{pg_port}");
    let http = format!("127.0.0.1:{http_port}");
    let args = ["--pg-addr", pg.as_str(), "--http-addr", http.as_str()];
    let err = refused(serve_outcome(&dir.path().join("a"), &args, pg_port));
    assert!(
        err.contains("refusing to serve pgwire on 0.0.0.0:"),
        "{err}"
    );
    assert!(err.contains("--users-file"), "{err}");

    // Asked for, or with users: it serves.
    let mut open = args.to_vec();
    open.push("--allow-unauthenticated");
    assert!(matches!(
        serve_outcome(&dir.path().join("b"), &open, pg_port),
        Outcome::Listening
    ));
    let users = users_file(dir.path());
    let mut with_users = args.to_vec();
    with_users.extend(["--users-file", users.to_str().unwrap()]);
    assert!(matches!(
        serve_outcome(&dir.path().join("c"), &with_users, pg_port),
        Outcome::Listening
    ));

    // A bad users file or a certificate without its key stops it before it listens.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "ann\n").unwrap();
    let mut bad_users = args.to_vec();
    bad_users.extend(["--users-file", bad.to_str().unwrap()]);
    let err = refused(serve_outcome(&dir.path().join("d"), &bad_users, pg_port));
    assert!(err.contains("line 1"), "{err}");
    let mut half_tls = args.to_vec();
    half_tls.extend(["--tls-cert", users.to_str().unwrap()]);
    let err = refused(serve_outcome(&dir.path().join("e"), &half_tls, pg_port));
    assert!(err.contains("--tls-key"), "{err}");
}
