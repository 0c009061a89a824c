//! Talks to the kernel's netfilter through iptables' own batch tools: one `iptables-save -c`
//! read and at most one `iptables-restore --noflush --counters` write per family and command.

use crate::config::{Config, companion};
use crate::process::{self, ProcessError};
use crate::ruleset::{self, Current, Family, Plan};

/// A failure to read or change the ruleset of one family.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    #[error("cannot read the {family} ruleset")]
    Read {
        family: Family,
        #[source]
        source: ProcessError,
    },
    #[error("cannot understand the {family} ruleset printed by {program}")]
    Parse {
        family: Family,
        program: String,
        #[source]
        source: ruleset::ParseError,
    },
    #[error(
        "applying {ops} change(s) to the {family} ruleset failed in {program}; the ledger is \
         saved, and the next vzacct command (or the 5-minute dump) applies them again"
    )]
    Apply {
        family: Family,
        program: String,
        ops: usize,
        #[source]
        source: ProcessError,
    },
}

/// The iptables tools of one address family.
#[derive(Debug, Clone)]
pub struct Tables {
    pub family: Family,
    save: String,
    restore: String,
}

impl Tables {
    pub fn new(config: &Config, family: Family) -> Tables {
        let base = config.iptables_for(family);
        Tables {
            family,
            save: companion(base, "save"),
            restore: companion(base, "restore"),
        }
    }

    /// One read of the filter table, keeping what concerns our chains.
    pub fn read(&self) -> Result<Current, NetfilterError> {
        let out = process::run(&self.save, &["-c", "-t", "filter"], None).map_err(|source| {
            NetfilterError::Read {
                family: self.family,
                source,
            }
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        ruleset::parse_save(&text).map_err(|source| NetfilterError::Parse {
            family: self.family,
            program: self.save.clone(),
            source,
        })
    }

    /// Apply a plan as one atomic batch; nothing is run for an empty plan.
    pub fn apply(&self, plan: &Plan) -> Result<(), NetfilterError> {
        if plan.is_empty() {
            return Ok(());
        }
        let batch = plan.render();
        // A bounded wait for the xtables lock where the installed iptables-restore has one
        // (so it gives up with its own message before our deadline stops it); plain `-w`
        // elsewhere (1.4.x ignores it; el7 and later wait without bound, and our deadline
        // stops them).
        let secs = wait_seconds();
        let args: Vec<&str> = if bounded_wait(&self.restore) {
            vec!["-w", &secs, "--noflush", "--counters"]
        } else {
            vec!["-w", "--noflush", "--counters"]
        };
        process::run(&self.restore, &args, Some(batch.as_bytes())).map_err(|source| {
            NetfilterError::Apply {
                family: self.family,
                program: self.restore.clone(),
                ops: plan.ops.len(),
                source,
            }
        })?;
        Ok(())
    }
}

/// Seconds iptables-restore may wait for the xtables lock: a second less than this program
/// may run (at least one).
fn wait_seconds() -> String {
    let t = process::limit_now().as_secs().saturating_sub(1).max(1);
    t.to_string()
}

/// Whether `restore` takes `-w SECONDS` (iptables 1.6.2 and later, RHEL 7's 1.4.21),
/// found by behaviour, not by version (plain 1.4.21 says the same version as RHEL 7's):
/// `-w 1 --test` of an empty table succeeds there, while 1.4.x takes the `1` for a file to
/// read and fails. Asked once per program and process.
fn bounded_wait(restore: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static KNOWN: Mutex<Option<HashMap<String, bool>>> = Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let map = known.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(restore) {
        return *b;
    }
    let empty = b"*filter\nCOMMIT\n";
    let probe = process::run_any_for(
        restore,
        &["-w", "1", "--test"],
        Some(empty),
        std::time::Duration::from_secs(3),
    );
    let ok = match probe {
        Ok((status, out)) => status.success() || out.stderr.contains("xtables lock"),
        Err(_) => false,
    };
    map.insert(restore.to_string(), ok);
    ok
}

/// A failure to read or change our ipsets.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    #[error(
        "cannot read the ipsets (set backend = iptables under [netfilter] if ipset is not wanted)"
    )]
    Read(#[source] ProcessError),
    #[error("cannot understand the ipsets printed by {program}")]
    Parse {
        program: String,
        #[source]
        source: crate::ipset::ParseError,
    },
    #[error(
        "changing the ipsets failed in {program}; the ledger is saved, and the next vzacct \
         command applies the change again"
    )]
    Apply {
        program: String,
        #[source]
        source: ProcessError,
    },
}

/// The ipset program.
#[derive(Debug, Clone)]
pub struct Ipset {
    program: String,
}

impl Ipset {
    pub fn new(config: &Config) -> Ipset {
        Ipset {
            program: config.ipset.clone(),
        }
    }

    /// One read of every set, keeping ours, parsed as it is printed. `expected`: about how
    /// many elements of ours there are (room is made for them at once).
    pub fn read(&self, expected: usize) -> Result<crate::ipset::Sets, IpsetError> {
        let mut parser = crate::ipset::SaveParser::with_capacity(expected);
        process::run_lines(&self.program, &["save"], |line| parser.line(line))
            .map_err(IpsetError::Read)?
            .map_err(|source| IpsetError::Parse {
                program: self.program.clone(),
                source,
            })?;
        Ok(parser.finish())
    }

    /// Apply one `ipset restore` batch; nothing is run for an empty one.
    pub fn apply(&self, batch: &str) -> Result<(), IpsetError> {
        if batch.is_empty() {
            return Ok(());
        }
        process::run(
            &self.program,
            &["restore", "-exist"],
            Some(batch.as_bytes()),
        )
        .map(|_| ())
        .map_err(|source| IpsetError::Apply {
            program: self.program.clone(),
            source,
        })
    }
}
