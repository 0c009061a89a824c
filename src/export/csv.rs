//! The daily CSV of each container (`<csv_dir>/<CTID>.csv`): append-only, one row per closed
//! day, each row written exactly once even when a run is killed and repeated, and never torn.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::ctid::Ctid;
use crate::ledger::Row;

/// The first line of every CSV file: the date, the CTID and the twelve figures.
pub const HEADER: &str = "date,ctid,in_bytes,out_bytes,in_packets,out_packets,\
local_in_bytes,local_out_bytes,local_in_packets,local_out_packets,\
free_in_bytes,free_out_bytes,free_in_packets,free_out_packets";

/// The first line of a file begun by a release without free networks. Such a file keeps
/// its ten columns (a reader of it expects them on every line); a file begun since has
/// the four `free_*` columns at the end.
pub const HEADER_10: &str = "date,ctid,in_bytes,out_bytes,in_packets,out_packets,\
local_in_bytes,local_out_bytes,local_in_packets,local_out_packets";

/// A CSV file that could not be appended to; the ledger is then not written either, so the
/// rows are produced again by the next run.
#[derive(Debug, thiserror::Error)]
#[error("cannot append to daily CSV {path}")]
pub struct CsvError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Who may read the CSV files: their mode, and the group of the files and their directory
/// (`None`: root's). The directory gets the search and read bits the files' mode gives
/// (0700; 0750 with a group; 0755 for files everyone may read), never write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub mode: u32,
    pub gid: Option<u32>,
}

impl Default for Perms {
    fn default() -> Self {
        Perms {
            mode: 0o640,
            gid: None,
        }
    }
}

impl Perms {
    fn dir_mode(&self) -> u32 {
        let mut m = 0o700;
        // Root's own group gets no way in: the group bits are for csv_group.
        if self.gid.is_some() && self.mode & 0o040 != 0 {
            m |= 0o050;
        }
        if self.mode & 0o004 != 0 {
            m |= 0o005;
        }
        m
    }
}

/// The gid of `group` (a name from the group database, or a number).
pub fn group_id(group: &str) -> Option<u32> {
    if let Ok(n) = group.parse::<u32>() {
        return Some(n);
    }
    let name = std::ffi::CString::new(group).ok()?;
    // SAFETY: getgrnam(3) takes a NUL-terminated name and returns a pointer to static data
    // or NULL; only gr_gid is read, at once, on this thread.
    unsafe {
        let g = libc::getgrnam(name.as_ptr());
        (!g.is_null()).then(|| (*g).gr_gid)
    }
}

fn set_owner_mode(path: &Path, perms: &Perms, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(gid) = perms.gid {
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

pub fn path_for(dir: &Path, ctid: &Ctid) -> PathBuf {
    dir.join(format!("{ctid}.csv"))
}

/// Append `rows` (any order, any containers) to their files. A row whose date is not after
/// the file's last row is skipped: it was written by an earlier run that was killed before
/// it could record so in the ledger. Returns how many rows were written.
pub fn append(dir: &Path, rows: &[Row], perms: &Perms) -> Result<usize, CsvError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let dir_err = |source| CsvError {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(dir_err(std::io::Error::other(
            "csv_dir under [storage] names it, but it is not a directory",
        )));
    }
    if let Some(reason) = crate::ledger::store::unsafe_dir(dir) {
        return Err(dir_err(std::io::Error::other(format!(
            "refusing to write into it: {reason} (make it root's and writable by no one else)"
        ))));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(dir_err)?;
    set_owner_mode(dir, perms, perms.dir_mode()).map_err(dir_err)?;
    let mut by_ct: std::collections::BTreeMap<&Ctid, Vec<&Row>> = Default::default();
    for r in rows {
        by_ct.entry(&r.ctid).or_default().push(r);
    }
    let mut written = 0;
    for (ctid, mut rows) in by_ct {
        rows.sort_by_key(|r| r.date);
        let path = path_for(dir, ctid);
        written += append_one(&path, &rows, perms).map_err(|source| CsvError { path, source })?;
    }
    Ok(written)
}

fn append_one(path: &Path, rows: &[&Row], perms: &Perms) -> std::io::Result<usize> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(perms.mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // The configured mode and group, whatever the umask or an earlier setting left.
    set_owner_mode(path, perms, perms.mode)?;
    let last = repair_and_last_date(&mut f)?;
    let mut buf = Vec::new();
    let columns = if f.metadata()?.len() == 0 {
        buf.extend_from_slice(HEADER.as_bytes());
        buf.push(b'\n');
        crate::ledger::FIGURES
    } else {
        figure_columns(&mut f)?
    };
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(&mut buf);
    let mut n = 0;
    for r in rows.iter().filter(|r| last.is_none_or(|l| r.date > l)) {
        let mut record = vec![r.date.format("%Y-%m-%d").to_string(), r.ctid.to_string()];
        record.extend(r.figures.fields()[..columns].iter().map(u64::to_string));
        w.write_record(&record).map_err(std::io::Error::other)?;
        n += 1;
    }
    w.flush()?;
    drop(w);
    if n > 0 {
        // One write of whole lines; a crash mid-write leaves a partial last line, which the
        // next append cuts away before writing.
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    Ok(n)
}

/// How many figures each row of a file has, by its first line.
fn figure_columns(f: &mut std::fs::File) -> std::io::Result<usize> {
    f.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(HEADER.len() + 1);
    f.take(HEADER.len() as u64 + 1).read_to_end(&mut head)?;
    let first = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    Ok(if first == HEADER_10.as_bytes() {
        8
    } else {
        crate::ledger::FIGURES
    })
}

/// Cut a torn last line (no final newline) and return the date of the last complete row.
fn repair_and_last_date(f: &mut std::fs::File) -> std::io::Result<Option<NaiveDate>> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let tail_len = len.min(4096);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    f.take(tail_len).read_to_end(&mut tail)?;
    let complete = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if tail_len == len => 0,
        None => {
            return Err(std::io::Error::other(
                "last line is longer than 4096 bytes: not a vzacct CSV",
            ));
        }
    };
    if complete < tail.len() {
        f.set_len(len - tail_len + complete as u64)?;
        f.sync_data()?;
        tail.truncate(complete);
    }
    let text = String::from_utf8_lossy(&tail);
    let last_line = text.lines().next_back().unwrap_or("");
    let date = last_line.split(',').next().unwrap_or("");
    Ok(NaiveDate::parse_from_str(date, "%Y-%m-%d").ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Figures;

    fn row(date: &str, ctid: &str, in_bytes: u64) -> Row {
        Row {
            date: date.parse().unwrap(),
            ctid: ctid.parse().unwrap(),
            figures: Figures {
                in_bytes,
                ..Figures::default()
            },
        }
    }

    #[test]
    fn writes_header_once_and_skips_rows_already_written() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [row("2026-11-28", "101", 5), row("2026-11-27", "101", 4)];
        assert_eq!(append(dir.path(), &rows, &Perms::default()).unwrap(), 2);
        assert_eq!(
            append(dir.path(), &rows, &Perms::default()).unwrap(),
            0,
            "a rerun writes nothing"
        );
        assert_eq!(
            append(
                dir.path(),
                &[row("2026-11-29", "101", 6)],
                &Perms::default()
            )
            .unwrap(),
            1
        );
        let text = std::fs::read_to_string(dir.path().join("101.csv")).unwrap();
        assert_eq!(
            text,
            format!(
                "{HEADER}\n2026-11-27,101,4,0,0,0,0,0,0,0,0,0,0,0\n\
                 2026-11-28,101,5,0,0,0,0,0,0,0,0,0,0,0\n2026-11-29,101,6,0,0,0,0,0,0,0,0,0,0,0\n"
            )
        );
    }

    #[test]
    fn a_csv_dir_that_is_a_file_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("csv");
        std::fs::write(&file, "").unwrap();
        let e = append(&file, &[row("2026-11-28", "101", 5)], &Perms::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot append to daily CSV {}", file.display())
        );
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "csv_dir under [storage] names it, but it is not a directory"
        );
    }

    #[test]
    fn a_torn_last_row_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.csv");
        std::fs::write(
            &path,
            format!("{HEADER_10}\n2026-11-27,101,4,0,0,0,0,0,0,0\n2026-11-28,10"),
        )
        .unwrap();
        assert_eq!(
            append(
                dir.path(),
                &[row("2026-11-28", "101", 5)],
                &Perms::default()
            )
            .unwrap(),
            1
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "{HEADER_10}\n2026-11-27,101,4,0,0,0,0,0,0,0\n2026-11-28,101,5,0,0,0,0,0,0,0\n"
            )
        );
    }

    /// A file begun by an earlier release keeps its ten columns; its rows carry no free
    /// figures.
    #[test]
    fn a_ten_column_file_stays_ten_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.csv");
        std::fs::write(
            &path,
            format!("{HEADER_10}\n2026-11-27,101,4,0,0,0,0,0,0,0\n"),
        )
        .unwrap();
        let mut r = row("2026-11-28", "101", 5);
        r.figures.free_in_bytes = 3;
        assert_eq!(
            append(dir.path(), &[r.clone()], &Perms::default()).unwrap(),
            1
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!(
                "{HEADER_10}\n2026-11-27,101,4,0,0,0,0,0,0,0\n2026-11-28,101,5,0,0,0,0,0,0,0\n"
            )
        );
        let fresh = dir.path().join("102.csv");
        r.ctid = "102".parse().unwrap();
        assert_eq!(append(dir.path(), &[r], &Perms::default()).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            format!("{HEADER}\n2026-11-28,102,5,0,0,0,0,0,0,0,3,0,0,0\n")
        );
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let csv = dir.path().join("csv");
        std::fs::create_dir(&csv).unwrap();
        std::os::unix::fs::symlink(&victim, csv.join("101.csv")).unwrap();
        assert!(append(&csv, &[row("2026-11-28", "101", 5)], &Perms::default()).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
