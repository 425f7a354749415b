//! Real client libraries against a real server: each script in tests/clients/
//! connects with the drivers users have (psycopg 3, psycopg2, asyncpg, ...) and
//! exits non-zero on the first answer that differs from Postgres'. The test
//! command installs the drivers into `.tools/py` (see scripts/test.sh).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::server::TestServer;

/// Where the Python drivers are installed; `None` when they are missing and
/// the run does not require them.
fn python_path() -> Option<PathBuf> {
    let dir = std::env::var_os("SLUICE_PYTHON_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/py"));
    let present = ["psycopg", "asyncpg", "ksql", "sqlalchemy", "pandas"]
        .iter()
        .all(|package| dir.join(package).is_dir());
    if present {
        return Some(dir);
    }
    assert!(
        std::env::var("SLUICE_REQUIRE_CLIENTS").is_err(),
        "SLUICE_REQUIRE_CLIENTS is set but the Python drivers are not in {}",
        dir.display()
    );
    eprintln!(
        "skipping: the Python drivers are not installed in {} (scripts/test.sh installs them)",
        dir.display()
    );
    None
}

/// Runs a client program to its end: it must exit successfully and print
/// "done" last, so a script that exits early fails.
fn run_client(name: &str, command: &mut Command, server: &TestServer) {
    let out = command
        .env("SLUICE_PG_PORT", server.pg_port.to_string())
        .env("SLUICE_HTTP_PORT", server.http_port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{name} does not run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("done\n"),
        "{name} failed:\n{stdout}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
}

fn client_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Runs tests/clients/`script` against `server`.
fn run_script(script: &str, server: &TestServer, python_path: &Path) {
    run_client(
        script,
        Command::new("python3")
            .arg(client_file(script))
            .env("PYTHONPATH", python_path),
        server,
    );
}

#[test]
fn python_drivers_bind_parameters_of_every_type() {
    let Some(py) = python_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_script("parameters.py", &server, &py);
}

#[test]
fn transactions_savepoints_and_cursors_work_as_drivers_use_them() {
    let Some(py) = python_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_script("cursors.py", &server, &py);
}

#[test]
fn copy_from_stdin_loads_text_and_csv() {
    let Some(py) = python_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_script("copy_from.py", &server, &py);
}

#[test]
fn ksql_python_uses_the_ksqldb_rest_api() {
    let Some(py) = python_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_script("ksql_python.py", &server, &py);
}

#[test]
fn sqlalchemy_and_pandas_reflect_and_read() {
    let Some(py) = python_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_script("sqlalchemy_pandas.py", &server, &py);
}

#[test]
fn grafana_and_metabase_catalog_queries() {
    let Some(py) = python_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_script("bi_tools.py", &server, &py);
}

/// pgJDBC's jar (Debian's libpostgresql-jdbc-java); `None` when it or java is
/// missing and the run does not require them.
fn pgjdbc_jar() -> Option<PathBuf> {
    let jar = std::env::var_os("SLUICE_PGJDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"));
    let java = Command::new("java").arg("-version").output().is_ok();
    if jar.is_file() && java {
        return Some(jar);
    }
    assert!(
        std::env::var("SLUICE_REQUIRE_CLIENTS").is_err(),
        "SLUICE_REQUIRE_CLIENTS is set but java or pgJDBC ({}) is missing",
        jar.display()
    );
    eprintln!("skipping: java or pgJDBC is not installed (scripts/test.sh installs them)");
    None
}

#[test]
fn pgjdbc_database_metadata_browses_like_dbeaver() {
    let Some(jar) = pgjdbc_jar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_client(
        "JdbcMetadata.java",
        Command::new("java")
            .arg("-cp")
            .arg(&jar)
            .arg(client_file("JdbcMetadata.java")),
        &server,
    );
}

/// Where the JavaScript clients are installed (`node_modules`); `None` when
/// they are missing and the run does not require them.
fn node_path() -> Option<PathBuf> {
    let dir = std::env::var_os("SLUICE_JS_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/js/node_modules"));
    if dir.join("ksqldb-js").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("SLUICE_REQUIRE_CLIENTS").is_err(),
        "SLUICE_REQUIRE_CLIENTS is set but ksqldb-js is not in {}",
        dir.display()
    );
    eprintln!(
        "skipping: ksqldb-js is not installed in {} (scripts/test.sh installs it)",
        dir.display()
    );
    None
}

#[test]
fn ksqldb_js_uses_the_ksqldb_rest_api_over_http2() {
    let Some(modules) = node_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_client(
        "ksqldb_js.js",
        Command::new("node")
            .arg(client_file("ksqldb_js.js"))
            .env("NODE_PATH", &modules),
        &server,
    );
}

/// psql `args`, with `input` on its standard input; its output, or a panic.
fn psql(server: &TestServer, input: &str, command: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("psql")
        .arg(server.pg_conn_string())
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", command])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql -c {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn psql_loads_a_csv_from_its_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    psql(
        &server,
        "",
        "CREATE STREAM people (name VARCHAR, age INT) WITH (kafka_topic='people', partitions=1)",
    );
    let out = psql(
        &server,
        "name,age\nann,31\n\"bo, b\",\n",
        "COPY people FROM STDIN WITH (FORMAT csv, HEADER)",
    );
    assert_eq!(out, "COPY 2");
    assert_eq!(
        psql(&server, "", "SELECT name || ':' || COALESCE(CAST(age AS VARCHAR), 'null') FROM people ORDER BY name"),
        "ann:31\nbo, b:null"
    );
}
