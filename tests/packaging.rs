//! The packages that `packaging/build.sh` builds: what they contain and depend on (`rpm -qp`,
//! `dpkg-deb`), that the rpm has no zstd payload (rpm 4.11 on OpenVZ 7 cannot read it), and
//! real installs into a scratch root (`rpm --root`, `dpkg --root`) holding a shell and fake
//! vzctl network scripts: the files land, the scriptlets wrap vzctl's scripts, an upgrade of
//! vzctl's package is re-wrapped by the rpm trigger, and removal leaves the root as it was.
//!
//! The scriptlets run `vzacct install` only on a running OpenVZ node (`/proc/vz`); here
//! `VZACCT_PKG_ASSUME_NODE=1` stands in for it, and each package command runs in a private
//! mount namespace with a proc file system on the scratch root's `/proc`, since `vzacct
//! install` names its own path from `/proc/self/exe`.

mod dist;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dist::{VERSION, run};

#[allow(dead_code)]
#[path = "../examples/manpage.rs"]
mod manpage;

/// The example threshold actions of `conf-templates/`, shipped in
/// `/usr/share/vzacct/examples/`, executable.
const EXAMPLES: [&str; 2] = ["vzacct-threshold-mail", "vzacct-threshold-tc"];

fn rpm_name() -> String {
    format!("vzacct-{VERSION}-1.x86_64.rpm")
}

fn deb_name() -> String {
    format!("vzacct_{VERSION}_amd64.deb")
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// Every man page, as the packages name them.
fn man_files() -> Vec<String> {
    let mut names: Vec<String> = manpage::pages()
        .unwrap()
        .into_iter()
        .map(|(f, _)| format!("/usr/share/man/man8/{f}.gz"))
        .collect();
    names.sort();
    // One page per command, none for the hidden threshold wrapper.
    assert!(names.contains(&"/usr/share/man/man8/vzacct-dump.8.gz".to_string()));
    assert!(
        !names.iter().any(|n| n.contains("threshold-run")),
        "{names:?}"
    );
    names
}

/// The payload of an rpm file: after the 96-byte lead, the signature header (padded to 8
/// bytes) and the main header, each 16 bytes of preamble, 16 per index entry and its data.
fn payload(rpm: &[u8]) -> &[u8] {
    let header_len = |at: usize| {
        assert_eq!(
            &rpm[at..at + 4],
            b"\x8e\xad\xe8\x01",
            "rpm header magic at {at}"
        );
        let be =
            |o: usize| u32::from_be_bytes(rpm[at + o..at + o + 4].try_into().unwrap()) as usize;
        16 + 16 * be(8) + be(12)
    };
    let signature = 96;
    let main = signature + header_len(signature).next_multiple_of(8);
    &rpm[main + header_len(main)..]
}

#[test]
fn rpm_contents_and_dependencies() {
    let Some(rpm) = dist::artifact(&rpm_name()) else {
        return;
    };
    let rpm = rpm.to_str().unwrap();
    let q = |args: &[&str]| {
        let mut full = vec!["-qp"];
        full.extend_from_slice(args);
        full.push(rpm);
        run("rpm", &full)
    };
    assert_eq!(
        q(&[
            "--qf",
            "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE} %{PAYLOADCOMPRESSOR} %{PAYLOADFLAGS}\n"
        ]),
        format!("vzacct {VERSION} 1 x86_64 GPL-2.0-or-later xz 9\n")
    );
    // Every requirement rpm 4.11 must satisfy: glibc 2.17 at most, xz, no zstd. Which
    // glibc symbol versions appear depends on the libc functions the code calls: they are
    // checked against the floor, everything else exactly.
    let requires = q(&["--requires"]);
    let (glibc, rest): (Vec<&str>, Vec<&str>) = lines(&requires)
        .into_iter()
        .partition(|r| r.contains("(GLIBC_"));
    for r in &glibc {
        let v = r
            .split("(GLIBC_")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .unwrap();
        let parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
        assert!(parts <= vec![2, 17], "{r} is above glibc 2.17");
    }
    assert!(glibc.contains(&"libc.so.6(GLIBC_2.17)(64bit)"), "{glibc:?}");
    // /bin/sh: the three scriptlets, and the interpreter of the example threshold actions.
    assert_eq!(
        rest,
        [
            "/bin/sh",
            "/bin/sh",
            "/bin/sh",
            "/bin/sh",
            format!("config(vzacct) = {VERSION}-1").as_str(),
            "iptables",
            "ld-linux-x86-64.so.2()(64bit)",
            "libc.so.6()(64bit)",
            "libdl.so.2()(64bit)",
            "libm.so.6()(64bit)",
            "libpthread.so.0()(64bit)",
            "rpmlib(CompressedFileNames) <= 3.0.4-1",
            "rpmlib(FileDigests) <= 4.6.0-1",
            "rpmlib(PayloadFilesHavePrefix) <= 4.0-1",
            "rpmlib(PayloadIsXz) <= 5.2-1",
        ]
    );
    let requires = q(&["--requires"]);
    assert!(!requires.contains("zstd") && !requires.contains("Zstd"));
    assert_eq!(
        lines(&q(&["--provides"])),
        [
            format!("config(vzacct) = {VERSION}-1"),
            format!("vzacct = {VERSION}-1"),
            format!("vzacct(x86-64) = {VERSION}-1"),
        ]
    );
    // What rpm 4.11 checks and reads: a SHA-1 header digest and an MD5 of header and
    // payload (rpm 4.18's SHA-256 ones are extra), SHA-256 file digests (algorithm 8).
    let digests = q(&["--qf", "%{SHA1HEADER}|%{SIGMD5}|%{FILEDIGESTALGO}\n"]);
    let d: Vec<&str> = digests.trim_end().split('|').collect();
    assert_eq!((d[0].len(), d[1].len(), d[2]), (40, 32, "8"), "{digests}");
    // The payload itself, not only the header's word for it: an xz stream.
    assert_eq!(
        &payload(&std::fs::read(rpm).unwrap())[..6],
        b"\xfd7zXZ\0",
        "the rpm payload is not xz"
    );
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let mut expected = vec![
        format!(
            "-rw-r--r-- root root {} /etc/logrotate.d/vzacct",
            size(&repo("packaging/vzacct.logrotate"))
        ),
        format!(
            "-rw-r--r-- root root {} /etc/vz/vzacct.conf",
            size(&repo("conf-templates/vzacct.conf"))
        ),
        format!(
            "-rwxr-xr-x root root {} /usr/sbin/vzacct",
            size(&repo("target/dist/vzacct"))
        ),
        "drwxr-xr-x root root 0 /usr/share/doc/vzacct".to_string(),
        format!(
            "-rw-r--r-- root root {} /usr/share/doc/vzacct/LICENSE",
            size(&repo("LICENSE"))
        ),
        format!(
            "-rw-r--r-- root root {} /usr/share/doc/vzacct/README.md",
            size(&repo("README.md"))
        ),
    ];
    let files = q(&[
        "--qf",
        "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILESIZES} %{FILENAMES}\n]",
    ]);
    let man: Vec<&str> = files
        .lines()
        .filter(|l| l.contains("/usr/share/man/man8/"))
        .collect();
    assert_eq!(
        man.iter()
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect::<Vec<_>>(),
        man_files()
    );
    for l in &man {
        assert!(l.starts_with("-rw-r--r-- root root "), "{l}");
    }
    expected.extend(man.iter().map(|l| l.to_string()));
    expected.push("drwxr-xr-x root root 0 /usr/share/vzacct".to_string());
    expected.push("drwxr-xr-x root root 0 /usr/share/vzacct/examples".to_string());
    for example in EXAMPLES {
        expected.push(format!(
            "-rwxr-xr-x root root {} /usr/share/vzacct/examples/{example}",
            size(&repo(&format!("conf-templates/{example}")))
        ));
    }
    expected.push("drwx------ root root 0 /var/log/vzacct".to_string());
    assert_eq!(lines(&files), expected);
    assert_eq!(
        lines(&q(&["--configfiles"])),
        ["/etc/logrotate.d/vzacct", "/etc/vz/vzacct.conf"]
    );
    assert_eq!(
        lines(&q(&["--licensefiles"])),
        ["/usr/share/doc/vzacct/LICENSE"]
    );
    let triggers = q(&["--triggers"]);
    assert!(
        triggers
            .starts_with("triggerin scriptlet (using /bin/sh) -- libvzctl, vzctl, vzctl-core\n"),
        "{triggers}"
    );
    let scripts = q(&["--scripts"]);
    for want in [
        "postinstall scriptlet (using /bin/sh):",
        "preuninstall scriptlet (using /bin/sh):",
        "/usr/sbin/vzacct install",
        "if [ \"$1\" = 0 ] && [ -r /proc/self/exe ]; then\n  /usr/sbin/vzacct uninstall",
    ] {
        assert!(scripts.contains(want), "no {want:?} in\n{scripts}");
    }
}

#[test]
fn deb_contents_and_dependencies() {
    let Some(deb) = dist::artifact(&deb_name()) else {
        return;
    };
    let deb = deb.to_str().unwrap();
    let field = |f: &str| run("dpkg-deb", &["-f", deb, f]);
    assert_eq!(field("Package"), "vzacct\n");
    assert_eq!(field("Version"), format!("{VERSION}\n"));
    assert_eq!(field("Architecture"), "amd64\n");
    // The floor the binary was built for, not the build machine's glibc.
    assert_eq!(field("Depends"), "libc6 (>= 2.17), iptables\n");
    assert_eq!(field("Recommends"), "ipset, logrotate\n");
    assert_eq!(
        run("ar", &["t", deb]),
        "debian-binary\ncontrol.tar.xz\ndata.tar.xz\n"
    );
    assert_eq!(
        run("dpkg-deb", &["-I", deb, "conffiles"]),
        "/etc/vz/vzacct.conf\n"
    );
    assert_eq!(
        run("dpkg-deb", &["-I", deb, "triggers"]),
        "interest-noawait /usr/lib/vzctl/scripts\ninterest-noawait /usr/lib/vzctl/vzctl/scripts\n"
    );
    let size = |p: &str| std::fs::metadata(repo(p)).unwrap().len();
    let listing = run("dpkg-deb", &["-c", deb]);
    let entries: Vec<String> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {}", f[0], f[1], f[2], f[5])
        })
        .collect();
    let mut expected: Vec<String> = [
        "drwxr-xr-x root/root 0 ./",
        "drwxr-xr-x root/root 0 ./etc/",
        "drwxr-xr-x root/root 0 ./etc/logrotate.d/",
    ]
    .map(String::from)
    .to_vec();
    expected.push(format!(
        "-rw-r--r-- root/root {} ./etc/logrotate.d/vzacct",
        size("packaging/vzacct.logrotate")
    ));
    expected.push("drwxr-xr-x root/root 0 ./etc/vz/".into());
    expected.push(format!(
        "-rw-r--r-- root/root {} ./etc/vz/vzacct.conf",
        size("conf-templates/vzacct.conf")
    ));
    expected.extend(["./usr/", "./usr/sbin/"].map(|d| format!("drwxr-xr-x root/root 0 {d}")));
    expected.push(format!(
        "-rwxr-xr-x root/root {} ./usr/sbin/vzacct",
        size("target/dist/vzacct")
    ));
    expected.extend(
        [
            "./usr/share/",
            "./usr/share/doc/",
            "./usr/share/doc/vzacct/",
        ]
        .map(|d| format!("drwxr-xr-x root/root 0 {d}")),
    );
    expected.push(format!(
        "-rw-r--r-- root/root {} ./usr/share/doc/vzacct/LICENSE",
        size("LICENSE")
    ));
    expected.push(format!(
        "-rw-r--r-- root/root {} ./usr/share/doc/vzacct/README.md",
        size("README.md")
    ));
    expected.push(format!(
        "-rw-r--r-- root/root {} ./usr/share/doc/vzacct/copyright",
        size("packaging/deb/copyright")
    ));
    expected.extend(
        ["./usr/share/man/", "./usr/share/man/man8/"]
            .map(|d| format!("drwxr-xr-x root/root 0 {d}")),
    );
    let man: Vec<&String> = entries
        .iter()
        .filter(|e| e.contains("/man8/vzacct"))
        .collect();
    assert_eq!(
        man.iter()
            .map(|e| e
                .rsplit(' ')
                .next()
                .unwrap()
                .trim_start_matches('.')
                .to_string())
            .collect::<Vec<_>>(),
        man_files()
    );
    expected.extend(man.iter().map(|e| e.to_string()));
    expected.extend(
        ["./usr/share/vzacct/", "./usr/share/vzacct/examples/"]
            .map(|d| format!("drwxr-xr-x root/root 0 {d}")),
    );
    for example in EXAMPLES {
        expected.push(format!(
            "-rwxr-xr-x root/root {} ./usr/share/vzacct/examples/{example}",
            size(&format!("conf-templates/{example}"))
        ));
    }
    expected.extend(["./var/", "./var/log/"].map(|d| format!("drwxr-xr-x root/root 0 {d}")));
    expected.push("drwx------ root/root 0 ./var/log/vzacct/".into());
    assert_eq!(entries, expected);
}

// --- installs into a scratch root -------------------------------------------------------

/// A file-system tree as (path relative to the root -> what is there), for exact comparison.
type Tree = BTreeMap<String, String>;

/// Everything under `root`, except the package managers' databases and /proc.
fn snapshot(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if ["proc", "var/lib/rpm", "var/lib/dpkg", "var/tmp", "tmp"].contains(&rel.as_str()) {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let what = if md.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(root, &p, out);
                format!("dir {mode:o}")
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!("file {mode:o} {} {:016x}", bytes.len(), fnv(&bytes))
            };
            out.insert(rel, what);
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// FNV-1a, to tell contents apart in a snapshot.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn same_bytes(root: &Path, rel: &str, source: &Path) {
    assert!(
        std::fs::read(root.join(rel)).unwrap() == std::fs::read(source).unwrap(),
        "{rel} differs from {}",
        source.display()
    );
}

/// The programs a scriptlet needs in the root: a shell, and the shared libraries of the
/// shell and of `target/dist/vzacct`, at the paths the host's loader has them.
fn scratch_root(dirs: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "bin",
        "proc",
        "tmp",
        "var/tmp",
        "var/log",
        "usr/sbin",
        "usr/share/doc",
        "usr/share/man/man8",
        "etc/logrotate.d",
        "etc/vz/conf",
        "etc/cron.d",
        "etc/init.d",
        "etc/systemd/system/multi-user.target.wants",
    ]
    .iter()
    .chain(dirs)
    {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    std::fs::copy(&sh, r.join("bin/sh")).unwrap();
    let vzacct = repo("target/dist/vzacct");
    for prog in [sh.as_path(), vzacct.as_path()] {
        for l in run("ldd", &[prog.to_str().unwrap()]).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let Some(lib) = l.split_whitespace().find(|w| w.starts_with('/')) else {
                continue;
            };
            let to = r.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(lib, &to).unwrap();
        }
    }
    root
}

/// Run `cmd` in its own mount namespace with a proc file system on `<root>/proc`: what
/// `vzacct install` in a chrooted scriptlet needs to find its own path.
fn with_proc(cmd: &mut Command, root: &Path) -> Output {
    let target = CString::new(root.join("proc").as_os_str().as_bytes()).unwrap();
    // SAFETY: between fork and exec the closure calls only unshare(2) and mount(2) with
    // pointers to strings that outlive the call, and reads errno: async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    c"proc".as_ptr(),
                    target.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run the package manager")
}

/// Run a package command with proc mounted in the root; it must succeed. Returns stdout and
/// stderr together, as an operator sees them.
fn pkg(root: &Path, prog: &str, args: &[&str], node: bool) -> String {
    let mut cmd = Command::new(prog);
    cmd.args(args).env_remove("VZACCT_PKG_ASSUME_NODE");
    if node {
        cmd.env("VZACCT_PKG_ASSUME_NODE", "1");
    }
    let out = with_proc(&mut cmd, root);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("$ {prog} {}\n{text}", args.join(" "));
    assert!(
        out.status.success(),
        "{prog} {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

const WRAPPED: [&str; 2] = ["vps-net_add", "vps-net_del"];

fn vzctl_script(name: &str, version: u32) -> String {
    format!("#!/bin/sh\n# vzctl {version}: {name}\nexit 0\n")
}

/// A fake vzctl-core rpm that ships vps-net_add and vps-net_del of `version`.
fn fake_vzctl_rpm(dir: &Path, version: u32) -> PathBuf {
    let top = dir.join(format!("vzctl-{version}"));
    let spec = top.join("vzctl-core.spec");
    std::fs::create_dir_all(&top).unwrap();
    let mut install = String::from("mkdir -p %{buildroot}/usr/libexec/vzctl/scripts\n");
    for name in WRAPPED {
        install += &format!(
            "printf '%s' '{}' > %{{buildroot}}/usr/libexec/vzctl/scripts/{name}\n",
            vzctl_script(name, version)
        );
    }
    std::fs::write(
        &spec,
        format!(
            "Name: vzctl-core\nVersion: {version}\nRelease: 1\nSummary: fake\nLicense: GPL-2.0-or-later\n\
             BuildArch: noarch\n%define _binary_payload w9.gzdio\n%define __os_install_post %{{nil}}\n\
             %define _build_id_links none\n%description\nfake vzctl-core\n\
             %install\n{install}\n%files\n%attr(0755,root,root) /usr/libexec/vzctl/scripts/*\n"
        ),
    )
    .unwrap();
    run(
        "rpmbuild",
        &[
            "-bb",
            "--quiet",
            "--define",
            &format!("_topdir {}", top.display()),
            spec.to_str().unwrap(),
        ],
    );
    top.join(format!("RPMS/noarch/vzctl-core-{version}-1.noarch.rpm"))
}

/// What `vzacct install` adds to a node besides the package's own files.
fn installed_by_vzacct(scripts: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "etc/cron.d/vzacct",
        "etc/init.d/vzacct",
        "etc/systemd/system/multi-user.target.wants/vzacct.service",
        "etc/systemd/system/vzacct.service",
        "etc/vz/conf/vps.mount",
        "etc/vz/conf/vps.umount",
    ]
    .map(String::from)
    .to_vec();
    v.extend(WRAPPED.map(|n| format!("{scripts}/{n}.vzacct-orig")));
    v
}

/// The package's own files, relative to the root.
fn package_files(deb: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "etc/logrotate.d/vzacct",
        "etc/vz/vzacct.conf",
        "usr/sbin/vzacct",
        "usr/share/doc/vzacct",
        "usr/share/doc/vzacct/LICENSE",
        "usr/share/doc/vzacct/README.md",
        "usr/share/vzacct",
        "usr/share/vzacct/examples",
        "var/log/vzacct",
    ]
    .map(String::from)
    .to_vec();
    v.extend(EXAMPLES.map(|e| format!("usr/share/vzacct/examples/{e}")));
    if deb {
        v.push("usr/share/doc/vzacct/copyright".into());
    }
    v.extend(
        man_files()
            .iter()
            .map(|m| m.trim_start_matches('/').to_string()),
    );
    v
}

/// `tree` with vzctl's scripts in `scripts` of `version`.
fn with_scripts(tree: &Tree, scripts: &str, version: u32) -> Tree {
    let mut tree = tree.clone();
    for name in WRAPPED {
        let script = vzctl_script(name, version);
        tree.insert(
            format!("{scripts}/{name}"),
            format!("file 755 {} {:016x}", script.len(), fnv(script.as_bytes())),
        );
    }
    tree
}

/// Paths added and changed between two snapshots (nothing may disappear).
fn diff(before: &Tree, after: &Tree) -> (Vec<String>, Vec<String>) {
    for k in before.keys() {
        assert!(after.contains_key(k), "{k} disappeared");
    }
    let mut added: Vec<String> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect();
    let mut changed: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    added.sort();
    changed.sort();
    (added, changed)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The package's files are the built ones, byte for byte.
fn check_package_files(r: &Path) {
    same_bytes(r, "usr/sbin/vzacct", &repo("target/dist/vzacct"));
    same_bytes(r, "etc/vz/vzacct.conf", &repo("conf-templates/vzacct.conf"));
    same_bytes(
        r,
        "etc/logrotate.d/vzacct",
        &repo("packaging/vzacct.logrotate"),
    );
    same_bytes(r, "usr/share/doc/vzacct/README.md", &repo("README.md"));
    same_bytes(r, "usr/share/doc/vzacct/LICENSE", &repo("LICENSE"));
    for example in EXAMPLES {
        let installed = format!("usr/share/vzacct/examples/{example}");
        same_bytes(r, &installed, &repo(&format!("conf-templates/{example}")));
        assert_eq!(
            std::fs::metadata(r.join(&installed)).unwrap().mode() & 0o7777,
            0o755,
            "{installed}"
        );
    }
    for (file, text) in manpage::pages().unwrap() {
        let page = run(
            "gzip",
            &[
                "-dc",
                r.join(format!("usr/share/man/man8/{file}.gz"))
                    .to_str()
                    .unwrap(),
            ],
        );
        assert!(
            page.as_bytes() == text.as_slice(),
            "{file} is not what the clap definitions give"
        );
    }
    assert_eq!(
        std::fs::metadata(r.join("var/log/vzacct")).unwrap().mode() & 0o7777,
        0o700
    );
}

/// vzctl's scripts in `scripts` are vzacct's wrappers around version `version`.
fn check_wrapped(r: &Path, scripts: &str, version: u32) {
    for name in WRAPPED {
        let wrapper = read(r, &format!("{scripts}/{name}"));
        assert!(
            wrapper.contains("vzacct-managed"),
            "{name} not wrapped:\n{wrapper}"
        );
        assert!(
            wrapper.contains("/usr/sbin/vzacct"),
            "{name} does not run /usr/sbin/vzacct:\n{wrapper}"
        );
        assert!(
            wrapper.contains(&format!("/{scripts}/{name}.vzacct-orig")),
            "{name} does not run the original:\n{wrapper}"
        );
        assert_eq!(
            read(r, &format!("{scripts}/{name}.vzacct-orig")),
            vzctl_script(name, version)
        );
    }
    let mount = read(r, "etc/vz/conf/vps.mount");
    assert!(
        mount.contains("/usr/sbin/vzacct") && mount.contains("hook mount"),
        "{mount}"
    );
}

#[test]
fn rpm_installs_wraps_rewraps_after_vzctl_upgrade_and_removes_cleanly() {
    let Some(rpm) = dist::artifact(&rpm_name()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (v1, v2) = (
        fake_vzctl_rpm(work.path(), 1),
        fake_vzctl_rpm(work.path(), 2),
    );
    let root = scratch_root(&[]);
    let r = root.path();
    let rs = r.to_str().unwrap();
    let rpm_cmd = |args: &[&str], node: bool| {
        let mut full = vec!["--root", rs, "--dbpath", "/var/lib/rpm"];
        full.extend_from_slice(args);
        pkg(r, "rpm", &full, node)
    };
    rpm_cmd(&["--initdb"], false);
    // No package provides glibc, iptables or /bin/sh in this root.
    rpm_cmd(&["-i", "--nodeps", v1.to_str().unwrap()], false);
    let scripts = "usr/libexec/vzctl/scripts";
    let s0 = snapshot(r);

    // Install on a "node": the files land and vzctl's scripts are wrapped.
    let out = rpm_cmd(&["-i", "--nodeps", rpm.to_str().unwrap()], true);
    for want in [
        "wrapped     /usr/libexec/vzctl/scripts/vps-net_add (vzctl's original now runs from /usr/libexec/vzctl/scripts/vps-net_add.vzacct-orig)",
        "installed   /etc/cron.d/vzacct",
        "vzacct is installed",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    let s1 = snapshot(r);
    let (added, changed) = diff(&s0, &s1);
    let mut want = package_files(false);
    want.extend(installed_by_vzacct(scripts));
    assert_eq!(added, sorted(want));
    assert_eq!(changed, WRAPPED.map(|n| format!("{scripts}/{n}")));
    check_package_files(r);
    check_wrapped(r, scripts, 1);
    let installed = rpm_cmd(&["-q", "vzacct", "vzctl-core"], false);
    assert_eq!(
        installed,
        format!("vzacct-{VERSION}-1.x86_64\nvzctl-core-1-1.noarch\n")
    );

    // A vzctl upgrade puts its new, unwrapped scripts in place; the trigger wraps them.
    let out = rpm_cmd(&["-U", "--nodeps", v2.to_str().unwrap()], true);
    assert!(
        out.contains("re-wrapped  /usr/libexec/vzctl/scripts/vps-net_add (replaced by a vzctl upgrade; the new original is kept as /usr/libexec/vzctl/scripts/vps-net_add.vzacct-orig)"),
        "the trigger did not re-wrap:\n{out}"
    );
    check_wrapped(r, scripts, 2);
    // The wrappers are the same as before; the originals are vzctl's new scripts.
    let (added, changed) = diff(&s1, &snapshot(r));
    assert_eq!(added, Vec::<String>::new());
    assert_eq!(
        changed,
        WRAPPED.map(|n| format!("{scripts}/{n}.vzacct-orig"))
    );

    // Removal: vzctl's (new) scripts back in place, every other trace gone.
    let out = rpm_cmd(&["-e", "vzacct"], true);
    assert!(
        out.contains("restored    /usr/libexec/vzctl/scripts/vps-net_add"),
        "{out}"
    );
    assert_eq!(snapshot(r), with_scripts(&s0, scripts, 2));
    assert_eq!(rpm_cmd(&["-qa"], false), "vzctl-core-2-1.noarch\n");
}

/// A fake Debian vzctl package: its vps-net_add and vps-net_del in `scripts`, and the
/// directories that a node's base packages own (dpkg removes a directory no package lists
/// any more).
fn fake_vzctl_deb(dir: &Path, scripts: &str, version: u32) -> PathBuf {
    let stage = dir.join(format!("vzctl-{version}"));
    for d in [
        "DEBIAN",
        scripts,
        "usr/sbin",
        "usr/share/doc",
        "usr/share/man/man8",
        "etc/logrotate.d",
        "etc/vz/conf",
        "var/log",
    ] {
        std::fs::create_dir_all(stage.join(d)).unwrap();
    }
    for name in WRAPPED {
        let p = stage.join(format!("{scripts}/{name}"));
        std::fs::write(&p, vzctl_script(name, version)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        stage.join("DEBIAN/control"),
        format!(
            "Package: vzctl\nVersion: {version}\nArchitecture: all\n\
             Maintainer: test <root@localhost>\nDescription: fake vzctl\n"
        ),
    )
    .unwrap();
    let deb = dir.join(format!("vzctl_{version}_all.deb"));
    run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "--build",
            stage.to_str().unwrap(),
            deb.to_str().unwrap(),
        ],
    );
    deb
}

#[test]
fn deb_installs_only_on_a_node_rewraps_after_vzctl_upgrade_and_purges_cleanly() {
    let Some(deb) = dist::artifact(&deb_name()) else {
        return;
    };
    // Debian's vzctl keeps its network scripts here.
    let scripts = "usr/lib/vzctl/vzctl/scripts";
    let work = tempfile::tempdir().unwrap();
    let vzctl = fake_vzctl_deb(work.path(), scripts, 1);
    let root = scratch_root(&[
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ]);
    let r = root.path();
    // vzacct's dependencies, as installed on a node (dpkg processes a package's triggers
    // only when its dependencies are satisfied).
    let installed = |p: &str, v: &str| {
        format!(
            "Package: {p}\nStatus: install ok installed\nMaintainer: test <root@localhost>\n\
             Architecture: amd64\nVersion: {v}\nDescription: stands in for {p}\n"
        )
    };
    let status = installed("libc6", "2.17-1") + "\n" + &installed("iptables", "1.4.21-1");
    std::fs::write(r.join("var/lib/dpkg/status"), status).unwrap();
    std::fs::write(r.join("var/lib/dpkg/available"), "").unwrap();
    let rs = format!("--root={}", r.display());
    let dpkg = |args: &[&str], node: bool| {
        let mut full = vec![rs.as_str()];
        full.extend_from_slice(args);
        pkg(r, "dpkg", &full, node)
    };
    dpkg(&["-i", vzctl.to_str().unwrap()], false);
    let s0 = snapshot(r);

    // Not a node (no /proc/vz): the files land, nothing is wrapped, the operator is told.
    let out = dpkg(&["-i", deb.to_str().unwrap()], false);
    assert!(
        out.contains("vzacct: not a running OpenVZ node: run '/usr/sbin/vzacct install' on the node to put the hooks in place"),
        "{out}"
    );
    let s1 = snapshot(r);
    let (added, changed) = diff(&s0, &s1);
    assert_eq!(added, sorted(package_files(true)));
    assert_eq!(changed, Vec::<String>::new());
    check_package_files(r);

    // The same package again on a node: wrapped.
    let out = dpkg(&["-i", deb.to_str().unwrap()], true);
    assert!(
        out.contains("wrapped     /usr/lib/vzctl/vzctl/scripts/vps-net_add"),
        "{out}"
    );
    let (added, changed) = diff(&s1, &snapshot(r));
    assert_eq!(added, sorted(installed_by_vzacct(scripts)));
    assert_eq!(changed, WRAPPED.map(|n| format!("{scripts}/{n}")));
    check_wrapped(r, scripts, 1);

    // A vzctl upgrade: the file trigger (DEBIAN/triggers) wraps its new scripts.
    let s2 = snapshot(r);
    let v2 = fake_vzctl_deb(work.path(), scripts, 2);
    let out = dpkg(&["-i", v2.to_str().unwrap()], true);
    assert!(
        out.contains("re-wrapped  /usr/lib/vzctl/vzctl/scripts/vps-net_add (replaced by a vzctl upgrade; the new original is kept as /usr/lib/vzctl/vzctl/scripts/vps-net_add.vzacct-orig)"),
        "the trigger did not re-wrap:\n{out}"
    );
    check_wrapped(r, scripts, 2);
    let (added, changed) = diff(&s2, &snapshot(r));
    assert_eq!(added, Vec::<String>::new());
    assert_eq!(
        changed,
        WRAPPED.map(|n| format!("{scripts}/{n}.vzacct-orig"))
    );

    // Purge: the root as it was, with vzctl 2's scripts.
    let out = dpkg(&["--purge", "vzacct"], true);
    assert!(
        out.contains("restored    /usr/lib/vzctl/vzctl/scripts/vps-net_add"),
        "{out}"
    );
    assert_eq!(snapshot(r), with_scripts(&s0, scripts, 2));
}
