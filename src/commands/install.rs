//! Puts vzacct's integration points on a node (vzctl action scripts, wrappers around vzctl's
//! network scripts, init script and systemd unit, cron entry, default config) and takes
//! them away again, never clobbering a file vzacct did not write: an operator's script is
//! chained, vzctl's scripts are wrapped and kept, and uninstall puts every one back as it was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic_mode;

/// Every file vzacct writes carries this marker; a file without it is never overwritten.
pub const MARKER: &str = "vzacct-managed";
/// Suffix of the file that a chained or wrapped original is moved to.
pub const ORIG_SUFFIX: &str = ".vzacct-orig";

/// Which vzctl runs the network scripts: their names, and where they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// vzctl 3.x and 4.x (`kolyshkin/vzctl`): `vps-net_add`/`vps-net_del`, run by
    /// `run_net_script` (src/lib/net.c).
    Vzctl4,
    /// OpenVZ 7 (libvzctl vz7, `OpenVZ/libvzctl` lib/net.c `run_net_script`, called by `add_ip`
    /// and `del_ip`): `vz-net_add`/`vz-net_del`, with the same environment (`VEID`, `IP_ADDR`
    /// without masks, `VE_STATE`, `SKIP_ARPDETECT`).
    Libvzctl,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Vzctl4 => "vzctl 4",
            Flavour::Libvzctl => "OpenVZ 7 (libvzctl)",
        }
    }

    /// The add and the del script.
    pub fn scripts(self) -> [&'static str; 2] {
        match self {
            Flavour::Vzctl4 => ["vps-net_add", "vps-net_del"],
            Flavour::Libvzctl => ["vz-net_add", "vz-net_del"],
        }
    }

    fn templates(self) -> [&'static str; 2] {
        match self {
            Flavour::Vzctl4 => [T_NET_ADD, T_NET_DEL],
            Flavour::Libvzctl => [T_VZ_NET_ADD, T_VZ_NET_DEL],
        }
    }
}

/// Where each flavour keeps its network scripts, searched in this order.
/// - vzctl >= 4.0 RPM: `/usr/libexec/vzctl/scripts`; vzctl < 4.0 and Proxmox:
///   `/usr/lib/vzctl/scripts`; Debian/Ubuntu 4.9.4: `/usr/lib/vzctl/vzctl/scripts`; vzctl 3.x
///   on x86_64 RPM nodes: `%_libdir/vzctl/scripts` = `/usr/lib64/vzctl/scripts` (vzctl.spec of
///   vzctl-3.3, `_pkglibdir`).
/// - libvzctl: `scriptdir` = `/usr/libexec/libvzctl/scripts` and `scriptddir` =
///   `/usr/libexec/libvzctl/script.d` (paths.am); `get_script_path` (lib/util.c) runs the
///   script.d copy instead when one exists, so an override there is wrapped too.
pub const NET_SCRIPT_DIRS: [(Flavour, &str); 6] = [
    (Flavour::Vzctl4, "/usr/libexec/vzctl/scripts"),
    (Flavour::Vzctl4, "/usr/lib/vzctl/scripts"),
    (Flavour::Vzctl4, "/usr/lib/vzctl/vzctl/scripts"),
    (Flavour::Vzctl4, "/usr/lib64/vzctl/scripts"),
    (Flavour::Libvzctl, "/usr/libexec/libvzctl/scripts"),
    (Flavour::Libvzctl, "/usr/libexec/libvzctl/script.d"),
];

/// The directories searched, for messages.
pub fn searched_dirs() -> String {
    NET_SCRIPT_DIRS
        .iter()
        .map(|(_, d)| *d)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where Proxmox VE mounts pmxcfs.
pub const PVE_DIR: &str = "/etc/pve";

const T_MOUNT: &str = include_str!("../../hooks/vps.mount");
const T_UMOUNT: &str = include_str!("../../hooks/vps.umount");
const T_NET_ADD: &str = include_str!("../../hooks/vps-net_add");
const T_NET_DEL: &str = include_str!("../../hooks/vps-net_del");
const T_VZ_NET_ADD: &str = include_str!("../../hooks/vz-net_add");
const T_VZ_NET_DEL: &str = include_str!("../../hooks/vz-net_del");
const T_INIT: &str = include_str!("../../init/vzacct");
const T_UNIT: &str = include_str!("../../init/vzacct.service");
const T_CRON: &str = include_str!("../../conf-templates/vzacct.cron");
/// The default config written when none exists.
pub const T_CONFIG: &str = include_str!("../../conf-templates/vzacct.conf");

/// How a managed file relates to what may already be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A vzctl action script (vps.mount/vps.umount): an operator's script is moved aside
    /// and run first by ours.
    Chain,
    /// vzctl's own network script: moved aside and run first by our wrapper. Replaced by a
    /// vzctl upgrade, it is wrapped again by the next install.
    Wrap,
    /// A file only vzacct writes (init script, unit, cron entry).
    Own,
    /// The config: written only when missing, removed only when unmodified.
    Config,
}

/// One file vzacct manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub role: Role,
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
    /// The template `content` was made from, with its `@...@` placeholders.
    pub template: &'static str,
    /// What each placeholder was replaced with.
    pub fills: Vec<(&'static str, String)>,
}

impl Item {
    pub fn original(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(ORIG_SUFFIX);
        PathBuf::from(p)
    }
}

/// Why install or uninstall could not go on.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("path {0} cannot be used in an installed script (quote or control character)")]
    UnsafePath(PathBuf),
    #[error(
        "this is a Proxmox VE node ({0}); vzacct does not install here: Proxmox's vzctl runs \
         proxmox.umount instead of vps.umount (its debian/patches/bridge-cleanup.patch), so \
         vzacct's umount hook would never run, and pmxcfs sets the executable bit by file name \
         only (name_is_openvz_script in pve-cluster's cfs-plug-memdb.c), so an operator's \
         vps.mount moved aside to vps.mount.vzacct-orig would stop being executable and every \
         container start would fail. Nothing was changed. Without the hooks, a cron entry \
         running `vzacct dump` (it accounts the running containers of /proc/vz/veinfo) is the \
         way to account here"
    )]
    Proxmox(String),
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What install needs to know.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `/` on a node; a directory for tests and packaging.
    pub root: PathBuf,
    /// The vzacct binary the scripts run.
    pub vzacct: PathBuf,
    /// The config the scripts pass with `--config` (already under `root`).
    pub config: PathBuf,
    /// The containers' config dir as seen on the node (`/etc/vz/conf`).
    pub conf_dir: PathBuf,
    /// The mount table read to recognise Proxmox's pmxcfs (`/proc/mounts`; under `root` for
    /// tests and packaging).
    pub mounts: PathBuf,
}

/// What install or uninstall did, file by file, and the problems it left for the operator.
#[derive(Debug, Default)]
pub struct Report {
    pub done: Vec<String>,
    pub problems: Vec<String>,
}

impl Layout {
    /// `path` (absolute on the node) inside the root.
    pub fn under(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The wants link that enables the systemd unit.
    pub fn wants_link(&self) -> PathBuf {
        self.under(Path::new(
            "/etc/systemd/system/multi-user.target.wants/vzacct.service",
        ))
    }

    /// The network script dirs that hold a flavour's add script (or our moved-aside copy).
    pub fn script_dirs(&self) -> Vec<(Flavour, PathBuf)> {
        NET_SCRIPT_DIRS
            .iter()
            .map(|(f, d)| (*f, self.under(Path::new(d))))
            .filter(|(f, d)| {
                let add = f.scripts()[0];
                d.join(add).exists() || d.join(format!("{add}{ORIG_SUFFIX}")).exists()
            })
            .collect()
    }

    /// Why vzacct cannot be installed here, if this is a Proxmox VE node: its container
    /// configs live on pmxcfs, or pmxcfs (a FUSE file system) is mounted on `/etc/pve`.
    pub fn proxmox(&self) -> Option<String> {
        if self.conf_dir.starts_with(PVE_DIR) {
            return Some(format!(
                "the container config dir {} is on Proxmox's pmxcfs",
                self.conf_dir.display()
            ));
        }
        let table = fs::read_to_string(&self.mounts).ok()?;
        table.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [_, at, kind, ..]
                    if at == PVE_DIR && (kind == "fuse" || kind.starts_with("fuse.")) =>
                {
                    Some(format!(
                        "{} lists a {kind} file system on {PVE_DIR} (Proxmox's pmxcfs)",
                        self.mounts.display()
                    ))
                }
                _ => None,
            }
        })
    }

    /// Every file vzacct manages on this node.
    pub fn items(&self) -> Result<Vec<Item>, InstallError> {
        for p in [&self.vzacct, &self.config, &self.root, &self.conf_dir] {
            let s = p.to_string_lossy();
            if s.contains('\'') || s.chars().any(char::is_control) {
                return Err(InstallError::UnsafePath(p.clone()));
            }
        }
        // Installed into a directory of its own (tests, packaging), a hook that cannot read
        // its config logs inside that directory too.
        let fallback = if self.root == Path::new("/") {
            String::new()
        } else {
            format!(
                " --fallback-log '{}'",
                self.under(Path::new(crate::commands::hook::FALLBACK_LOG))
                    .display()
            )
        };
        // ...and the init script's status checks that directory.
        let root_arg = if self.root == Path::new("/") {
            String::new()
        } else {
            format!(" --root '{}'", self.root.display())
        };
        let item = |role, path: PathBuf, template: &'static str, mode| {
            let original = |p: &Path| {
                let mut orig = p.as_os_str().to_owned();
                orig.push(ORIG_SUFFIX);
                orig.to_string_lossy().into_owned()
            };
            let mut fills = vec![
                ("@VZACCT@", self.vzacct.to_string_lossy().into_owned()),
                ("@CONFIG@", self.config.to_string_lossy().into_owned()),
                ("@ORIGINAL@", original(&path)),
                ("@FALLBACK@", fallback.clone()),
                ("@ROOTARG@", root_arg.clone()),
            ];
            // vzctl 4's add wrapper rolls back through the del script's original.
            if template == T_NET_ADD {
                fills.push((
                    "@DEL_ORIGINAL@",
                    original(&path.with_file_name("vps-net_del")),
                ));
            }
            let content = fills
                .iter()
                .fold(template.to_string(), |t, (k, v)| t.replace(k, v));
            Item {
                role,
                path,
                content,
                mode,
                template,
                fills,
            }
        };
        let mut items = Vec::new();
        let conf = self.under(&self.conf_dir);
        for (name, t) in [("vps.mount", T_MOUNT), ("vps.umount", T_UMOUNT)] {
            items.push(item(Role::Chain, conf.join(name), t, 0o755));
        }
        for (flavour, dir) in self.script_dirs() {
            for (name, t) in flavour.scripts().into_iter().zip(flavour.templates()) {
                items.push(item(Role::Wrap, dir.join(name), t, 0o755));
            }
        }
        for (path, t, mode) in [
            ("/etc/init.d/vzacct", T_INIT, 0o755),
            ("/etc/systemd/system/vzacct.service", T_UNIT, 0o644),
            ("/etc/cron.d/vzacct", T_CRON, 0o644),
        ] {
            items.push(item(Role::Own, self.under(Path::new(path)), t, mode));
        }
        items.push(Item {
            role: Role::Config,
            path: self.config.clone(),
            content: T_CONFIG.to_string(),
            mode: 0o644,
            template: T_CONFIG,
            fills: Vec::new(),
        });
        Ok(items)
    }
}

/// Whether a file on disk is one of ours (carries the marker).
pub fn is_ours(path: &Path) -> bool {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).contains(MARKER))
        .unwrap_or(false)
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

fn write(item: &Item) -> Result<(), InstallError> {
    let dir = item.path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
    let name = item.path.file_name().unwrap_or_default().to_string_lossy();
    write_atomic_mode(dir, &name, item.content.as_bytes(), item.mode)
        .map_err(io("cannot write", &item.path))
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Put every integration point in place. Idempotent. Every change is recorded in `report`
/// as it is made, so that an error part-way still leaves a full account of what was done;
/// problems (a file in the way that vzacct did not write) are recorded and everything else
/// is installed.
pub fn install(layout: &Layout, report: &mut Report) -> Result<(), InstallError> {
    let Report { done, problems } = report;
    if let Some(why) = layout.proxmox() {
        return Err(InstallError::Proxmox(why));
    }
    let items = layout.items()?;
    if !items.iter().any(|i| i.role == Role::Wrap) {
        problems.push(format!(
            "neither vzctl's vps-net_add nor libvzctl's vz-net_add was found in any of {} under {}: the network wrappers are not installed, and no IP is accounted before the next dump reads /proc/vz/veinfo",
            searched_dirs(),
            layout.root.display()
        ));
    }
    for item in &items {
        let p = &item.path;
        let here = exists(p);
        let ours = here && is_ours(p);
        let same = ours && fs::read_to_string(p).is_ok_and(|c| c == item.content);
        let orig = item.original();
        match item.role {
            Role::Wrap if ours && !exists(&orig) => problems.push(format!(
                "{} is vzacct's wrapper but the original {} is missing, so every container \
                 start fails; reinstall vzctl, then run install again",
                p.display(),
                orig.display()
            )),
            Role::Wrap if !here && !exists(&orig) => problems.push(format!(
                "vzctl's {} is missing, so there is nothing to wrap; reinstall vzctl, then run \
                 install again",
                p.display()
            )),
            _ if same => done.push(format!("unchanged   {}", p.display())),
            Role::Config if here => done.push(format!("kept        {} (exists)", p.display())),
            Role::Own if here && !ours => problems.push(format!(
                "{} exists and was not written by vzacct; not overwritten (move it away and run install again)",
                p.display()
            )),
            Role::Chain if here && !ours && exists(&orig) => problems.push(format!(
                "{} was replaced by a script that is not vzacct's while {} holds the earlier one; resolve by hand",
                p.display(),
                orig.display()
            )),
            Role::Chain | Role::Wrap if here && !ours => {
                let upgraded = exists(&orig);
                fs::rename(p, &orig).map_err(io("cannot move aside", p))?;
                write(item)?;
                done.push(match (item.role, upgraded) {
                    (Role::Wrap, true) => format!(
                        "re-wrapped  {} (replaced by a vzctl upgrade; the new original is kept as {})",
                        p.display(),
                        orig.display()
                    ),
                    (Role::Wrap, false) => format!(
                        "wrapped     {} (vzctl's original now runs from {})",
                        p.display(),
                        orig.display()
                    ),
                    _ => format!("chained     {} (the original now runs from {})", p.display(), orig.display()),
                });
            }
            _ => {
                write(item)?;
                done.push(format!("{} {}", if here { "updated    " } else { "installed  " }, p.display()));
            }
        }
    }
    let link = layout.wants_link();
    if fs::read_link(&link).is_err() {
        let dir = link.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
        std::os::unix::fs::symlink("/etc/systemd/system/vzacct.service", &link)
            .map_err(io("cannot create", &link))?;
        done.push(format!("enabled     {}", link.display()));
    }
    Ok(())
}

/// Take every integration point away: our files are removed and every original moved back
/// byte for byte. The ledger, the CSV files and a config the operator changed stay. As with
/// [`install`], every change is recorded in `report` as it is made.
/// `keep_config`: the config stays even when unmodified (a package manager owns it).
pub fn uninstall(
    layout: &Layout,
    keep_config: bool,
    report: &mut Report,
) -> Result<(), InstallError> {
    let Report { done, problems } = report;
    for item in layout.items()? {
        let p = &item.path;
        let orig = item.original();
        match item.role {
            Role::Config => {
                if keep_config {
                    if exists(p) {
                        done.push(format!("kept        {} (--keep-config)", p.display()));
                    }
                } else if fs::read_to_string(p).is_ok_and(|c| c == item.content) {
                    fs::remove_file(p).map_err(io("cannot remove", p))?;
                    done.push(format!("removed     {}", p.display()));
                } else if exists(p) {
                    done.push(format!(
                        "kept        {} (changed by the operator)",
                        p.display()
                    ));
                }
                continue;
            }
            _ if is_ours(p) => {
                fs::remove_file(p).map_err(io("cannot remove", p))?;
                done.push(format!("removed     {}", p.display()));
                if item.role == Role::Wrap && !exists(&orig) {
                    problems.push(format!(
                        "vzctl's {} is gone: its original {} was missing (reinstall vzctl)",
                        p.display(),
                        orig.display()
                    ));
                }
            }
            Role::Wrap if exists(p) && exists(&orig) => {
                // vzctl was upgraded since: the file in place is its newer original.
                fs::remove_file(&orig).map_err(io("cannot remove", &orig))?;
                done.push(format!(
                    "removed     {} (outdated by a vzctl upgrade)",
                    orig.display()
                ));
                continue;
            }
            _ if exists(p) && exists(&orig) => {
                problems.push(format!(
                    "{} is not vzacct's any more; {} left in place for you to resolve",
                    p.display(),
                    orig.display()
                ));
                continue;
            }
            _ => {}
        }
        if exists(&orig) && !exists(p) {
            fs::rename(&orig, p).map_err(io("cannot restore", &orig))?;
            done.push(format!("restored    {}", p.display()));
        }
    }
    let link = layout.wants_link();
    if fs::read_link(&link).is_ok() {
        fs::remove_file(&link).map_err(io("cannot remove", &link))?;
        done.push(format!("removed     {}", link.display()));
    }
    Ok(())
}

/// The state of one managed file, for `check`.
pub fn file_state(item: &Item) -> Result<String, String> {
    let p = &item.path;
    if !exists(p) {
        return Err(format!("{} is missing (run `vzacct install`)", p.display()));
    }
    if item.role == Role::Config {
        return Ok(format!("{} present", p.display()));
    }
    if !is_ours(p) {
        return Err(match item.role {
            Role::Wrap => format!(
                "{} is not vzacct's wrapper any more (overwritten by a vzctl upgrade?): run `vzacct install`",
                p.display()
            ),
            _ => format!("{} is not vzacct's", p.display()),
        });
    }
    let mode = fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    if item.mode & 0o111 != 0 && mode & 0o111 == 0 {
        return Err(format!("{} is not executable", p.display()));
    }
    if item.role == Role::Wrap && !exists(&item.original()) {
        return Err(format!(
            "{}: the wrapped original {} is missing, so every container start fails (reinstall \
             vzctl, then run `vzacct install`)",
            p.display(),
            item.original().display()
        ));
    }
    match fs::read_to_string(p) {
        Ok(c) if c == item.content || same_up_to_paths(&c, item) => {
            Ok(format!("{} in place", p.display()))
        }
        _ => Err(format!(
            "{} is vzacct's but outdated: run `vzacct install`",
            p.display()
        )),
    }
}

/// Whether `installed` is `item`'s template filled with paths that name the same files as
/// the item's own (`/usr/sbin/vzacct` and `/usr/sbin/../sbin/vzacct`, or a path through a
/// symlink): spelled differently, but nothing to reinstall.
fn same_up_to_paths(installed: &str, item: &Item) -> bool {
    let same_path = |a: &str, b: &str| {
        a == b
            || match (Path::new(a).canonicalize(), Path::new(b).canonicalize()) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            }
    };
    // Split the template into literal text and placeholders.
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut rest = item.template;
    while let Some(i) = rest.find('@') {
        let hit = item
            .fills
            .iter()
            .map(|(k, _)| *k)
            .find(|k| rest[i..].starts_with(k));
        match hit {
            Some(k) => {
                parts.push((false, &rest[..i]));
                parts.push((true, k));
                rest = &rest[i + k.len()..];
            }
            None => {
                parts.push((false, &rest[..=i]));
                rest = &rest[i + 1..];
            }
        }
    }
    parts.push((false, rest));
    let mut at = installed;
    let mut i = 0;
    while i < parts.len() {
        let (placeholder, text) = parts[i];
        if !placeholder {
            let Some(r) = at.strip_prefix(text) else {
                return false;
            };
            at = r;
            i += 1;
            continue;
        }
        // The placeholder's value runs to where the next literal text starts.
        let next = parts[i + 1..]
            .iter()
            .find(|(p, t)| !p && !t.is_empty())
            .map(|(_, t)| *t);
        let end = match next {
            Some(t) => match at.find(t) {
                Some(e) => e,
                None => return false,
            },
            None => at.len(),
        };
        let value = &at[..end];
        let want = item
            .fills
            .iter()
            .find(|(k, _)| *k == text)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        let ok = if text == "@FALLBACK@" || text == "@ROOTARG@" {
            value == want
        } else {
            !value.contains('\n') && same_path(value, want)
        };
        if !ok {
            return false;
        }
        at = &at[end..];
        i += 1;
    }
    at.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &Path, conf_dir: &str) -> Layout {
        Layout {
            root: root.to_path_buf(),
            vzacct: PathBuf::from("/usr/sbin/vzacct"),
            config: root.join("etc/vz/vzacct.conf"),
            conf_dir: PathBuf::from(conf_dir),
            mounts: root.join("proc/mounts"),
        }
    }

    #[test]
    fn proxmox_is_recognised_by_its_conf_dir_or_pmxcfs() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path(), "/etc/vz/conf");
        assert_eq!(l.proxmox(), None, "no mount table: not Proxmox");
        fs::create_dir_all(dir.path().join("proc")).unwrap();
        fs::write(
            &l.mounts,
            "/dev/sda1 / ext4 rw 0 0\n/dev/fuse /mnt fuse rw 0 0\n",
        )
        .unwrap();
        assert_eq!(l.proxmox(), None, "FUSE elsewhere: not Proxmox");
        fs::write(&l.mounts, "/dev/fuse /etc/pve fuse rw,nosuid 0 0\n").unwrap();
        assert!(
            l.proxmox()
                .unwrap()
                .contains("fuse file system on /etc/pve")
        );
        fs::write(&l.mounts, "pmxcfs /etc/pve fuse.pmxcfs rw 0 0\n").unwrap();
        assert!(l.proxmox().unwrap().contains("fuse.pmxcfs file system"));
        let l = layout(dir.path(), "/etc/pve/openvz");
        fs::remove_file(&l.mounts).unwrap();
        assert_eq!(
            l.proxmox().unwrap(),
            "the container config dir /etc/pve/openvz is on Proxmox's pmxcfs"
        );
    }

    #[test]
    fn network_scripts_of_both_flavours_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path(), "/etc/vz/conf");
        assert!(l.script_dirs().is_empty());
        for (d, f) in [
            ("usr/lib64/vzctl/scripts", "vps-net_add"),
            ("usr/libexec/libvzctl/scripts", "vz-net_add.vzacct-orig"),
            // A vzctl 4 name in libvzctl's dir is not libvzctl's script.
            ("usr/libexec/libvzctl/script.d", "vps-net_add"),
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
            fs::write(dir.path().join(d).join(f), "").unwrap();
        }
        let found = l.script_dirs();
        assert_eq!(
            found,
            [
                (Flavour::Vzctl4, dir.path().join("usr/lib64/vzctl/scripts")),
                (
                    Flavour::Libvzctl,
                    dir.path().join("usr/libexec/libvzctl/scripts")
                ),
            ]
        );
        let wraps: Vec<String> = l
            .items()
            .unwrap()
            .into_iter()
            .filter(|i| i.role == Role::Wrap)
            .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            wraps,
            ["vps-net_add", "vps-net_del", "vz-net_add", "vz-net_del"]
        );
    }
}
