//! The two ways vzacct counts in the kernel, behind one trait (after netavark's
//! `FirewallDriver`): each driver reads its own part of the kernel once, plans against what
//! is wanted without doing any I/O, and plans its own teardown. [`super::Kernel`] holds one
//! of each: both are read and harvested (a backend switch leaves counters in the other),
//! the one in use counts, and it applies their plans in a safe order.

use crate::backend::BackendError;
use crate::backend::ipset::{self, SetPlan, Sets};
use crate::backend::iptables::{
    self, Accounted, Counted, Current, Family, FreeChains, Plan, Wanted,
};
use crate::backend::netfilter::{Ipset, Tables};
use crate::backend::probe::Probes;
use crate::config::{Backend, Config};

/// What a read needs to know.
pub struct Reading<'a> {
    pub config: &'a Config,
    pub probes: &'a Probes,
    pub families: &'a [Family],
    /// About how many set elements of ours there are (the ledger knows).
    pub expected: usize,
    /// The last full run used the ipset backend, so sets of ours with counters not yet
    /// harvested exist: then the sets must be read whatever the backend (a harvest that
    /// could not see them would take their counters for new later: counted twice).
    pub sets_in_use: bool,
}

/// What the kernel should count.
pub struct Want<'a> {
    pub accounted: &'a Accounted,
    pub families: &'a [Family],
    pub venet: &'a str,
    /// The counters are to live in the sets (else in per-IP rules).
    pub use_sets: bool,
    /// The kinds counted ([`crate::model::Kind::in_use`]).
    pub kinds: &'a [crate::model::Kind],
    /// What the free-network sets hold, when free traffic is counted.
    pub free: Option<ipset::FreeWant<'a>>,
}

impl Want<'_> {
    /// The rules wanted in `family`'s table, and the free kinds' chains (ipset backend).
    pub fn rules(&self, family: Family) -> (Vec<Wanted>, FreeChains) {
        if !self.use_sets {
            let rules = iptables::desired_rules(self.accounted, family, self.venet, self.kinds);
            return (rules, FreeChains::new());
        }
        let covers = self.free.map_or_else(Vec::new, |f| {
            ipset::covers(&f.entries(self.accounted, family), ipset::FREE_COVERS)
        });
        iptables::set_rules(family, self.venet, self.kinds, &covers)
    }
}

/// One part of the kernel that vzacct counts with.
pub trait Driver: Sized {
    /// The changes this driver plans.
    type Plan;
    /// Read this driver's part of the kernel (once per command).
    fn read(r: &Reading) -> Result<Self, BackendError>;
    /// Every counter of ours the read found here.
    fn counted(&self) -> Box<dyn Iterator<Item = &Counted> + '_>;
    /// The final values of counters a killed command froze here and left.
    fn frozen_left(&self) -> Box<dyn Iterator<Item = &Counted> + '_>;
    /// Pure: what makes this part of the kernel match `want`.
    fn plan(&self, want: &Want) -> Self::Plan;
    /// Pure: everything of ours out of this part of the kernel (`uninstall --purge`).
    fn teardown(&self) -> Self::Plan;
}

/// Each family's filter table: our chains with the per-IP counting rules, or with the
/// rules that match the sets.
#[derive(Default)]
pub struct RuleTables {
    pub tables: Vec<(Tables, Current)>,
    /// The per-IP rules found, as counted traffic.
    pub counted: Vec<Counted>,
}

impl Driver for RuleTables {
    type Plan = Vec<(Family, Plan)>;

    /// A missing or broken iptables stops the command before anything changes.
    fn read(r: &Reading) -> Result<RuleTables, BackendError> {
        // Probed one after the other (a probe takes the xtables lock to see who waits),
        // read at once: each family's save is a process of its own.
        let tools: Vec<Tables> = r
            .families
            .iter()
            .map(|f| Tables::probed(r.config, *f, r.probes))
            .collect();
        let tables = super::at_once(tools, |t| t.read().map(|current| (t, current)))
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let counted = tables.iter().flat_map(|(_, c)| c.counted()).collect();
        Ok(RuleTables { tables, counted })
    }

    fn counted(&self) -> Box<dyn Iterator<Item = &Counted> + '_> {
        Box::new(self.counted.iter())
    }

    fn frozen_left(&self) -> Box<dyn Iterator<Item = &Counted> + '_> {
        Box::new(self.tables.iter().flat_map(|(_, c)| c.frozen.iter()))
    }

    fn plan(&self, want: &Want) -> Vec<(Family, Plan)> {
        self.tables
            .iter()
            .map(|(t, current)| {
                let (wanted, free) = want.rules(t.family);
                (t.family, iptables::plan(&wanted, &free, current))
            })
            .collect()
    }

    /// Jumps, chains and rules of every family read.
    fn teardown(&self) -> Vec<(Family, Plan)> {
        self.tables
            .iter()
            .map(|(t, current)| (t.family, iptables::teardown(current)))
            .collect()
    }
}

/// Our sets, and whether counters can live in them.
#[derive(Default)]
pub struct SetStore {
    /// What `ipset save` showed of ours, when the ipset program could be run.
    pub read: Option<Sets>,
    /// The counters live in the sets (the backend in use).
    pub usable: bool,
    /// Why `backend = auto` uses per-IP rules, in one line.
    pub why_not: Option<String>,
}

impl Driver for SetStore {
    type Plan = SetPlan;

    fn read(r: &Reading) -> Result<SetStore, BackendError> {
        let ipset = Ipset::new(r.config);
        let read = || match ipset.read(r.expected) {
            Ok(s) => Ok(Some(s)),
            Err(e) if r.sets_in_use => Err(e),
            Err(_) => Ok(None),
        };
        Ok(match r.config.backend {
            Backend::Ipset => {
                ipset.require(r.probes)?;
                SetStore {
                    read: Some(ipset.read(r.expected)?),
                    usable: true,
                    why_not: None,
                }
            }
            // Still read, so that sets left by an earlier ipset backend are harvested and
            // removed; no ipset program is fine when none was in use.
            Backend::Iptables => SetStore {
                read: read()?,
                usable: false,
                why_not: None,
            },
            // Sets only where one with counters and comments can be made (ipset 6.11 has
            // neither: every batch would fail).
            Backend::Auto => {
                let support = r.probes.ipset(&r.config.ipset);
                let read = read()?;
                let why_not = if !support.usable {
                    Some(format!("ipset unusable: {}", support.why))
                } else if read.is_none() {
                    Some(format!("`{} save` failed", r.config.ipset))
                } else {
                    None
                };
                SetStore {
                    usable: why_not.is_none(),
                    read,
                    why_not,
                }
            }
        })
    }

    fn counted(&self) -> Box<dyn Iterator<Item = &Counted> + '_> {
        Box::new(self.read.iter().flat_map(|s| s.elements.iter()))
    }

    fn frozen_left(&self) -> Box<dyn Iterator<Item = &Counted> + '_> {
        Box::new(self.read.iter().flat_map(|s| s.frozen.iter()))
    }

    fn plan(&self, want: &Want) -> SetPlan {
        self.read
            .as_ref()
            .map(|s| {
                ipset::plan(
                    want.accounted,
                    want.families,
                    want.use_sets,
                    want.kinds,
                    want.free,
                    s,
                )
            })
            .unwrap_or_default()
    }

    /// Every set of ours.
    fn teardown(&self) -> SetPlan {
        let Some(s) = &self.read else {
            return SetPlan::default();
        };
        SetPlan {
            destroy: s.present.keys().cloned().collect(),
            free_destroy: s.free.keys().copied().collect(),
            // Frozen sets a killed command left (their counts are credited at the read).
            leftover: s.frozen_present.clone(),
            ..SetPlan::default()
        }
    }
}
