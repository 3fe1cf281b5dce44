//! Proof verification against vectors from independent implementations
//! (copied under `tests/vectors/`, sources in each `SOURCE.txt`).

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use stele_core::merkle::{self, root_of};
use stele_core::{leaf_hash, Hash, EMPTY_ROOT};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

fn load(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Decodes a base64 field into a hash; `Err` for anything not 32 bytes.
fn b64_hash(v: &Value) -> Result<Hash, ()> {
    let bytes = STANDARD.decode(v.as_str().unwrap()).unwrap();
    Hash::from_slice(&bytes).map_err(|_| ())
}

fn b64_hashes(v: &Value) -> Result<Vec<Hash>, ()> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a.iter().map(b64_hash).collect(),
        _ => panic!("proof is not an array"),
    }
}

/// Runs every case under `transparency-dev-merkle/{kind}`: `verify` returns
/// `Err(())` when a case's hashes are not 32 bytes (such a case must be
/// rejected whatever `wantErr` says: the spec rejects such hashes), else the
/// verifier's answer, which must fail exactly when `wantErr` says so.
fn transparency_dev_cases(kind: &str, verify: impl Fn(&Value) -> Result<Result<(), String>, ()>) {
    let mut files = Vec::new();
    json_files(
        &vectors().join("transparency-dev-merkle").join(kind),
        &mut files,
    );
    assert!(
        files.len() > 80,
        "found only {} {kind} vectors",
        files.len()
    );
    let (mut ok, mut rejected) = (0, 0);
    for f in &files {
        let v = load(f);
        let want_err = v["wantErr"].as_bool().unwrap();
        let answer = verify(&v);
        let must_fail = want_err || answer.is_err();
        let result = answer.unwrap_or_else(|()| Err("hash not 32 bytes".to_string()));
        assert_eq!(
            result.is_err(),
            must_fail,
            "{}: {result:?} (desc {})",
            f.display(),
            v["desc"]
        );
        if must_fail {
            rejected += 1
        } else {
            ok += 1
        }
    }
    assert!(
        ok >= 5 && rejected >= 50,
        "{kind}: ok {ok} rejected {rejected}"
    );
}

/// Every case of github.com/transparency-dev/merkle testdata/inclusion.
#[test]
fn transparency_dev_inclusion() {
    transparency_dev_cases("inclusion", |v| {
        let index = v["leafIdx"].as_u64().unwrap();
        let size = v["treeSize"].as_u64().unwrap();
        let (root, leaf, proof) = (
            b64_hash(&v["root"])?,
            b64_hash(&v["leafHash"])?,
            b64_hashes(&v["proof"])?,
        );
        Ok(merkle::verify_inclusion(&leaf, index, size, &proof, &root).map_err(|e| e.to_string()))
    });
}

/// Every case of github.com/transparency-dev/merkle testdata/consistency.
#[test]
fn transparency_dev_consistency() {
    transparency_dev_cases("consistency", |v| {
        let s1 = v["size1"].as_u64().unwrap();
        let s2 = v["size2"].as_u64().unwrap();
        let (r1, r2, proof) = (
            b64_hash(&v["root1"])?,
            b64_hash(&v["root2"])?,
            b64_hashes(&v["proof"])?,
        );
        Ok(merkle::verify_consistency(s1, s2, &r1, &r2, &proof).map_err(|e| e.to_string()))
    });
}

/// One vector says a 12-byte "root" passes between equal sizes; it is
/// rejected here because hashes that are not 32 bytes are not hashes.
#[test]
fn transparency_dev_short_hash_case_is_rejected_on_purpose() {
    let v = load(&vectors().join("transparency-dev-merkle/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"));
    assert!(!v["wantErr"].as_bool().unwrap());
    let bytes = STANDARD.decode(v["root1"].as_str().unwrap()).unwrap();
    assert_eq!(bytes.len(), 12);
    assert!(Hash::from_slice(&bytes).is_err());
}

#[test]
fn reference_roots() {
    let v = load(&vectors().join("transparency-dev-merkle/reference_roots.json"));
    let leaves: Vec<Vec<u8>> = v["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect();
    let roots = v["root_hashes_hex_by_size"].as_array().unwrap();
    assert_eq!(roots.len(), 9);
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    for (size, want) in roots.iter().enumerate() {
        let want = Hash::from_hex(want.as_str().unwrap()).unwrap();
        assert_eq!(root_of(&hashes[..size]), want, "size {size}");
        assert_eq!(
            merkle::tree_root(size as u64, &hashes[..size]).unwrap(),
            want,
            "size {size}"
        );
    }
    assert_eq!(root_of(&[]), EMPTY_ROOT);
}

#[test]
fn sigsum_inclusion() {
    for (file, valid) in [
        ("inclusion-valid.json", true),
        ("inclusion-invalid.json", false),
    ] {
        let v = load(&vectors().join("sigsum").join(file));
        let cases = v.as_array().unwrap();
        assert!(!cases.is_empty());
        for c in cases {
            let leaf = b64_hash(&c["leaf_hash"]);
            let root = b64_hash(&c["root_hash"]);
            let proof = b64_hashes(&c["inclusion_path"]);
            let index = c["leaf_index"].as_u64().unwrap();
            let size = c["tree_size"].as_u64().unwrap();
            let result = match (leaf, root, proof) {
                (Ok(l), Ok(r), Ok(p)) => merkle::verify_inclusion(&l, index, size, &p, &r).is_ok(),
                _ => false,
            };
            assert_eq!(result, valid, "{file}: {c}");
        }
    }
}

fn argon(name: &str) -> Value {
    load(&vectors().join("ct-argon2020").join(name))
}

/// A real inclusion proof in Google's Argon2020 CT log (961,984,011 leaves),
/// with the leaf hashed from the entry itself.
#[test]
fn ct_argon2020_inclusion() {
    let sth = argon("get-sth");
    let size = sth["tree_size"].as_u64().unwrap();
    let root = b64_hash(&sth["sha256_root_hash"]).unwrap();
    let entries = argon("get-entries-start-10000-end-10000");
    let leaf_input = STANDARD
        .decode(entries["entries"][0]["leaf_input"].as_str().unwrap())
        .unwrap();
    let leaf = leaf_hash(&leaf_input);
    // The proof was fetched by this hash (URL-encoded in the file name).
    assert_eq!(
        leaf.to_base64(),
        "nCs3mfIydh9x4CKyQ+u2xtmpxmFggA5MLymHwNQSlLg="
    );
    let p = argon("get-proof-by-hash-tree-size-961984011-hash-nCs3mfIydh9x4CKyQ-2Bu2xtmpxmFggA5MLymHwNQSlLg-3D");
    let index = p["leaf_index"].as_u64().unwrap();
    assert_eq!(index, 10000);
    let proof = b64_hashes(&p["audit_path"]).unwrap();
    merkle::verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
    // Another index, a size whose proof has another shape, or a flipped
    // bit fails. (A size with the same proof shape implies the same root:
    // the signed checkpoint binds size and root, not the proof.)
    assert!(merkle::verify_inclusion(&leaf, index + 1, size, &proof, &root).is_err());
    assert!(merkle::verify_inclusion(&leaf, index, size * 2, &proof, &root).is_err());
    assert!(merkle::verify_inclusion(&leaf, index, size + 1, &proof, &root).is_ok());
    let mut bad = proof.clone();
    bad[29].0[31] ^= 1;
    assert!(merkle::verify_inclusion(&leaf, index, size, &bad, &root).is_err());
}

#[test]
fn ct_argon2020_consistency() {
    let sth = argon("get-sth");
    let size = sth["tree_size"].as_u64().unwrap();
    let root = b64_hash(&sth["sha256_root_hash"]).unwrap();
    let old_root = Hash::from_base64("AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ=").unwrap();
    let c = argon("get-sth-consistency-first-3654490-second-961984011");
    let proof = b64_hashes(&c["consistency"]).unwrap();
    merkle::verify_consistency(3_654_490, size, &old_root, &root, &proof).unwrap();
    assert!(merkle::verify_consistency(3_654_491, size, &old_root, &root, &proof).is_err());
    assert!(merkle::verify_consistency(3_654_490, size, &root, &old_root, &proof).is_err());
    let mut bad = proof.clone();
    bad[0].0[0] ^= 0x80;
    assert!(merkle::verify_consistency(3_654_490, size, &old_root, &root, &bad).is_err());
}
