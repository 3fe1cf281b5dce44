//! The configuration of `stele witness serve`: one TOML file, whose field
//! docs below are the reference. Relative paths are relative to the file's
//! directory. Environment variables `STELE_WITNESS_<FIELD>` (e.g.
//! `STELE_WITNESS_DATABASE_URL`) override the file.
//!
//! ```toml
//! listen = "127.0.0.1:7380"
//! key_file = "witness.skey"          # from `stele witness keygen`
//! database = "witness.db"            # SQLite (the default) ...
//! # database_url = "postgres://witness@db/witness"   # ... or PostgreSQL
//! # policy_file = "federation.policy"  # also witness the `log` lines of a tlog-policy
//!
//! [[logs]]
//! origin = "records.example.gov/land"
//! vkey = "records.example.gov/land+1a2b3c4d+AR..."
//! ```
//!
//! Validated at start-up: every vkey is an Ed25519 note key named by its
//! origin, at least one log, the key file exists and holds a
//! `cosignature/v1` key. Nothing is created silently except the SQLite file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use stele_core::cosignature::Cosigner;
use stele_core::note::Verifier;
use stele_core::policy::Policy;
use stele_core::witness::Witness;

/// The whole configuration of a witness. (`Debug` redacts the database
/// password.)
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WitnessConfig {
    /// Address the HTTP server binds. Default `127.0.0.1:7380`.
    pub listen: SocketAddr,
    /// The witness's private key (`PRIVATE+KEY+<name>+<id>+…`, type 0x04),
    /// as written by `stele witness keygen`. Required.
    pub key_file: Option<PathBuf>,
    /// SQLite database file, used when `database_url` is unset. Default
    /// `witness.db`.
    pub database: PathBuf,
    /// PostgreSQL URL; when set, the state lives there instead of SQLite.
    /// The witness may share a database with a Stele log (its one table is
    /// `witness_checkpoints`).
    pub database_url: Option<String>,
    /// A C2SP tlog-policy file whose `log` lines are witnessed too (its
    /// witness, group and quorum lines are read and checked, not used).
    pub policy_file: Option<PathBuf>,
    /// The logs this witness cosigns. A log listed twice with different
    /// vkeys has both keys (rotation).
    pub logs: Vec<LogEntry>,
}

/// One witnessed log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// The checkpoint origin (first line), e.g. `records.example.gov/land`.
    pub origin: String,
    /// The log's verifier key, `<origin>+<8 hex id>+<base64(0x01 || key)>`.
    pub vkey: String,
}

impl std::fmt::Debug for WitnessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessConfig")
            .field("listen", &self.listen)
            .field("key_file", &self.key_file)
            .field("storage", &self.describe_storage())
            .field("policy_file", &self.policy_file)
            .field("logs", &self.logs)
            .finish()
    }
}

impl Default for WitnessConfig {
    fn default() -> Self {
        WitnessConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7380)),
            key_file: None,
            database: PathBuf::from("witness.db"),
            database_url: None,
            policy_file: None,
            logs: Vec::new(),
        }
    }
}

impl WitnessConfig {
    /// Reads `path`, then the environment, and resolves relative paths
    /// against the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            bail!("witness configuration {} does not exist", path.display());
        }
        let mut config: WitnessConfig = Figment::new()
            .merge(Serialized::defaults(WitnessConfig::default()))
            .merge(Toml::file(path))
            .merge(Env::prefixed("STELE_WITNESS_").only(&[
                "listen",
                "key_file",
                "database",
                "database_url",
            ]))
            .extract()
            .with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(k) = config.key_file.as_mut() {
            resolve(k);
        }
        resolve(&mut config.database);
        if let Some(p) = config.policy_file.as_mut() {
            resolve(p);
        }
        Ok(config)
    }

    /// Where the state lives, for the start-up log line (no password).
    pub fn describe_storage(&self) -> String {
        match &self.database_url {
            Some(url) => format!("PostgreSQL {}", crate::storage::redact_url(url)),
            None => format!("SQLite {}", self.database.display()),
        }
    }

    /// The logs to witness, origin → keys, from `logs` and `policy_file`.
    pub fn log_keys(&self) -> anyhow::Result<Vec<(String, Vec<Verifier>)>> {
        let mut logs: Vec<(String, Vec<Verifier>)> = Vec::new();
        let mut add = |origin: &str, verifier: Verifier| -> anyhow::Result<()> {
            if verifier.name() != origin {
                bail!(
                    "log {origin:?}: its vkey is named {:?}; a log's key must be named by its origin",
                    verifier.name()
                );
            }
            match logs.iter_mut().find(|(o, _)| o == origin) {
                Some((_, keys)) => {
                    if !keys.iter().any(|k| k.vkey() == verifier.vkey()) {
                        keys.push(verifier);
                    }
                }
                None => logs.push((origin.to_owned(), vec![verifier])),
            }
            Ok(())
        };
        for log in &self.logs {
            let v = Verifier::from_vkey(&log.vkey)
                .map_err(|e| anyhow::anyhow!("log {:?}: {e}", log.origin))?;
            add(&log.origin, v)?;
        }
        if let Some(path) = &self.policy_file {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let policy =
                Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for log in policy.logs() {
                add(log.verifier.name(), log.verifier.clone())?;
            }
        }
        if logs.is_empty() {
            bail!("the witness configuration lists no logs ([[logs]] origin and vkey, or policy_file)");
        }
        Ok(logs)
    }

    /// The witness's key, from `key_file` (never created here).
    pub fn cosigner(&self) -> anyhow::Result<Cosigner> {
        let path = self.key_file.as_ref().context(
            "key_file is not set; create a key with `stele witness keygen --name NAME --out FILE`",
        )?;
        let text = crate::files::read_secret_file(path, true).with_context(|| {
            format!(
                "the witness key {} (create one with `stele witness keygen --name NAME --out {}`)",
                path.display(),
                path.display()
            )
        })?;
        Cosigner::from_skey(text.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The key and the logs, checked.
    pub fn witness(&self) -> anyhow::Result<Witness> {
        let cosigner = self.cosigner()?;
        let logs = self.log_keys()?;
        Witness::new(cosigner, logs).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn logs_from_the_file_and_a_policy_and_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = stele_core::note::Signer::generate("example.com/a").unwrap();
        let (b, _) = stele_core::note::Signer::generate("example.com/b").unwrap();
        let (w, skey) = Cosigner::generate("witness.example/w").unwrap();
        write(dir.path(), "w.skey", &format!("{skey}\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join("w.skey");
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        write(
            dir.path(),
            "fed.policy",
            &format!(
                "log {}\nlog {}\nwitness W {}\nquorum W\n",
                a.vkey(),
                b.vkey(),
                w.vkey()
            ),
        );
        let config = write(
            dir.path(),
            "w.toml",
            &format!(
                "key_file = \"w.skey\"\npolicy_file = \"fed.policy\"\n\
                 [[logs]]\norigin = \"example.com/a\"\nvkey = \"{}\"\n",
                a.vkey()
            ),
        );
        let c = WitnessConfig::load(&config).unwrap();
        assert_eq!(
            c.key_file.as_deref(),
            Some(dir.path().join("w.skey").as_path())
        );
        assert_eq!(c.database, dir.path().join("witness.db"));
        let logs = c.log_keys().unwrap();
        let origins: Vec<(&str, usize)> = logs.iter().map(|(o, k)| (o.as_str(), k.len())).collect();
        // `a` is in both, once.
        assert_eq!(origins, vec![("example.com/a", 1), ("example.com/b", 1)]);
        let witness = c.witness().unwrap();
        assert_eq!(witness.cosigner().vkey(), w.vkey());
    }

    #[test]
    fn refuses_what_would_witness_nothing_or_the_wrong_log() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = stele_core::note::Signer::generate("example.com/a").unwrap();
        let none = write(dir.path(), "none.toml", "key_file = \"w.skey\"\n");
        let err = WitnessConfig::load(&none).unwrap().log_keys().unwrap_err();
        assert!(err.to_string().contains("lists no logs"), "{err}");
        let wrong = write(
            dir.path(),
            "wrong.toml",
            &format!(
                "[[logs]]\norigin = \"example.com/other\"\nvkey = \"{}\"\n",
                a.vkey()
            ),
        );
        let err = WitnessConfig::load(&wrong).unwrap().log_keys().unwrap_err();
        assert!(err.to_string().contains("named by its origin"), "{err}");
        // No key file: a message that says how to make one.
        let err = WitnessConfig::load(&wrong).unwrap().cosigner().unwrap_err();
        assert!(
            format!("{err:#}").contains("stele witness keygen"),
            "{err:#}"
        );
        let typo = write(dir.path(), "typo.toml", "key_fle = \"x\"\n");
        assert!(WitnessConfig::load(&typo).is_err());
        // The password of a database URL is never shown.
        let pg = write(
            dir.path(),
            "pg.toml",
            "database_url = \"postgres://u:secret@h/db\"\n",
        );
        let c = WitnessConfig::load(&pg).unwrap();
        assert!(!format!("{c:?}").contains("secret"));
        assert!(!c.describe_storage().contains("secret"));
    }
}
