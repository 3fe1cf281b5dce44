//! A fresh database for one test, on either backend: a SQLite file in a
//! temporary directory, or a new database on the PostgreSQL test server
//! (see [`crate::pg`]). Opening it again gives an independent storage on
//! the same data, as a second process would have.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use stele::storage::postgres::{PgOptions, PostgresStorage};
use stele::storage::sqlite::SqliteStorage;
use stele::storage::Storage;

use crate::pg::{fresh_database, TestDb};

/// Which storage backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Both, SQLite first.
    pub const ALL: &'static [Backend] = &[Backend::Sqlite, Backend::Postgres];

    /// `sqlite` or `postgres`: the first part of a test's name.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The database of one test. SQLite keeps `stele.db` in [`TestStore::dir`]
/// (what `stele serve --data-dir` uses); PostgreSQL gets a database of its
/// own, dropped by [`TestStore::finish`] (or, best-effort, on drop).
pub struct TestStore {
    backend: Backend,
    dir: tempfile::TempDir,
    db: Option<TestDb>,
    pg_options: PgOptions,
}

impl TestStore {
    /// For PostgreSQL the error is (or wraps) [`crate::pg::PgUnavailable`]
    /// when the test server is unreachable.
    pub async fn new(backend: Backend) -> Result<Self> {
        let db = match backend {
            Backend::Postgres => Some(fresh_database().await?),
            Backend::Sqlite => None,
        };
        Ok(TestStore {
            backend,
            dir: tempfile::Builder::new().prefix("stele-store-").tempdir()?,
            db,
            pg_options: PgOptions::default(),
        })
    }

    /// PostgreSQL connection options for [`TestStore::open`].
    pub fn with_pg_options(mut self, options: PgOptions) -> Self {
        self.pg_options = options;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A temporary directory of the test's own: SQLite's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("stele.db")
    }

    /// The PostgreSQL database's URL (None on SQLite).
    pub fn database_url(&self) -> Option<&str> {
        self.db.as_ref().map(|db| db.url.as_str())
    }

    /// Opens the database (running migrations): a new, independent
    /// connection pool each time.
    pub async fn open(&self) -> Result<Opened> {
        Ok(match &self.db {
            None => Opened::Sqlite(Arc::new(SqliteStorage::open(&self.sqlite_path()).await?)),
            Some(db) => Opened::Postgres(Arc::new(
                PostgresStorage::connect(&db.url, self.pg_options.clone()).await?,
            )),
        })
    }

    /// Drops the PostgreSQL database.
    pub async fn finish(self) -> Result<()> {
        if let Some(db) = self.db {
            db.drop_db().await?;
        }
        Ok(())
    }
}

/// An opened storage, closable so a test can reopen the same database.
#[derive(Clone)]
pub enum Opened {
    Sqlite(Arc<SqliteStorage>),
    Postgres(Arc<PostgresStorage>),
}

impl Opened {
    pub fn storage(&self) -> Arc<dyn Storage> {
        match self {
            Opened::Sqlite(s) => s.clone(),
            Opened::Postgres(s) => s.clone(),
        }
    }

    /// Closes its connections.
    pub async fn close(&self) {
        match self {
            Opened::Sqlite(s) => s.close().await,
            Opened::Postgres(s) => s.close().await,
        }
    }
}
