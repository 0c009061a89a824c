//! What the kernel holds of vzacct's, across both backends: each family's filter table
//! (one `iptables-save` each) and our ipsets (one `ipset save`), read once per command;
//! the plan that makes it match the ledger; and applying that plan in a safe order.
//!
//! Its parts: [`driver`] (the trait both backends implement, and the two drivers),
//! [`iptables`] (the per-IP rules as data), [`ipset`] (the sets as data),
//! [`netfilter`] (runs the save/restore programs), [`probe`] (what the installed tools can
//! do), [`process`] (runs a program), [`routes`] (whether an address is routed to venet).

pub mod driver;
pub mod ipset;
pub mod iptables;
pub mod netfilter;
pub mod probe;
pub mod process;
pub mod routes;

use crate::backend::driver::{Driver, Reading, RuleTables, SetStore, Want};
use crate::backend::ipset::SetPlan;
use crate::backend::netfilter::{Ipset, IpsetError, NetfilterError};
use crate::backend::probe::Probes;
use crate::config::Config;
use std::collections::BTreeMap;

use crate::backend::iptables::{Accounted, Counted, CounterId, Current, Family, Kind, Plan};
use crate::model::{Coverage, Generation};

/// A failure to read or change our part of the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Netfilter(#[from] NetfilterError),
    #[error(transparent)]
    Ipset(#[from] IpsetError),
}

/// One read of everything of ours in the kernel: both drivers.
#[derive(Default)]
pub struct Kernel {
    pub rules: RuleTables,
    pub sets: SetStore,
    /// Whether the counters live in sets (the backend in use).
    pub use_sets: bool,
    /// The classes of traffic counted apart, when any is (`[classes]` names some, and the
    /// free-network sets can be made: the ipset program works).
    pub classes: Option<crate::config::Classes>,
}

impl Kernel {
    /// Read every family's table and, where ipset is wanted or may hold our sets, the sets
    /// (see [`Reading`]). A missing or broken iptables stops the command before anything
    /// changes.
    pub fn read(
        config: &Config,
        probes: &Probes,
        families: &[Family],
        expected: usize,
        sets_in_use: bool,
    ) -> Result<Kernel, BackendError> {
        let r = Reading {
            config,
            probes,
            families,
            expected,
            sets_in_use,
        };
        // The sets are read while the tables are.
        let (rules, sets) = std::thread::scope(|s| {
            let sets = s.spawn(|| SetStore::read(&r));
            let rules = RuleTables::read(&r);
            (rules, joined(sets.join()))
        });
        Ok(Kernel::of(config, rules?, sets?))
    }

    /// Nothing read: a run for one container that changes nothing in the kernel.
    pub fn unread() -> Kernel {
        Kernel::default()
    }

    /// Whether this is [`Kernel::unread`].
    pub fn is_unread(&self) -> bool {
        self.rules.tables.is_empty()
    }

    fn of(config: &Config, rules: RuleTables, sets: SetStore) -> Kernel {
        let classes =
            (config.classes.active() && sets.read.is_some()).then(|| config.classes.clone());
        Kernel {
            use_sets: sets.usable,
            rules,
            sets,
            classes,
        }
    }

    /// A read of the tables alone ([`Kernel::read_tables`]) completed with the sets, as
    /// [`Kernel::read`] would have read them (a run for one container that has to cover the
    /// node after all: the tables are not read twice).
    pub fn with_sets(
        self,
        config: &Config,
        probes: &Probes,
        expected: usize,
        sets_in_use: bool,
    ) -> Result<Kernel, BackendError> {
        let families: Vec<Family> = self.rules.tables.iter().map(|(t, _)| t.family).collect();
        let r = Reading {
            config,
            probes,
            families: &families,
            expected,
            sets_in_use,
        };
        let sets = SetStore::read(&r)?;
        Ok(Kernel::of(config, self.rules, sets))
    }

    /// Read every family's table but no set, for a run that adds set elements without
    /// reading the sets (one container's, with the ipset backend in use).
    pub fn read_tables(
        config: &Config,
        probes: &Probes,
        families: &[Family],
    ) -> Result<Kernel, BackendError> {
        let r = Reading {
            config,
            probes,
            families,
            expected: 0,
            sets_in_use: true,
        };
        Ok(Kernel {
            rules: RuleTables::read(&r)?,
            sets: SetStore {
                usable: true,
                ..SetStore::default()
            },
            use_sets: true,
            classes: config.classes.active().then(|| config.classes.clone()),
        })
    }

    /// What this read covered: the families whose tables were read, and whether the sets
    /// were (a harvest forgets only within it).
    pub fn coverage(&self) -> Coverage {
        Coverage {
            families: self.rules.tables.iter().map(|(t, _)| t.family).collect(),
            sets: self.sets.read.is_some(),
        }
    }

    /// After the plan made from this read was applied: whether the counter `id` is still in
    /// the kernel, for an IP its container accounts (`accounted`) or not.
    /// Per-IP rules stay for accounted IPs of the families read when the rules backend is
    /// in use; set elements for accounted IPs of those families when the sets are. What
    /// this read did not cover was not planned, and stays.
    /// `coverage`: this read's [`Kernel::coverage`] (taken once, not per counter).
    pub fn survives(&self, coverage: &Coverage, id: &CounterId, accounted: bool) -> bool {
        if !coverage.covers(id) {
            return true;
        }
        let family_in_use = coverage.families.contains(&id.family());
        accounted
            && family_in_use
            && (id.is_set() == self.use_sets)
            && self.kinds().contains(&id.kind)
    }

    /// The kinds counted: the free ones too when [`Kernel::classes`] is set.
    pub fn kinds(&self) -> &'static [Kind] {
        Kind::in_use(self.classes.is_some())
    }

    /// Whether traffic between containers is free (their addresses go into the free sets).
    pub fn c2c_free(&self) -> bool {
        self.classes
            .as_ref()
            .is_some_and(|c| c.container_to_container)
    }

    /// Every counter of ours, rules and set elements alike.
    pub fn counted(&self) -> impl Iterator<Item = &Counted> {
        self.rules.counted().chain(self.sets.counted())
    }

    /// The counters are harvested: keep only where the set elements are.
    pub fn compact(&mut self) {
        if let Some(s) = &mut self.sets.read {
            s.compact();
        }
    }

    /// Planning is done: forget the set elements (not needed to save and apply).
    pub fn drop_elements(&mut self) {
        if let Some(s) = &mut self.sets.read {
            s.elements = Vec::new();
            s.placed = Vec::new();
        }
    }

    /// How many rules vzacct wants in one family under the backend in use.
    pub fn wanted(&self, accounted: &Accounted, family: Family, venet: &str) -> usize {
        let (rules, free) = self.want(accounted, &[family], venet).rules(family);
        rules.len() + free.values().map(Vec::len).sum::<usize>()
    }

    /// What the kernel should count in `families`.
    fn want<'a>(
        &'a self,
        accounted: &'a Accounted,
        families: &'a [Family],
        venet: &'a str,
    ) -> Want<'a> {
        Want {
            accounted,
            families,
            venet,
            use_sets: self.use_sets,
            kinds: self.kinds(),
            free: self.classes.as_ref().map(|c| ipset::FreeWant {
                networks: &c.free,
                c2c: c.container_to_container,
            }),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        if self.use_sets { "ipset" } else { "iptables" }
    }

    /// The backend in use and, where auto had to fall back, why: one line.
    pub fn backend_line(&self) -> String {
        match &self.sets.why_not {
            Some(why) => format!("{} (auto: {why})", self.backend_name()),
            None => self.backend_name().to_string(),
        }
    }

    /// Pure: what to change so the kernel matches `accounted`.
    pub fn plan(&self, accounted: &Accounted, venet: &str) -> KernelPlan {
        let families: Vec<Family> = self.rules.tables.iter().map(|(t, _)| t.family).collect();
        let want = self.want(accounted, &families, venet);
        KernelPlan {
            rules: self.rules.plan(&want),
            sets: self.sets.plan(&want),
        }
    }

    /// A plan that changes nothing (each family read, no op).
    pub fn unchanged(&self) -> KernelPlan {
        KernelPlan {
            rules: self
                .rules
                .tables
                .iter()
                .map(|(t, c)| {
                    let policies = c.policies_to_give_back();
                    (
                        t.family,
                        Plan {
                            policies,
                            ..Plan::default()
                        },
                    )
                })
                .collect(),
            sets: SetPlan::default(),
        }
    }

    /// Pure: what takes everything of vzacct's out of the kernel (`uninstall --purge`):
    /// jumps, chains and rules of every family read, then every set of ours.
    pub fn teardown(&self) -> KernelPlan {
        KernelPlan {
            rules: self.rules.teardown(),
            sets: self.sets.teardown(),
        }
    }

    /// Apply: sets created and filled first (rules may refer to them), and the sets that
    /// lose elements swapped with their wanted contents (the batch `write_sets` writes,
    /// [`SetPlan::write_with`], as ipset reads it: a large node's is megabytes); then one
    /// iptables-restore batch per family. The caller then reads what stopped counting
    /// ([`Kernel::read_stopped`]), credits it, and calls [`Kernel::finish`].
    pub fn apply(
        &self,
        config: &Config,
        plan: &KernelPlan,
        write_sets: process::Feed,
    ) -> Result<(), BackendError> {
        if !plan.sets.batch_is_empty() {
            Ipset::new(config).apply_fed(write_sets)?;
        }
        let families: Vec<_> = self.rules.tables.iter().zip(&plan.rules).collect();
        at_once(families, |((t, current), (_, p))| {
            t.apply(&self::pending(current))?;
            t.apply(p)
        })
        .into_iter()
        .try_for_each(|r| r.map_err(BackendError::from))
    }

    /// After [`Kernel::apply`]: the final counters of what its plan stopped, the rules of
    /// the chains it rebuilt (unhooked) and the elements of the sets it froze or stopped
    /// using, each handed to `frozen` as it is read (a large node's are never held at
    /// once). Returns how many there were.
    pub fn read_stopped(
        &self,
        config: &Config,
        plan: &KernelPlan,
        frozen: &mut dyn FnMut(&Counted),
    ) -> Result<usize, BackendError> {
        let mut read = 0;
        let swapped: Vec<_> = (self.rules.tables.iter().zip(&plan.rules))
            .filter(|(_, (_, p))| !p.swapped().is_empty())
            .map(|((t, _), _)| t)
            .collect();
        for current in at_once(swapped, |t| t.read()) {
            for c in &current?.frozen {
                frozen(c);
                read += 1;
            }
        }
        let mut stopped = plan.sets.frozen_names();
        if self.sets.read.is_some() {
            stopped.extend(plan.sets.destroy.iter().cloned());
        }
        if !stopped.is_empty() {
            read += Ipset::new(config).read_frozen(&stopped, frozen)?;
        }
        Ok(read)
    }

    /// The final counters of chains and sets a killed command froze and left: credited
    /// (same boot only) before the harvest, and removed by the next apply.
    pub fn frozen_left(&self) -> impl Iterator<Item = &Counted> {
        self.rules.frozen_left().chain(self.sets.frozen_left())
    }

    /// After the frozen counts are in the ledger: remove the rebuilt chains' old copies
    /// (the new ones take their names), destroy the frozen sets and the sets no longer used
    /// (after the iptables batch removed the rules that use them).
    pub fn finish(&self, config: &Config, plan: &KernelPlan) -> Result<(), BackendError> {
        let families: Vec<_> = self.rules.tables.iter().zip(&plan.rules).collect();
        at_once(families, |((t, _), (_, p))| t.apply(&p.finish()))
            .into_iter()
            .collect::<Result<(), _>>()?;
        let mut batch = plan.sets.render_destroy();
        for name in plan.sets.frozen_names() {
            batch.push_str(&format!("destroy {name}\n"));
        }
        Ipset::new(config).apply(&batch)?;
        Ok(())
    }
}

/// `f` on every item at once, a thread each but the first (each family's iptables tool is
/// a process of its own: their waits overlap), the results in the items' order.
pub(crate) fn at_once<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let mut items = items.into_iter();
        let first = items.next();
        let rest: Vec<_> = items.map(|t| s.spawn(move || f(t))).collect();
        let first = first.map(f);
        first
            .into_iter()
            .chain(rest.into_iter().map(|h| joined(h.join())))
            .collect()
    })
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<R>(r: std::thread::Result<R>) -> R {
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// What finishes a rebuild a killed command left half-done, as a batch of its own.
fn pending(current: &Current) -> Plan {
    Plan {
        ops: current.pending.clone(),
        policies: current.policies_to_give_back(),
        ..Plan::default()
    }
}

/// The changes to the kernel, per family and for the sets.
#[derive(Debug, Default)]
pub struct KernelPlan {
    pub rules: Vec<(Family, Plan)>,
    pub sets: SetPlan,
}

impl KernelPlan {
    /// Write a new generation with the batches, in every family's table read and every set
    /// of ours in use, and record it in `generations` (what was not read keeps its own).
    pub fn stamp(&mut self, generations: &mut BTreeMap<String, Generation>, kernel: &Kernel) {
        let mut next = |scope: String| {
            let g = generations.entry(scope).or_default();
            g.written += 1;
            g.written
        };
        for ((t, current), (_, p)) in kernel.rules.tables.iter().zip(&mut self.rules) {
            p.set_generation(next(rules_scope(t.family)), current.generation_chain);
        }
        if kernel.use_sets {
            let families = kernel.rules.tables.iter().map(|(t, _)| t.family);
            self.sets.live = families
                .flat_map(|f| kernel.kinds().iter().map(move |k| ipset::set_name(*k, f)))
                .map(|name| (name.clone(), next(name)))
                .collect();
        }
        for name in &self.sets.destroy {
            generations.remove(name);
        }
    }
}

/// The name of a family's table in the ledger's generations.
fn rules_scope(family: Family) -> String {
    match family {
        Family::V4 => "rules4".into(),
        Family::V6 => "rules6".into(),
    }
}

/// Where the counters read cannot be trusted to continue the ledger's last-seen values:
/// the keys of the counters in a table or set whose generation is older than the one the
/// ledger last wrote (a saved copy was restored), or one generation older (the batch that
/// was to write the newer one never ran) for the counters below their last-seen values.
/// Their past is unknown: the harvest takes them as a starting point, never credits them.
pub fn untrusted<'k>(
    kernel: &'k Kernel,
    generations: &mut BTreeMap<String, Generation>,
) -> Untrusted {
    let mut u = Untrusted::default();
    // `counted` is gathered only for a table or set that is not as written (rarely).
    let mut judge = |what: String,
                     scope: &str,
                     found: Option<u64>,
                     counted: &dyn Fn() -> Vec<&'k Counted>| {
        let Some(g) = generations.get_mut(scope) else {
            return;
        };
        let ledger_generation = g.written;
        if let Some(f) = found.filter(|f| *f >= g.written) {
            g.applied = f;
            return;
        }
        let counted = counted();
        if counted.is_empty() {
            return;
        }
        // The last generation found there: the batches written since never ran (killed or
        // failed commands), or a copy saved since that read was restored.
        let only_below = found.is_some() && found == Some(g.applied);
        if only_below {
            u.notes_if_below.push(format!(
                "{what}: generation {}, the ledger wrote {ledger_generation}: a saved copy was restored or the last batch did not run; counters below their last-seen values are taken as a starting point",
                g.applied
            ));
        } else {
            u.notes.push(format!(
                "{what}: generation {}, the ledger wrote {ledger_generation}: a saved copy was restored; its {} counter(s) are taken as a starting point",
                found.map_or("none".to_string(), |g| g.to_string()),
                counted.len()
            ));
        }
        u.keys.extend(
            counted
                .into_iter()
                .map(|c| (c.key.clone(), only_below.then_some(c.counters))),
        );
    };
    for (t, current) in &kernel.rules.tables {
        // Frozen copies first: where a live counter has the same key (a rebuilt chain's
        // rule), the live one is what the harvest compares with its last-seen value, so it
        // is the one judged (a frozen copy's final value is below it, and judged alone it
        // would make the live counter's last-seen value forgotten: its counts since lost).
        let counted = || {
            (current.frozen.iter())
                .chain(
                    kernel
                        .rules
                        .counted
                        .iter()
                        .filter(|c| c.key.family() == t.family),
                )
                .collect()
        };
        let scope = rules_scope(t.family);
        judge(
            format!("{} rules", t.family),
            &scope,
            current.generation,
            &counted,
        );
    }
    if let Some(sets) = &kernel.sets.read {
        for name in sets.present.keys() {
            let set = ipset::parse_set_name(name);
            let counted = || {
                (sets.frozen.iter().chain(sets.elements.iter()))
                    .filter(|c| c.key.is_set() && set == Some((c.key.kind, c.key.family())))
                    .collect()
            };
            let found = sets.generation.get(name).copied();
            judge(format!("set {name}"), name, found, &counted);
        }
    }
    u
}

/// See [`untrusted`].
#[derive(Debug, Default)]
pub struct Untrusted {
    /// The counters' keys; with their values when only a value below the last-seen one is
    /// untrusted.
    pub keys: std::collections::HashMap<CounterId, Option<crate::model::Counters>>,
    /// One line per table or set found restored.
    pub notes: Vec<String>,
    /// One line per table or set one generation behind: said if any counter was below.
    pub notes_if_below: Vec<String>,
}
