//! Files the commands write: atomically replaced ones (receipts, monitor
//! state) and secret ones (keys, created once, owner-only).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes `data` to `path` through a temporary file in the same directory,
/// synced and renamed: readers see the old file or the whole new one.
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `path` (and its parent directories) with `contents`, readable
/// only by the owner. Fails if the file exists.
pub fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("creating {}", path.display()))
        }
    })?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Reads a secret file (a signing key), trimmed. With `private_only`, a
/// file that its group or others may read is refused: a production key
/// another account can read is not a secret any more.
pub fn read_secret_file(path: &Path, private_only: bool) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    #[cfg(unix)]
    if private_only {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "key file {} may be read by other accounts (mode {:o}); `chmod 600 {}` and try again",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret_files_are_refused_when_it_matters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        write_secret_file(&p, "SECRET\n").unwrap();
        assert_eq!(read_secret_file(&p, true).unwrap(), "SECRET");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = read_secret_file(&p, true).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
            assert_eq!(read_secret_file(&p, false).unwrap(), "SECRET");
        }
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
