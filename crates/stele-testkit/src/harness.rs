//! Suites as libtest-mimic trials: a test written once runs once per
//! backend, named `sqlite::<name>` and `postgres::<name>`, each on a
//! runtime of its own with a time limit.
//!
//! PostgreSQL trials follow [`crate::pg`]'s rule: when the test server is
//! unreachable the suite prints which ones it does not run and reports them
//! as ignored, or fails them under `STELE_REQUIRE_POSTGRES=1`. Trials that
//! start their own PostgreSQL cluster follow the same rule for the server
//! programs ([`Needs::PgCluster`]).
//!
//! ```ignore
//! const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx: submit_works, reads_work];
//! async fn run(backend: Backend, test: TestFn<Ctx>) -> TestResult {
//!     test(Ctx::new(backend).await?).await
//! }
//! fn main() {
//!     let mut suite = Suite::new();
//!     suite.per_backend_tables(Backend::ALL, &[TESTS], run);
//!     suite.run();
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial};

use crate::pg::{pg_policy, require_postgres, PgPolicy};
use crate::process::pg_cluster_available;
use crate::store::Backend;

pub type TestResult = anyhow::Result<()>;

/// What a test function returns (it need not be `Send`: each trial runs on
/// its own runtime).
pub type TestFuture = Pin<Box<dyn Future<Output = TestResult>>>;

/// A test taking its context `C`.
pub type TestFn<C> = fn(C) -> TestFuture;

/// A table of `(name, test)` for tests taking a context of type `$ctx`.
#[macro_export]
macro_rules! tests {
    ($ctx:ty: $($name:ident),* $(,)?) => {
        &[$((stringify!($name), {
            fn boxed(ctx: $ctx) -> $crate::harness::TestFuture {
                Box::pin($name(ctx))
            }
            boxed as $crate::harness::TestFn<$ctx>
        })),*]
    };
}

/// What a trial needs besides the test process itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// The PostgreSQL test server.
    Postgres,
    /// PostgreSQL's server programs, to start a throwaway cluster.
    PgCluster,
    /// An S3-compatible server program ([`crate::s3`]).
    S3,
}

/// The trials of one test binary.
pub struct Suite {
    trials: Vec<Trial>,
    /// Names of the trials that need PostgreSQL, for the announcement.
    pg_names: Vec<String>,
    cluster_names: Vec<String>,
    s3_names: Vec<String>,
    s3: Result<(), String>,
    policy: PgPolicy,
    cluster: Result<(), String>,
    workers: usize,
    timeout: Duration,
}

impl Default for Suite {
    fn default() -> Self {
        Self::new()
    }
}

impl Suite {
    /// Probes the PostgreSQL test server once. Trials run on two worker
    /// threads for at most 240 s unless told otherwise.
    pub fn new() -> Self {
        Suite {
            trials: Vec::new(),
            pg_names: Vec::new(),
            cluster_names: Vec::new(),
            s3_names: Vec::new(),
            s3: crate::s3::s3s_fs_bin().map(|_| ()),
            policy: pg_policy(),
            cluster: pg_cluster_available(),
            workers: 2,
            timeout: Duration::from_secs(240),
        }
    }

    /// Worker threads of each trial's runtime.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Time limit of each async trial.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// `test` once per backend, as `<backend>::<name>`.
    pub fn per_backend<F, Fut>(&mut self, name: &str, backends: &[Backend], test: F)
    where
        F: Fn(Backend) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = TestResult> + 'static,
    {
        self.per_backend_needing(name, backends, Needs::Nothing, test);
    }

    /// [`Suite::per_backend`] for trials that also need `extra`.
    pub fn per_backend_needing<F, Fut>(
        &mut self,
        name: &str,
        backends: &[Backend],
        extra: Needs,
        test: F,
    ) where
        F: Fn(Backend) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = TestResult> + 'static,
    {
        for &backend in backends {
            let needs = match backend {
                Backend::Sqlite => Needs::Nothing,
                Backend::Postgres => Needs::Postgres,
            };
            let test = test.clone();
            let (workers, timeout) = (self.workers, self.timeout);
            self.add_needing(
                format!("{}::{name}", backend.name()),
                &[needs, extra],
                move || block_on(workers, timeout, test(backend)),
            );
        }
    }

    /// Every test of `tables` once per backend in `backends`; `run(backend,
    /// test)` gives the test its context, runs it and cleans up.
    pub fn per_backend_tables<C, Fut>(
        &mut self,
        backends: &[Backend],
        tables: &[&[(&str, TestFn<C>)]],
        run: fn(Backend, TestFn<C>) -> Fut,
    ) where
        C: 'static,
        Fut: Future<Output = TestResult> + 'static,
    {
        for &(name, test) in tables.iter().copied().flatten() {
            self.per_backend(name, backends, move |backend| run(backend, test));
        }
    }

    /// An async trial, on its own runtime, within the time limit.
    pub fn add_async<F, Fut>(&mut self, name: impl Into<String>, needs: Needs, test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = TestResult> + 'static,
    {
        let (workers, timeout) = (self.workers, self.timeout);
        self.add(name, needs, move || block_on(workers, timeout, test()));
    }

    /// A trial that runs `test` on the test thread.
    pub fn add<F>(&mut self, name: impl Into<String>, needs: Needs, test: F)
    where
        F: FnOnce() -> TestResult + Send + 'static,
    {
        self.add_needing(name, &[needs], test);
    }

    /// A trial that needs all of `needs`; the first one missing decides
    /// whether it is skipped or fails.
    pub fn add_needing<F>(&mut self, name: impl Into<String>, needs: &[Needs], test: F)
    where
        F: FnOnce() -> TestResult + Send + 'static,
    {
        let name = name.into();
        let gate = needs
            .iter()
            .map(|&n| self.gate(&name, n))
            .fold(Ok(()), Result::and);
        self.trials
            .push(Trial::ignorable_test(name, move || match gate {
                Ok(()) => test()
                    .map(|()| Completion::Completed)
                    .map_err(|e| Failed::from(format!("{e:#}"))),
                Err((false, reason)) => Ok(Completion::ignored_with(reason)),
                Err((true, reason)) => Err(Failed::from(reason)),
            }));
    }

    /// Whether a trial may run for want of `needs`: `Err((fail, reason))`.
    fn gate(&mut self, name: &str, needs: Needs) -> Result<(), (bool, String)> {
        let name = name.to_string();
        match needs {
            Needs::Nothing => Ok(()),
            Needs::Postgres => {
                self.pg_names.push(name.clone());
                match &self.policy {
                    PgPolicy::Run => Ok(()),
                    PgPolicy::Skip(e) => Err((false, e.to_string())),
                    PgPolicy::Fail(e) => Err((true, format!("{e}, and STELE_REQUIRE_POSTGRES=1"))),
                }
            }
            Needs::PgCluster => {
                self.cluster_names.push(name.clone());
                match &self.cluster {
                    Ok(()) => Ok(()),
                    Err(e) if require_postgres() => {
                        Err((true, format!("{e}, and STELE_REQUIRE_POSTGRES=1")))
                    }
                    Err(e) => Err((false, e.clone())),
                }
            }
            Needs::S3 => {
                self.s3_names.push(name);
                match &self.s3 {
                    Ok(()) => Ok(()),
                    Err(e) if crate::s3::require_s3() => {
                        Err((true, format!("{e}, and STELE_REQUIRE_S3=1")))
                    }
                    Err(e) => Err((false, e.clone())),
                }
            }
        }
    }

    /// Marks the trials added last, `n` of them, as ignored unless asked
    /// for (`--ignored`): measurements, not checks.
    pub fn ignore_last(&mut self, n: usize) {
        let start = self.trials.len().saturating_sub(n);
        let tail: Vec<Trial> = self.trials.drain(start..).collect();
        self.trials
            .extend(tail.into_iter().map(|t| t.with_ignored_flag(true)));
    }

    /// Says which trials will not run (or will fail) for want of
    /// PostgreSQL, runs the trials and exits.
    pub fn run(self) -> ! {
        self.conclude().exit()
    }

    /// [`Suite::run`] without the exit, for a suite that must clean up
    /// after its trials (then `.exit()`).
    pub fn conclude(self) -> Conclusion {
        let args = Arguments::from_args();
        if !self.pg_names.is_empty() {
            self.policy.announce(&self.pg_names);
        }
        if let Err(reason) = &self.cluster {
            if !self.cluster_names.is_empty() {
                let verdict = if require_postgres() {
                    "failing"
                } else {
                    "not running"
                };
                eprintln!("{reason}: {verdict} {}", self.cluster_names.join(", "));
            }
        }
        if let Err(reason) = &self.s3 {
            if !self.s3_names.is_empty() {
                let verdict = if crate::s3::require_s3() {
                    "failing"
                } else {
                    "not running"
                };
                eprintln!("{reason}: {verdict} {}", self.s3_names.join(", "));
            }
        }
        libtest_mimic::run(&args, self.trials)
    }
}

/// Runs `test` on a fresh multi-threaded runtime of `workers` threads, for
/// at most `timeout`.
pub fn block_on(
    workers: usize,
    timeout: Duration,
    test: impl Future<Output = TestResult>,
) -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::time::timeout(timeout, test)
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {timeout:?}"))?
    })
}
