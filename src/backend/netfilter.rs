//! Talks to the kernel's netfilter through iptables' own batch tools: one `iptables-save -c`
//! read and one `iptables-restore --noflush --counters` batch per family and command, plus,
//! when a chain stops counting, a read of its final values and the batch that removes it.

use crate::backend::iptables::{self, Current, Family, Plan};
use crate::backend::probe::{self, LockBusy, RestoreLock};
use crate::backend::process::{self, ProcessError};
use crate::config::{Config, companion};
use std::path::Path;
use std::time::Duration;

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
        source: iptables::ParseError,
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
    #[error(
        "cannot change the {family} ruleset: the xtables lock stayed taken (is an iptables \
         command or a firewall service hanging?); the ledger is saved, and the next vzacct \
         command (or the 5-minute dump) applies the change"
    )]
    Locked {
        family: Family,
        #[source]
        source: Box<LockError>,
    },
}

/// How the xtables lock was not had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// vzacct waited for the lock itself.
    #[error(transparent)]
    Busy(#[from] LockBusy),
    /// iptables-restore waited for it (`-w SECONDS`) and gave up.
    #[error(transparent)]
    Restore(ProcessError),
}

/// The iptables tools of one address family.
#[derive(Debug, Clone)]
pub struct Tables {
    pub family: Family,
    save: String,
    restore: String,
    iptables: String,
    /// How the restore is kept from racing other iptables commands; `None`: probed when
    /// first applying (uncached).
    lock: Option<RestoreLock>,
}

impl Tables {
    pub fn new(config: &Config, family: Family) -> Tables {
        let base = config.iptables_for(family);
        Tables {
            family,
            save: companion(base, "save"),
            restore: companion(base, "restore"),
            iptables: base.to_string(),
            lock: None,
        }
    }

    /// The same tools with their locking found by `probes` (cached per boot).
    pub fn probed(config: &Config, family: Family, probes: &probe::Probes) -> Tables {
        let mut t = Tables::new(config, family);
        t.lock = Some(probes.restore_lock(&t.restore, &t.iptables));
        t
    }

    /// How the restore is kept from racing other iptables commands.
    pub fn lock(&self) -> RestoreLock {
        self.lock.clone().unwrap_or_else(|| {
            let path = Path::new(probe::XTABLES_LOCK);
            probe::probe_restore_lock(&self.restore, &self.iptables, path).0
        })
    }

    pub fn restore_program(&self) -> &str {
        &self.restore
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
        iptables::parse_save(&text).map_err(|source| NetfilterError::Parse {
            family: self.family,
            program: self.save.clone(),
            source,
        })
    }

    /// Apply a plan as one atomic batch; nothing is run for an empty plan.
    pub fn apply(&self, plan: &Plan) -> Result<(), NetfilterError> {
        if plan.is_empty() && plan.generation.is_none() {
            return Ok(());
        }
        let batch = plan.render();
        let apply_err = |source| NetfilterError::Apply {
            family: self.family,
            program: self.restore.clone(),
            ops: plan.ops.len(),
            source,
        };
        // Waiting for the xtables lock ends a second before this program's deadline, with a
        // message of its own, rather than by the deadline's kill.
        let wait = process::limit_now().saturating_sub(Duration::from_secs(1));
        let lock = self.lock();
        let secs = wait.as_secs().max(1).to_string();
        let args: Vec<&str> = match lock {
            RestoreLock::Bounded => vec!["-w", &secs, "--noflush", "--counters"],
            _ => vec!["--noflush", "--counters"],
        };
        let _held = probe::take(&lock, wait).map_err(|e| NetfilterError::Locked {
            family: self.family,
            source: Box::new(LockError::Busy(e)),
        })?;
        match process::run(&self.restore, &args, Some(batch.as_bytes())) {
            Ok(_) => Ok(()),
            Err(e @ ProcessError::Failed { .. }) if matches!(&e, ProcessError::Failed { stderr, .. } if probe::lock_held_message(stderr)) => {
                Err(NetfilterError::Locked {
                    family: self.family,
                    source: Box::new(LockError::Restore(e)),
                })
            }
            Err(e) => Err(apply_err(e)),
        }
    }
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
        source: crate::backend::ipset::ParseError,
    },
    #[error(
        "backend = ipset under [netfilter], but {program} cannot create a set with counters \
         and comments, which that backend needs: {why}; use backend = auto or iptables \
         (per-IP rules) on this node"
    )]
    Unsupported { program: String, why: String },
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

    /// The ipset backend's needs, probed (cached per boot): an error naming what is missing.
    pub fn require(&self, probes: &probe::Probes) -> Result<(), IpsetError> {
        let s = probes.ipset(&self.program);
        if s.usable {
            return Ok(());
        }
        Err(IpsetError::Unsupported {
            program: self.program.clone(),
            why: s.why,
        })
    }

    /// One read of every set, keeping ours, parsed as it is printed. `expected`: about how
    /// many elements of ours there are (room is made for them at once).
    pub fn read(&self, expected: usize) -> Result<crate::backend::ipset::Sets, IpsetError> {
        let mut parser = crate::backend::ipset::SaveParser::with_capacity(expected);
        self.save_lines(&["save"], |line| parser.line(line))?;
        Ok(parser.finish())
    }

    /// Run `ipset` with `args`, each line it prints handed to `each` (a parser).
    fn save_lines(
        &self,
        args: &[&str],
        each: impl FnMut(&str) -> Result<(), crate::backend::ipset::ParseError>,
    ) -> Result<(), IpsetError> {
        process::run_lines(&self.program, args, each)
            .map_err(IpsetError::Read)?
            .map_err(|source| IpsetError::Parse {
                program: self.program.clone(),
                source,
            })
    }

    /// The final counters of the sets `names`, which no rule uses any more (frozen old
    /// contents, or sets about to be destroyed): one `ipset save NAME` each, each element
    /// handed to `each` as it is parsed, keyed as the live sets' elements. Returns how many.
    pub fn read_frozen(
        &self,
        names: &[String],
        each: &mut dyn FnMut(&crate::backend::iptables::Counted),
    ) -> Result<usize, IpsetError> {
        let mut parser = crate::backend::ipset::SaveParser::default();
        let mut read = 0;
        for name in names {
            self.save_lines(&["save", name], |line| {
                parser.line(line)?;
                for c in parser.take_counted() {
                    each(&c);
                    read += 1;
                }
                Ok(())
            })?;
        }
        Ok(read)
    }

    /// Apply one `ipset restore` batch; nothing is run for an empty one.
    pub fn apply(&self, batch: &str) -> Result<(), IpsetError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.apply_fed(&mut |w| w.write_all(batch.as_bytes()))
    }

    /// Apply one `ipset restore` batch written by `feed` as ipset reads it (never empty).
    pub fn apply_fed(&self, feed: process::Feed) -> Result<(), IpsetError> {
        process::run_fed(&self.program, &["restore", "-exist"], feed)
            .map(|_| ())
            .map_err(|source| IpsetError::Apply {
                program: self.program.clone(),
                source,
            })
    }
}
