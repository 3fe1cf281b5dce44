//! `stele mirror`: it copies a 100,000-entry log into a directory that a
//! plain static file server serves as the same log, resumes after being
//! killed, follows the log as it grows, and refuses tampered tiles and a
//! rolled-back tree without ever letting them into the copy.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use stele_core::tile::{changed_bundles, changed_tiles, TileId, TilePath};
use stele_testkit::harness::TestResult;
use stele_testkit::process::command;
use stele_testkit::static_site::{files_under, StaticSite};

use super::{ensure, expect_alarm, expect_fine, monitor, stele, Server, Test};

pub const TESTS: &[(&str, Test)] = &[(
    "mirror_copies_resumes_and_detects_tampering",
    mirror_copies_resumes_and_detects_tampering,
)];

fn mirror(url: &str, vkey: &str, dir: &Path) -> stele_testkit::process::Output {
    stele(&["mirror", url, dir.to_str().unwrap(), "--vkey", vkey])
}

/// `N` in "…: F tiles fetched, N already here".
fn count(out: &stele_testkit::process::Output, what: &str) -> anyhow::Result<u64> {
    out.stdout
        .split(what)
        .next()
        .and_then(|t| t.rsplit([' ', ',']).find(|w| !w.is_empty()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no {what:?} count\n{}", out.show()))
}

/// Every tile path of a tree of `size`, plus the checkpoint.
fn files_of(size: u64) -> Vec<String> {
    let hashes = changed_tiles(0, size).into_iter().map(TilePath::Hash);
    let tiles = hashes.chain(changed_bundles(0, size).into_iter().map(TilePath::Entries));
    let mut out: Vec<String> = tiles.map(|t| t.to_path()).collect();
    out.push("checkpoint".into());
    out.sort();
    out
}

/// A copy of `from` (without the mirror's own state) with `edit` applied.
fn copy_with(from: &Path, to: &Path, edit: impl FnOnce(&Path) -> anyhow::Result<()>) -> TestResult {
    for (rel, bytes) in files_under(from)? {
        let p = to.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, bytes)?;
    }
    edit(to)
}

fn flip_byte(file: &Path, at: usize) -> TestResult {
    let mut b = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    b[at] ^= 0x01;
    std::fs::write(file, b)?;
    Ok(())
}

fn mirror_copies_resumes_and_detects_tampering() -> TestResult {
    let s = Server::start()?;
    s.bulk("mirror", 100_000)?;
    let tmp = tempfile::tempdir()?;
    let copy = tmp.path().join("copy");
    let staging = copy.join(".stele-mirror").join("staging");

    // Killed part-way: nothing unverified is in the copy.
    let mut child = command(
        &stele_testkit::stele_bin!(),
        &[
            "mirror",
            &s.url,
            copy.to_str().unwrap(),
            "--vkey",
            &s.vkey,
            "--concurrency",
            "1",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let staged = files_under(&staging).map_or(0, |f| f.len());
        if staged >= 40 {
            break;
        }
        ensure(child.try_wait()?.is_none(), || {
            format!("the mirror finished before it could be interrupted ({staged} staged)")
        })?;
        ensure(Instant::now() < deadline, || {
            "nothing staged in 120 s".into()
        })?;
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    ensure(!copy.join("checkpoint").exists(), || {
        "an interrupted mirror wrote a checkpoint".into()
    })?;
    ensure(!copy.join("tile").exists(), || {
        "an interrupted mirror put unverified tiles into the copy".into()
    })?;

    // Resumed: what was staged is not fetched again.
    let out = mirror(&s.url, &s.vkey, &copy);
    expect_fine(&out)?;
    ensure(out.stdout.contains("tree of size 100000"), || out.show())?;
    let reused = count(&out, " already here")?;
    ensure(reused >= 40, || {
        format!("the resumed mirror reused {reused} tiles\n{}", out.show())
    })?;
    let first_checkpoint = std::fs::read_to_string(copy.join("checkpoint"))?;

    // The copy is exactly the log's files, byte for byte.
    let files = files_under(&copy)?;
    let names: Vec<String> = files.keys().cloned().collect();
    ensure(names == files_of(100_000), || {
        format!(
            "the copy holds {} files, the tree has {}",
            names.len(),
            files_of(100_000).len()
        )
    })?;
    let http = reqwest::blocking::Client::new();
    for (rel, bytes) in &files {
        let served = http.get(format!("{}/{rel}", s.url)).send()?.bytes()?;
        ensure(served.as_ref() == bytes.as_slice(), || {
            format!("{rel} in the copy differs from the log's")
        })?;
    }

    // Served by a plain static file server, the copy is the log.
    let site = s.rt.block_on(StaticSite::serve(&copy))?;
    let state = tmp.path().join("monitor.json");
    expect_fine(&monitor(
        site.url(),
        &s.vkey,
        &state,
        &["--audit", "--allow-unregistered"],
    ))?;

    // The log grows: only what changed is fetched.
    s.bulk("mirror-more", 1000)?;
    let out = mirror(&s.url, &s.vkey, &copy);
    expect_fine(&out)?;
    ensure(out.stdout.contains("tree of size 101000"), || out.show())?;
    let fetched = count(&out, " tiles fetched")?;
    ensure(fetched <= 20, || {
        format!("growing by 1,000 fetched {fetched} tiles\n{}", out.show())
    })?;

    // A tampered entry bundle, then a tampered hash tile: alarms, and the
    // victim's copy stays empty.
    for (name, rel) in [
        (
            "bundle",
            TilePath::Entries(TileId::new(0, 100, 256)).to_path(),
        ),
        ("hash", TilePath::Hash(TileId::new(0, 100, 256)).to_path()),
    ] {
        let evil = tmp.path().join(format!("evil-{name}"));
        copy_with(&copy, &evil, |d| flip_byte(&d.join(&rel), 10))?;
        let site = s.rt.block_on(StaticSite::serve(&evil))?;
        let victim = tmp.path().join(format!("victim-{name}"));
        let out = mirror(site.url(), &s.vkey, &victim);
        expect_alarm(&out, "")?;
        ensure(
            !victim.join("checkpoint").exists() && !victim.join("tile").exists(),
            || format!("a tampered {name} tile reached the copy"),
        )?;
        ensure(!victim.join(".stele-mirror/staging").exists(), || {
            "the staged tiles of a failed mirror were kept".into()
        })?;
    }

    // A log that went back to an older tree.
    let old = tmp.path().join("old");
    copy_with(&copy, &old, |d| {
        std::fs::write(d.join("checkpoint"), &first_checkpoint)?;
        Ok(())
    })?;
    let site = s.rt.block_on(StaticSite::serve(&old))?;
    expect_alarm(&mirror(site.url(), &s.vkey, &copy), "shrank")?;
    let kept = std::fs::read_to_string(copy.join("checkpoint"))?;
    ensure(kept != first_checkpoint, || {
        "the copy went back to the older tree".into()
    })?;
    drop(site);
    s.stop();
    Ok(())
}
