//! The Postgres wire protocol server (psql, drivers, dashboards).
//!
//! Start it with [`serve_pgwire`] on an already-bound listener. Each connection
//! gets its own [`Session`] and speaks:
//!
//! - **Simple query protocol**: every statement of the query string runs
//!   through [`Engine::execute`]. `Done` results become CommandComplete (plus a
//!   NOTICE carrying the engine's human message), `Rows` become a
//!   RowDescription and DataRows in text format, and `Push` results stream
//!   DataRows as batches arrive (flushed whenever the query waits for more).
//! - **`COPY (query) TO STDOUT`** / **`COPY table TO STDOUT`**, in text or CSV
//!   format: the inner statement runs through the engine and its rows stream
//!   to the client as CopyData as they arrive. This is how psql shows a push
//!   query live, since psql itself only prints a SELECT's rows once it ended.
//! - **Extended query protocol**: Parse describes the statement with
//!   [`Engine::describe`] (parameter types and result schema), Bind decodes
//!   parameters (text and binary formats for bool, int2/4/8, float4/8,
//!   numeric, text/varchar, bytea, date, time, timestamp and timestamptz) into
//!   DataFusion `ScalarValue`s, and Execute runs
//!   [`Engine::execute_with_params`], honouring per-column text/binary result
//!   formats and `max_rows` (portal suspension).
//!
//! Query cancellation (psql's Ctrl-C, `pg_cancel_backend`-style CancelRequest)
//! and the client disconnecting both drop the engine's result stream, which
//! stops a push query.
//!
//! With a users file, every connection authenticates with SCRAM-SHA-256 (and
//! SCRAM-SHA-256-PLUS, bound to the certificate, over TLS); a wrong password
//! or an unknown user is `FATAL 28P01` alike. With a certificate, pgwire
//! answers `SSLRequest`; see [`super::security`].

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::scalar::ScalarValue;
use futures::channel::oneshot;
use futures::{stream, FutureExt, Sink, SinkExt, Stream, StreamExt};
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::sasl::{SaslMechanismFactory, SaslMechanisms};
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, AuthDriver, AuthOutcome, AuthSource,
    DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::{send_copy_in_response, CopyHandler};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{send_describe_response, ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, FieldFormat, FieldInfo, QueryResponse, Response,
    SendableRowStream, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, PgWireConnectionState,
    PgWireServerHandlers, Type, DEFAULT_NAME, METADATA_APPLICATION_NAME, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyOutResponse};
use pgwire::messages::data::RowDescription;
use pgwire::messages::extendedquery::{
    Describe, Execute, PortalSuspended, TARGET_TYPE_BYTE_PORTAL,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sqlparser::tokenizer::{Token, TokenWithSpan};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::arrow_convert::{
    arrow_type_for_pg, field_infos, numeric_from_binary, pg_type, CopyEncoder, CopyFormat,
    CopyOptions, PgRowEncoder, PG_EPOCH_DAYS, PG_EPOCH_MICROS,
};
use super::copy_in::{self, CopyFrom, CopyIn};
use super::security::users::Users;
use super::security::Security;
use super::{significant_tokens, token_start, translate_position, SERVER_VERSION};
use crate::engine::result::{BatchStream, StatementResult};
use crate::engine::session::Session;
use crate::engine::Engine;
use crate::error::SluiceError;

/// Accepts Postgres connections on `listener` until `shutdown` completes.
///
/// Takes an already-bound listener so callers (and tests) can bind port 0 and
/// read the actual address first. Each connection runs on its own task. When
/// `shutdown` fires the server stops accepting and aborts open connections,
/// which drops their running push queries. Accept errors (e.g. out of file
/// descriptors) are logged and retried, never fatal.
pub async fn serve_pgwire<F>(
    engine: Arc<Engine>,
    security: &Security,
    listener: TcpListener,
    shutdown: F,
) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let max_connections = engine.config().max_connections;
    let tls = match &security.tls {
        // PostgreSQL 17's direct TLS negotiates ALPN "postgresql".
        Some(tls) => Some(tls.acceptor(&[b"postgresql"])?),
        None => None,
    };
    let server = Arc::new(PgServer::new(engine, security)?);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Over the cap the connection is still served, just to refuse
                    // it with Postgres' own "too many clients" error.
                    let refuse = connections.len() >= max_connections;
                    let handlers = PgHandlers::new(Arc::clone(&server), &socket, refuse);
                    let tls = tls.clone();
                    connections.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(%peer, error = %e, "pgwire connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pgwire accept failed");
                    // Typically EMFILE: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "pgwire connection task panicked");
                    }
                }
            }
        }
    }
    connections.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Server and per-connection state
// ---------------------------------------------------------------------------

/// State shared by all connections of one server.
struct PgServer {
    engine: Arc<Engine>,
    /// Maps (pid, secret) from BackendKeyData to running queries, for cancel.
    cancels: Arc<ConnectionManager>,
    /// Finishes the startup: pid and secret, cancel registration, server
    /// parameters.
    driver: AuthDriver<Arc<DefaultServerParameterProvider>>,
    /// SCRAM for plain connections, and with channel binding for TLS ones
    /// (offering SCRAM-SHA-256-PLUS without TLS would make libpq refuse);
    /// `None` without a users file.
    scram: Option<(SaslMechanisms, SaslMechanisms)>,
}

/// The users file as pgwire's SCRAM exchange asks for it.
#[derive(Debug)]
struct UsersSource(Arc<Users>);

#[async_trait]
impl AuthSource for UsersSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Only SCRAM is offered, which asks for the verifier below.
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_string(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        Ok((self.0.scram_secret(login.user().unwrap_or_default()), None))
    }
}

impl PgServer {
    fn new(engine: Arc<Engine>, security: &Security) -> anyhow::Result<Self> {
        // ParameterStatus sent after authentication. Drivers read these:
        // psql and JDBC parse server_version, JDBC insists on UTF8 client
        // encoding and an ISO DateStyle, tokio-postgres and JDBC need
        // integer_datetimes=on to use binary timestamps.
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.server_encoding = "UTF8".into();
        parameters.client_encoding = Some("UTF8".into());
        parameters.date_style = "ISO, MDY".into();
        parameters.time_zone = "UTC".into();
        parameters.integer_datetimes = true;
        parameters.standard_conforming_strings = true;
        parameters.is_superuser = false;
        let cancels = Arc::new(ConnectionManager::new());
        let driver = AuthDriver::new(Arc::new(parameters)).with_connection_manager(cancels.clone());
        let scram = match &security.users {
            Some(users) => {
                let source: Arc<dyn AuthSource> = Arc::new(UsersSource(users.clone()));
                let plain = ScramAuth::new(source.clone());
                let mut bound = ScramAuth::new(source);
                if let Some(tls) = &security.tls {
                    bound
                        .configure_certificate(tls.cert_pem())
                        .map_err(|e| anyhow::anyhow!("SCRAM channel binding: {e}"))?;
                }
                let registry = |s: ScramAuth| {
                    SaslMechanisms::new(vec![Arc::new(s) as Arc<dyn SaslMechanismFactory>])
                };
                Some((registry(plain), registry(bound)))
            }
            None => None,
        };
        Ok(Self {
            engine,
            cancels,
            driver,
            scram,
        })
    }
}

/// One client connection: its session and the handlers pgwire calls.
struct PgConnection {
    server: Arc<PgServer>,
    /// The server has `--max-connections` already: refuse this one at startup.
    refuse: bool,
    session: Arc<Mutex<Session>>,
    parser: Arc<SluiceQueryParser>,
    probe: Option<ClientProbe>,
    /// The COPY ... FROM STDIN receiving data, if one is.
    copy_in: Mutex<Option<CopyIn>>,
}

/// The handler set pgwire asks for; all point at the same connection.
struct PgHandlers(Arc<PgConnection>);

impl PgHandlers {
    fn new(server: Arc<PgServer>, socket: &TcpStream, refuse: bool) -> Self {
        let session = Arc::new(Mutex::new(Session::new().streaming()));
        let parser = Arc::new(SluiceQueryParser {
            engine: Arc::clone(&server.engine),
            session: Arc::clone(&session),
        });
        let probe = match ClientProbe::new(socket) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch pgwire socket for disconnects");
                None
            }
        };
        PgHandlers(Arc::new(PgConnection {
            server,
            refuse,
            session,
            parser,
            probe,
            copy_in: Mutex::new(None),
        }))
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.0)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.0)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(Arc::clone(
            &self.0.server.cancels,
        )))
    }
}

/// Watches a connection's socket for the client going away while a query
/// runs. pgwire reads the socket only between messages, so without this a
/// push query that produces no rows would keep running after the client (say
/// a killed psql) disconnected. It peeks at a duplicate of the socket's file
/// descriptor and never consumes bytes.
struct ClientProbe {
    socket: TcpStream,
}

impl ClientProbe {
    /// Frontend `Terminate` message: 'X' and length 4.
    const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
    /// How often to re-check while the client has unread bytes pending
    /// (readiness would fire continuously otherwise).
    const BUSY_INTERVAL: Duration = Duration::from_millis(200);

    #[cfg(unix)]
    fn new(socket: &TcpStream) -> io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = socket.as_fd().try_clone_to_owned()?;
        let std_socket = std::net::TcpStream::from(fd);
        std_socket.set_nonblocking(true)?;
        Ok(Self {
            socket: TcpStream::from_std(std_socket)?,
        })
    }

    #[cfg(not(unix))]
    fn new(_socket: &TcpStream) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "disconnect probe needs unix",
        ))
    }

    /// Completes once the client closed the connection (EOF, reset, or a
    /// Terminate message waiting unread).
    async fn closed(&self) {
        let mut buf = [0u8; 5];
        loop {
            match self.socket.peek(&mut buf).await {
                Ok(0) => return,
                Ok(n) if n == buf.len() && buf == Self::TERMINATE => return,
                Ok(_) => tokio::time::sleep(Self::BUSY_INTERVAL).await,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// What can interrupt a running statement: a CancelRequest for this
/// connection, or the client going away.
struct Interrupts<'a> {
    cancel: Option<oneshot::Receiver<()>>,
    probe: Option<&'a ClientProbe>,
}

impl<'a> Interrupts<'a> {
    /// Registers a new query with the cancel registry (pgwire stores the
    /// connection's handle in the session extensions at startup).
    async fn start<C: ClientInfo>(client: &C, probe: Option<&'a ClientProbe>) -> Self {
        let handle = client.session_extensions().get::<Arc<ConnectionHandle>>();
        let cancel = match handle {
            Some(h) => Some(h.start_query().await),
            None => None,
        };
        Self { cancel, probe }
    }

    /// Runs `fut` unless a cancel request or a disconnect comes first; then
    /// `fut` is dropped (which stops whatever engine work it owns).
    async fn run<F: Future>(&mut self, fut: F) -> PgWireResult<F::Output> {
        let cancel = &mut self.cancel;
        let cancelled = async {
            if let Some(rx) = cancel {
                // Err means the handle was replaced or dropped: not a cancel.
                if rx.await.is_ok() {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let probe = self.probe;
        let disconnected = async {
            match probe {
                Some(p) => p.closed().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            out = fut => Ok(out),
            _ = cancelled => Err(PgWireError::QueryCanceled),
            _ = disconnected => Err(PgWireError::IoError(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "client disconnected",
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// Startup
// ---------------------------------------------------------------------------

#[async_trait]
impl StartupHandler for PgConnection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let server = &self.server;
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if self.refuse {
                    let max = server.engine.config().max_connections;
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".into(),
                        "53300".into(),
                        format!("sorry, too many clients already (--max-connections {max})"),
                    ))));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                match &server.scram {
                    Some((plain, bound)) => {
                        let sasl = if client.is_secure() { bound } else { plain };
                        server
                            .driver
                            .begin_authentication(client, sasl.create())
                            .await
                    }
                    // No users file: the connection is in. The driver registers
                    // it for CancelRequests (unregistered when it is dropped).
                    None => return server.driver.complete_authentication(client, None).await,
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(m) => {
                server.driver.advance_authentication(client, m).await
            }
            _ => return Ok(()),
        };
        match outcome {
            Ok(AuthOutcome::InProgress) => Ok(()),
            Ok(AuthOutcome::Authenticated { final_message, .. }) => {
                server
                    .driver
                    .complete_authentication(client, final_message)
                    .await
            }
            Err(PgWireError::InvalidPassword(_)) => {
                let user = client.metadata().get(METADATA_USER).cloned();
                tracing::info!(user = ?user, "pgwire password authentication failed");
                // Postgres' wording, naming the user of the startup message
                // (libpq leaves SCRAM's own user name empty).
                Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "28P01".into(),
                    format!(
                        "password authentication failed for user \"{}\"",
                        user.unwrap_or_default()
                    ),
                ))))
            }
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// COPY ... FROM STDIN (see copy_in.rs)
// ---------------------------------------------------------------------------

#[async_trait]
impl CopyHandler for PgConnection {
    async fn on_copy_data<C>(&self, _client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.copy_in.lock().await;
        let Some(state) = guard.as_mut() else {
            return Ok(());
        };
        if state.failed.is_some() {
            return Ok(());
        }
        if let Err(e) = state.push(&data.data) {
            state.failed = Some(e);
            return Ok(());
        }
        if state.rows.len() >= copy_in::BATCH_ROWS {
            self.write_copied(state).await;
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(mut state) = self.copy_in.lock().await.take() else {
            return Err(user_error(
                "08P01",
                "CopyDone without a COPY in progress".into(),
            ));
        };
        if state.failed.is_none() {
            if let Err(e) = state.finish() {
                state.failed = Some(e);
            }
        }
        self.write_copied(&mut state).await;
        if let Some(e) = state.failed {
            let kept = if state.written > 0 {
                format!(" ({} rows before it were written)", state.written)
            } else {
                String::new()
            };
            return Err(user_error(
                "22P04",
                format!("COPY {}: {e}{kept}", state.copy.target),
            ));
        }
        send_tag(client, Tag::new("COPY").with_rows(state.written)).await
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let written = self.copy_in.lock().await.take().map_or(0, |s| s.written);
        user_error(
            "57014",
            format!(
                "COPY from stdin failed: {} ({written} rows before it were written)",
                fail.message
            ),
        )
    }
}

// ---------------------------------------------------------------------------
// Simple query protocol
// ---------------------------------------------------------------------------

fn is_empty_query(sql: &str) -> bool {
    sql.chars().all(|c| c == ';' || c.is_whitespace())
}

#[async_trait]
impl SimpleQueryHandler for PgConnection {
    /// Replaces pgwire's default so rows can be flushed while a push query
    /// waits for more, and so COPY TO STDOUT can stream.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        if let Some(copy) = copy_in::parse(&query.query) {
            // The data follows in CopyData messages (see the CopyHandler);
            // pgwire sends ReadyForQuery after CopyDone.
            return self.start_copy_in(client, &query.query, copy).await;
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut status = client.transaction_status();
        let outcome = if is_empty_query(&query.query) {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await
                .map_err(PgWireError::from)
        } else {
            self.run_simple_query(client, &query.query, &mut status)
                .await
        };
        // On error pgwire's loop sends the ErrorResponse and ReadyForQuery.
        client.set_state(PgWireConnectionState::ReadyForQuery);
        outcome?;
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Only pgwire's default `on_query` calls this, and it is overridden.
        Err(internal_error("simple query dispatch bypassed on_query"))
    }
}

impl PgConnection {
    async fn start_copy_in<C>(
        &self,
        client: &mut C,
        sql: &str,
        copy: Result<CopyFrom, String>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let copy = copy.map_err(|msg| user_error("0A000", msg))?;
        let columns = self
            .server
            .engine
            .copy_columns(&copy.target, &copy.columns)
            .map_err(|e| user_error_info(error_info(&e, sql, sql, 0)))?;
        *self.copy_in.lock().await = Some(CopyIn::new(copy));
        client.set_state(PgWireConnectionState::CopyInProgress(false));
        send_copy_in_response(
            client,
            CopyResponse::new(0, columns, stream::empty::<PgWireResult<CopyData>>()),
        )
        .await
    }

    /// Writes the rows a COPY collected so far; a failure is kept for
    /// CopyDone, and the rest of the data is ignored.
    async fn write_copied(&self, state: &mut CopyIn) {
        if state.failed.is_some() || state.rows.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut state.rows);
        match self
            .server
            .engine
            .insert_text_rows(&state.copy.target, &state.copy.columns, &rows)
            .await
        {
            Ok(n) => state.written += n,
            Err(e) => state.failed = Some(e.message()),
        }
    }

    async fn run_simple_query<C>(
        &self,
        client: &mut C,
        sql: &str,
        status: &mut TransactionStatus,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut interrupts = Interrupts::start(client, self.probe.as_ref()).await;

        if let Some(copy) = parse_copy_to_stdout(sql) {
            let copy = copy.map_err(|msg| user_error("0A000", msg))?;
            return self
                .run_copy(client, sql, &copy, vec![], &mut interrupts)
                .await;
        }

        let results = {
            let mut session = self.session.lock().await;
            interrupts
                .run(self.server.engine.execute(&mut session, sql))
                .await?
        };
        if results.is_empty() {
            // Only comments: Postgres answers EmptyQueryResponse.
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            return Ok(());
        }
        let is_psql = client
            .metadata()
            .get(METADATA_APPLICATION_NAME)
            .is_some_and(|a| a == "psql");
        for result in results {
            match result {
                Ok(StatementResult::Done {
                    tag,
                    message,
                    rows_affected,
                }) => {
                    send_notice(client, &tag, &message).await?;
                    *status = status_after(&tag, *status);
                    send_tag(client, command_tag(&tag, rows_affected)).await?;
                }
                Ok(StatementResult::Rows { schema, batches }) => {
                    let encoder = PgRowEncoder::new(Arc::clone(&schema), vec![]);
                    send_row_description(client, &encoder.field_infos()).await?;
                    let mut rows = row_stream(batch_stream(batches), encoder, sql, sql, 0);
                    let (sent, _) = send_rows(client, &mut rows, 0, &mut interrupts).await?;
                    send_tag(client, Tag::new("SELECT").with_rows(sent)).await?;
                }
                Ok(StatementResult::Stream { schema, stream }) => {
                    let encoder = PgRowEncoder::new(Arc::clone(&schema), vec![]);
                    send_row_description(client, &encoder.field_infos()).await?;
                    let mut rows = row_stream(stream, encoder, sql, sql, 0);
                    let (sent, _) = send_rows(client, &mut rows, 0, &mut interrupts).await?;
                    send_tag(client, Tag::new("SELECT").with_rows(sent)).await?;
                }
                Ok(StatementResult::Push {
                    query_id,
                    schema,
                    stream,
                }) => {
                    if is_psql {
                        // psql prints a result only once it is complete, but it
                        // prints notices right away: tell the user what to expect.
                        let note = format!(
                            "push query {query_id} is running. psql prints its rows only when it \
                             ends (when its LIMIT is reached); Ctrl-C cancels it. To see rows as \
                             they arrive, run: COPY (SELECT ... EMIT CHANGES) TO STDOUT"
                        );
                        send_notice(client, "", &note).await?;
                        client.flush().await?;
                    }
                    let encoder = PgRowEncoder::new(Arc::clone(&schema), vec![]);
                    send_row_description(client, &encoder.field_infos()).await?;
                    let mut rows = row_stream(stream, encoder, sql, sql, 0);
                    let (sent, _) = send_rows(client, &mut rows, 0, &mut interrupts).await?;
                    send_tag(client, Tag::new("SELECT").with_rows(sent)).await?;
                }
                Err(e) => {
                    let info = error_info(&e, sql, sql, 0);
                    client
                        .feed(PgWireBackendMessage::ErrorResponse(info.into()))
                        .await?;
                    *status = status.to_error_state();
                    // The engine stops at the first error; nothing follows.
                    break;
                }
            }
        }
        Ok(())
    }

    /// Runs the statement inside `COPY ... TO STDOUT` and streams its rows as
    /// CopyData. `client_sql` is the client's full text (for error positions).
    async fn run_copy<C>(
        &self,
        client: &mut C,
        client_sql: &str,
        copy: &CopyToStdout,
        params: Vec<ScalarValue>,
        interrupts: &mut Interrupts<'_>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let results = {
            let mut session = self.session.lock().await;
            let engine = &self.server.engine;
            let run = async {
                if params.is_empty() {
                    engine.execute(&mut session, &copy.query).await
                } else {
                    engine
                        .execute_with_params(&mut session, &copy.query, params)
                        .await
                }
            };
            interrupts.run(run).await?
        };
        // Error positions refer to the inner statement; map them back onto the
        // client's text when the inner statement was taken from it verbatim.
        let (inner_text, inner_offset) = match copy.offset {
            Some(offset) => (copy.query.as_str(), offset),
            None => (client_sql, 0),
        };
        let mut results = results.into_iter();
        let (schema, batches) = match (results.next(), results.next()) {
            (Some(Ok(StatementResult::Rows { schema, batches })), None) => {
                (schema, batch_stream(batches))
            }
            (Some(Ok(StatementResult::Push { schema, stream, .. })), None)
            | (Some(Ok(StatementResult::Stream { schema, stream })), None) => (schema, stream),
            (Some(Err(e)), _) => {
                return Err(user_error_info(error_info(
                    &e,
                    client_sql,
                    inner_text,
                    inner_offset,
                )))
            }
            (Some(Ok(StatementResult::Done { .. })), None) => {
                return Err(user_error(
                    "0A000",
                    "COPY (...) TO STDOUT needs a statement that returns rows".into(),
                ))
            }
            _ => {
                return Err(user_error(
                    "0A000",
                    "COPY (...) TO STDOUT takes a single statement".into(),
                ))
            }
        };
        send_copy_out(
            client,
            &schema,
            batches,
            &copy.options,
            interrupts,
            (client_sql, inner_text, inner_offset),
        )
        .await
    }
}

// ---------------------------------------------------------------------------
// Extended query protocol
// ---------------------------------------------------------------------------

/// A parsed (prepared) statement: the SQL plus what Describe reports.
#[derive(Debug, Clone)]
struct PreparedStatement {
    sql: Arc<str>,
    copy: Option<Arc<CopyToStdout>>,
    /// Parameter types inferred by the engine (`None` = unknown).
    param_types: Vec<Option<DataType>>,
    /// Result schema, `None` when the statement returns no rows.
    schema: Option<SchemaRef>,
}

/// Describes statements with the engine when a client sends Parse.
struct SluiceQueryParser {
    engine: Arc<Engine>,
    session: Arc<Mutex<Session>>,
}

#[async_trait]
impl QueryParser for SluiceQueryParser {
    type Statement = PreparedStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let copy = match parse_copy_to_stdout(sql) {
            Some(Ok(copy)) => Some(Arc::new(copy)),
            Some(Err(msg)) => return Err(user_error("0A000", msg)),
            None => None,
        };
        let (described, offset) = match &copy {
            Some(c) => (c.query.as_str(), c.offset),
            None => (sql, Some(0)),
        };
        let result = {
            let session = self.session.lock().await;
            self.engine.describe(&session, described).await
        };
        let (param_types, schema) = result.map_err(|e| {
            let info = match offset {
                Some(offset) => error_info(&e, sql, described, offset),
                None => error_info(&e, sql, sql, 0),
            };
            user_error_info(info)
        })?;
        Ok(Some(PreparedStatement {
            sql: sql.into(),
            // COPY answers with CopyOutResponse, not a row description.
            schema: if copy.is_some() { None } else { schema },
            copy,
            param_types,
        }))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        // Unknown types are described as text: every driver can bind a string,
        // and the engine coerces it.
        Ok(stmt
            .param_types
            .iter()
            .map(|t| t.as_ref().map(pg_type).unwrap_or(Type::TEXT))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.schema {
            Some(schema) => field_infos(schema, &result_formats(column_format, schema)),
            None => vec![],
        })
    }
}

/// Per-column result formats from a Bind; columns without a code are text.
/// (pgwire's `Format::format_for` panics on a short list; clients control it.)
fn result_formats(format: Option<&Format>, schema: &Schema) -> Vec<FieldFormat> {
    let n = schema.fields().len();
    match format {
        None | Some(Format::UnifiedText) => vec![FieldFormat::Text; n],
        Some(Format::UnifiedBinary) => vec![FieldFormat::Binary; n],
        Some(Format::Individual(codes)) => (0..n)
            .map(|i| {
                codes
                    .get(i)
                    .map_or(FieldFormat::Text, |c| FieldFormat::from(*c))
            })
            .collect(),
    }
}

/// What starting a portal produced.
enum Started {
    Finished,
    Rows(QueryResponse),
}

#[async_trait]
impl ExtendedQueryHandler for PgConnection {
    type Statement = PreparedStatement;
    type QueryParser = SluiceQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// A cursor from DECLARE is a portal in Postgres: psycopg describes it by
    /// name to learn its columns. Other targets get pgwire's default.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_PORTAL {
            if let Some(name) = message.name.as_deref() {
                if client.portal_store().get_portal(name).is_none() {
                    let schema = self.session.lock().await.cursors.schema(name);
                    if let Some(schema) = schema {
                        let fields = field_infos(&schema, &[]);
                        return send_describe_response(
                            client,
                            &DescribePortalResponse::new(fields),
                        )
                        .await;
                    }
                }
            }
        }
        self._on_describe(client, message).await
    }

    /// Replaces pgwire's default, which buffers all of a portal's rows before
    /// sending any (an unbounded push query would never answer).
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let outcome = self.execute_portal(client, message).await;
        // On error pgwire's loop reports it and waits for Sync.
        client.set_state(PgWireConnectionState::ReadyForQuery);
        outcome
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Only pgwire's default `on_execute` calls this, and it is overridden.
        Err(internal_error(
            "extended query dispatch bypassed on_execute",
        ))
    }
}

impl PgConnection {
    async fn execute_portal<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PreparedStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(portal_name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(portal_name.to_owned())),
        };
        // 0 (or a nonsensical negative count) means "all rows".
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let mut interrupts = Interrupts::start(client, self.probe.as_ref()).await;

        let state = portal.state();
        let mut state = state.lock().await;
        // Whatever happens below, a failed or finished portal must not re-run.
        let previous = std::mem::replace(&mut *state, PortalExecutionState::Finished);
        let mut response = match previous {
            PortalExecutionState::Initial => {
                match self.start_portal(client, &portal, &mut interrupts).await? {
                    Started::Finished => return Ok(()),
                    Started::Rows(response) => response,
                }
            }
            PortalExecutionState::Suspended(response) => response,
            PortalExecutionState::Finished => {
                send_tag(client, Tag::new("SELECT").with_rows(0)).await?;
                return Ok(());
            }
        };
        let (sent, exhausted) =
            send_rows(client, response.data_rows(), max_rows, &mut interrupts).await?;
        if exhausted {
            send_tag(client, Tag::new(response.command_tag()).with_rows(sent)).await?;
        } else {
            client
                .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                .await?;
            *state = PortalExecutionState::Suspended(response);
        }
        Ok(())
    }

    /// Executes a portal's statement. Statements without rows are answered
    /// here; row results come back as a stream to send.
    async fn start_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<PreparedStatement>,
        interrupts: &mut Interrupts<'_>,
    ) -> PgWireResult<Started>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &portal.statement.statement;
        let params = decode_params(portal)?;
        if let Some(copy) = &stmt.copy {
            self.run_copy(client, &stmt.sql, copy, params, interrupts)
                .await?;
            return Ok(Started::Finished);
        }

        let results = {
            let mut session = self.session.lock().await;
            let engine = &self.server.engine;
            let run = async {
                if params.is_empty() {
                    engine.execute(&mut session, &stmt.sql).await
                } else {
                    engine
                        .execute_with_params(&mut session, &stmt.sql, params)
                        .await
                }
            };
            interrupts.run(run).await?
        };
        let mut results = results.into_iter();
        let first = match (results.next(), results.next()) {
            (Some(first), None) => first,
            (None, _) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(Started::Finished);
            }
            (Some(_), Some(_)) => {
                // Postgres rejects this at Parse; by now the statements ran.
                return Err(user_error(
                    "42601",
                    "cannot insert multiple commands into a prepared statement".into(),
                ));
            }
        };
        // Rows are encoded for the schema the client saw at Describe (if it
        // described the statement) and in the formats it asked for at Bind.
        let row_response = |schema: SchemaRef, batches: BatchStream| {
            let schema = stmt.schema.clone().unwrap_or(schema);
            let formats = result_formats(Some(&portal.result_column_format), &schema);
            let encoder = PgRowEncoder::new(schema, formats);
            let fields = Arc::new(encoder.field_infos());
            let rows = row_stream(batches, encoder, &stmt.sql, &stmt.sql, 0);
            QueryResponse::new(fields, rows)
        };
        match first {
            Ok(StatementResult::Done {
                tag,
                message,
                rows_affected,
            }) => {
                send_notice(client, &tag, &message).await?;
                let status = status_after(&tag, client.transaction_status());
                client.set_transaction_status(status);
                send_tag(client, command_tag(&tag, rows_affected)).await?;
                Ok(Started::Finished)
            }
            Ok(StatementResult::Rows { schema, batches }) => {
                Ok(Started::Rows(row_response(schema, batch_stream(batches))))
            }
            Ok(StatementResult::Push { schema, stream, .. })
            | Ok(StatementResult::Stream { schema, stream }) => {
                Ok(Started::Rows(row_response(schema, stream)))
            }
            Err(e) => Err(user_error_info(error_info(&e, &stmt.sql, &stmt.sql, 0))),
        }
    }
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// Decodes a portal's parameters. A parameter's wire type is the one the
/// client declared at Parse, else the one the engine inferred, else text.
fn decode_params(portal: &Portal<PreparedStatement>) -> PgWireResult<Vec<ScalarValue>> {
    let stmt = &portal.statement;
    portal
        .parameters
        .iter()
        .enumerate()
        .map(|(idx, raw)| {
            let declared = stmt.parameter_types.get(idx).cloned().flatten();
            let inferred = stmt.statement.param_types.get(idx).cloned().flatten();
            let ty = declared
                .clone()
                .or_else(|| inferred.as_ref().map(pg_type))
                .unwrap_or(Type::TEXT);
            let binary = match &portal.parameter_format {
                Format::UnifiedText => false,
                Format::UnifiedBinary => true,
                Format::Individual(codes) => match codes.get(idx) {
                    Some(code) => FieldFormat::from(*code) == FieldFormat::Binary,
                    None => {
                        return Err(user_error(
                            "08P01",
                            format!("bind message has no format code for parameter ${}", idx + 1),
                        ))
                    }
                },
            };
            // Text values are untyped on the wire: read them as the type the
            // engine expects (or the client declared).
            let target = inferred.or_else(|| declared.as_ref().and_then(arrow_type_for_pg));
            decode_param(raw.as_deref(), &ty, binary, target.as_ref())
                .map_err(|(code, msg)| user_error(code, format!("parameter ${}: {msg}", idx + 1)))
        })
        .collect()
}

type ParamError = (&'static str, String);

/// Decodes one parameter value. `ty` is its wire type (used for binary
/// values), `target` the Arrow type text values are parsed as.
fn decode_param(
    raw: Option<&[u8]>,
    ty: &Type,
    binary: bool,
    target: Option<&DataType>,
) -> Result<ScalarValue, ParamError> {
    let Some(raw) = raw else {
        return Ok(target
            .and_then(|t| ScalarValue::try_from(t).ok())
            .unwrap_or(ScalarValue::Null));
    };
    if let postgres_types::Kind::Array(element) = ty.kind() {
        return decode_array_param(raw, element, binary, target);
    }
    if !binary {
        let text = std::str::from_utf8(raw)
            .map_err(|_| ("22021", "value is not valid UTF-8".to_string()))?;
        let value = ScalarValue::Utf8(Some(text.to_owned()));
        return match target {
            None | Some(DataType::Utf8) => Ok(value),
            Some(t) => value.cast_to(t).map_err(|_| {
                (
                    "22P02",
                    format!(
                        "invalid input syntax for type {}: {text:?}",
                        pg_type(t).name()
                    ),
                )
            }),
        };
    }
    let fixed = |n: usize| -> Result<&[u8], ParamError> {
        if raw.len() == n {
            Ok(raw)
        } else {
            Err((
                "08P01",
                format!(
                    "binary {} value must be {n} bytes, got {}",
                    ty.name(),
                    raw.len()
                ),
            ))
        }
    };
    let be8 = |b: &[u8]| <[u8; 8]>::try_from(b).map_err(|_| ("08P01", "bad length".to_string()));
    let be4 = |b: &[u8]| <[u8; 4]>::try_from(b).map_err(|_| ("08P01", "bad length".to_string()));
    let utf8 = || {
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ("22021", "value is not valid UTF-8".to_string()))
    };
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(Some(fixed(1)?[0] != 0)),
        Type::INT2 => {
            let b = fixed(2)?;
            ScalarValue::Int16(Some(i16::from_be_bytes([b[0], b[1]])))
        }
        Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(be4(fixed(4)?)?))),
        Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(be8(fixed(8)?)?))),
        Type::OID => ScalarValue::UInt32(Some(u32::from_be_bytes(be4(fixed(4)?)?))),
        Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(be4(fixed(4)?)?))),
        Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(be8(fixed(8)?)?))),
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::CHAR
        | Type::UNKNOWN
        | Type::JSON => ScalarValue::Utf8(Some(utf8()?)),
        Type::JSONB => match raw.split_first() {
            // Binary jsonb is a version byte (1) followed by the JSON text.
            Some((1, json)) => ScalarValue::Utf8(Some(
                std::str::from_utf8(json)
                    .map_err(|_| ("22021", "value is not valid UTF-8".to_string()))?
                    .to_owned(),
            )),
            _ => return Err(("08P01", "unsupported jsonb binary version".into())),
        },
        Type::BYTEA => ScalarValue::Binary(Some(raw.to_vec())),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(be8(fixed(8)?)?);
            let micros = micros
                .checked_add(PG_EPOCH_MICROS)
                .ok_or_else(|| ("22008", "timestamp out of range".to_string()))?;
            let tz = (*ty == Type::TIMESTAMPTZ).then(|| Arc::<str>::from("+00:00"));
            ScalarValue::TimestampMicrosecond(Some(micros), tz)
        }
        Type::DATE => {
            let days = i32::from_be_bytes(be4(fixed(4)?)?);
            let days = days
                .checked_add(PG_EPOCH_DAYS)
                .ok_or_else(|| ("22008", "date out of range".to_string()))?;
            ScalarValue::Date32(Some(days))
        }
        Type::TIME => ScalarValue::Time64Microsecond(Some(i64::from_be_bytes(be8(fixed(8)?)?))),
        Type::NUMERIC => {
            let text = numeric_from_binary(raw).map_err(|e| ("08P01", e))?;
            let scale = text.split_once('.').map_or(0, |(_, f)| f.len());
            let scale = i8::try_from(scale)
                .ok()
                .filter(|s| *s <= 38)
                .ok_or_else(|| ("22003", "numeric scale too large".to_string()))?;
            ScalarValue::Utf8(Some(text.clone()))
                .cast_to(&DataType::Decimal128(38, scale))
                .map_err(|_| ("22003", format!("numeric value out of range: {text}")))?
        }
        _ => {
            return Err((
                "0A000",
                format!(
                    "binary format for parameters of type {} is not supported; send it as text",
                    ty.name()
                ),
            ))
        }
    })
}

/// A one-dimensional array parameter (`{a,b}` as text, or Postgres' binary
/// array) as a List of its elements, each decoded like a parameter of the
/// element type.
fn decode_array_param(
    raw: &[u8],
    element: &Type,
    binary: bool,
    target: Option<&DataType>,
) -> Result<ScalarValue, ParamError> {
    use fallible_iterator::FallibleIterator;
    let element_target = match target {
        Some(DataType::List(f) | DataType::LargeList(f)) => Some(f.data_type().clone()),
        _ => arrow_type_for_pg(element),
    };
    let decode = |v: Option<&[u8]>| decode_param(v, element, binary, element_target.as_ref());
    let values: Vec<ScalarValue> = if binary {
        let array = postgres_protocol::types::array_from_sql(raw)
            .map_err(|e| ("08P01", format!("binary array: {e}")))?;
        if array.dimensions().count().unwrap_or(0) > 1 {
            return Err(("0A000", "multi-dimensional arrays are not supported".into()));
        }
        let mut values = Vec::new();
        let mut elements = array.values();
        while let Some(v) = elements
            .next()
            .map_err(|e| ("08P01", format!("binary array: {e}")))?
        {
            values.push(decode(v)?);
        }
        values
    } else {
        let text = std::str::from_utf8(raw)
            .map_err(|_| ("22021", "value is not valid UTF-8".to_string()))?;
        parse_array_text(text)
            .map_err(|e| ("22P02", format!("malformed array literal {text:?}: {e}")))?
            .into_iter()
            .map(|v| decode(v.as_deref().map(str::as_bytes)))
            .collect::<Result<_, _>>()?
    };
    let element_type = element_target
        .or_else(|| values.first().map(|v| v.data_type()))
        .unwrap_or(DataType::Utf8);
    let values = values
        .into_iter()
        .map(|v| {
            if v.is_null() {
                ScalarValue::try_from(&element_type).unwrap_or(v)
            } else {
                v
            }
        })
        .collect::<Vec<_>>();
    Ok(ScalarValue::List(ScalarValue::new_list(
        &values,
        &element_type,
        true,
    )))
}

/// The elements of a one-dimensional array literal in Postgres' text form:
/// `{a,"b c",NULL,"q\"x"}`. Nested arrays are refused.
fn parse_array_text(text: &str) -> Result<Vec<Option<String>>, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or("expected {...}")?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let element = if chars.next_if_eq(&'"').is_some() {
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\\') => s.push(chars.next().ok_or("unterminated escape")?),
                    Some('"') => break,
                    Some(c) => s.push(c),
                    None => return Err("unterminated quoted element".into()),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(c) = chars.next_if(|c| *c != ',') {
                match c {
                    '{' | '}' => return Err("nested arrays are not supported".into()),
                    '\\' => s.push(chars.next().ok_or("unterminated escape")?),
                    c => s.push(c),
                }
            }
            let s = s.trim_end().to_string();
            (!s.eq_ignore_ascii_case("NULL")).then_some(s)
        };
        out.push(element);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(c) => return Err(format!("unexpected '{c}' after an element")),
        }
    }
}

// ---------------------------------------------------------------------------
// Sending results
// ---------------------------------------------------------------------------

fn batch_stream(batches: Vec<arrow::record_batch::RecordBatch>) -> BatchStream {
    Box::pin(stream::iter(batches.into_iter().map(Ok)))
}

/// Turns a batch stream into DataRows. Engine errors carry their position
/// relative to `executed`, which starts at byte `offset` of `client_sql`.
fn row_stream(
    batches: BatchStream,
    encoder: PgRowEncoder,
    client_sql: &str,
    executed: &str,
    offset: usize,
) -> SendableRowStream {
    let client_sql: Arc<str> = client_sql.into();
    let executed: Arc<str> = executed.into();
    let rows = batches
        .map(move |batch| {
            let rows = match batch {
                Ok(batch) => encoder
                    .encode(&batch)
                    .map_err(|e| user_error("XX000", format!("cannot encode result rows: {e}"))),
                Err(e) => Err(user_error_info(error_info(
                    &e,
                    &client_sql,
                    &executed,
                    offset,
                ))),
            };
            match rows {
                Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
                Err(e) => stream::once(async move { Err(e) }).right_stream(),
            }
        })
        .flatten();
    Box::pin(rows)
}

/// The next item of `source`. When none is ready, what was fed so far is
/// flushed first, so rows reach the client while the query waits for more
/// (the latency of a push query is the engine's, not the socket buffer's).
async fn next_streamed<S, C>(
    source: &mut S,
    client: &mut C,
    interrupts: &mut Interrupts<'_>,
) -> PgWireResult<Option<S::Item>>
where
    S: Stream + Unpin,
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if let Some(item) = source.next().now_or_never() {
        return Ok(item);
    }
    client.flush().await?;
    interrupts.run(source.next()).await
}

/// Sends up to `max_rows` rows (0 = all). Returns how many were sent and
/// whether the source is exhausted.
async fn send_rows<C>(
    client: &mut C,
    rows: &mut SendableRowStream,
    max_rows: usize,
    interrupts: &mut Interrupts<'_>,
) -> PgWireResult<(usize, bool)>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let mut sent = 0usize;
    while max_rows == 0 || sent < max_rows {
        match next_streamed(rows, client, interrupts).await? {
            Some(row) => {
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                sent += 1;
            }
            None => return Ok((sent, true)),
        }
    }
    Ok((sent, false))
}

/// Streams a result as `COPY ... TO STDOUT` data. `positions` is
/// (client text, executed text, offset) for mapping error positions.
async fn send_copy_out<C>(
    client: &mut C,
    schema: &Schema,
    mut batches: BatchStream,
    options: &CopyOptions,
    interrupts: &mut Interrupts<'_>,
    positions: (&str, &str, usize),
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let encoder = CopyEncoder::new(options.clone());
    let columns = i16::try_from(schema.fields().len())
        .map_err(|_| user_error("54011", "too many columns".into()))?;
    let column_formats = vec![0i16; schema.fields().len()];
    client
        .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            0,
            columns,
            column_formats,
        )))
        .await?;
    if let Some(header) = encoder.header(schema) {
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(header)))
            .await?;
    }
    let mut rows = 0usize;
    while let Some(batch) = next_streamed(&mut batches, client, interrupts).await? {
        let batch = batch.map_err(|e| {
            let (client_sql, executed, offset) = positions;
            user_error_info(error_info(&e, client_sql, executed, offset))
        })?;
        let lines = encoder
            .encode(&batch)
            .map_err(|e| user_error("XX000", format!("cannot encode result rows: {e}")))?;
        for line in lines {
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(line)))
                .await?;
            rows += 1;
        }
    }
    client
        .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    send_tag(client, Tag::new("COPY").with_rows(rows)).await
}

async fn send_row_description<C>(client: &mut C, fields: &[FieldInfo]) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let description = RowDescription::new(fields.iter().map(Into::into).collect());
    client
        .feed(PgWireBackendMessage::RowDescription(description))
        .await?;
    Ok(())
}

async fn send_tag<C>(client: &mut C, tag: Tag) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    client
        .feed(PgWireBackendMessage::CommandComplete(
            CommandComplete::from(tag),
        ))
        .await?;
    Ok(())
}

/// Sends the engine's human message for a statement as a NOTICE (psql prints
/// it, e.g. the id of a created query), unless it only repeats the tag.
async fn send_notice<C>(client: &mut C, tag: &str, message: &str) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let message = message.trim();
    if message.is_empty() || message.eq_ignore_ascii_case(tag) {
        return Ok(());
    }
    let notice = ErrorInfo::new("NOTICE".into(), "00000".into(), message.to_owned());
    client
        .feed(PgWireBackendMessage::NoticeResponse(notice.into()))
        .await?;
    Ok(())
}

/// The CommandComplete tag for a statement without rows. INSERT carries the
/// historical OID field (`INSERT 0 5`) that clients parse.
fn command_tag(tag: &str, rows: Option<usize>) -> Tag {
    // Postgres' tag for ROLLBACK TO SAVEPOINT; the longer name only tells
    // status_after that the transaction goes on.
    let tag = if tag == "ROLLBACK TO SAVEPOINT" {
        "ROLLBACK"
    } else {
        tag
    };
    let t = Tag::new(tag);
    match rows {
        Some(n) if tag.eq_ignore_ascii_case("INSERT") => t.with_oid(0).with_rows(n),
        Some(n) => t.with_rows(n),
        None => t,
    }
}

/// Tracks transaction blocks for ReadyForQuery. Sluice has no transactions,
/// but drivers (psycopg in non-autocommit mode, JDBC) send BEGIN/COMMIT and
/// some check the reported status.
fn status_after(tag: &str, status: TransactionStatus) -> TransactionStatus {
    match tag.to_ascii_uppercase().as_str() {
        "BEGIN" | "START TRANSACTION" => status.to_in_transaction_state(),
        "COMMIT" | "ROLLBACK" | "END" | "ABORT" => status.to_idle_state(),
        _ => status,
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// The ErrorResponse for an engine error on `executed`, which starts at byte
/// `offset` of the client's text `client_sql`. Known positions go into the
/// `P` field (psql draws a caret under it) and, as "line X, column Y", into
/// the message, which is all some clients show.
fn error_info(err: &SluiceError, client_sql: &str, executed: &str, offset: usize) -> ErrorInfo {
    let mut message = err.message();
    let mut position = None;
    if let Some(pos) = err.position() {
        match translate_position(client_sql, executed, offset, pos) {
            Some((outer, char_index)) => {
                message = format!("{message} at {outer}");
                position = Some(char_index.to_string());
            }
            None => message = format!("{message} at {pos}"),
        }
    }
    let mut info = ErrorInfo::new("ERROR".into(), err.sqlstate().into(), message);
    info.severity_nonlocalized = Some("ERROR".into());
    info.hint = err.hint().map(str::to_owned);
    info.position = position;
    info
}

fn user_error_info(info: ErrorInfo) -> PgWireError {
    PgWireError::UserError(Box::new(info))
}

fn user_error(code: &str, message: String) -> PgWireError {
    user_error_info(ErrorInfo::new("ERROR".into(), code.into(), message))
}

fn internal_error(message: &str) -> PgWireError {
    user_error("XX000", message.into())
}

// ---------------------------------------------------------------------------
// COPY ... TO STDOUT
// ---------------------------------------------------------------------------

/// A `COPY ... TO STDOUT` request.
#[derive(Debug, Clone, PartialEq)]
struct CopyToStdout {
    /// The statement whose rows are copied: the parenthesized query, or
    /// `SELECT ... FROM table` for `COPY table [(columns)] TO STDOUT`.
    query: String,
    /// Byte offset of `query` in the client's text when taken from it verbatim.
    offset: Option<usize>,
    options: CopyOptions,
}

/// Recognizes `COPY (query) TO STDOUT [[WITH] options]` and
/// `COPY table [(col, ...)] TO STDOUT [...]`.
///
/// `None` when the text is not such a statement (it then goes to the engine
/// as is, so `COPY ... FROM STDIN` gets the engine's error). `Some(Err)` for a
/// COPY TO STDOUT with options Sluice does not support.
fn parse_copy_to_stdout(sql: &str) -> Option<Result<CopyToStdout, String>> {
    // Cheap pre-check so ordinary queries are not tokenized twice.
    if !sql
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"copy"))
    {
        return None;
    }
    let tokens = significant_tokens(sql)?;
    let word = |i: usize, kw: &str| {
        matches!(tokens.get(i).map(|t| &t.token),
            Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
    };
    if !word(0, "COPY") {
        return None;
    }
    let mut i = 1;
    let (query, offset) = match &tokens.get(1)?.token {
        Token::LParen => {
            let mut depth = 0usize;
            let mut close = None;
            for (j, t) in tokens.iter().enumerate().skip(1) {
                match t.token {
                    Token::LParen => depth += 1,
                    Token::RParen => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let close = close?;
            // '(' is one byte, so the query starts right after it.
            let start = token_start(sql, &tokens[1])? + 1;
            let end = token_start(sql, &tokens[close])?;
            i = close + 1;
            (sql.get(start..end)?.to_owned(), Some(start))
        }
        Token::Word(_) => {
            let mut table = String::new();
            loop {
                match &tokens.get(i)?.token {
                    // Display keeps the quotes of quoted identifiers.
                    Token::Word(w) => table.push_str(&w.to_string()),
                    _ => return None,
                }
                i += 1;
                if tokens.get(i).map(|t| &t.token) == Some(&Token::Period) {
                    table.push('.');
                    i += 1;
                } else {
                    break;
                }
            }
            let mut columns = Vec::new();
            if tokens.get(i).map(|t| &t.token) == Some(&Token::LParen) {
                i += 1;
                loop {
                    match &tokens.get(i)?.token {
                        Token::Word(w) => columns.push(w.to_string()),
                        Token::Comma => {}
                        Token::RParen => break,
                        _ => return None,
                    }
                    i += 1;
                }
                i += 1;
            }
            let columns = if columns.is_empty() {
                "*".to_string()
            } else {
                columns.join(", ")
            };
            (format!("SELECT {columns} FROM {table}"), None)
        }
        _ => return None,
    };
    if !word(i, "TO") || !word(i + 1, "STDOUT") {
        return None;
    }
    Some(
        parse_copy_options(&tokens[i + 2..]).map(|options| CopyToStdout {
            query,
            offset,
            options,
        }),
    )
}

/// Parses COPY options, in both the modern `WITH (FORMAT csv, HEADER)` form
/// and the legacy `CSV HEADER DELIMITER ','` form psql's `\copy` produces.
fn parse_copy_options(tokens: &[TokenWithSpan]) -> Result<CopyOptions, String> {
    let mut toks: Vec<&Token> = tokens.iter().map(|t| &t.token).collect();
    if let Some(semi) = toks.iter().position(|t| **t == Token::SemiColon) {
        if toks[semi + 1..].iter().any(|t| **t != Token::SemiColon) {
            return Err("COPY must be the only statement in the query".into());
        }
        toks.truncate(semi);
    }
    let is_word = |t: Option<&&Token>, kw: &str| matches!(t, Some(Token::Word(w)) if w.value.eq_ignore_ascii_case(kw));
    let mut i = 0;
    if is_word(toks.first(), "WITH") {
        i += 1;
    }
    if toks.get(i) == Some(&&Token::LParen) {
        if toks.last() != Some(&&Token::RParen) {
            return Err("syntax error in COPY options: missing \")\"".into());
        }
        toks.pop();
        i += 1;
    }
    let string_value = |t: Option<&&Token>, option: &str| -> Result<String, String> {
        match t {
            Some(Token::SingleQuotedString(s)) => Ok(s.clone()),
            Some(Token::EscapedStringLiteral(s)) => Ok(unescape_c_style(s)),
            _ => Err(format!("COPY option {option} needs a quoted string")),
        }
    };

    let mut format = CopyFormat::Text;
    let mut header = false;
    let mut delimiter: Option<char> = None;
    let mut null: Option<String> = None;
    while i < toks.len() {
        let name = match toks[i] {
            Token::Comma => {
                i += 1;
                continue;
            }
            Token::Word(w) => w.value.to_ascii_uppercase(),
            other => return Err(format!("syntax error in COPY options at \"{other}\"")),
        };
        i += 1;
        match name.as_str() {
            "FORMAT" => {
                let value = match toks.get(i) {
                    Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
                    Some(Token::SingleQuotedString(s)) => s.to_ascii_lowercase(),
                    _ => return Err("COPY option FORMAT needs a value".into()),
                };
                i += 1;
                format = match value.as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => return Err("COPY binary format is not supported".into()),
                    other => return Err(format!("COPY format \"{other}\" not recognized")),
                };
            }
            "CSV" => format = CopyFormat::Csv,
            "BINARY" => return Err("COPY binary format is not supported".into()),
            "HEADER" => {
                header = true;
                let value = match toks.get(i) {
                    Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
                    Some(Token::Number(n, _)) => Some(n.clone()),
                    Some(Token::SingleQuotedString(s)) => Some(s.to_ascii_lowercase()),
                    _ => None,
                };
                match value.as_deref() {
                    Some("true" | "on" | "1") => i += 1,
                    Some("false" | "off" | "0") => {
                        header = false;
                        i += 1;
                    }
                    // Next option (legacy form) or end.
                    _ => {}
                }
            }
            "DELIMITER" => {
                if is_word(toks.get(i), "AS") {
                    i += 1;
                }
                let value = string_value(toks.get(i), "DELIMITER")?;
                i += 1;
                let mut chars = value.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii() && !matches!(c, '\\' | '\n' | '\r' | '"') => {
                        delimiter = Some(c)
                    }
                    _ => {
                        return Err(
                            "COPY delimiter must be a single ASCII character other than \
                             backslash, quote or newline"
                                .into(),
                        )
                    }
                }
            }
            "NULL" => {
                if is_word(toks.get(i), "AS") {
                    i += 1;
                }
                null = Some(string_value(toks.get(i), "NULL")?);
                i += 1;
            }
            "ENCODING" => {
                let value = string_value(toks.get(i), "ENCODING")?;
                i += 1;
                let v = value.to_ascii_lowercase().replace(['-', '_'], "");
                if v != "utf8" {
                    return Err("COPY supports only the UTF8 encoding".into());
                }
            }
            "QUOTE" | "ESCAPE" => {
                if is_word(toks.get(i), "AS") {
                    i += 1;
                }
                if string_value(toks.get(i), &name)? != "\"" {
                    return Err(format!(
                        "COPY option {name} other than '\"' is not supported"
                    ));
                }
                i += 1;
            }
            other => return Err(format!("COPY option {other} is not supported")),
        }
    }
    let mut options = match format {
        CopyFormat::Text => CopyOptions::text(),
        CopyFormat::Csv => CopyOptions::csv(),
    };
    options.header = header;
    if let Some(d) = delimiter {
        options.delimiter = d;
    }
    if let Some(n) = null {
        options.null = n;
    }
    Ok(options)
}

/// The few escapes COPY options use in `E'...'` strings.
fn unescape_c_style(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    fn copy(sql: &str) -> CopyToStdout {
        parse_copy_to_stdout(sql)
            .expect("recognized")
            .expect("valid")
    }

    #[test]
    fn copy_wrapper_is_stripped() {
        let sql = "COPY (SELECT * FROM errors EMIT CHANGES) TO STDOUT";
        let c = copy(sql);
        assert_eq!(c.query, "SELECT * FROM errors EMIT CHANGES");
        assert_eq!(c.offset, Some(6));
        assert_eq!(&sql[6..6 + c.query.len()], c.query);
        assert_eq!(c.options, CopyOptions::text());

        // Nested parentheses, strings with parentheses, comments, semicolon.
        let sql = "copy ( select f(x), ')' from t where (a) -- )\n ) to stdout;";
        let c = copy(sql);
        assert_eq!(c.query, " select f(x), ')' from t where (a) -- )\n ");

        // Multi-line text with a non-ASCII character before the query.
        let sql = "/* é */ COPY\n(\nSELECT 1\n) TO STDOUT WITH (FORMAT csv, HEADER)";
        let c = copy(sql);
        assert_eq!(c.query, "\nSELECT 1\n");
        assert_eq!(
            &sql[c.offset.unwrap()..c.offset.unwrap() + c.query.len()],
            c.query
        );
        assert_eq!(c.options.format, CopyFormat::Csv);
        assert!(c.options.header);
        assert_eq!(c.options.delimiter, ',');
    }

    #[test]
    fn copy_table_becomes_select() {
        assert_eq!(copy("COPY users TO STDOUT").query, "SELECT * FROM users");
        assert_eq!(
            copy("COPY public.\"Users\" (id, \"Name\") TO STDOUT CSV HEADER").query,
            "SELECT id, \"Name\" FROM public.\"Users\""
        );
        assert_eq!(copy("COPY users TO STDOUT").offset, None);
    }

    #[test]
    fn copy_options_legacy_and_modern() {
        let c = copy("COPY t TO STDOUT WITH CSV HEADER DELIMITER AS ';' NULL AS 'null'");
        assert_eq!(c.options.format, CopyFormat::Csv);
        assert!(c.options.header);
        assert_eq!(c.options.delimiter, ';');
        assert_eq!(c.options.null, "null");

        let c = copy("COPY t TO STDOUT (FORMAT text, HEADER false, DELIMITER '|', NULL '')");
        assert_eq!(c.options.format, CopyFormat::Text);
        assert!(!c.options.header);
        assert_eq!(c.options.delimiter, '|');
        assert_eq!(c.options.null, "");

        let c = copy("COPY t TO STDOUT WITH DELIMITER E'\\t' ENCODING 'UTF-8'");
        assert_eq!(c.options.delimiter, '\t');
        assert_eq!(copy("COPY t TO STDOUT NULL '\\N'").options.null, "\\N");
    }

    #[test]
    fn copy_rejections() {
        // Not ours: handled (and rejected) by the engine.
        assert!(parse_copy_to_stdout("COPY t FROM STDIN").is_none());
        assert!(parse_copy_to_stdout("COPY t TO '/tmp/x'").is_none());
        assert!(parse_copy_to_stdout("SELECT 1").is_none());
        assert!(parse_copy_to_stdout("COPY (SELECT 1 TO STDOUT").is_none());
        assert!(parse_copy_to_stdout("COPY 'x").is_none());
        // Ours but unsupported.
        for sql in [
            "COPY t TO STDOUT BINARY",
            "COPY t TO STDOUT (FORMAT binary)",
            "COPY t TO STDOUT (FORCE_QUOTE *)",
            "COPY t TO STDOUT DELIMITER ',,'",
            "COPY t TO STDOUT (FORMAT csv",
            "COPY t TO STDOUT; SELECT 1",
            "COPY t TO STDOUT ENCODING 'latin1'",
        ] {
            assert!(matches!(parse_copy_to_stdout(sql), Some(Err(_))), "{sql}");
        }
    }

    #[test]
    fn text_parameters_follow_target_type() {
        let p = |raw: &str, target: DataType| {
            decode_param(Some(raw.as_bytes()), &Type::TEXT, false, Some(&target))
        };
        assert_eq!(
            p("42", DataType::Int64).unwrap(),
            ScalarValue::Int64(Some(42))
        );
        assert_eq!(
            p("t", DataType::Boolean).unwrap(),
            ScalarValue::Boolean(Some(true))
        );
        assert_eq!(
            p("false", DataType::Boolean).unwrap(),
            ScalarValue::Boolean(Some(false))
        );
        assert_eq!(
            p("1.5", DataType::Float64).unwrap(),
            ScalarValue::Float64(Some(1.5))
        );
        assert_eq!(
            p(
                "2024-01-02 03:04:05.5",
                DataType::Timestamp(TimeUnit::Microsecond, None)
            )
            .unwrap(),
            ScalarValue::TimestampMicrosecond(Some(1_704_164_645_500_000), None)
        );
        assert_eq!(
            p(
                "2024-01-02 03:04:05+01:00",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
            )
            .unwrap(),
            ScalarValue::TimestampMicrosecond(Some(1_704_161_045_000_000), Some("+00:00".into()))
        );
        let err = p("abc", DataType::Int32).unwrap_err();
        assert_eq!(err.0, "22P02");
        // Unknown target: stays text for the engine to coerce.
        assert_eq!(
            decode_param(Some(b"x"), &Type::TEXT, false, None).unwrap(),
            ScalarValue::Utf8(Some("x".into()))
        );
        // NULLs are typed when the type is known.
        assert_eq!(
            decode_param(None, &Type::INT8, false, Some(&DataType::Int64)).unwrap(),
            ScalarValue::Int64(None)
        );
        assert_eq!(
            decode_param(None, &Type::TEXT, true, None).unwrap(),
            ScalarValue::Null
        );
        assert_eq!(
            decode_param(Some(&[0xff]), &Type::TEXT, false, None)
                .unwrap_err()
                .0,
            "22021"
        );
    }

    #[test]
    fn array_parameters_in_text_and_binary() {
        assert_eq!(
            parse_array_text(r#"{a, "b c",NULL,"q\"x",\,}"#).unwrap(),
            vec![
                Some("a".to_string()),
                Some("b c".to_string()),
                None,
                Some("q\"x".to_string()),
                Some(",".to_string())
            ]
        );
        assert_eq!(
            parse_array_text("{}").unwrap(),
            Vec::<Option<String>>::new()
        );
        assert!(parse_array_text("{{1},{2}}").is_err());
        assert!(parse_array_text("a,b").is_err());
        assert!(parse_array_text(r#"{"a}"#).is_err());

        let list = |v: Vec<Option<i32>>| {
            ScalarValue::List(ScalarValue::new_list(
                &v.into_iter().map(ScalarValue::Int32).collect::<Vec<_>>(),
                &DataType::Int32,
                true,
            ))
        };
        let text = decode_param(Some(b"{1,NULL,3}"), &Type::INT4_ARRAY, false, None).unwrap();
        assert_eq!(text, list(vec![Some(1), None, Some(3)]));
        // Binary, as asyncpg and JDBC send it (postgres-protocol's encoder).
        let mut raw = bytes::BytesMut::new();
        postgres_protocol::types::array_to_sql(
            [postgres_protocol::types::ArrayDimension {
                len: 2,
                lower_bound: 1,
            }],
            Type::INT4.oid(),
            [Some(7), None],
            |v: Option<i32>, buf| match v {
                Some(v) => {
                    postgres_protocol::types::int4_to_sql(v, buf);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            &mut raw,
        )
        .unwrap();
        let binary = decode_param(Some(&raw), &Type::INT4_ARRAY, true, None).unwrap();
        assert_eq!(binary, list(vec![Some(7), None]));
        assert_eq!(pg_type(&binary.data_type()), Type::INT4_ARRAY);
    }

    #[test]
    fn binary_parameters() {
        let b = |raw: &[u8], ty: Type| decode_param(Some(raw), &ty, true, None);
        assert_eq!(
            b(&[1], Type::BOOL).unwrap(),
            ScalarValue::Boolean(Some(true))
        );
        assert_eq!(
            b(&[0xff, 0xfe], Type::INT2).unwrap(),
            ScalarValue::Int16(Some(-2))
        );
        assert_eq!(
            b(&7i32.to_be_bytes(), Type::INT4).unwrap(),
            ScalarValue::Int32(Some(7))
        );
        assert_eq!(
            b(&(-9i64).to_be_bytes(), Type::INT8).unwrap(),
            ScalarValue::Int64(Some(-9))
        );
        assert_eq!(
            b(&1.5f32.to_be_bytes(), Type::FLOAT4).unwrap(),
            ScalarValue::Float32(Some(1.5))
        );
        assert_eq!(
            b(&2.5f64.to_be_bytes(), Type::FLOAT8).unwrap(),
            ScalarValue::Float64(Some(2.5))
        );
        assert_eq!(
            b(b"hi", Type::VARCHAR).unwrap(),
            ScalarValue::Utf8(Some("hi".into()))
        );
        assert_eq!(
            b(&[1, b'{', b'}'], Type::JSONB).unwrap(),
            ScalarValue::Utf8(Some("{}".into()))
        );
        assert_eq!(
            b(&0i64.to_be_bytes(), Type::TIMESTAMP).unwrap(),
            ScalarValue::TimestampMicrosecond(Some(PG_EPOCH_MICROS), None)
        );
        assert_eq!(
            b(&1i64.to_be_bytes(), Type::TIMESTAMPTZ).unwrap(),
            ScalarValue::TimestampMicrosecond(Some(PG_EPOCH_MICROS + 1), Some("+00:00".into()))
        );
        assert_eq!(
            b(&(-1i32).to_be_bytes(), Type::DATE).unwrap(),
            ScalarValue::Date32(Some(PG_EPOCH_DAYS - 1))
        );
        let mut num = Vec::new();
        super::super::arrow_convert::numeric_binary("-12.50", &mut num).unwrap();
        assert_eq!(
            b(&num, Type::NUMERIC).unwrap(),
            ScalarValue::Decimal128(Some(-1250), 38, 2)
        );
        // Wrong sizes and unsupported types are errors, not panics.
        assert_eq!(b(&[0, 0, 1], Type::INT4).unwrap_err().0, "08P01");
        assert_eq!(b(&[], Type::BOOL).unwrap_err().0, "08P01");
        assert_eq!(b(&[0; 16], Type::UUID).unwrap_err().0, "0A000");
    }

    #[test]
    fn result_formats_tolerate_short_lists() {
        let schema = Schema::new(vec![
            arrow::datatypes::Field::new("a", DataType::Int32, true),
            arrow::datatypes::Field::new("b", DataType::Int32, true),
        ]);
        assert_eq!(
            result_formats(Some(&Format::Individual(vec![1])), &schema),
            vec![FieldFormat::Binary, FieldFormat::Text]
        );
        assert_eq!(
            result_formats(Some(&Format::UnifiedBinary), &schema),
            vec![FieldFormat::Binary; 2]
        );
        assert_eq!(result_formats(None, &schema), vec![FieldFormat::Text; 2]);
    }

    #[test]
    fn tags_and_transaction_status() {
        let complete = |t: Tag| CommandComplete::from(t).tag;
        assert_eq!(complete(command_tag("INSERT", Some(3))), "INSERT 0 3");
        assert_eq!(
            complete(command_tag("CREATE STREAM", None)),
            "CREATE STREAM"
        );
        assert_eq!(complete(command_tag("DELETE", Some(2))), "DELETE 2");
        let idle = TransactionStatus::Idle;
        assert!(matches!(
            status_after("BEGIN", idle),
            TransactionStatus::Transaction
        ));
        assert!(matches!(
            status_after("COMMIT", TransactionStatus::Transaction),
            TransactionStatus::Idle
        ));
        assert!(matches!(status_after("SET", idle), TransactionStatus::Idle));
        assert!(matches!(
            status_after("ROLLBACK TO SAVEPOINT", TransactionStatus::Transaction),
            TransactionStatus::Transaction
        ));
        assert_eq!(
            complete(command_tag("ROLLBACK TO SAVEPOINT", None)),
            "ROLLBACK"
        );
    }

    #[test]
    fn error_info_carries_position_and_hint() {
        let sql = "SELECT 1;\nSELEC x FROM t";
        let err = SluiceError::sql_at(
            "syntax error",
            Some(crate::error::SqlPosition { line: 2, column: 1 }),
            Some("did you mean SELECT?".into()),
        );
        let info = error_info(&err, sql, sql, 0);
        assert_eq!(info.code, "42601");
        assert_eq!(info.message, "syntax error at line 2, column 1");
        assert_eq!(info.hint.as_deref(), Some("did you mean SELECT?"));
        assert_eq!(info.position.as_deref(), Some("11"));

        // Inside a COPY wrapper the position is mapped onto the client's text.
        let outer = "COPY (SELEC 1) TO STDOUT";
        let c = copy(outer);
        let err = SluiceError::sql_at(
            "syntax error",
            Some(crate::error::SqlPosition { line: 1, column: 1 }),
            None,
        );
        let info = error_info(&err, outer, &c.query, c.offset.unwrap());
        assert_eq!(info.message, "syntax error at line 1, column 7");
        assert_eq!(info.position.as_deref(), Some("7"));
        assert_eq!(info.hint, None);
    }
}
