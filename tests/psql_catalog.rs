//! psql's meta-commands against the real server: `\d`, `\dt`, `\dv`, `\d name`,
//! `\l`, `\dn` and friends send catalog queries (pg_catalog, information_schema)
//! that Sluice answers from its own catalog. Runs the installed `psql` binary;
//! skipped (with a message) when there is none, unless `SLUICE_REQUIRE_PSQL` is
//! set (then a missing psql fails the test).

mod support;

use std::process::Command;

use support::server::TestServer;

/// Whether a `psql` client is installed.
fn psql_available() -> bool {
    Command::new("psql")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs one `psql -c` command; returns its output (stdout, then stderr, where
/// psql writes "Did not find any relations.") after asserting psql exited 0 and
/// reported no error.
/// Runs one `psql -c` command that must fail; returns psql's error output.
fn psql_error(server: &TestServer, command: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-U", "sluice", "-d", "sluice"])
        .arg("-p")
        .arg(server.pg_port.to_string())
        .arg("-c")
        .arg(command)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("ERROR"),
        "psql -c {command:?} did not fail: {stderr}"
    );
    stderr
}

fn psql(server: &TestServer, command: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "sluice",
            "-d",
            "sluice",
        ])
        .arg("-p")
        .arg(server.pg_port.to_string())
        .arg("-c")
        .arg(command)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .output()
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "psql -c {command:?} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        out.status,
        server.log_tail()
    );
    assert!(
        !stdout.contains("ERROR") && !stderr.contains("ERROR"),
        "psql -c {command:?} reported an error\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout + &stderr
}

/// The rows of a psql table printout whose first cell (after trimming) is `first`,
/// as trimmed cells.
fn rows_starting_with(output: &str, first: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.len() > 1 && cells[0] == first)
        .collect()
}

fn assert_row(output: &str, expected: &[&str]) {
    let rows = rows_starting_with(output, expected[0]);
    assert!(
        rows.iter()
            .any(|r| r.len() >= expected.len() && r.iter().zip(expected).all(|(a, b)| a == b)),
        "expected a row starting {expected:?} in:\n{output}"
    );
}

fn assert_no_row(output: &str, first: &str) {
    assert!(
        rows_starting_with(output, first).is_empty(),
        "expected no row starting with {first:?} in:\n{output}"
    );
}

#[test]
fn psql_meta_commands_describe_streams_and_tables() {
    if !psql_available() {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_PSQL").is_none(),
            "SLUICE_REQUIRE_PSQL is set but there is no `psql` on PATH"
        );
        eprintln!("SKIPPED psql_meta_commands_describe_streams_and_tables: no `psql` on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);

    psql(
        &server,
        "CREATE STREAM pageviews (user_id VARCHAR KEY, url VARCHAR, status INT) \
         WITH (kafka_topic='pageviews', partitions=2)",
    );
    psql(
        &server,
        "CREATE TABLE per_url AS SELECT url, COUNT(*) AS n FROM pageviews GROUP BY url",
    );

    // \d lists both: the stream as a view, the table as a table.
    let all = psql(&server, "\\d");
    assert!(all.contains("List of relations"), "{all}");
    assert_row(&all, &["public", "pageviews", "view", "sluice"]);
    assert_row(&all, &["public", "per_url", "table", "sluice"]);

    // \dt: tables only.
    let tables = psql(&server, "\\dt");
    assert_row(&tables, &["public", "per_url", "table", "sluice"]);
    assert!(!tables.contains("pageviews"), "{tables}");

    // \dv: streams.
    let views = psql(&server, "\\dv");
    assert_row(&views, &["public", "pageviews", "view", "sluice"]);
    assert!(!views.contains("per_url"), "{views}");
    assert!(psql(&server, "\\dm").contains("Did not find any relations"));

    // \d name: columns with their Postgres types.
    let stream = psql(&server, "\\d pageviews");
    assert!(stream.contains("View \"public.pageviews\""), "{stream}");
    assert_row(&stream, &["user_id", "text"]);
    assert_row(&stream, &["url", "text"]);
    assert_row(&stream, &["status", "integer"]);

    let table = psql(&server, "\\d per_url");
    assert!(table.contains("Table \"public.per_url\""), "{table}");
    assert_row(&table, &["url", "text"]);
    assert_row(&table, &["n", "bigint"]);

    // \d+ shows a stream's definition.
    let verbose = psql(&server, "\\d+ pageviews");
    assert!(verbose.contains("View definition:"), "{verbose}");
    assert!(verbose.contains("kafka_topic='pageviews'"), "{verbose}");
    psql(&server, "\\d+ per_url");
    psql(&server, "\\d+");

    // \l, \dn, \du.
    assert_row(&psql(&server, "\\l"), &["sluice", "sluice", "UTF8"]);
    let schemas = psql(&server, "\\dn");
    assert_row(&schemas, &["public", "sluice"]);
    assert_no_row(&schemas, "pg_catalog");
    assert_row(&psql(&server, "\\du"), &["sluice"]);

    // A relation created now is listed at once (the catalog is read on each scan).
    psql(
        &server,
        "CREATE STREAM clicks (id VARCHAR KEY, target VARCHAR) WITH (kafka_topic='clicks', partitions=1)",
    );
    assert_row(
        &psql(&server, "\\dv"),
        &["public", "clicks", "view", "sluice"],
    );
    assert_row(&psql(&server, "\\d clicks"), &["target", "text"]);

    // information_schema lists them too, the Postgres way: streams are views,
    // columns count from 1, types have their Postgres names.
    let info = psql(
        &server,
        "SELECT table_schema, table_name FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY table_name",
    );
    for name in ["clicks", "pageviews", "per_url"] {
        assert_row(&info, &["public", name]);
    }
    let columns = psql(
        &server,
        "SELECT table_name, column_name FROM information_schema.columns \
         WHERE table_name = 'pageviews' ORDER BY ordinal_position",
    );
    for column in ["user_id", "url", "status"] {
        assert_row(&columns, &["pageviews", column]);
    }
    let typed = psql(
        &server,
        "SELECT column_name, ordinal_position, data_type, udt_name, is_nullable \
         FROM information_schema.columns WHERE table_name = 'pageviews' ORDER BY ordinal_position",
    );
    assert_row(&typed, &["user_id", "1", "text", "text", "YES"]);
    assert_row(&typed, &["status", "3", "integer", "int4", "YES"]);
    let kinds = psql(
        &server,
        "SELECT table_name, table_type FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY table_name",
    );
    assert_row(&kinds, &["pageviews", "VIEW"]);
    assert_row(&kinds, &["per_url", "BASE TABLE"]);
    let counted = psql(
        &server,
        "SELECT 'bigints', COUNT(*) FROM information_schema.columns \
         WHERE table_name = 'per_url' AND data_type = 'bigint' AND numeric_precision = 64",
    );
    assert_row(&counted, &["bigints", "1"]);

    // SHOW CREATE gives the statement back; SHOW of something Sluice does not
    // have says what it does have.
    let created = psql(&server, "SHOW CREATE TABLE per_url");
    assert!(
        created.contains(
            "CREATE TABLE per_url AS SELECT url, COUNT(*) AS n FROM pageviews GROUP BY url"
        ),
        "{created}"
    );
    assert!(psql(&server, "SHOW CREATE VIEW pageviews").contains("CREATE STREAM pageviews"));
    let wrong_kind = psql_error(&server, "SHOW CREATE STREAM per_url");
    assert!(
        wrong_kind.contains("stream 'per_url' does not exist"),
        "{wrong_kind}"
    );
    let functions = psql_error(&server, "SHOW FUNCTIONS");
    assert!(
        functions.contains("Sluice has no functions") && functions.contains("SHOW STREAMS"),
        "{functions}"
    );
    let unknown = psql_error(&server, "SHOW nonsense_setting");
    assert!(
        unknown.contains("unrecognized configuration parameter") && unknown.contains("SHOW CREATE"),
        "{unknown}"
    );

    // What drivers and dashboards ask on connect.
    let facts = psql(
        &server,
        "SELECT version(), current_database(), current_schema(), current_user",
    );
    assert!(facts.contains("PostgreSQL 15"), "{facts}");
    assert!(facts.contains("sluice"), "{facts}");
    let relid = psql(
        &server,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
         WHERE a.attrelid = 'per_url'::regclass AND a.attnum > 0 ORDER BY a.attnum",
    );
    assert_row(&relid, &["url", "text"]);
    assert_row(&relid, &["n", "bigint"]);
}
