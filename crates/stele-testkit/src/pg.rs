//! Fresh PostgreSQL databases for tests, and the policy for a missing server.
//!
//! The server is `STELE_TEST_DATABASE_URL` (default
//! [`DEFAULT_TEST_DATABASE_URL`]). Every test gets its own database from
//! [`fresh_database`]; migrations run when a `PostgresStorage` (or a server)
//! connects to it. A suite calls [`pg_policy`] once at start: if the server
//! is unreachable its PostgreSQL tests are reported as ignored with the
//! reason printed, unless `STELE_REQUIRE_POSTGRES=1` (CI), in which case
//! they fail.
//!
//! ```ignore
//! let policy = pg_policy();
//! policy.announce(&pg_test_names); // prints "PostgreSQL unreachable at URL (error): not running N tests: ..."
//! let trial = Trial::ignorable_test(name, move || match &policy {
//!     PgPolicy::Run => run().map(|()| Completion::Completed),
//!     PgPolicy::Skip(e) => Ok(Completion::ignored_with(e)),
//!     PgPolicy::Fail(_) => Err(policy.check().unwrap_err().into()),
//! });
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server tests use: `STELE_TEST_DATABASE_URL` or the default.
pub fn test_database_url() -> String {
    std::env::var("STELE_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_string())
}

/// True when `STELE_REQUIRE_POSTGRES=1`: an unreachable server fails tests.
pub fn require_postgres() -> bool {
    std::env::var("STELE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// The test server could not be reached.
#[derive(Clone, Debug)]
pub struct PgUnavailable {
    pub url: String,
    pub error: String,
}

impl std::fmt::Display for PgUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL unreachable at {} ({})", self.url, self.error)
    }
}

impl std::error::Error for PgUnavailable {}

/// What a suite does with its PostgreSQL tests.
#[derive(Clone, Debug)]
pub enum PgPolicy {
    /// The server answered: run them.
    Run,
    /// Unreachable and not required: report them as ignored.
    Skip(PgUnavailable),
    /// Unreachable but required (`STELE_REQUIRE_POSTGRES=1`): fail them.
    Fail(PgUnavailable),
}

impl PgPolicy {
    /// Whether the tests should be marked ignored.
    pub fn is_skip(&self) -> bool {
        matches!(self, PgPolicy::Skip(_))
    }

    /// `Ok` when the tests may run; otherwise the reason, for the test to fail with.
    pub fn check(&self) -> Result<(), String> {
        match self {
            PgPolicy::Run => Ok(()),
            PgPolicy::Skip(e) => Err(format!("{e}: not run")),
            PgPolicy::Fail(e) => Err(format!("{e}, and STELE_REQUIRE_POSTGRES=1")),
        }
    }

    /// Prints, once per suite, which PostgreSQL tests will not run (or will
    /// fail) and why. Prints nothing when they run.
    pub fn announce<S: AsRef<str>>(&self, tests: &[S]) {
        let names: Vec<&str> = tests.iter().map(AsRef::as_ref).collect();
        match self {
            PgPolicy::Run => {}
            PgPolicy::Skip(e) => eprintln!(
                "{e}: not running {} tests: {}\n(set STELE_REQUIRE_POSTGRES=1 to make this a failure)",
                names.len(),
                names.join(", ")
            ),
            PgPolicy::Fail(e) => eprintln!(
                "{e}, and STELE_REQUIRE_POSTGRES=1: failing {} tests: {}",
                names.len(),
                names.join(", ")
            ),
        }
    }
}

/// Probes the test server once per process (blocking, on its own runtime;
/// safe to call from a plain `main`) and decides the policy.
pub fn pg_policy() -> PgPolicy {
    static POLICY: OnceLock<PgPolicy> = OnceLock::new();
    POLICY
        .get_or_init(|| match pg_probe() {
            Ok(()) => PgPolicy::Run,
            Err(e) if require_postgres() => PgPolicy::Fail(e),
            Err(e) => PgPolicy::Skip(e),
        })
        .clone()
}

/// Tries to connect to the test server once, with a short timeout.
pub fn pg_probe() -> Result<(), PgUnavailable> {
    let url = test_database_url();
    let run = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let rt = rt.map_err(|e| e.to_string())?;
        rt.block_on(async {
            let conn = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url));
            match conn.await {
                Err(_) => Err("timed out".to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(c)) => {
                    let _ = c.close().await;
                    Ok(())
                }
            }
        })
    };
    // A separate thread, so this also works when called inside a runtime.
    std::thread::scope(|s| s.spawn(run).join())
        .unwrap_or_else(|_| Err("probe panicked".into()))
        .map_err(|error| PgUnavailable {
            url: test_database_url(),
            error,
        })
}

/// A database created for one test. Drop it with [`TestDb::drop_db`]; if a
/// test panics first, `Drop` removes it best-effort on a helper thread.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL of the fresh database.
    pub url: String,
    /// Its name.
    pub name: String,
    admin_url: String,
    dropped: bool,
}

impl TestDb {
    /// Drops the database, disconnecting any sessions still using it.
    pub async fn drop_db(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(drop_database(&admin, &name))
        })
        .join();
    }
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    conn.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
        .await?;
    conn.close().await?;
    Ok(())
}

/// Creates a uniquely named, empty database on the test server.
pub async fn fresh_database() -> Result<TestDb, PgUnavailable> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let admin_url = test_database_url();
    let unavailable = |error: String| PgUnavailable {
        url: admin_url.clone(),
        error,
    };
    let name = format!(
        "stele_test_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand_core::RngCore::next_u32(&mut rand_core::OsRng)
    );
    let connect = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url));
    let mut conn = connect
        .await
        .map_err(|_| unavailable("timed out".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .map_err(|e| unavailable(format!("CREATE DATABASE: {e}")))?;
    let _ = conn.close().await;
    Ok(TestDb {
        url: with_database(&admin_url, &name),
        name,
        admin_url,
        dropped: false,
    })
}

/// `url` with its database (the path) replaced by `db`; the query string is kept.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
