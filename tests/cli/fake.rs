//! A fake log served by the test: whatever checkpoint, proofs and tiles
//! the test sets (forged, rolled back, inconsistent, split views, tampered
//! tiles), for the monitor and the auditor to catch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stele::wire;
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle::{prove_consistency, root_of};
use stele_core::note::Signer;
use stele_core::tile::{encode_bundle, TileId, TilePath, TreeBuilder};
use stele_core::{leaf_hash, Hash};
use stele_testkit::process::Output;

use super::monitor;

#[derive(Default)]
pub struct FakeState {
    pub checkpoint: String,
    /// Leaf hashes of the tree served; consistency proofs come from them.
    pub hashes: Vec<Hash>,
    pub files: HashMap<String, Vec<u8>>,
}

pub struct FakeLog {
    pub state: Arc<Mutex<FakeState>>,
    /// The fake log's base URL.
    pub url: String,
    _rt: tokio::runtime::Runtime,
}

impl FakeLog {
    pub fn start() -> FakeLog {
        use axum::extract::{Path as P, Query, State};
        use axum::http::StatusCode;
        use axum::routing::get;
        let state = Arc::new(Mutex::new(FakeState::default()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = axum::Router::new()
            .route(
                "/logs/fake/checkpoint",
                get(|State(s): State<Arc<Mutex<FakeState>>>| async move {
                    s.lock().unwrap().checkpoint.clone()
                }),
            )
            .route(
                "/logs/fake/proofs/consistency",
                get(
                    |State(s): State<Arc<Mutex<FakeState>>>,
                     Query(q): Query<HashMap<String, String>>| async move {
                        let from: u64 = q.get("from").and_then(|v| v.parse().ok()).unwrap_or(0);
                        let to: u64 = q.get("to").and_then(|v| v.parse().ok()).unwrap_or(0);
                        let s = s.lock().unwrap();
                        let proof = (from <= to && to == s.hashes.len() as u64)
                            .then(|| prove_consistency(from, to, s.hashes.as_slice()).ok())
                            .flatten();
                        match proof {
                            Some(consistency_proof) => Ok(axum::Json(wire::Consistency {
                                from,
                                to,
                                consistency_proof,
                                checkpoint: None,
                            })),
                            None => Err(StatusCode::NOT_FOUND),
                        }
                    },
                ),
            )
            .route(
                "/logs/fake/tile/{*path}",
                get(
                    |State(s): State<Arc<Mutex<FakeState>>>, P(path): P<String>| async move {
                        s.lock()
                            .unwrap()
                            .files
                            .get(&format!("tile/{path}"))
                            .cloned()
                            .ok_or(StatusCode::NOT_FOUND)
                    },
                ),
            )
            .with_state(state.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        FakeLog {
            state,
            url: format!("http://{addr}/logs/fake"),
            _rt: rt,
        }
    }

    /// Serves the checkpoint of the first `size` leaves of `tree`, signed by
    /// `signer`, consistency proofs to it from any smaller size, and the
    /// tree's tiles and bundles.
    pub fn serve(&self, signer: &Signer, tree: &Tree, size: u64) {
        let hashes = &tree.hashes[..size as usize];
        let cp = Checkpoint::new(signer.name(), size, root_of(hashes));
        let mut s = self.state.lock().unwrap();
        s.checkpoint = signer.sign_checkpoint(&cp).unwrap();
        s.hashes = hashes.to_vec();
        s.files = tree.files(size);
    }
}

/// A tree of leaves for a fake log.
pub struct Tree {
    pub leaves: Vec<Vec<u8>>,
    pub hashes: Vec<Hash>,
}

impl Tree {
    pub fn new(tag: &str, n: usize) -> Tree {
        let leaves: Vec<Vec<u8>> = (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect();
        let hashes = leaves.iter().map(|l| leaf_hash(l)).collect();
        Tree { leaves, hashes }
    }

    /// Entry bundles and hash tiles of the first `size` leaves, by path.
    pub fn files(&self, size: u64) -> HashMap<String, Vec<u8>> {
        let mut files = HashMap::new();
        let mut b = TreeBuilder::new();
        for (id, data) in b.append(&self.hashes[..size as usize]) {
            files.insert(TilePath::Hash(id).to_path(), data);
        }
        for (k, chunk) in self.leaves[..size as usize].chunks(256).enumerate() {
            let id = TileId::new(0, k as u64, chunk.len() as u16);
            files.insert(
                TilePath::Entries(id).to_path(),
                encode_bundle(chunk.iter().map(|l| l.as_slice())).unwrap(),
            );
        }
        files
    }
}

/// A fake log, the key its checkpoints should be signed with, and a state
/// file for `stele monitor` (removed on drop).
pub struct Watched {
    pub fake: FakeLog,
    pub signer: Signer,
    pub state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watched {
    /// A fake log `fake.example/<tag>` with a fresh key.
    pub fn new(tag: &str) -> anyhow::Result<Watched> {
        let dir = tempfile::tempdir()?;
        Ok(Watched {
            fake: FakeLog::start(),
            signer: Signer::generate(&format!("fake.example/{tag}"))?.0,
            state: dir.path().join("state.json"),
            _dir: dir,
        })
    }

    /// Serves the first `size` leaves of `tree`, signed with the log's key.
    pub fn serve(&self, tree: &Tree, size: u64) {
        self.fake.serve(&self.signer, tree, size);
    }

    /// `stele monitor --once` with the log's key, keeping its state in
    /// `state` (the default state file if None), with `extra` arguments.
    pub fn monitor(&self, state: Option<&Path>, extra: &[&str]) -> Output {
        let state = state.unwrap_or(&self.state);
        monitor(&self.fake.url, &self.signer.vkey(), state, extra)
    }

    /// `stele monitor --once` with the default state file.
    pub fn once(&self) -> Output {
        self.monitor(None, &[])
    }
}
