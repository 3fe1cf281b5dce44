//! C2SP `tlog-policy`: which logs and witnesses a verifier trusts, and the
//! quorum of cosignatures a checkpoint needs.
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> all|any|<k> <member>...
//! quorum <name>|none
//! ```
//!
//! Parsing follows the spec: lines end in a newline (a last line without
//! one is accepted); items are separated by spaces and tabs; blank lines
//! and `#` comments are ignored; only tab, newline, 0x20–0x7E and bytes
//! with the high bit set may appear. Names are opaque byte strings (no
//! Unicode folding) in one namespace shared by witnesses and groups, and
//! `none` is reserved. A group or the quorum may only name what earlier
//! lines defined; a group has 1 ≤ k ≤ n members; every name is a group
//! member at most once in the whole file (so a witness counts towards the
//! quorum in one way only). Exactly one `quorum` line.
//!
//! Keys: `log` lines take Ed25519 note vkeys (type `0x01`) whose name is the
//! log's origin; `witness` lines take `cosignature/v1` vkeys (type `0x04`).
//! Two lines wrapping the same public key are duplicates and rejected —
//! also a log and a witness sharing one (a choice: the spec forbids
//! duplicates among logs and among witnesses, and one key in both roles
//! is a key-separation mistake). URLs must be UTF-8.
//!
//! Limits (the spec recommends supporting at least 32 of each): at most
//! [`MAX_LOGS`] logs, [`MAX_WITNESSES`] witnesses and [`MAX_GROUPS`] groups.
//!
//! [`Policy::verify`] opens a checkpoint: signed by one of the logs (its
//! origin the key's name), every cosignature by a policy witness valid, and
//! the quorum met by the witnesses whose cosignature verified.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::checkpoint::Checkpoint;
use crate::cosignature::{verify_cosignatures, Cosignature, CosignatureVerifier};
use crate::note::{self, NoteError, Verifier};

/// Most `log` lines a policy may have.
pub const MAX_LOGS: usize = 64;
/// Most `witness` lines a policy may have.
pub const MAX_WITNESSES: usize = 256;
/// Most `group` lines a policy may have.
pub const MAX_GROUPS: usize = 256;

/// Why a policy file was refused: the line (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy line {line}: {message}")]
pub struct PolicyParseError {
    /// 1-based line number (0 for the file as a whole).
    pub line: usize,
    pub message: String,
}

/// Why a checkpoint does not satisfy a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not signed by any of the policy's logs (or the note is malformed, or
    /// a log signature is invalid).
    #[error("log signature: {0}")]
    Log(NoteError),
    /// A cosignature by a policy witness does not verify, or the note is malformed.
    #[error("cosignatures: {0}")]
    Cosignature(NoteError),
    /// The witnesses whose cosignatures verified do not make the quorum.
    #[error("quorum not met: {0}")]
    Quorum(String),
}

/// A name in a policy: an opaque byte string (shown lossily as UTF-8).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PolicyName(Vec<u8>);

impl PolicyName {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// A `log` line.
#[derive(Clone, Debug)]
pub struct PolicyLog {
    pub verifier: Verifier,
    pub url: Option<String>,
}

/// A `witness` line.
#[derive(Clone, Debug)]
pub struct PolicyWitness {
    /// Its name in the policy (not its key's name).
    pub name: PolicyName,
    pub verifier: CosignatureVerifier,
    /// The witness's submission prefix, when given.
    pub url: Option<String>,
}

/// What a group or the quorum refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    /// Index into [`Policy::witnesses`].
    Witness(usize),
    /// Index into [`Policy::groups`].
    Group(usize),
}

/// A `group` line: satisfied when at least `threshold` members are.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: PolicyName,
    pub threshold: usize,
    pub members: Vec<Member>,
}

/// A parsed policy.
#[derive(Clone, Debug)]
pub struct Policy {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    /// `None` for `quorum none`.
    quorum: Option<Member>,
}

/// A checkpoint that satisfied a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witnessed {
    pub checkpoint: Checkpoint,
    /// The vkey of the log key that signed it.
    pub log_vkey: String,
    /// Each policy witness whose cosignature verified, with it.
    pub cosignatures: Vec<(PolicyName, Cosignature)>,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl Policy {
    /// Parses a policy file.
    pub fn parse(text: &[u8]) -> Result<Self, PolicyParseError> {
        Parser::default().parse(text)
    }

    pub fn logs(&self) -> &[PolicyLog] {
        &self.logs
    }

    pub fn witnesses(&self) -> &[PolicyWitness] {
        &self.witnesses
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The quorum; `None` means `quorum none`.
    pub fn quorum(&self) -> Option<Member> {
        self.quorum
    }

    /// The witness keys, e.g. for [`verify_cosignatures`].
    pub fn witness_verifiers(&self) -> Vec<CosignatureVerifier> {
        self.witnesses.iter().map(|w| w.verifier.clone()).collect()
    }

    /// The name a member has in the policy.
    pub fn member_name(&self, member: Member) -> &PolicyName {
        match member {
            Member::Witness(i) => &self.witnesses[i].name,
            Member::Group(i) => &self.groups[i].name,
        }
    }

    /// Whether the witnesses in `cosigned` (indexes into
    /// [`Policy::witnesses`]) satisfy the quorum.
    pub fn quorum_met(&self, cosigned: &HashSet<usize>) -> bool {
        match self.quorum {
            None => true,
            Some(m) => self.member_met(m, cosigned),
        }
    }

    fn member_met(&self, member: Member, cosigned: &HashSet<usize>) -> bool {
        match member {
            Member::Witness(i) => cosigned.contains(&i),
            Member::Group(g) => {
                let group = &self.groups[g];
                group
                    .members
                    .iter()
                    .filter(|m| self.member_met(**m, cosigned))
                    .count()
                    >= group.threshold
            }
        }
    }

    /// Whether the witnesses named (by their policy names) satisfy the quorum.
    pub fn quorum_met_by_names<'a>(&self, names: impl IntoIterator<Item = &'a [u8]>) -> bool {
        let names: HashSet<&[u8]> = names.into_iter().collect();
        let cosigned = self
            .witnesses
            .iter()
            .enumerate()
            .filter(|(_, w)| names.contains(w.name.as_bytes()))
            .map(|(i, _)| i)
            .collect();
        self.quorum_met(&cosigned)
    }

    /// Opens a checkpoint note under this policy: it must be signed by one
    /// of the logs with its origin the key's name, its cosignatures by
    /// policy witnesses must all verify, and those witnesses must make the
    /// quorum.
    pub fn verify(&self, note_text: &str) -> Result<Witnessed, PolicyError> {
        let log_keys: Vec<Verifier> = self.logs.iter().map(|l| l.verifier.clone()).collect();
        let opened = note::open(note_text, &log_keys).map_err(PolicyError::Log)?;
        let checkpoint = Checkpoint::parse(&opened.text)
            .map_err(|e| PolicyError::Log(NoteError::Checkpoint(e.to_string())))?;
        let log = self
            .logs
            .iter()
            .find(|l| {
                opened
                    .signed_by
                    .iter()
                    .any(|(n, id)| *n == l.verifier.name() && *id == l.verifier.key_id())
                    && l.verifier.name() == checkpoint.origin
            })
            .ok_or_else(|| {
                PolicyError::Log(NoteError::OriginMismatch {
                    want: opened
                        .signed_by
                        .first()
                        .map(|(n, _)| n.clone())
                        .unwrap_or_default(),
                    got: checkpoint.origin.clone(),
                })
            })?;
        let cosignatures = verify_cosignatures(note_text, &self.witness_verifiers())
            .map_err(PolicyError::Cosignature)?;
        let mut cosigned = HashSet::new();
        let mut named = Vec::new();
        for c in cosignatures {
            if let Some(i) = self
                .witnesses
                .iter()
                .position(|w| w.verifier.name() == c.name && w.verifier.key_id() == c.key_id)
            {
                cosigned.insert(i);
                named.push((self.witnesses[i].name.clone(), c));
            }
        }
        if !self.quorum_met(&cosigned) {
            let have: Vec<String> = named.iter().map(|(n, _)| n.to_string()).collect();
            return Err(PolicyError::Quorum(format!(
                "quorum {} needs more cosignatures; valid ones from: {}",
                self.quorum
                    .map(|m| self.member_name(m).to_string())
                    .unwrap_or_else(|| "none".into()),
                if have.is_empty() {
                    "no policy witness".into()
                } else {
                    have.join(", ")
                }
            )));
        }
        Ok(Witnessed {
            checkpoint,
            log_vkey: log.verifier.vkey(),
            cosignatures: named,
        })
    }
}

#[derive(Default)]
struct Parser {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    quorum: Option<Option<Member>>,
    names: HashMap<Vec<u8>, Member>,
    used_as_member: HashSet<Vec<u8>>,
    keys: HashMap<[u8; 32], usize>,
}

impl Parser {
    fn parse(mut self, text: &[u8]) -> Result<Policy, PolicyParseError> {
        let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        for (i, line) in lines.iter().enumerate() {
            let err = |message: String| PolicyParseError {
                line: i + 1,
                message,
            };
            if let Some(&b) = line
                .iter()
                .find(|b| !(**b == b'\t' || (0x20..0x7f).contains(*b) || **b >= 0x80))
            {
                return Err(err(if b == b'\r' {
                    "carriage return (0x0D): lines must end in a plain newline".into()
                } else {
                    format!("byte 0x{b:02x} is not allowed (only tab, newline, 0x20-0x7E and 0x80-0xFF)")
                }));
            }
            let fields: Vec<&[u8]> = line
                .split(|b| is_space(*b))
                .filter(|f| !f.is_empty())
                .collect();
            match fields.first() {
                None => continue,
                Some(f) if f.starts_with(b"#") => continue,
                Some(_) => {}
            }
            self.line(&fields).map_err(err)?;
        }
        let quorum = self.quorum.ok_or_else(|| PolicyParseError {
            line: 0,
            message: "no quorum line (use `quorum none` for no cosignatures)".into(),
        })?;
        Ok(Policy {
            logs: self.logs,
            witnesses: self.witnesses,
            groups: self.groups,
            quorum,
        })
    }

    fn line(&mut self, fields: &[&[u8]]) -> Result<(), String> {
        match fields[0] {
            b"log" => self.log(&fields[1..]),
            b"witness" => self.witness(&fields[1..]),
            b"group" => self.group(&fields[1..]),
            b"quorum" => self.quorum(&fields[1..]),
            other => Err(format!(
                "unknown keyword {:?} (expected log, witness, group or quorum)",
                String::from_utf8_lossy(other)
            )),
        }
    }

    fn text<'a>(field: &'a [u8], what: &str) -> Result<&'a str, String> {
        std::str::from_utf8(field).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn url(field: Option<&&[u8]>) -> Result<Option<String>, String> {
        field
            .map(|f| Self::text(f, "URL").map(str::to_owned))
            .transpose()
    }

    fn claim_key(&mut self, key: [u8; 32]) -> Result<(), String> {
        if self.keys.insert(key, self.keys.len()).is_some() {
            return Err(
                "duplicate key: another log or witness line has the same public key".into(),
            );
        }
        Ok(())
    }

    fn define(&mut self, name: &[u8], member: Member) -> Result<(), String> {
        if name == b"none" {
            return Err("`none` is reserved and cannot be defined".into());
        }
        if self.names.contains_key(name) {
            return Err(format!(
                "{:?} is already defined (witnesses and groups share one namespace)",
                String::from_utf8_lossy(name)
            ));
        }
        self.names.insert(name.to_vec(), member);
        Ok(())
    }

    fn log(&mut self, args: &[&[u8]]) -> Result<(), String> {
        if args.is_empty() || args.len() > 2 {
            return Err("expected `log <vkey> [<url>]`".into());
        }
        if self.logs.len() == MAX_LOGS {
            return Err(format!("more than {MAX_LOGS} logs"));
        }
        let vkey = Self::text(args[0], "vkey")?;
        let verifier = Verifier::from_vkey(vkey).map_err(|e| format!("log vkey: {e}"))?;
        self.claim_key(log_public_key(&verifier)?)?;
        self.logs.push(PolicyLog {
            verifier,
            url: Self::url(args.get(1))?,
        });
        Ok(())
    }

    fn witness(&mut self, args: &[&[u8]]) -> Result<(), String> {
        if args.len() < 2 || args.len() > 3 {
            return Err("expected `witness <name> <vkey> [<url>]`".into());
        }
        if self.witnesses.len() == MAX_WITNESSES {
            return Err(format!("more than {MAX_WITNESSES} witnesses"));
        }
        let vkey = Self::text(args[1], "vkey")?;
        let verifier =
            CosignatureVerifier::from_vkey(vkey).map_err(|e| format!("witness vkey: {e}"))?;
        self.define(args[0], Member::Witness(self.witnesses.len()))?;
        self.claim_key(verifier.public_key())?;
        self.witnesses.push(PolicyWitness {
            name: PolicyName(args[0].to_vec()),
            verifier,
            url: Self::url(args.get(2))?,
        });
        Ok(())
    }

    fn group(&mut self, args: &[&[u8]]) -> Result<(), String> {
        if args.len() < 3 {
            return Err(
                "expected `group <name> all|any|<k> <member>...` with at least one member".into(),
            );
        }
        if self.groups.len() == MAX_GROUPS {
            return Err(format!("more than {MAX_GROUPS} groups"));
        }
        let (name, threshold, member_names) = (args[0], args[1], &args[2..]);
        let n = member_names.len();
        let threshold = match threshold {
            b"all" => n,
            b"any" => 1,
            k => {
                let k = std::str::from_utf8(k)
                    .ok()
                    .filter(|k| k.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|k| k.parse::<usize>().ok())
                    .ok_or_else(|| {
                        format!(
                            "threshold {:?} is not all, any or a decimal number",
                            String::from_utf8_lossy(k)
                        )
                    })?;
                if k < 1 || k > n {
                    return Err(format!(
                        "threshold {k} is not between 1 and the {n} members"
                    ));
                }
                k
            }
        };
        let mut members = Vec::with_capacity(n);
        for m in member_names {
            let label = String::from_utf8_lossy(m);
            if *m == b"none" {
                return Err("`none` cannot be a group member".into());
            }
            let member = *self
                .names
                .get(*m)
                .ok_or_else(|| format!("member {label:?} is not defined on an earlier line"))?;
            if !self.used_as_member.insert(m.to_vec()) {
                return Err(format!(
                    "{label:?} is already a group member (each name may be listed as a member once)"
                ));
            }
            members.push(member);
        }
        self.define(name, Member::Group(self.groups.len()))?;
        self.groups.push(Group {
            name: PolicyName(name.to_vec()),
            threshold,
            members,
        });
        Ok(())
    }

    fn quorum(&mut self, args: &[&[u8]]) -> Result<(), String> {
        if args.len() != 1 {
            return Err("expected `quorum <name>` or `quorum none`".into());
        }
        if self.quorum.is_some() {
            return Err("a second quorum line (a policy has exactly one)".into());
        }
        let quorum = if args[0] == b"none" {
            None
        } else {
            Some(*self.names.get(args[0]).ok_or_else(|| {
                format!(
                    "quorum {:?} is not defined on an earlier line",
                    String::from_utf8_lossy(args[0])
                )
            })?)
        };
        self.quorum = Some(quorum);
        Ok(())
    }
}

/// The raw public key of a log's note verifier (from its canonical vkey).
fn log_public_key(verifier: &Verifier) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let vkey = verifier.vkey();
    let key64 = vkey.splitn(3, '+').nth(2).unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key64)
        .map_err(|_| "log vkey: bad base64".to_string())?;
    bytes
        .get(1..)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| "log vkey: not a 32-byte Ed25519 key".to_string())
}
