//! Choosing and opening a backend: the only code, with the backends themselves, that names
//! one. `--store` / `MCP_WORKERS_STORE` is `sqlite:PATH` or a `postgres://` URL; without it,
//! SQLite in the data directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::postgres::config::is_postgres_url;
use super::{Clock, Journal, Ledger, PgConfig, PgStore, QueueStore, Result, SqliteStore};

/// A checked store location.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// One SQLite file.
    Sqlite(PathBuf),
    Postgres(Box<PgConfig>),
}

impl fmt::Display for StoreLocation {
    /// The location as logs show it (a PostgreSQL password replaced).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(config) => write!(f, "{config} (schema {})", config.schema),
        }
    }
}

impl StoreLocation {
    /// From `--store` and `--store-schema`; `data_dir` holds the default SQLite file. The error
    /// is one line, without the password.
    pub fn parse(store: Option<&str>, schema: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let store = store.map(str::trim).filter(|s| !s.is_empty());
        match store {
            Some(url) if is_postgres_url(url) => Ok(Self::Postgres(Box::new(PgConfig::parse(url, schema)?))),
            _ if schema.is_some() => Err("--store-schema (MCP_WORKERS_STORE_SCHEMA) needs a postgres:// store".into()),
            None => Ok(Self::Sqlite(data_dir.join(super::sqlite::db::FILE_NAME))),
            Some(path) => match path.strip_prefix("sqlite:") {
                Some(file) if !file.is_empty() => Ok(Self::Sqlite(PathBuf::from(file))),
                _ => Err(format!(
                    "--store `{}`: expected sqlite:PATH or postgres://USER:PASSWORD@HOST/DB",
                    super::postgres::config::redact(path)
                )),
            },
        }
    }

    /// Opens (and migrates) the store.
    pub async fn open(&self) -> Result<OpenStore> {
        self.open_in(super::SqliteMode::Threads).await
    }

    /// Like [`StoreLocation::open`], a SQLite store in `mode` (PostgreSQL has one mode).
    pub async fn open_in(&self, mode: super::SqliteMode) -> Result<OpenStore> {
        match self {
            Self::Sqlite(file) => {
                let store = Arc::new(SqliteStore::open_file_with(parent_made(file)?, Clock::System, mode)?);
                Ok(OpenStore { queue: store.clone(), journal: store, postgres: None })
            }
            Self::Postgres(config) => {
                let store = Arc::new(PgStore::open(PgConfig::clone(config), Clock::System).await?);
                Ok(OpenStore { queue: store.clone(), journal: store.clone(), postgres: Some(store) })
            }
        }
    }

    /// The daemon-wide budget's ledger (`--budget`) at this location: the SQLite file, or the
    /// PostgreSQL schema, where every daemon on the schema charges to the same windows. A handle
    /// of its own (on PostgreSQL without a listener: nobody waits for charges).
    pub async fn open_ledger(&self) -> Result<Arc<dyn Ledger>> {
        match self {
            Self::Sqlite(file) => Ok(Arc::new(SqliteStore::open_file(parent_made(file)?, Clock::System)?)),
            Self::Postgres(config) => {
                let mut config = PgConfig::clone(config);
                config.listen = false;
                Ok(Arc::new(PgStore::open(config, Clock::System).await?))
            }
        }
    }
}

/// `file`, once its directory exists.
fn parent_made(file: &Path) -> Result<&Path> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|source| super::StoreError::DataDir { path: dir.to_path_buf(), source })?;
    }
    Ok(file)
}

/// One open store, as both interfaces (one handle behind them: one pool, or one SQLite writer).
#[derive(Clone)]
pub struct OpenStore {
    pub queue: Arc<dyn QueueStore>,
    pub journal: Arc<dyn Journal>,
    postgres: Option<Arc<PgStore>>,
}

impl OpenStore {
    /// For `serve`: the cluster interface when several daemons can share this journal
    /// (PostgreSQL). SQLite: `None`, one data directory belongs to one `serve`.
    pub fn cluster(&self) -> Option<Arc<dyn super::Cluster>> {
        self.postgres.clone().map(|pg| pg as Arc<dyn super::Cluster>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let dir = Path::new("/data");
        let parse = |store: Option<&str>, schema: Option<&str>| StoreLocation::parse(store, schema, dir);
        assert!(matches!(parse(None, None), Ok(StoreLocation::Sqlite(p)) if p == Path::new("/data/store.sqlite3")));
        assert!(
            matches!(parse(Some(" "), None), Ok(StoreLocation::Sqlite(p)) if p == Path::new("/data/store.sqlite3"))
        );
        assert!(
            matches!(parse(Some("sqlite:/x/q.db"), None), Ok(StoreLocation::Sqlite(p)) if p == Path::new("/x/q.db"))
        );
        let pg = parse(Some("postgres://u:pw@h/d"), Some("s1")).unwrap();
        assert_eq!(pg.to_string(), "postgres://u:***@h/d (schema s1)");
        assert!(parse(None, Some("s1")).unwrap_err().contains("needs a postgres"));
        let err = parse(Some("mysql://u:pw@h/d"), None).unwrap_err();
        assert!(err.contains("expected sqlite:PATH") && !err.contains("pw@"), "{err}");
        assert!(parse(Some("sqlite:"), None).is_err());
    }
}
