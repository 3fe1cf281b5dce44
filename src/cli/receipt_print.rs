//! `stele submit --print png|pdf`: a printable form of a receipt, written
//! beside its other files.
//!
//! Both forms carry a QR code of a link to the log's receipt page
//! (`/receipt`, served by `stele serve`) with the receipt in the URL
//! fragment, which browsers never send to the server:
//!
//! - `#r=<base64url>`: the whole receipt in the compact form below, when the
//!   link fits in [`QR_MAX_BYTES`] (one version 25 symbol at error-correction
//!   level M, 117 × 117 modules: at 70 mm wide a module is 0.6 mm, which a
//!   phone camera reads from paper);
//! - `#log=<name>&index=<n>&leaf_hash=<hex>` otherwise: the page fetches that
//!   entry and its proof and checks them against the printed leaf hash.
//!
//! The compact form is the one `web/links.js` reads (version 1):
//!
//! ```text
//! u8      1                format version
//! uvarint index
//! uvarint tree size
//! 32      root hash
//! lp      origin           (lp: uvarint length, then the bytes)
//! uvarint count, lp each   checkpoint extension lines
//! uvarint count, each: lp name (empty: the origin), lp signature (key ID || signature)
//! uvarint count, 32 bytes each: inclusion proof hashes
//! rest    leaf (UTF-8)
//! ```
//!
//! The checkpoint note is rebuilt from these parts byte for byte, so its
//! signature still verifies; a note that would not rebuild exactly is never
//! packed (the short link is used instead). `leaf_hash` and `tlog_proof`
//! are recomputed by the reader, not carried.
//!
//! `png` is the QR code alone (sized for 70 mm at the resolution it
//! records); `pdf` is an A4 page with the record in plain words, in Chinese
//! and English, and the code. Its text uses the standard Adobe-GB1 font
//! `STSong-Light`, which PDF readers supply (it is not embedded), so the
//! file stays a few kilobytes and shows Chinese subjects too.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use qrcode::{EcLevel, QrCode};
use stele_core::checkpoint::Checkpoint;
use stele_core::receipt::Receipt;
use stele_core::Hash;

use crate::files::write_atomic;

/// The longest link one QR code on a receipt carries: the byte capacity of a
/// version 25 symbol at error-correction level M.
pub const QR_MAX_BYTES: usize = 997;
/// The largest QR code version a receipt uses.
pub const QR_MAX_VERSION: i16 = 25;
/// Error correction of the codes (level M: 15 % of the symbol may be lost).
pub const QR_EC_LEVEL: EcLevel = EcLevel::M;
/// Version of the compact form.
pub const COMPACT_VERSION: u8 = 1;
/// Printed width of the code, in millimetres.
const QR_PRINT_MM: f32 = 70.0;
/// Quiet zone around the code, in modules (ISO/IEC 18004 asks for 4).
const QUIET: usize = 4;

/// A printable form `stele submit --print` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    /// The QR code alone, `<stem>.receipt.png`.
    Png,
    /// An A4 page with the record and its QR code, `<stem>.receipt.pdf`.
    Pdf,
}

/// Which link a QR code carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkForm {
    /// The whole receipt (`#r=`).
    Compact,
    /// Log, index and leaf hash (`#log=…&index=…&leaf_hash=…`).
    Short,
}

/// The link of a receipt's QR code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrLink {
    pub link: String,
    pub form: LinkForm,
    /// Length of the compact link (None if the receipt cannot be packed).
    pub compact_len: Option<usize>,
}

/// The receipt page and the log's name for a log URL such as
/// `https://records.example.gov/logs/land`: (`https://records.example.gov/receipt`, `land`).
pub fn receipt_page_for(log_url: &str) -> anyhow::Result<(String, String)> {
    let trimmed = log_url.trim_end_matches('/');
    let (base, name) = trimmed
        .rsplit_once("/logs/")
        .with_context(|| format!("{log_url} does not end in /logs/<name>"))?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        anyhow::bail!("{log_url}: {name:?} is not a log name");
    }
    Ok((format!("{base}/receipt"), name.to_string()))
}

fn push_uvarint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn push_lp(out: &mut Vec<u8>, b: &[u8]) {
    push_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A signature line of a note: the signer's name, and key ID || signature.
type SignatureLine = (String, Vec<u8>);

/// A signed note's checkpoint and signature lines.
fn split_note(note: &str) -> Option<(Checkpoint, Vec<SignatureLine>)> {
    let split = note.rfind("\n\n")?;
    let text = &note[..=split];
    let sig_lines = note[split + 2..].strip_suffix('\n')?;
    let checkpoint = Checkpoint::parse(text).ok()?;
    let mut sigs = Vec::new();
    for line in sig_lines.split('\n') {
        let (name, b64) = line.strip_prefix("\u{2014} ")?.split_once(' ')?;
        sigs.push((name.to_string(), STANDARD.decode(b64).ok()?));
    }
    Some((checkpoint, sigs))
}

fn rebuild_note(checkpoint: &Checkpoint, sigs: &[SignatureLine]) -> String {
    let mut note = checkpoint.to_body();
    note.push('\n');
    for (name, sig) in sigs {
        note.push_str(&format!("\u{2014} {name} {}\n", STANDARD.encode(sig)));
    }
    note
}

/// The receipt in the compact form, or None if it cannot be packed without
/// loss (its note would not rebuild byte for byte, or a field is malformed).
pub fn compact(receipt: &Receipt) -> Option<Vec<u8>> {
    let (checkpoint, sigs) = split_note(&receipt.checkpoint)?;
    if rebuild_note(&checkpoint, &sigs) != receipt.checkpoint {
        return None;
    }
    let proof = receipt
        .inclusion_proof
        .iter()
        .map(|h| Hash::from_hex(h))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let mut out = vec![COMPACT_VERSION];
    push_uvarint(&mut out, receipt.index);
    push_uvarint(&mut out, checkpoint.size);
    out.extend_from_slice(checkpoint.root.as_bytes());
    push_lp(&mut out, checkpoint.origin.as_bytes());
    push_uvarint(&mut out, checkpoint.extensions.len() as u64);
    for e in &checkpoint.extensions {
        push_lp(&mut out, e.as_bytes());
    }
    push_uvarint(&mut out, sigs.len() as u64);
    for (name, sig) in &sigs {
        let name = if *name == checkpoint.origin { "" } else { name };
        push_lp(&mut out, name.as_bytes());
        push_lp(&mut out, sig);
    }
    push_uvarint(&mut out, proof.len() as u64);
    for h in &proof {
        out.extend_from_slice(h.as_bytes());
    }
    out.extend_from_slice(receipt.leaf.as_bytes());
    Some(out)
}

/// The short link: log name, index and leaf hash.
pub fn short_link(page: &str, log_name: &str, receipt: &Receipt) -> String {
    format!(
        "{page}#log={log_name}&index={}&leaf_hash={}",
        receipt.index,
        receipt.leaf_hash.to_ascii_lowercase()
    )
}

/// The link a receipt's QR code carries: the whole receipt if it fits in
/// [`QR_MAX_BYTES`], else the short link (the same rule as `web/links.js`).
pub fn qr_link(page: &str, log_name: &str, receipt: &Receipt) -> QrLink {
    let full = compact(receipt).map(|c| format!("{page}#r={}", URL_SAFE_NO_PAD.encode(c)));
    let compact_len = full.as_ref().map(String::len);
    match full {
        Some(link) if link.len() <= QR_MAX_BYTES => QrLink {
            link,
            form: LinkForm::Compact,
            compact_len,
        },
        _ => QrLink {
            link: short_link(page, log_name, receipt),
            form: LinkForm::Short,
            compact_len,
        },
    }
}

/// The QR code of a link: one byte-mode segment at level M in the smallest
/// version that holds it, as the page's encoder makes it (so a link within
/// [`QR_MAX_BYTES`] never needs more than version 25). The crate's mixed-mode
/// segmentation can pick a larger symbol for a base64url fragment.
pub fn qr_code(link: &str) -> anyhow::Result<QrCode> {
    for v in 1..=40 {
        let mut bits = qrcode::bits::Bits::new(qrcode::Version::Normal(v));
        if bits.push_byte_data(link.as_bytes()).is_err()
            || bits.push_terminator(QR_EC_LEVEL).is_err()
        {
            continue;
        }
        return QrCode::with_bits(bits, QR_EC_LEVEL)
            .map_err(|e| anyhow::anyhow!("cannot encode a QR code: {e}"));
    }
    anyhow::bail!("a link of {} bytes is too long for a QR code", link.len())
}

/// Whether the module at (x, y) of the code with its quiet zone is dark.
fn dark(code: &QrCode, x: usize, y: usize) -> bool {
    let w = code.width();
    x >= QUIET
        && y >= QUIET
        && x < w + QUIET
        && y < w + QUIET
        && code[(x - QUIET, y - QUIET)] == qrcode::Color::Dark
}

/// A grayscale PNG of the code with its quiet zone, `module_px` pixels per
/// module, recording the resolution at which it prints 70 mm wide.
pub fn png(code: &QrCode, module_px: usize) -> anyhow::Result<Vec<u8>> {
    let side = (code.width() + 2 * QUIET) * module_px;
    let mut pixels = vec![255u8; side * side];
    for (y, row) in pixels.chunks_mut(side).enumerate() {
        for (x, px) in row.iter_mut().enumerate() {
            if dark(code, x / module_px, y / module_px) {
                *px = 0;
            }
        }
    }
    let mut out = Vec::new();
    {
        let side = u32::try_from(side).context("QR code too large")?;
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let per_metre = (f64::from(side) / (f64::from(QR_PRINT_MM) / 1000.0)).round() as u32;
        enc.set_pixel_dims(Some(png::PixelDimensions {
            xppu: per_metre,
            yppu: per_metre,
            unit: png::Unit::Meter,
        }));
        let mut w = enc.write_header().context("writing the PNG")?;
        w.write_image_data(&pixels).context("writing the PNG")?;
    }
    Ok(out)
}

/// Width of `s` in the PDF font at size 1 (ASCII is half-width in Adobe-GB1).
fn text_width(s: &str) -> f32 {
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { 0.5 } else { 1.0 })
        .sum()
}

/// Splits `s` into lines no wider than `max` (at size 1), breaking anywhere
/// (hashes and links have no spaces).
fn wrap(s: &str, max: f32) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut width = 0.0;
    for c in s.chars() {
        let w = text_width(c.encode_utf8(&mut [0; 4]));
        if width + w > max && !lines.last().is_some_and(String::is_empty) {
            lines.push(String::new());
            width = 0.0;
        }
        lines.last_mut().expect("never empty").push(c);
        width += w;
    }
    lines
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The record's fields for the printed page: (Chinese label, English label, value).
fn facts(receipt: &Receipt) -> Vec<(&'static str, &'static str, String)> {
    let rec: serde_json::Value = serde_json::from_str(&receipt.leaf).unwrap_or_default();
    let field = |k: &str| rec.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let mut out = Vec::new();
    for (zh, en, key) in [
        ("类型", "Type", "type"),
        ("机构", "Agency", "agency"),
        ("对象", "Subject", "subject"),
        ("收录时间（UTC）", "Accepted by the log (UTC)", "ts"),
        ("文件指纹", "Document fingerprint", "content_hash"),
    ] {
        if let Some(v) = field(key) {
            out.push((zh, en, v));
        }
    }
    if let Some(attrs) = rec.get("attributes").and_then(|a| a.as_object()) {
        let text = attrs
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => format!("{k}: {s}"),
                None => format!("{k}: {v}"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        out.push(("详细信息", "Details", text));
    }
    out.push(("条目序号", "Entry number", receipt.index.to_string()));
    out.push(("日志", "Log", receipt.log.clone()));
    out.push(("叶哈希", "Leaf hash", receipt.leaf_hash.clone()));
    if let Some((_, sigs)) = split_note(&receipt.checkpoint) {
        if let Some((_, sig)) = sigs.iter().find(|(n, s)| *n == receipt.log && s.len() > 4) {
            out.push(("签名公钥编号", "Log key ID", hex::encode(&sig[..4])));
        }
    }
    out
}

/// An A4 page: the record in plain words (Chinese and English labels), the
/// QR code 70 mm wide, and what the code carries.
pub fn pdf(receipt: &Receipt, link: &QrLink, code: &QrCode) -> Vec<u8> {
    use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
    use pdf_writer::{Content, Filter, Name, Pdf, Rect, Ref, Str, TextStr};

    const MM: f32 = 72.0 / 25.4;
    let (page_w, page_h) = (595.0_f32, 842.0_f32);
    let margin = 20.0 * MM;
    let font = Name(b"F1");

    let mut c = Content::new();
    let mut y = page_h - margin;
    let text = |c: &mut Content, x: f32, y: f32, size: f32, s: &str| {
        c.begin_text();
        c.set_font(font, size);
        c.next_line(x, y);
        c.show(Str(&utf16be(s)));
        c.end_text();
    };
    text(&mut c, margin, y - 18.0, 20.0, "记录回执  Record receipt");
    y -= 30.0;
    text(
        &mut c,
        margin,
        y - 10.0,
        9.5,
        "本市各机构公开、只增不改的日志中的一条记录。A record in the public, append-only log of the city's agencies.",
    );
    y -= 26.0;

    // The facts on the left, the code on the right.
    let qr_side = QR_PRINT_MM * MM;
    let qr_x = page_w - margin - qr_side;
    let col_w = qr_x - margin - 8.0 * MM;
    let value_size = 11.0;
    for (zh, en, value) in facts(receipt) {
        text(&mut c, margin, y - 8.0, 8.5, &format!("{zh}  {en}"));
        y -= 12.0;
        for line in wrap(&value, col_w / value_size) {
            text(&mut c, margin, y - value_size, value_size, &line);
            y -= value_size + 3.0;
        }
        y -= 5.0;
    }

    let modules = code.width() + 2 * QUIET;
    let m = qr_side / modules as f32;
    let qr_top = page_h - margin - 56.0;
    c.set_fill_gray(0.0);
    for row in 0..modules {
        let mut col = 0;
        while col < modules {
            if !dark(code, col, row) {
                col += 1;
                continue;
            }
            let start = col;
            while col < modules && dark(code, col, row) {
                col += 1;
            }
            // Runs overlap their neighbours by a hair so no seam shows.
            c.rect(
                qr_x + start as f32 * m,
                qr_top - (row + 1) as f32 * m,
                (col - start) as f32 * m + 0.01,
                m + 0.01,
            );
        }
    }
    c.fill_nonzero();
    let mut cy = qr_top - qr_side - 14.0;
    let caption = [
        "用手机相机扫描即可核验。",
        "Scan with a phone camera to check it.",
    ];
    for line in caption {
        text(&mut c, qr_x, cy, 9.0, line);
        cy -= 12.0;
    }
    let form = match link.form {
        LinkForm::Compact => [
            "二维码中含有完整回执，无需本服务器即可核验。",
            "The code carries the whole receipt.",
        ],
        LinkForm::Short => [
            "回执较大：二维码链接到日志中的该条目。",
            "Too large for one code: it links to the entry.",
        ],
    };
    for line in form {
        for l in wrap(line, qr_side / 8.0) {
            text(&mut c, qr_x, cy, 8.0, &l);
            cy -= 10.5;
        }
    }
    if link.form == LinkForm::Short {
        for l in wrap(&link.link, qr_side / 7.0) {
            text(&mut c, qr_x, cy, 7.0, &l);
            cy -= 9.0;
        }
    }
    let footer = "由 stele submit 生成。核验：stele verify，或扫描二维码。Made by stele submit; check with stele verify or by scanning the code.";
    for (i, l) in wrap(footer, (page_w - 2.0 * margin) / 8.0)
        .iter()
        .enumerate()
    {
        text(&mut c, margin, margin - 10.0 * i as f32, 8.0, l);
    }
    let content = c.finish();

    let (catalog, pages, page, font_id, cid_id, desc_id, content_id, info_id) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
        Ref::new(6),
        Ref::new(7),
        Ref::new(8),
    );
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page]).count(1);
    {
        let mut p = pdf.page(page);
        p.parent(pages)
            .media_box(Rect::new(0.0, 0.0, page_w, page_h))
            .contents(content_id);
        p.resources().fonts().pair(font, font_id);
    }
    pdf.type0_font(font_id)
        .base_font(Name(b"STSong-Light-UniGB-UTF16-H"))
        .encoding_predefined(Name(b"UniGB-UTF16-H"))
        .descendant_font(cid_id);
    {
        let mut cid = pdf.cid_font(cid_id);
        cid.subtype(CidFontType::Type0)
            .base_font(Name(b"STSong-Light"))
            .system_info(SystemInfo {
                registry: Str(b"Adobe"),
                ordering: Str(b"GB1"),
                supplement: 2,
            })
            .font_descriptor(desc_id)
            .default_width(1000.0);
        // Adobe-GB1 CIDs 1-95 are the half-width ASCII glyphs.
        cid.widths().same(1, 95, 500.0);
    }
    pdf.font_descriptor(desc_id)
        .name(Name(b"STSong-Light"))
        .flags(FontFlags::SYMBOLIC | FontFlags::SERIF)
        .bbox(Rect::new(-25.0, -254.0, 1000.0, 880.0))
        .italic_angle(0.0)
        .ascent(880.0)
        .descent(-120.0)
        .cap_height(880.0)
        .stem_v(93.0);
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(&content, 9);
    pdf.stream(content_id, &packed).filter(Filter::FlateDecode);
    pdf.document_info(info_id)
        .title(TextStr(&format!("Record receipt {}", receipt.index)))
        .producer(TextStr("stele submit"));
    pdf.finish()
}

/// Writes the printable forms of `receipt` as `<dir>/<stem>.receipt.png`
/// and `.pdf`; returns the paths written. `log_url` is the log's URL (for
/// the receipt page and the log's name); `page` overrides the receipt page.
pub fn write(
    receipt: &Receipt,
    formats: &[PrintFormat],
    dir: &Path,
    stem: &str,
    log_url: &str,
    page: Option<&str>,
) -> anyhow::Result<Vec<PathBuf>> {
    if formats.is_empty() {
        return Ok(Vec::new());
    }
    let (default_page, log_name) = receipt_page_for(log_url)?;
    let page = page.map_or(default_page, |p| p.trim_end_matches('/').to_string());
    let link = qr_link(&page, &log_name, receipt);
    let code = qr_code(&link.link)?;
    let mut written = Vec::new();
    for format in formats {
        let (ext, bytes) = match format {
            PrintFormat::Png => ("png", png(&code, 8)?),
            PrintFormat::Pdf => ("pdf", pdf(receipt, &link, &code)),
        };
        let path = dir.join(format!("{stem}.receipt.{ext}"));
        if written.contains(&path) {
            continue;
        }
        write_atomic(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_core::note::Signer;

    fn receipt(index: u64, size: u64, proof_len: usize, leaf: &str) -> Receipt {
        let (signer, _) = Signer::generate("records.example.gov/land").unwrap();
        let root = stele_core::leaf_hash(b"root");
        let note = signer
            .sign_checkpoint(&Checkpoint::new("records.example.gov/land", size, root))
            .unwrap();
        let proof: Vec<Hash> = (0..proof_len)
            .map(|i| stele_core::leaf_hash(&[i as u8]))
            .collect();
        Receipt::new(
            "records.example.gov/land",
            index,
            leaf.to_string(),
            &proof,
            note,
        )
    }

    const LEAF: &str = r#"{"agency":"land-registry","subject":"地块 12-345","ts":"2025-03-01T08:00:00.000Z","type":"land.transfer","v":1}"#;

    /// Reads the compact form back, as web/links.js does.
    struct Unpack<'a>(&'a [u8]);

    impl Unpack<'_> {
        fn uvarint(&mut self) -> u64 {
            let mut n = 0u64;
            for shift in (0..64).step_by(7) {
                let (b, rest) = self.0.split_first().unwrap();
                self.0 = rest;
                n |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            n
        }
        fn take(&mut self, n: usize) -> Vec<u8> {
            let (a, rest) = self.0.split_at(n);
            self.0 = rest;
            a.to_vec()
        }
        fn lp(&mut self) -> String {
            let n = self.uvarint() as usize;
            String::from_utf8(self.take(n)).unwrap()
        }
    }

    /// (index, checkpoint note, proof, leaf) of a compact receipt.
    fn unpack(b: &[u8]) -> (u64, String, Vec<String>, String) {
        let mut r = Unpack(b);
        assert_eq!(r.take(1), [COMPACT_VERSION]);
        let index = r.uvarint();
        let size = r.uvarint();
        let root = Hash::from_slice(&r.take(32)).unwrap();
        let origin = r.lp();
        let mut cp = Checkpoint::new(origin.clone(), size, root);
        cp.extensions = (0..r.uvarint()).map(|_| r.lp()).collect();
        let sigs: Vec<SignatureLine> = (0..r.uvarint())
            .map(|_| {
                let name = Some(r.lp()).filter(|n| !n.is_empty());
                let n = r.uvarint() as usize;
                (name.unwrap_or_else(|| origin.clone()), r.take(n))
            })
            .collect();
        let proof = (0..r.uvarint())
            .map(|_| Hash::from_slice(&r.take(32)).unwrap().to_hex())
            .collect();
        let leaf = String::from_utf8(r.0.to_vec()).unwrap();
        (index, rebuild_note(&cp, &sigs), proof, leaf)
    }

    #[test]
    fn compact_form_rebuilds_the_receipt_exactly() {
        let r = receipt(41, 1000, 10, LEAF);
        let packed = compact(&r).unwrap();
        let (index, note, proof, leaf) = unpack(&packed);
        assert_eq!(index, 41);
        assert_eq!(
            note, r.checkpoint,
            "the signed note comes back byte for byte"
        );
        assert_eq!(proof, r.inclusion_proof);
        assert_eq!(leaf, r.leaf);
        // Shorter than the receipt's JSON by far: root and signature in binary, no repeats.
        assert!(packed.len() < serde_json::to_string(&r).unwrap().len() / 2);
    }

    #[test]
    fn a_note_that_would_not_rebuild_is_not_packed() {
        let mut r = receipt(1, 2, 1, LEAF);
        // Same signature, but its base64 re-wrapped: the note's bytes would change.
        r.checkpoint = r.checkpoint.replace("\n\n", "\n\n\n");
        assert_eq!(compact(&r), None);
        let q = qr_link("https://x.gov/receipt", "land", &r);
        assert_eq!(q.form, LinkForm::Short);
        assert_eq!(q.compact_len, None);
    }

    #[test]
    fn small_receipts_carry_everything_large_ones_a_short_link() {
        let small = receipt(5, 1000, 10, LEAF);
        let q = qr_link("https://records.example.gov/receipt", "land", &small);
        assert_eq!(q.form, LinkForm::Compact);
        assert!(q.link.starts_with("https://records.example.gov/receipt#r="));
        assert!(q.link.len() <= QR_MAX_BYTES);

        let large = receipt(5_000_000, 10_000_000, 24, LEAF);
        let q = qr_link("https://records.example.gov/receipt", "land", &large);
        assert_eq!(q.form, LinkForm::Short);
        assert!(q.compact_len.unwrap() > QR_MAX_BYTES);
        assert_eq!(
            q.link,
            format!(
                "https://records.example.gov/receipt#log=land&index=5000000&leaf_hash={}",
                large.leaf_hash
            )
        );
    }

    /// Decodes the QR code in a PNG with rqrr, a decoder independent of the encoder.
    fn decode_png(bytes: &[u8]) -> String {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the picture");
        grids[0].decode().unwrap().1
    }

    #[test]
    fn the_png_decodes_to_the_link_at_every_size_up_to_the_limit() {
        for proof_len in [0, 10, 12] {
            let r = receipt(7, 4096, proof_len, LEAF);
            let q = qr_link("http://127.0.0.1:8080/receipt", "default", &r);
            let code = qr_code(&q.link).unwrap();
            let qrcode::Version::Normal(v) = code.version() else {
                panic!("micro QR")
            };
            assert!(v <= QR_MAX_VERSION, "version {v}");
            assert_eq!(decode_png(&png(&code, 4).unwrap()), q.link);
        }
        // The largest link allowed (base64url of arbitrary bytes) still fits in version 25.
        let mut x = 0x9e37_79b9_u32;
        let noise: Vec<u8> = (0..QR_MAX_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut longest = format!("https://x.gov/receipt#r={}", URL_SAFE_NO_PAD.encode(noise));
        longest.truncate(QR_MAX_BYTES);
        let code = qr_code(&longest).unwrap();
        let qrcode::Version::Normal(v) = code.version() else {
            panic!("micro QR")
        };
        assert_eq!(v, QR_MAX_VERSION);
        // One byte more needs a larger symbol.
        let over = format!("{longest}A");
        assert_eq!(
            qr_code(&over).unwrap().version(),
            qrcode::Version::Normal(26)
        );
        assert_eq!(decode_png(&png(&code, 3).unwrap()), longest);
    }

    #[test]
    fn the_pdf_is_one_a4_page_with_the_record() {
        let r = receipt(7, 4096, 12, LEAF);
        let q = qr_link("http://127.0.0.1:8080/receipt", "default", &r);
        let code = qr_code(&q.link).unwrap();
        let bytes = pdf(&r, &q, &code);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("%PDF-"));
        assert!(text.contains("/MediaBox [0 0 595 842]"));
        assert!(text.contains("/STSong-Light"));
        assert_eq!(
            text.matches("/Type /Page\n").count() + text.matches("/Type /Page ").count(),
            1
        );
        // The subject, UTF-16BE inside the (deflated) content stream.
        let find = |from: usize, what: &[u8]| {
            from + bytes[from..]
                .windows(what.len())
                .position(|w| w == what)
                .unwrap()
        };
        let start = find(0, b"stream\n") + b"stream\n".len();
        let end = find(start, b"\nendstream");
        let content = miniz_oxide::inflate::decompress_to_vec_zlib(&bytes[start..end]).unwrap();
        // The subject as the font's UTF-16BE string, written as pdf-writer writes it.
        let mut probe = pdf_writer::Content::new();
        probe.show(pdf_writer::Str(&utf16be("地块 12-345")));
        let probe = probe.finish();
        let needle = probe.strip_suffix(b" Tj").unwrap_or(&probe);
        assert!(needle.len() > 10);
        assert!(content.windows(needle.len()).any(|w| w == needle));
        assert!(bytes.len() < 20_000, "{} bytes", bytes.len());
    }

    #[test]
    fn the_receipt_page_comes_from_the_log_url() {
        assert_eq!(
            receipt_page_for("http://127.0.0.1:8080/logs/default").unwrap(),
            ("http://127.0.0.1:8080/receipt".into(), "default".into())
        );
        assert_eq!(
            receipt_page_for("https://r.example.gov/stele/logs/land-2/").unwrap(),
            (
                "https://r.example.gov/stele/receipt".into(),
                "land-2".into()
            )
        );
        assert!(receipt_page_for("https://r.example.gov/land").is_err());
        assert!(receipt_page_for("https://r.example.gov/logs/Land").is_err());
    }

    #[test]
    fn text_wraps_by_width() {
        assert_eq!(wrap("abcd", 1.0), vec!["ab", "cd"]);
        assert_eq!(wrap("地块地块", 2.0), vec!["地块", "地块"]);
        assert_eq!(wrap("", 2.0), vec![""]);
    }
}
