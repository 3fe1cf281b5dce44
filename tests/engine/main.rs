//! The engine, on each backend (SQLite in a temporary directory, a fresh
//! PostgreSQL database per test), under a fault-injecting storage wrapper.
//! After every step that writes, [`Ctx::check`] runs the one invariant
//! checker over the engine's read methods: every checkpoint's signature and
//! consistency (stored ones and those of the receipts handed to it), the
//! tree rebuilt from the bundles against every tile and the root, every
//! entry read back and proven included.
//!
//! PostgreSQL tests are reported as ignored with the reason when the server
//! is unreachable, or fail under `STELE_REQUIRE_POSTGRES=1`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use stele::engine::{Agency, Engine, EngineConfig, Integrated, LogConfig, LogError};
use stele::metrics::Metrics;
use stele::names::LogName;
use stele::records::{self, Record};
use stele::storage::Storage;
use stele_core::note::{Signer, Verifier};
use stele_core::receipt::Receipt;
use stele_testkit::agency::register_agency;
use stele_testkit::checker::{EngineView, LogChecker};
use stele_testkit::faults::{Faults, Faulty};
use stele_testkit::harness::{Suite, TestFn, TestResult};
use stele_testkit::store::{Backend, TestStore};

mod faults;
mod reads;
mod submit;
mod writers;

const LOG: &str = "default";
const ORIGIN: &str = "records.example.test/default";

/// One test's database, the faults injected into it, the log's key, and
/// the checker that has watched the log since the first check.
pub struct Ctx {
    pub store: TestStore,
    pub faults: Arc<Faults>,
    /// The storage engines get: the database behind [`Faulty`].
    pub storage: Arc<dyn Storage>,
    skey: String,
    checker: Option<LogChecker<EngineView>>,
    /// Receipts handed out since the last check, for the checker.
    receipts: Vec<Receipt>,
}

impl Ctx {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        let store = TestStore::new(backend).await?;
        let (faulty, faults) = Faulty::wrap(store.open().await?.storage());
        Ok(Ctx {
            store,
            faults,
            storage: faulty,
            skey: Signer::generate(ORIGIN)?.1,
            checker: None,
            receipts: Vec::new(),
        })
    }

    /// A second, independent connection to the same database, as another
    /// process would have (no faults injected).
    pub async fn another_process(&self) -> anyhow::Result<Arc<dyn Storage>> {
        Ok(self.store.open().await?.storage())
    }

    pub async fn engine_on(
        &self,
        storage: Arc<dyn Storage>,
        config: EngineConfig,
    ) -> anyhow::Result<Arc<Engine>> {
        let logs = vec![LogConfig {
            accept_unregistered: true,
            ..LogConfig::for_signer(LogName::parse(LOG)?, Signer::from_skey(&self.skey)?)
        }];
        Engine::start(storage, logs, config, Arc::new(Metrics::new())).await
    }

    /// An engine on [`Ctx::storage`].
    pub async fn engine(&self, config: EngineConfig) -> anyhow::Result<Arc<Engine>> {
        self.engine_on(self.storage.clone(), config).await
    }

    /// Registers an agency; returns its token.
    pub async fn agency(&self, name: &str, types: &[&str]) -> anyhow::Result<String> {
        register_agency(self.storage.as_ref(), name, types).await
    }

    /// A new agency, authenticated by its token.
    pub async fn signed_in(
        &self,
        engine: &Engine,
        name: &str,
        types: &[&str],
    ) -> anyhow::Result<Agency> {
        Ok(engine
            .authenticate(&self.agency(name, types).await?)
            .await?)
    }

    /// An engine with `config`, and the agency `land` (any record type)
    /// signed in.
    pub async fn writer(&self, config: EngineConfig) -> anyhow::Result<(Arc<Engine>, Agency)> {
        let engine = self.engine(config).await?;
        let agency = self.signed_in(&engine, "land", &[]).await?;
        Ok((engine, agency))
    }

    /// The log's verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier::from_vkey(&Signer::from_skey(&self.skey).expect("own key").vkey())
            .expect("own vkey")
    }

    /// Hands receipts to the checker (verified at the next check).
    pub fn keep<'a>(&mut self, subs: impl IntoIterator<Item = &'a Integrated>) {
        self.receipts
            .extend(subs.into_iter().map(Integrated::receipt));
    }

    /// Hands `subs` to the checker and runs it over `engine`.
    pub async fn check_with<'a>(
        &mut self,
        engine: &Arc<Engine>,
        subs: impl IntoIterator<Item = &'a Integrated>,
    ) -> TestResult {
        self.keep(subs);
        self.check(engine).await
    }

    /// The end of a test: [`Ctx::check_with`], then `engine` shuts down.
    pub async fn done<'a>(
        &mut self,
        engine: &Arc<Engine>,
        subs: impl IntoIterator<Item = &'a Integrated>,
    ) -> TestResult {
        self.check_with(engine, subs).await?;
        engine.shutdown().await;
        Ok(())
    }

    /// The invariant checker over `engine`'s reads, after the receipts kept
    /// since the last check; and the engine's listed tree size is the
    /// latest checkpoint's.
    pub async fn check(&mut self, engine: &Arc<Engine>) -> TestResult {
        let view = EngineView::new(engine.clone(), LOG);
        let checker = match &mut self.checker {
            Some(c) => {
                c.set_view(view);
                c
            }
            None => {
                let vkey = engine.logs().await[0].vkey.clone();
                self.checker.insert(LogChecker::new(view, &vkey)?)
            }
        };
        for r in self.receipts.drain(..) {
            checker.add_receipt(&r)?;
        }
        let report = checker.check_all().await?;
        let listed = engine.logs().await[0].tree_size;
        ensure!(
            listed == report.checkpoint.size,
            "the engine lists size {listed}, its checkpoint says {}",
            report.checkpoint.size
        );
        Ok(())
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        max_wait: Duration::from_millis(2),
        ..EngineConfig::default()
    }
}

fn rec(i: usize) -> Record {
    records::parse_record(
        format!(r#"{{"type":"land.transfer","subject":"parcel {i}","attributes":{{"n":{i}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

/// Where each receipt put its record (verified), and whether it was new.
fn placed(subs: &[Integrated], v: &Verifier) -> Vec<(u64, bool)> {
    subs.iter()
        .map(|s| (s.receipt().verify(v).unwrap().index, s.created))
        .collect()
}

/// Submits until the engine takes it, while it answers 503 (for at most
/// 400 tries, 25 ms apart).
async fn retry_submit(engine: &Engine, agency: &Agency, r: Record) -> anyhow::Result<Integrated> {
    for _ in 0..400 {
        match engine.submit(LOG, agency, r.clone()).await {
            Ok(s) => return Ok(s),
            Err(LogError::Unavailable(_)) | Err(LogError::Pushback { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the engine did not become writable")
}

async fn run(backend: Backend, test: TestFn<Ctx>) -> TestResult {
    test(Ctx::new(backend).await?).await
}

fn main() {
    let mut suite = Suite::new();
    let tables = [submit::TESTS, faults::TESTS, reads::TESTS, writers::TESTS];
    suite.per_backend_tables(Backend::ALL, &tables, run);
    suite.per_backend_tables(
        &[Backend::Postgres],
        &[writers::PG_TESTS],
        |b, test| async move { test(TestStore::new(b).await?).await },
    );
    suite.per_backend_tables(Backend::ALL, &[&[writers::THROUGHPUT]], run);
    suite.ignore_last(2);
    suite.run()
}
