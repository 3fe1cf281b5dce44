//! C2SP `tlog-checkpoint` bodies.

use crate::{Error, Hash};

/// A checkpoint body: origin, tree size, root hash, optional extension lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines, without their newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Checkpoint {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Parses a checkpoint body (the note text, ending in a newline).
    ///
    /// Strict: at least three lines, each ending in a newline; a non-empty
    /// origin; a decimal size below 2^63 with no sign or leading zeros; the
    /// standard padded base64 of exactly 32 bytes; non-empty extension
    /// lines. No control characters anywhere (as in a signed note's text).
    pub fn parse(body: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::malformed("checkpoint", why);
        if let Some(c) = body.chars().find(|c| c.is_control() && *c != '\n') {
            return Err(bad(format!("control character U+{:04X}", u32::from(c))));
        }
        let text = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end in a newline".into()))?;
        let mut lines = text.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("empty origin line".into()));
        }
        let size_line = lines
            .next()
            .ok_or_else(|| bad("no tree size line".into()))?;
        let size = parse_size(size_line).ok_or_else(|| {
            bad(format!(
                "tree size {:?} is not a canonical decimal below 2^63",
                short(size_line)
            ))
        })?;
        let root_line = lines
            .next()
            .ok_or_else(|| bad("no root hash line".into()))?;
        let root = Hash::from_base64(root_line).map_err(|e| bad(format!("root hash: {e}")))?;
        let mut extensions = Vec::new();
        for line in lines {
            if line.is_empty() {
                return Err(bad("empty extension line".into()));
            }
            extensions.push(line.to_string());
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// The body text: `origin\nsize\nbase64(root)\n[extensions\n]`.
    pub fn to_body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }
}

/// A decimal below 2^63 with no sign and no leading zeros (except `0`).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty()
        || s.len() > 19
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse::<u64>()
        .ok()
        .filter(|n| *n < crate::merkle::MAX_TREE_SIZE)
}

/// At most 64 characters of untrusted input, for error messages.
pub(crate) fn short(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
