//! Receipts written straight to JSON.
//!
//! A receipt is mostly hashes (hex in `inclusion_proof`, base64 in
//! `tlog_proof`) and the checkpoint note, twice. Assembled as a `Receipt` of
//! strings and then serialized, every byte was formatted once and scanned
//! for escapes once more: a 1,000-record bulk answer spent about a third of
//! the server's CPU there (BENCHMARKS.md, "Where the time goes"). Here the
//! hashes are encoded straight into the output (hex and base64 never need
//! escaping; the `tlog-proof` lines come from the core's
//! [`write_head`](stele_core::tlog_proof::write_head), the one place that
//! format is written), the checkpoint is escaped once per answer, and only
//! the origin and the leaf go through serde_json's string escaper.
//!
//! The output is byte for byte what serde_json makes of
//! [`wire::Receipt`](crate::wire::Receipt); the tests below hold it to
//! that, so the OpenAPI schema and every client keep describing it.

use std::sync::Arc;

use stele_core::tlog_proof::write_head;

use crate::engine::Integrated;

/// `s` as a JSON string, quotes included.
fn json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Roughly the bytes of one receipt (to size the output once).
fn size_hint(s: &Integrated) -> usize {
    512 + s.leaf.len() + 2 * s.checkpoint.len() + 112 * s.proof.len()
}

/// Writes receipts; remembers the last checkpoint it escaped, so that the
/// receipts of one batch (which share it) escape it once.
#[derive(Default)]
pub(crate) struct ReceiptWriter {
    checkpoint: Option<Arc<str>>,
    /// The checkpoint as a JSON string, quotes included.
    quoted: Vec<u8>,
}

impl ReceiptWriter {
    /// The escaped checkpoint, without quotes.
    fn escaped_checkpoint(&mut self, checkpoint: &Arc<str>) -> &[u8] {
        if self.checkpoint.as_ref() != Some(checkpoint) {
            self.quoted.clear();
            json_string(&mut self.quoted, checkpoint);
            self.checkpoint = Some(checkpoint.clone());
        }
        &self.quoted[1..self.quoted.len() - 1]
    }

    /// Appends the receipt of `s` as a JSON object.
    pub(crate) fn write(&mut self, out: &mut Vec<u8>, s: &Integrated) {
        out.extend_from_slice(b"{\"log\":");
        json_string(out, &s.origin);
        out.extend_from_slice(b",\"index\":");
        out.extend_from_slice(itoa::Buffer::new().format(s.index).as_bytes());
        out.extend_from_slice(b",\"leaf\":");
        json_string(out, &s.leaf_text());
        out.extend_from_slice(b",\"leaf_hash\":\"");
        out.extend_from_slice(&s.leaf_hash.hex_bytes());
        out.extend_from_slice(b"\",\"inclusion_proof\":[");
        for (i, h) in s.proof.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(&h.hex_bytes());
            out.push(b'"');
        }
        let checkpoint = self.escaped_checkpoint(&s.checkpoint);
        out.extend_from_slice(b"],\"checkpoint\":\"");
        out.extend_from_slice(checkpoint);
        // The `tlog-proof@v1` text inside a JSON string: lines end in `\n`.
        out.extend_from_slice(b"\",\"tlog_proof\":\"");
        write_head(out, None, s.index, &s.proof, b"\\n");
        out.extend_from_slice(checkpoint);
        out.extend_from_slice(b"\"}");
    }
}

/// The body of a single submission's answer.
pub(crate) fn receipt(s: &Integrated) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint(s));
    ReceiptWriter::default().write(&mut out, s);
    out
}

/// The body of a bulk submission's answer: `{"receipts":[...]}`.
pub(crate) fn bulk(subs: &[Integrated]) -> Vec<u8> {
    let per = subs.first().map_or(0, size_hint);
    let mut out = Vec::with_capacity(16 + per * subs.len());
    let mut w = ReceiptWriter::default();
    out.extend_from_slice(b"{\"receipts\":[");
    for (i, s) in subs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        w.write(&mut out, s);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Receipts;
    use stele_core::leaf_hash;

    fn submitted(
        origin: &str,
        index: u64,
        leaf: &str,
        proof: usize,
        checkpoint: &Arc<str>,
    ) -> Integrated {
        Integrated {
            origin: origin.into(),
            index,
            leaf: bytes::Bytes::copy_from_slice(leaf.as_bytes()),
            leaf_hash: leaf_hash(leaf.as_bytes()),
            proof: (0..proof)
                .map(|i| leaf_hash(format!("{leaf}/{i}").as_bytes()))
                .collect(),
            checkpoint: checkpoint.clone(),
            created: true,
            witnessed: false,
        }
    }

    /// Byte for byte what serde_json writes for `wire::Receipt`, including
    /// strings that need escaping (quotes, backslashes, control characters,
    /// non-ASCII) in the origin, the leaf and the checkpoint.
    #[test]
    fn same_bytes_as_serde() {
        let checkpoints: Vec<Arc<str>> = vec![
            "records.example.gov/land\n42\nq83lGkGZ0Y8=\n\n\u{2014} records.example.gov/land AAAA+/==\n".into(),
            "we\"ird\\origin\t\u{1}\n0\n\n".into(),
        ];
        let leaves = [
            r#"{"agency":"land","subject":"parcel \"7\"","ts":"2026-01-01T00:00:00.000Z","type":"land.transfer","v":1}"#,
            "\u{0}\u{1f}\\/\u{7f}é😀",
            "",
        ];
        let origins = ["records.example.gov/land", "o\"\\\n\u{2028}"];
        for cp in &checkpoints {
            for leaf in leaves {
                for origin in origins {
                    for (index, proof) in [(0u64, 0usize), (1, 1), (u64::MAX, 3), (123_456_789, 24)]
                    {
                        let s = submitted(origin, index, leaf, proof, cp);
                        let expected = serde_json::to_vec(&s.receipt()).unwrap();
                        assert_eq!(
                            String::from_utf8(receipt(&s)).unwrap(),
                            String::from_utf8(expected).unwrap()
                        );
                    }
                }
            }
        }
    }

    /// A bulk answer whose receipts change checkpoint midway (they never do
    /// within one batch, but the writer must not assume it).
    #[test]
    fn bulk_same_bytes_as_serde() {
        let a: Arc<str> = "origin\n1\nAAAA\n\n\u{2014} origin sig\n".into();
        let b: Arc<str> = "origin\n2\nBBBB\n\n\u{2014} origin sig2\n".into();
        let subs = vec![
            submitted("origin", 0, "{\"a\":1}", 0, &a),
            submitted("origin", 1, "{\"a\":2}", 1, &a),
            submitted("origin", 2, "{\"a\":3}", 2, &b),
            submitted("origin", 3, "{\"a\":4}", 2, &a),
        ];
        let expected = serde_json::to_vec(&Receipts {
            receipts: subs.iter().map(|s| s.receipt()).collect(),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(bulk(&subs)).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        assert_eq!(bulk(&subs[..0]), b"{\"receipts\":[]}");
    }
}
