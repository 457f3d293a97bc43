//! Connections: TLS (rustls, when the URL asks) and a small pool of our own. A connection that
//! broke is dropped on return and a new one is made at the next checkout, so a database restart
//! costs the calls in flight an error, and the next ones a reconnect.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, NoTls, TlsConnect};
use tokio_postgres::{Client, Socket, Statement};

use super::config::{PgConfig, Tls};
use crate::store::{Result, StoreError};

/// A failure to connect, its text scrubbed of the password.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {url}: {reason}")]
pub struct ConnectError {
    url: String,
    reason: String,
}

/// Starts the connection's background task and returns the client; `on_message` gets every
/// asynchronous message (notifications, notices) — the listener's way in.
pub async fn connect(
    config: &PgConfig,
    on_message: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>>,
) -> Result<Client> {
    let fail = |e: &dyn std::fmt::Display| {
        StoreError::Backend(Arc::new(ConnectError { url: config.to_string(), reason: config.scrub(e) }))
    };
    match &config.tls {
        Tls::Off => {
            let (client, connection) = config.connect.connect(NoTls).await.map_err(|e| fail(&e))?;
            drive(connection, on_message);
            Ok(client)
        }
        Tls::On { root_cert } => {
            let tls = RustlsConnect(Arc::new(client_config(root_cert.as_deref()).map_err(|e| fail(&e))?));
            let (client, connection) = config.connect.connect(tls).await.map_err(|e| fail(&e))?;
            drive(connection, on_message);
            Ok(client)
        }
    }
}

fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    on_message: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let ended = std::future::poll_fn(|cx| {
            loop {
                match connection.poll_message(cx) {
                    Poll::Ready(Some(Ok(message))) => {
                        if let Some(tx) = &on_message {
                            let _ = tx.send(message);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(e)),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        if let Some(e) = ended {
            tracing::debug!(error = %e, "a store connection ended");
        }
    });
}

fn client_config(root_cert: Option<&std::path::Path>) -> std::result::Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::ConfigVerifierExt;
    match root_cert {
        None => rustls::ClientConfig::with_platform_verifier().map_err(|e| format!("TLS set-up: {e}")),
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
            Ok(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
        }
    }
}

/// tokio-postgres's TLS hooks on tokio-rustls (no channel binding).
#[derive(Clone)]
struct RustlsConnect(Arc<rustls::ClientConfig>);

struct RustlsHost {
    config: Arc<rustls::ClientConfig>,
    host: String,
}

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsHost;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> std::io::Result<RustlsHost> {
        Ok(RustlsHost { config: Arc::clone(&self.0), host: domain.to_owned() })
    }
}

impl TlsConnect<Socket> for RustlsHost {
    type Stream = RustlsStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let name = rustls::pki_types::ServerName::try_from(self.host)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = tokio_rustls::TlsConnector::from(self.config).connect(name, socket).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// One pooled connection with its prepared statements.
pub struct Conn {
    pub client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    /// Inside `BEGIN` .. `COMMIT`/`ROLLBACK`: a connection dropped in this state (its caller
    /// went away mid-transaction) is closed, never reused.
    in_tx: AtomicBool,
}

impl Conn {
    /// The statement for `sql`, prepared once per connection.
    pub async fn prepare(&self, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.statements.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(sql, statement.clone());
        Ok(statement)
    }

    pub async fn begin(&self) -> Result<()> {
        self.in_tx.store(true, Ordering::SeqCst);
        self.client.batch_execute("BEGIN").await?;
        Ok(())
    }

    /// Commits if `ok`, else rolls back. A failed commit is the caller's error.
    pub async fn end(&self, ok: bool) -> Result<()> {
        self.client.batch_execute(if ok { "COMMIT" } else { "ROLLBACK" }).await?;
        self.in_tx.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// At most `size` connections, made on demand, each with `search_path` set to the schema.
pub struct Pool {
    config: PgConfig,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// A checked-out connection; back to the pool on drop unless it broke.
pub struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("a pooled connection is present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
            && !conn.in_tx.load(Ordering::SeqCst)
        {
            self.pool.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        }
    }
}

impl Pool {
    pub fn new(config: PgConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.pool_size));
        Self { config, idle: Mutex::new(Vec::new()), permits }
    }

    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    pub async fn get(&self) -> Result<Pooled<'_>> {
        let permit = Arc::clone(&self.permits).acquire_owned().await.map_err(|_| StoreError::Closed)?;
        loop {
            let conn = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            match conn {
                Some(conn) if conn.client.is_closed() => continue,
                Some(conn) => return Ok(Pooled { pool: self, conn: Some(conn), _permit: permit }),
                None => break,
            }
        }
        let client = connect(&self.config, None).await?;
        client.batch_execute(&format!("SET search_path TO {}", self.config.schema)).await?;
        Ok(Pooled {
            pool: self,
            conn: Some(Conn { client, statements: Mutex::new(HashMap::new()), in_tx: AtomicBool::new(false) }),
            _permit: permit,
        })
    }
}
