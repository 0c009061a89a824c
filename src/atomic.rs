//! Small files replaced whole: written to a fresh temp file, synced, renamed over the old
//! one, the directory synced, so that a crash leaves the old version or the new one, never
//! a torn one. A leaf: used for the probe cache, threshold receipts and installed files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Replace `dir/name` atomically: a fresh temp file (0600, never through a symlink), fsync,
/// rename over the old file, fsync the directory. On error the old file is intact.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(dir, name, bytes, 0o600)
}

/// [`write_atomic`] with the given permission bits.
pub fn write_atomic_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    replace_file(dir, name, bytes, mode)?;
    File::open(dir)?.sync_all()
}

/// Write `dir/name` through a fresh temp file (fsynced) renamed over it; the caller syncs
/// the directory.
fn replace_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    replace_file_with(dir, name, mode, |w| w.write_all(bytes))
}

/// [`replace_file`] with the content written by `fill` (through a buffer).
fn replace_file_with(
    dir: &Path,
    name: &str,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (tmp, f) = write_temp(dir, name, mode, fill)?;
    if let Err(e) = f.sync_all() {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

/// Write `dir/<name>.tmp` (created fresh with exactly `mode`, never through a symlink), not
/// yet synced; on error nothing is left behind.
fn write_temp(
    dir: &Path,
    name: &str,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<(PathBuf, File)> {
    let tmp = dir.join(format!("{name}.tmp"));
    // A leftover temp file from a killed run is ours to replace; a symlink is not followed.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    // The umask may have taken bits away; the file gets exactly `mode`.
    let written = f
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .and_then(|()| {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut f);
            fill(&mut w)?;
            w.flush()
        });
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_temp_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("f.tmp")).unwrap();
        write_atomic(dir.path(), "f", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
    }
}
