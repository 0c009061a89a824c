//! The ipset backend's data: one hash set with per-element counters for each kind of
//! traffic and family, so that a packet costs one hash lookup per set however many IPs are
//! accounted. Parses `ipset save` (our sets only) and plans one `ipset restore` batch. No I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ctid::Ctid;
use crate::model::{
    Accounted, Counted, CounterId, Counters, Family, Kind, free_set_name, parse_free_set_name,
};

pub use crate::model::SET_PREFIX as PREFIX;
pub use crate::model::{parse_set_name, set_name};
/// Room for a large node: 4 sets per family, one element per IP in each.
const MAXELEM: u32 = 1_048_576;
/// Buckets from the start (512 KiB of kernel memory per set): a lookup on every forwarded
/// packet then scans about one element even with tens of thousands of IPs, where the
/// default 1024 buckets would hold a dozen each before the kernel grows the table. The
/// free-network set too: folded into few prefix lengths it may hold 16,384 networks.
const HASHSIZE: u32 = 65_536;

/// The name a set's old contents take while frozen (`vzacct-zfi4`): swapped out of use, so
/// they count no more, read for their final values, then destroyed.
pub fn frozen_name(kind: Kind, family: Family) -> String {
    format!("{PREFIX}z{}", &set_name(kind, family)[PREFIX.len()..])
}

/// A kind's bit in [`SetPlan::refill`]'s mask of existing elements.
pub fn kind_bit(kind: Kind) -> u8 {
    let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    1 << i
}

/// The name a free-network set's new contents are built under before they are swapped in
/// (`vzacct-zfree4`); after the swap it holds the old contents until they are destroyed.
pub fn free_swap_name(family: Family) -> String {
    format!("{PREFIX}z{}", &free_set_name(family)[PREFIX.len()..])
}

/// Which kind and family a frozen set's name stands for.
pub fn parse_frozen_name(name: &str) -> Option<(Kind, Family)> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('z')?;
    parse_set_name(&format!("{PREFIX}{rest}"))
}

/// What the kernel holds of our sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sets {
    /// Our sets that exist, and whether each has counters and comments.
    pub present: BTreeMap<String, bool>,
    /// The elements tagged with a container, as counted traffic for harvest and status
    /// (`iface` stays empty: every set is matched on venet). Their keys differ from the plain
    /// rules' keys, so a backend switch never mistakes one for the other.
    pub elements: Vec<Counted>,
    /// Elements without a container's comment (not ours to count): (kind, IP).
    pub untagged: Vec<(Kind, IpAddr)>,
    /// The tagged elements once their counters are harvested ([`Sets::compact`]).
    pub placed: Vec<(Kind, IpAddr, Ctid)>,
    /// Frozen sets left by a command that was killed before it destroyed them.
    pub frozen_present: Vec<String>,
    /// Their elements' final counters, keyed as the live set's elements.
    pub frozen: Vec<Counted>,
    /// The generation each of our sets names ([`crate::model::generation_ip`]).
    pub generation: BTreeMap<String, u64>,
    /// The free-network sets that exist ([`crate::model::free_set_name`]), with their
    /// networks.
    pub free: BTreeMap<Family, BTreeSet<IpNet>>,
}

impl Sets {
    /// Every element: (kind, IP, container of its comment).
    pub fn all(&self) -> impl Iterator<Item = (Kind, IpAddr, Option<&Ctid>)> {
        self.elements
            .iter()
            .map(|e| (e.kind(), e.ip(), Some(&e.ctid)))
            .chain(self.placed.iter().map(|(k, ip, c)| (*k, *ip, Some(c))))
            .chain(self.untagged.iter().map(|(k, ip)| (*k, *ip, None)))
    }

    /// Keep only where the elements are, not their counters (harvested): a large node's
    /// elements then take a third of the memory while the plan is made.
    /// The elements are moved over from the end and their room given back as it goes, so
    /// the two lists are not held in full at once; `placed` keeps their order.
    pub fn compact(&mut self) {
        let start = self.placed.len();
        // Reserved at once (its pages are touched only as it fills).
        self.placed.reserve_exact(self.elements.len());
        while let Some(e) = self.elements.pop() {
            self.placed.push((e.kind(), e.ip(), e.ctid));
            if self.elements.len().is_multiple_of(4096) {
                self.elements.shrink_to_fit();
            }
        }
        self.placed[start..].reverse();
    }
}

/// `ipset save` output that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line} of `ipset save`: {reason}: {text}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

const COMMENT_PREFIX: &str = "ct:";

/// Parse `ipset save`, keeping our sets only.
pub fn parse_save(text: &str) -> Result<Sets, ParseError> {
    // One element per line: sized once, not grown by doubling (a large node has 80,000).
    let adds = text
        .lines()
        .filter(|l| l.starts_with("add vzacct-"))
        .count();
    let mut p = SaveParser::with_capacity(adds);
    for line in text.lines() {
        p.line(line)?;
    }
    Ok(p.finish())
}

/// `ipset save` read line by line (so its output need not be held in memory at once).
#[derive(Debug, Default)]
pub struct SaveParser {
    sets: Sets,
    lines: usize,
}

impl SaveParser {
    /// `elements`: how many of our elements to expect (room is made for them at once).
    pub fn with_capacity(elements: usize) -> SaveParser {
        let mut p = SaveParser::default();
        p.sets.elements.reserve_exact(elements);
        p
    }

    pub fn line(&mut self, line: &str) -> Result<(), ParseError> {
        self.lines += 1;
        let sets = &mut self.sets;
        let n = self.lines;
        let err = |reason| ParseError {
            line: n,
            reason,
            text: line.chars().take(200).collect(),
        };
        let mut words = line.split_ascii_whitespace();
        let (Some(verb @ ("create" | "add")), Some(name)) = (words.next(), words.next()) else {
            return Ok(());
        };
        let create = verb == "create";
        if let Some((kind, family)) = parse_frozen_name(name) {
            if create {
                sets.frozen_present.push(name.to_string());
            } else if let Some(e) = element(words, kind, family, &err)? {
                sets.frozen.push(e);
            }
        } else if create
            && [Family::V4, Family::V6]
                .iter()
                .any(|f| free_swap_name(*f) == name)
        {
            // Left by a command killed before it destroyed it: destroyed first.
            sets.frozen_present.push(name.to_string());
        } else if let Some(family) = parse_free_set_name(name) {
            let nets = sets.free.entry(family).or_default();
            if !create {
                let net = words
                    .next()
                    .and_then(|w| {
                        w.parse::<IpNet>()
                            .ok()
                            .or_else(|| w.parse::<IpAddr>().ok().map(IpNet::from))
                    })
                    .ok_or_else(|| err("bad network"))?;
                nets.insert(net);
            }
        } else if let Some((kind, family)) = parse_set_name(name) {
            if create {
                let rest: Vec<&str> = words.collect();
                let usable = rest.contains(&"counters") && rest.contains(&"comment");
                sets.present.insert(name.to_string(), usable);
                return Ok(());
            }
            let mut w = words.clone();
            let ip: IpAddr = w
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| err("bad element address"))?;
            if ip == crate::model::generation_ip(family) {
                let rest: Vec<&str> = w.collect();
                let comment = rest.windows(2).find(|p| p[0] == "comment");
                if let Some(g) =
                    comment.and_then(|p| crate::model::parse_generation(p[1].trim_matches('"')))
                {
                    sets.generation.insert(name.to_string(), g);
                }
                return Ok(());
            }
            match element(words, kind, family, &err)? {
                Some(e) => sets.elements.push(e),
                None => sets.untagged.push((kind, ip)),
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Sets {
        self.sets
    }

    /// The counted elements parsed so far (frozen sets' and live ones'), taken out: for a
    /// reader that handles each as it comes instead of holding them all.
    pub fn take_counted(&mut self) -> impl Iterator<Item = Counted> {
        self.sets
            .frozen
            .drain(..)
            .chain(self.sets.elements.drain(..))
    }
}

/// The rest of an `add SET IP [packets N] [bytes N] [comment "ct:X"]` line of the set of
/// `kind` and `family`: the element as counted traffic, keyed as the live set's element, or
/// `None` when no container's comment names it.
fn element<'a>(
    mut words: impl Iterator<Item = &'a str>,
    kind: Kind,
    family: Family,
    err: &dyn Fn(&'static str) -> ParseError,
) -> Result<Option<Counted>, ParseError> {
    let ip: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| err("bad element address"))?;
    if Family::of(&ip) != family {
        return Err(err("address of the other family"));
    }
    let mut counters = Counters::default();
    let mut ctid = None;
    let number = |w: Option<&str>| w.and_then(|v| v.parse().ok());
    while let Some(w) = words.next() {
        match w {
            "packets" => {
                counters.packets = number(words.next()).ok_or_else(|| err("bad packet counter"))?
            }
            "bytes" => {
                counters.bytes = number(words.next()).ok_or_else(|| err("bad byte counter"))?
            }
            "comment" => {
                let c = words.next().unwrap_or("").trim_matches('"');
                ctid = c.strip_prefix(COMMENT_PREFIX).and_then(|c| c.parse().ok());
            }
            _ => {}
        }
    }
    Ok(ctid.map(|ctid| Counted {
        ctid,
        key: CounterId::set(kind, ip),
        counters,
    }))
}

/// The `seen` keys of one IP's elements, one per set of its family.
pub fn element_keys(ip: &IpAddr) -> Vec<CounterId> {
    Kind::ALL.map(|k| CounterId::set(k, *ip)).to_vec()
}

/// The `ipset restore -exist` lines that put one container's IPs into every set of their
/// family, without reading the sets: an IP new to the container (`fresh`) starts from zero
/// counters (whatever a leftover element held belongs to no one); an IP it already holds
/// keeps its element's counters, or gets a new element from zero if it was lost (harvest
/// then sees a counter lower than last seen: counting restarted).
/// `kinds`: the kinds in use; `c2c`: traffic between containers is free, so each IP goes
/// into its family's free-network set too.
pub fn adds_for(ctid: &Ctid, ips: &[(IpAddr, bool)], kinds: &[Kind], c2c: bool) -> String {
    let mut out = String::new();
    for (ip, fresh) in ips {
        if c2c {
            let _ = writeln!(out, "add {} {ip}", free_set_name(Family::of(ip)));
        }
        for &kind in kinds {
            let set = set_name(kind, Family::of(ip));
            let zero = if *fresh { " packets 0 bytes 0" } else { "" };
            let _ = writeln!(
                out,
                "add {set} {ip}{zero} comment \"{COMMENT_PREFIX}{ctid}\""
            );
        }
    }
    out
}

/// The changes to our sets, as one `ipset restore` batch (and the sets to destroy once no
/// rule refers to them any more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetPlan {
    pub create: Vec<String>,
    /// Elements by kind (the set is the kind's in the IP's family).
    pub add: Vec<(Kind, IpAddr, Ctid)>,
    pub del: Vec<(Kind, IpAddr)>,
    pub destroy: Vec<String>,
    /// Elements given to another container in place (among `add`): (kind, IP, from).
    pub moved: Vec<(Kind, IpAddr, Ctid)>,
    /// Sets that lose elements: instead of deleting them (whatever they counted between
    /// the read and the delete would be lost), the set's wanted contents are built in a new
    /// set that is swapped in; the old contents, frozen under [`frozen_name`], are read for
    /// their final values and destroyed.
    pub freeze: Vec<(Kind, Family)>,
    /// The wanted contents of the frozen sets: each wanted IP of a frozen family, once
    /// (sorted), with its owner and which kinds' elements exist now and so carry their
    /// counters over ([`kind_bit`]). Once per IP, not per kind and IP: a large node's
    /// `remove` freezes four sets of 20,000 elements each.
    pub refill: Vec<(IpAddr, Ctid, u8)>,
    /// Frozen sets left by a killed command (their counts were taken at the read).
    pub leftover: Vec<String>,
    /// The sets in use, each with the generation to write into it.
    pub live: Vec<(String, u64)>,
    /// Free-network sets to create (before the rules that match them), networks to add
    /// and remove, and sets to destroy (after the iptables batch removed their rules).
    pub free_create: Vec<Family>,
    pub free_add: Vec<IpNet>,
    pub free_del: Vec<IpNet>,
    pub free_destroy: Vec<Family>,
    /// Free-network sets whose change would empty a prefix length: built whole under
    /// [`free_swap_name`] and swapped in, so no packet is ever looked up in a half-changed
    /// set. (The kernel's `hash:net` keeps the prefix lengths in use in a sorted array; a
    /// delete that empties one shifts the others down, and a lookup running at that moment
    /// skips a length: its packet is briefly not free.) The old contents are destroyed with
    /// [`SetPlan::render_destroy`].
    pub free_rebuild: Vec<(Family, Vec<IpNet>)>,
}

impl SetPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.add.is_empty()
            && self.del.is_empty()
            && self.leftover.is_empty()
            && self.free_unchanged()
            && self.free_destroy.is_empty()
    }

    /// Whether no free-network set is created, changed or rebuilt (before the iptables
    /// batch; their destruction comes after it).
    fn free_unchanged(&self) -> bool {
        self.free_create.is_empty()
            && self.free_add.is_empty()
            && self.free_del.is_empty()
            && self.free_rebuild.is_empty()
    }

    /// The names of the sets frozen by this plan.
    pub fn frozen_names(&self) -> Vec<String> {
        self.freeze
            .iter()
            .map(|(k, f)| frozen_name(*k, *f))
            .collect()
    }

    /// Creations, deletions and additions (run before the iptables batch), with no set
    /// frozen: for a plan without [`SetPlan::freeze`], or for tests.
    pub fn render(&self) -> String {
        self.render_with(&|_, _, _| None)
    }

    /// Creations, additions, and the frozen sets' swaps (run before the iptables batch).
    /// `counters(kind, ip, owner)`: the last-seen counters of an element that carries over
    /// into a swapped-in set (the ledger's, taken at this command's read).
    pub fn render_with(
        &self,
        counters: &dyn Fn(Kind, IpAddr, &Ctid) -> Option<Counters>,
    ) -> String {
        let mut out = Vec::new();
        self.write_with(&mut out, counters)
            .expect("writing into memory cannot fail");
        String::from_utf8(out).expect("the batch is ASCII")
    }

    /// Whether [`SetPlan::render_with`] would be empty: no set to create, fill, change or
    /// swap, no leftover to destroy, no generation to write.
    pub fn batch_is_empty(&self) -> bool {
        self.leftover.is_empty()
            && self.create.is_empty()
            && self.del.is_empty()
            && self.add.is_empty()
            && self.freeze.is_empty()
            && self.live.is_empty()
            && self.free_unchanged()
    }

    /// [`SetPlan::render_with`] written to `out` as it is made (a large node's swapped sets
    /// are megabytes of batch).
    pub fn write_with(
        &self,
        out: &mut dyn std::io::Write,
        counters: &dyn Fn(Kind, IpAddr, &Ctid) -> Option<Counters>,
    ) -> std::io::Result<()> {
        for name in &self.leftover {
            writeln!(out, "destroy {name}")?;
        }
        // A counter set (`hash:ip` with counters), or a free-network set (`hash:net`, none).
        let create = |out: &mut dyn std::io::Write, name: &str, family: Family, counters: bool| {
            let (hash, tail) = match counters {
                true => ("ip", " counters comment"),
                false => ("net", ""),
            };
            let inet = if family == Family::V6 {
                "inet6"
            } else {
                "inet"
            };
            writeln!(
                out,
                "create {name} hash:{hash} family {inet} hashsize {HASHSIZE} maxelem {MAXELEM}{tail}"
            )
        };
        for family in &self.free_create {
            create(out, &free_set_name(*family), *family, false)?;
        }
        // Added before the others go: an address in both the old and the new networks
        // (a network split in two, say) is free throughout.
        for net in &self.free_add {
            writeln!(out, "add {} {net}", free_set_name(Family::of(&net.addr())))?;
        }
        for net in &self.free_del {
            writeln!(out, "del {} {net}", free_set_name(Family::of(&net.addr())))?;
        }
        for (family, nets) in &self.free_rebuild {
            let (name, new) = (free_set_name(*family), free_swap_name(*family));
            create(out, &new, *family, false)?;
            for net in nets {
                writeln!(out, "add {new} {net}")?;
            }
            writeln!(out, "swap {name} {new}")?;
        }
        for name in &self.create {
            let family = parse_set_name(name).map_or(Family::V4, |(_, f)| f);
            create(out, name, family, true)?;
        }
        let frozen = |kind: Kind, ip: &IpAddr| self.freeze.contains(&(kind, Family::of(ip)));
        for (kind, ip) in self.del.iter().filter(|(k, ip)| !frozen(*k, ip)) {
            writeln!(out, "del {} {ip}", set_name(*kind, Family::of(ip)))?;
        }
        for (kind, ip, ctid) in self.add.iter().filter(|(k, ip, _)| !frozen(*k, ip)) {
            let set = set_name(*kind, Family::of(ip));
            writeln!(out, "add {set} {ip} comment \"{COMMENT_PREFIX}{ctid}\"")?;
        }
        for (kind, family) in &self.freeze {
            let z = frozen_name(*kind, *family);
            create(out, &z, *family, true)?;
            for (ip, ctid, existing) in &self.refill {
                if Family::of(ip) != *family {
                    continue;
                }
                let c = if existing & kind_bit(*kind) != 0 {
                    counters(*kind, *ip, ctid).unwrap_or_default()
                } else {
                    Counters::default()
                };
                writeln!(
                    out,
                    "add {z} {ip} packets {} bytes {} comment \"{COMMENT_PREFIX}{ctid}\"",
                    c.packets, c.bytes
                )?;
            }
            writeln!(out, "swap {} {z}", set_name(*kind, *family))?;
        }
        for (name, g) in &self.live {
            let comment = crate::model::generation_comment(*g);
            let family = parse_set_name(name).map_or(Family::V4, |(_, f)| f);
            let ip = crate::model::generation_ip(family);
            writeln!(out, "add {name} {ip} comment \"{comment}\"")?;
        }
        Ok(())
    }

    /// Destructions (run after the iptables batch removed the rules that use the sets).
    pub fn render_destroy(&self) -> String {
        (self.destroy.iter().cloned())
            .chain(self.free_destroy.iter().map(|f| free_set_name(*f)))
            .chain(self.free_rebuild.iter().map(|(f, _)| free_swap_name(*f)))
            .map(|s| format!("destroy {s}\n"))
            .collect()
    }
}

/// What the free-network sets should hold: the networks of `[classes] free`, and every
/// accounted address when traffic between containers is free (`c2c`). `None`: no free
/// traffic is counted (no set wanted).
#[derive(Debug, Clone, Copy)]
pub struct FreeWant<'a> {
    pub networks: &'a [IpNet],
    pub c2c: bool,
}

impl FreeWant<'_> {
    /// The addresses free in `family`, merged: `[classes] free`, and with `c2c` every
    /// accounted address.
    pub fn entries(&self, accounted: &Accounted, family: Family) -> BTreeSet<IpNet> {
        let mut want: Vec<IpNet> = (self.networks.iter())
            .filter(|n| Family::of(&n.addr()) == family)
            .copied()
            .collect();
        if self.c2c {
            want.extend(
                (accounted.values().flatten())
                    .filter(|ip| Family::of(ip) == family)
                    .map(|ip| IpNet::from(*ip)),
            );
        }
        IpNet::aggregate(&want).into_iter().collect()
    }
}

/// How many covering prefixes the free rules of a family test before the set lookup.
/// Each is one more rule a billable packet of an accounted address walks (a few ns: an
/// address compare); more covers fit the networks tighter (BENCHMARKS.md, *Free networks*).
pub const FREE_COVERS: usize = 4;

/// At most `max` disjoint prefixes that together cover every one of `nets` (merged, as from
/// [`FreeWant::entries`]) with the fewest addresses: a packet outside them cannot be free,
/// so the free rules test them (`-s NET`, an address compare) before looking the packet up
/// in the free-network set. Empty for no networks.
pub fn covers(nets: &BTreeSet<IpNet>, max: usize) -> Vec<IpNet> {
    let nets: Vec<IpNet> = nets.iter().copied().collect();
    if nets.is_empty() || max == 0 {
        return Vec::new();
    }
    best_covers(&nets, max)
        .pop()
        .map(|(_, c)| c)
        .unwrap_or_default()
}

/// The addresses in a prefix (saturating: a v6 /0 counts as u128::MAX).
fn span(net: &IpNet) -> u128 {
    1u128
        .checked_shl(u32::from(net.max_prefix_len() - net.prefix_len()))
        .unwrap_or(u128::MAX)
}

/// The smallest prefix holding all of `nets` (sorted, disjoint, one family).
fn hull(nets: &[IpNet]) -> IpNet {
    let (first, last) = (nets[0], nets[nets.len() - 1]);
    let mut len = first.prefix_len().min(last.prefix_len());
    loop {
        let h = IpNet::new(first.network(), len)
            .map(|n| n.trunc())
            .unwrap_or(first);
        if h.contains(&last.network()) || len == 0 {
            return h;
        }
        len -= 1;
    }
}

/// For j = 1..=max, the best cover of `nets` with at most j prefixes: (addresses, prefixes).
/// Dynamic programming over the binary trie of the networks: the hull itself, or the best
/// split of the covers between the hull's two halves.
fn best_covers(nets: &[IpNet], max: usize) -> Vec<(u128, Vec<IpNet>)> {
    let h = hull(nets);
    let one = (span(&h), vec![h]);
    if nets.len() == 1 || max == 1 {
        return vec![one; max];
    }
    // The hull's halves: every network lies in one (disjoint networks inside the hull, more
    // than one of them, so none is the hull itself).
    let half = nets.partition_point(|n| {
        IpNet::new(h.network(), h.prefix_len() + 1)
            .map(|lower| lower.trunc().contains(&n.network()))
            .unwrap_or(true)
    });
    let (lo, hi) = (
        best_covers(&nets[..half], max - 1),
        best_covers(&nets[half..], max - 1),
    );
    let mut out = vec![one];
    for j in 2..=max {
        let mut best = out[j - 2].clone();
        for a in 1..j {
            let (l, r) = (&lo[a - 1], &hi[j - a - 1]);
            let cost = l.0.saturating_add(r.0);
            if cost < best.0 {
                best = (cost, l.1.iter().chain(&r.1).copied().collect());
            }
        }
        out.push(best);
    }
    out
}

/// Plan the free-network sets of `families` against the ones found.
fn plan_free(
    p: &mut SetPlan,
    free: Option<FreeWant>,
    wanted: &BTreeMap<Ctid, BTreeSet<IpAddr>>,
    families: &[Family],
    current: &Sets,
) {
    let Some(free) = free else {
        p.free_destroy.extend(current.free.keys());
        return;
    };
    for family in families {
        let want = fewer_prefix_lengths(free.entries(wanted, *family), FREE_ENTRIES);
        let have = match current.free.get(family) {
            Some(h) => h.clone(),
            None => {
                p.free_create.push(*family);
                BTreeSet::new()
            }
        };
        let lengths = |nets: &BTreeSet<IpNet>| -> BTreeSet<u8> {
            nets.iter().map(IpNet::prefix_len).collect()
        };
        if !lengths(&have).is_subset(&lengths(&want)) {
            p.free_rebuild.push((*family, want.into_iter().collect()));
            continue;
        }
        p.free_add.extend(want.difference(&have));
        p.free_del.extend(have.difference(&want));
    }
}

/// How many entries a free-network set may get from [`fewer_prefix_lengths`] (its kernel
/// memory is about 32 bytes each; every dump reads them back with `ipset save`).
const FREE_ENTRIES: usize = 16_384;

/// The free networks as the set holds them: networks inside others (or adjacent halves of
/// one) merged, then the shorter prefixes split into the longer prefixes present, as long as
/// the set stays within `budget` entries. A `hash:net` lookup, made for every packet the free
/// rules see, costs one hash per prefix length in the set, not one per network: 100
/// networks in 4 lengths cost 4, split into /24s 1 (BENCHMARKS.md, *Free networks*). The
/// addresses covered are the same.
pub fn fewer_prefix_lengths(nets: BTreeSet<IpNet>, budget: usize) -> BTreeSet<IpNet> {
    let nets = IpNet::aggregate(&nets.into_iter().collect());
    let mut count: BTreeMap<u8, usize> = BTreeMap::new();
    for n in &nets {
        *count.entry(n.prefix_len()).or_default() += 1;
    }
    let split =
        |n: usize, from: u8, to: u8| n.checked_shl(u32::from(to - from)).filter(|c| *c <= budget);
    let mut total: usize = count.values().sum();
    loop {
        let lens: Vec<u8> = count.keys().copied().collect();
        // Fold one length into the next longer one: the fold that adds fewest entries.
        let best = lens
            .windows(2)
            .filter_map(|w| {
                let more = split(count[&w[0]], w[0], w[1])?.checked_sub(count[&w[0]])?;
                let after = total.checked_add(more).filter(|t| *t <= budget)?;
                Some((after, w[0], w[1]))
            })
            .min();
        let Some((after, from, to)) = best else {
            break;
        };
        let moved = count.remove(&from).unwrap_or(0) << (to - from);
        *count.entry(to).or_default() += moved;
        total = after;
    }
    let lens: Vec<u8> = count.keys().copied().collect();
    let mut out = BTreeSet::new();
    for n in nets {
        let to = lens
            .iter()
            .copied()
            .find(|l| *l >= n.prefix_len())
            .unwrap_or(n.prefix_len());
        match n.subnets(to) {
            Ok(subnets) => out.extend(subnets),
            Err(_) => {
                out.insert(n);
            }
        }
    }
    out
}

/// Compare the wanted elements (every accounted IP of `families` in each of its four sets,
/// or none when `use_sets` is false) with the sets found. An element of another container
/// is given to its new owner in place, counters kept; a set without counters is recreated.
/// `kinds`: the kinds in use; the sets of the others are destroyed once their rules are
/// gone (their final values read). `free`: what the free-network sets hold, if any is
/// wanted (with either backend).
pub fn plan(
    wanted: &BTreeMap<Ctid, BTreeSet<IpAddr>>,
    families: &[Family],
    use_sets: bool,
    kinds: &[Kind],
    free: Option<FreeWant>,
    current: &Sets,
) -> SetPlan {
    let mut p = SetPlan::default();
    plan_free(&mut p, free, wanted, families, current);
    let kinds: &[Kind] = if use_sets { kinds } else { &[] };
    // Who should own each IP (every kind alike).
    let mut want: HashMap<IpAddr, &Ctid> = HashMap::new();
    let mut created: Vec<(Kind, Family)> = Vec::new();
    if use_sets {
        want.reserve(wanted.values().map(BTreeSet::len).sum());
        for (ctid, ips) in wanted {
            for ip in ips.iter().filter(|ip| families.contains(&Family::of(ip))) {
                want.insert(*ip, ctid);
            }
        }
        for family in families {
            for &kind in kinds {
                let name = set_name(kind, *family);
                // A set of our name without counters cannot count; `check` reports it.
                if !current.present.contains_key(&name) {
                    p.create.push(name);
                    created.push((kind, *family));
                }
            }
        }
    }
    // The sets of kinds not in use (all of them when the counters are not in sets).
    p.destroy.extend(
        (current.present.keys())
            .filter(|name| parse_set_name(name).is_some_and(|(k, _)| !kinds.contains(&k)))
            .cloned(),
    );
    // What the sets of the kinds in use hold, sorted by kind and IP for lookups (a large
    // node's 80,000 elements take less room so than in a hash map). A set holds an address
    // once, so no two share a kind and IP; the sorts here are unstable, which needs no
    // scratch copy of the list.
    // (Counted first and filled to size: collected from a filter, it would grow by doubling
    // to up to twice its size.)
    let in_use = |(k, _, _): &(Kind, IpAddr, Option<&Ctid>)| kinds.contains(k);
    let mut have: Vec<(Kind, IpAddr, Option<&Ctid>)> =
        Vec::with_capacity(current.all().filter(in_use).count());
    have.extend(current.all().filter(in_use));
    have.sort_unstable_by_key(|(k, ip, _)| (*k, *ip));
    have.dedup_by_key(|(k, ip, _)| (*k, *ip));
    let had = |kind: Kind, ip: IpAddr| {
        have.binary_search_by_key(&(kind, ip), |(k, i, _)| (*k, *i))
            .ok()
            .map(|i| have[i].2)
    };
    // An element goes when its IP is no longer wanted, or when it names no container (its
    // past is unknown). An element of another container stays: the `add` below only puts the
    // new owner in its comment (`restore -exist` keeps its counters), so it never stops
    // counting; the ledger charges its deltas to the new owner from the move's read on.
    // (`have` is sorted: so is `del`. Without `use_sets`, `kinds` is empty: nothing is had,
    // so nothing is deleted or frozen.)
    p.del = (have.iter())
        .filter(|(_, ip, owner)| !want.contains_key(ip) || owner.is_none())
        .map(|(k, ip, _)| (*k, *ip))
        .collect();
    // The wanted IPs in order, each kind in turn: the lookups then walk `have` from start
    // to end (in cache), where the hash map's order sent each one to a random place.
    let mut order: Vec<(&IpAddr, &&Ctid)> = want.iter().collect();
    order.sort_unstable_by_key(|(ip, _)| **ip);
    for &kind in kinds {
        for &(ip, ctid) in &order {
            let fresh = created.contains(&(kind, Family::of(ip)));
            let had = had(kind, *ip);
            if had != Some(Some(*ctid)) || fresh {
                p.add.push((kind, *ip, (*ctid).clone()));
            }
            if let Some(Some(from)) = had
                && from != *ctid
                && !fresh
            {
                p.moved.push((kind, *ip, from.clone()));
            }
        }
    }
    p.add.sort_unstable();
    p.moved.sort_unstable();
    let freeze: BTreeSet<(Kind, Family)> =
        p.del.iter().map(|(k, ip)| (*k, Family::of(ip))).collect();
    let frozen_family = |f: Family| freeze.iter().any(|(_, ff)| *ff == f);
    let refill = |&(ip, ctid): &(&IpAddr, &&Ctid)| {
        let existing = (kinds.iter())
            .filter(|k| matches!(had(**k, *ip), Some(Some(_))))
            .fold(0, |bits, k| bits | kind_bit(*k));
        (*ip, (*ctid).clone(), existing)
    };
    if !freeze.is_empty() {
        let n = (order.iter())
            .filter(|(ip, _)| frozen_family(Family::of(ip)))
            .count();
        p.refill.reserve_exact(n);
        // `order` is sorted by IP: so is `refill`.
        p.refill.extend(
            (order.iter())
                .filter(|(ip, _)| frozen_family(Family::of(ip)))
                .map(refill),
        );
    }
    p.freeze = freeze.into_iter().collect();
    p.leftover = current.frozen_present.clone();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounted(list: &[(&str, &[&str])]) -> Accounted {
        (list.iter())
            .map(|(c, ips)| {
                (
                    c.parse().unwrap(),
                    ips.iter().map(|i| i.parse().unwrap()).collect(),
                )
            })
            .collect()
    }

    fn nets<C: FromIterator<IpNet>>(list: &[&str]) -> C {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn shown<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Vec<String> {
        nets.into_iter().map(IpNet::to_string).collect()
    }

    const SAVE: &str = "create other-set hash:ip family inet hashsize 1024 maxelem 65536\n\
add other-set 192.0.2.1\n\
create vzacct-fi4 hash:ip family inet hashsize 1024 maxelem 1048576 counters comment bucketsize 12 initval 0x1\n\
add vzacct-fi4 10.0.0.1 packets 3 bytes 384 comment \"ct:101\"\n\
add vzacct-fi4 10.0.0.9 packets 1 bytes 100 comment \"ct:109\"\n\
create vzacct-fo4 hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x2\n";

    /// Fewer prefix lengths, the same addresses: shorter networks split into the longer
    /// lengths present while the budget allows; nested and adjacent ones merged first.
    /// The covers the free rules test first: at most `max` disjoint prefixes, holding every
    /// free network and as few other addresses as can be.
    #[test]
    fn free_networks_get_the_tightest_covers() {
        let cover = |list: &[&str], max| shown(&covers(&nets(list), max));
        let free = ["10.0.0.0/23", "10.0.3.0/24", "192.168.0.0/16"];
        assert_eq!(cover(&free, 1), ["0.0.0.0/0"]);
        assert_eq!(cover(&free, 2), ["10.0.0.0/22", "192.168.0.0/16"]);
        assert_eq!(cover(&free, 3), free);
        assert_eq!(cover(&free, 4), free);
        assert_eq!(
            cover(&["2001:db8::/32", "2001:db9::/32"], 1),
            ["2001:db8::/31"]
        );
        assert_eq!(cover(&["::/0"], 4), ["::/0"]);
        assert!(cover(&[], 4).is_empty());
        // The benchmark's 100 networks in 4 lengths: 4 covers, none holding its sender.
        let bench: Vec<String> = (0..100)
            .map(|i| {
                let k = i / 4;
                match i % 4 {
                    0 => format!("172.{}.0.0/16", 16 + k % 16 + 32 * (k / 16)),
                    1 => format!("100.{}.{}.0/20", 64 + k / 16, (k % 16) * 16),
                    2 => format!("100.{}.{}.0/22", 96 + k / 64, (k % 64) * 4),
                    _ => format!("192.168.{}.0/24", k % 256),
                }
            })
            .collect();
        let merged: Vec<IpNet> = bench.iter().map(|n| n.parse().unwrap()).collect();
        let merged: BTreeSet<IpNet> = IpNet::aggregate(&merged).into_iter().collect();
        assert_eq!(
            shown(&covers(&merged, FREE_COVERS)),
            [
                "100.64.0.0/15",
                "100.96.0.0/17",
                "172.0.0.0/10",
                "192.168.0.0/19"
            ]
        );
    }

    #[test]
    fn free_networks_are_split_into_fewer_prefix_lengths() {
        // A /22 and a /23 become /24s; the /24 inside the /22 goes.
        assert_eq!(
            shown(&fewer_prefix_lengths(
                nets(&["10.0.0.0/22", "10.0.1.0/24", "10.1.0.0/23", "10.2.0.0/24"]),
                100
            )),
            [
                "10.0.0.0/24",
                "10.0.1.0/24",
                "10.0.2.0/24",
                "10.0.3.0/24",
                "10.1.0.0/24",
                "10.1.1.0/24",
                "10.2.0.0/24"
            ]
        );
        // Over budget: a /16 stays a /16 beside the /24 (two lengths), 10.3.0.0/25 and its
        // other half merge.
        assert_eq!(
            shown(&fewer_prefix_lengths(
                nets(&[
                    "172.16.0.0/16",
                    "10.2.0.0/24",
                    "10.3.0.0/25",
                    "10.3.0.128/25"
                ]),
                100
            )),
            ["10.2.0.0/24", "10.3.0.0/24", "172.16.0.0/16"]
        );
        // A host beside a /24, budget 300: the /24 becomes 256 hosts.
        let hosts = fewer_prefix_lengths(nets(&["10.9.0.0/24", "192.0.2.7/32"]), 300);
        assert_eq!(hosts.len(), 257);
        assert!(hosts.iter().all(|n| n.prefix_len() == 32));
        assert_eq!(
            shown(&fewer_prefix_lengths(
                nets(&["2001:db8::/32", "2001:db9::1/128"]),
                16_384
            )),
            ["2001:db8::/32", "2001:db9::1/128"]
        );
    }

    /// The free-network sets: created with the networks (and, for traffic between
    /// containers, the accounted addresses); new networks added before old ones go; all
    /// destroyed, like the free kinds' sets, when no class is left.
    #[test]
    fn free_sets_are_planned() {
        let save = "create vzacct-free4 hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x1\n\
add vzacct-free4 10.0.0.2\n\
add vzacct-free4 198.51.100.0/24\n\
create vzacct-ffi4 hash:ip family inet hashsize 65536 maxelem 1048576 counters comment\n\
add vzacct-ffi4 10.0.0.1 packets 1 bytes 2 comment \"ct:101\"\n";
        let s = parse_save(save).unwrap();
        assert_eq!(
            shown(&s.free[&Family::V4]),
            ["10.0.0.2/32", "198.51.100.0/24"]
        );
        let wanted = accounted(&[("101", &["10.0.0.1"])]);
        let networks: Vec<IpNet> = nets(&["198.51.100.0/25", "2001:db8::/32"]);
        let free = FreeWant {
            networks: &networks,
            c2c: true,
        };
        let p = plan(
            &wanted,
            &[Family::V4, Family::V6],
            true,
            &Kind::ALL,
            Some(free),
            &s,
        );
        assert_eq!(p.free_create, [Family::V6]);
        // The /25 beside the container's /32: split into 128 /32s (one prefix length). The
        // /24's length would empty: the IPv4 set is rebuilt and swapped in, not changed.
        assert_eq!(shown(&p.free_add), ["2001:db8::/32"]);
        assert!(p.free_del.is_empty(), "{:?}", p.free_del);
        assert_eq!(p.free_rebuild.len(), 1);
        let (family, rebuilt) = &p.free_rebuild[0];
        assert_eq!(*family, Family::V4);
        let rebuilt = shown(rebuilt);
        assert_eq!(rebuilt.len(), 129, "{rebuilt:?}");
        assert_eq!(
            [&rebuilt[0], &rebuilt[1], &rebuilt[128]],
            ["10.0.0.1/32", "198.51.100.0/32", "198.51.100.127/32"]
        );
        let batch = p.render();
        assert!(
            batch.starts_with("create vzacct-free6 hash:net family inet6"),
            "{batch}"
        );
        let lines: Vec<&str> = batch.lines().collect();
        let at = |l: &str| {
            lines
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("{l}: {batch}"))
        };
        let create = at("create vzacct-zfree4 hash:net family inet hashsize 65536 maxelem 1048576");
        let swap = at("swap vzacct-free4 vzacct-zfree4");
        assert_eq!(swap - create, 130, "{batch}");
        assert_eq!(lines[create + 1], "add vzacct-zfree4 10.0.0.1/32");
        assert!(!batch.contains("del vzacct-free4"), "{batch}");
        assert!(
            p.render_destroy().ends_with("destroy vzacct-zfree4\n"),
            "{}",
            p.render_destroy()
        );
        // Every prefix length stays: changed in place, new networks before old ones go.
        let two = parse_save(
            "create vzacct-free4 hash:net family inet hashsize 1024 maxelem 1048576\n\
             add vzacct-free4 192.0.2.0/24\n\
             add vzacct-free4 198.51.100.0/24\n",
        )
        .unwrap();
        let other: Vec<IpNet> = nets(&["203.0.113.0/24", "198.51.100.0/24"]);
        let networks = FreeWant {
            networks: &other,
            c2c: false,
        };
        let q = plan(&wanted, &[Family::V4], false, &[], Some(networks), &two);
        assert!(q.free_rebuild.is_empty(), "{q:?}");
        assert_eq!(shown(&q.free_add), ["203.0.113.0/24"]);
        assert_eq!(shown(&q.free_del), ["192.0.2.0/24"]);
        assert_eq!(
            q.render(),
            "add vzacct-free4 203.0.113.0/24\ndel vzacct-free4 192.0.2.0/24\n"
        );
        // A rebuilt set a killed command left is destroyed before anything else.
        let left = parse_save(&format!(
            "{save}create vzacct-zfree4 hash:net family inet hashsize 1024 maxelem 1048576\n\
             add vzacct-zfree4 192.0.2.0/24\n"
        ))
        .unwrap();
        assert_eq!(left.frozen_present, ["vzacct-zfree4"]);
        assert_eq!(left.free, s.free);
        let r = plan(&wanted, &[Family::V4], true, &Kind::ALL, Some(free), &left);
        assert!(r.render().starts_with("destroy vzacct-zfree4\n"));
        let none = plan(&wanted, &[Family::V4], true, &Kind::BASE, None, &s);
        assert_eq!(none.free_destroy, [Family::V4]);
        assert_eq!(none.destroy, ["vzacct-ffi4"]);
        assert!(none.del.is_empty() && none.freeze.is_empty(), "{none:?}");
        assert_eq!(
            none.render_destroy(),
            "destroy vzacct-ffi4\ndestroy vzacct-free4\n"
        );
        // Only the free networks change: the batch still runs.
        let only_free = SetPlan {
            free_add: p.free_add.clone(),
            ..SetPlan::default()
        };
        assert!(!only_free.batch_is_empty());
        let batch = only_free.render();
        assert_eq!(batch, "add vzacct-free6 2001:db8::/32\n");
    }

    #[test]
    fn names_round_trip() {
        for kind in Kind::ALL {
            for family in [Family::V4, Family::V6] {
                assert_eq!(
                    parse_set_name(&set_name(kind, family)),
                    Some((kind, family))
                );
            }
        }
        assert_eq!(set_name(Kind::LocalOut, Family::V6), "vzacct-lo6");
        assert_eq!(parse_set_name("vzacct-xx4"), None);
        assert_eq!(parse_set_name("other-fi4"), None);
    }

    #[test]
    fn parses_only_our_sets_with_counters_and_owner() {
        let s = parse_save(SAVE).unwrap();
        assert_eq!(s.present.len(), 2);
        assert!(s.present["vzacct-fi4"]);
        assert!(!s.present["vzacct-fo4"], "no counters");
        assert_eq!(s.elements.len(), 2);
        assert_eq!(
            s.elements[0].counters,
            Counters {
                packets: 3,
                bytes: 384
            }
        );
        assert_eq!(s.elements[0].ctid.as_str(), "101");
        assert_eq!(s.elements[0].key.to_string(), "set vzacct-fi4 10.0.0.1");
        assert_eq!(s.elements[0].kind(), Kind::ForwardIn);
    }

    /// A set that loses an element is rebuilt and swapped in, the elements that stay
    /// carrying the counters read; the old contents, frozen, are read back as the live
    /// set's elements, and a frozen set left by a killed command is destroyed first.
    #[test]
    fn a_set_that_loses_elements_is_swapped_and_frozen() {
        let save = "create vzacct-fi4 hash:ip family inet hashsize 1024 maxelem 65536 counters comment\n\
                    add vzacct-fi4 10.0.0.1 packets 3 bytes 384 comment \"ct:101\"\n\
                    add vzacct-fi4 10.0.0.2 packets 1 bytes 100 comment \"ct:102\"\n\
                    create vzacct-zfo4 hash:ip family inet hashsize 1024 maxelem 65536 counters comment\n\
                    add vzacct-zfo4 10.0.0.7 packets 2 bytes 200 comment \"ct:107\"\n";
        let s = parse_save(save).unwrap();
        assert_eq!(s.frozen_present, ["vzacct-zfo4"]);
        assert_eq!(s.frozen.len(), 1);
        assert_eq!(s.frozen[0].key.to_string(), "set vzacct-fo4 10.0.0.7");
        assert_eq!(s.frozen[0].counters.bytes, 200);
        assert_eq!(
            parse_frozen_name(&frozen_name(Kind::LocalOut, Family::V6)),
            Some((Kind::LocalOut, Family::V6))
        );
        let wanted = accounted(&[("101", &["10.0.0.1", "10.0.0.3"])]);
        let p = plan(&wanted, &[Family::V4], true, &Kind::BASE, None, &s);
        assert_eq!(p.freeze, [(Kind::ForwardIn, Family::V4)]);
        assert_eq!(p.leftover, ["vzacct-zfo4"]);
        let batch = p.render_with(&|kind, ip, ctid| {
            assert_eq!(
                (kind, ip.to_string(), ctid.as_str()),
                (Kind::ForwardIn, "10.0.0.1".into(), "101")
            );
            Some(Counters {
                packets: 3,
                bytes: 384,
            })
        });
        let fi: Vec<&str> = batch
            .lines()
            .filter(|l| l.contains("fi4") || l.starts_with("destroy"))
            .collect();
        assert_eq!(
            fi,
            [
                "destroy vzacct-zfo4",
                "create vzacct-zfi4 hash:ip family inet hashsize 65536 maxelem 1048576 counters comment",
                "add vzacct-zfi4 10.0.0.1 packets 3 bytes 384 comment \"ct:101\"",
                "add vzacct-zfi4 10.0.0.3 packets 0 bytes 0 comment \"ct:101\"",
                "swap vzacct-fi4 vzacct-zfi4",
            ]
        );
        assert_eq!(p.frozen_names(), ["vzacct-zfi4"]);
    }

    #[test]
    fn plans_creates_adds_and_moves_in_place() {
        let s = parse_save(SAVE).unwrap();
        let wanted = accounted(&[("101", &["10.0.0.1"]), ("102", &["10.0.0.9"])]);
        let p = plan(&wanted, &[Family::V4], true, &Kind::BASE, None, &s);
        assert_eq!(p.create, ["vzacct-li4", "vzacct-lo4"]);
        assert!(p.destroy.is_empty());
        // 10.0.0.9 moves from 109 to 102 in place: no del, only its comment changes (with
        // `restore -exist` an add of an existing element keeps its counters).
        assert!(p.del.is_empty(), "{:?}", p.del);
        assert_eq!(
            p.moved,
            [(
                Kind::ForwardIn,
                "10.0.0.9".parse().unwrap(),
                "109".parse().unwrap()
            )]
        );
        let batch = p.render();
        assert!(batch.starts_with("create vzacct-li4 hash:ip family inet hashsize 65536 maxelem 1048576 counters comment\n"), "{batch}");
        assert!(!batch.contains("del "), "{batch}");
        assert!(batch.contains("add vzacct-fi4 10.0.0.9 comment \"ct:102\"\n"));
        assert!(
            !batch.contains("add vzacct-fi4 10.0.0.1 "),
            "in place: {batch}"
        );
        assert!(batch.contains("add vzacct-lo4 10.0.0.1 comment \"ct:101\"\n"));
        let off = plan(&wanted, &[Family::V4], false, &Kind::BASE, None, &s);
        assert_eq!(
            off.render_destroy(),
            "destroy vzacct-fi4\ndestroy vzacct-fo4\n"
        );
        for p in [&p, &off] {
            assert_eq!(p.batch_is_empty(), p.render().is_empty(), "{p:?}");
        }
    }

    #[test]
    fn a_plan_with_nothing_to_change_writes_no_batch() {
        let save: String = Kind::ALL
            .iter()
            .map(|k| {
                let name = set_name(*k, Family::V4);
                format!(
                    "create {name} hash:ip family inet hashsize 1024 maxelem 65536 counters comment\n\
                     add {name} 10.0.0.1 packets 3 bytes 384 comment \"ct:101\"\n"
                )
            })
            .collect();
        let s = parse_save(&save).unwrap();
        let wanted = accounted(&[("101", &["10.0.0.1"])]);
        let mut p = plan(&wanted, &[Family::V4], true, &Kind::BASE, None, &s);
        assert!(p.batch_is_empty(), "{p:?}");
        assert_eq!(p.render(), "");
        // The generation stamp alone is a batch.
        p.live = vec![(set_name(Kind::ForwardIn, Family::V4), 3)];
        assert!(!p.batch_is_empty());
        assert!(!p.render().is_empty());
    }

    /// The real `ipset save` of 6.11 (header and create lines end in a space, no counters)
    /// and of 7.1 (tests/fixtures/oldtools).
    #[test]
    fn parses_the_old_ipset_versions_output() {
        let s = parse_save(include_str!(
            "../../tests/fixtures/oldtools/ipset-6.11-save.txt"
        ))
        .unwrap();
        assert_eq!(s.present.len(), 1);
        assert!(!s.present["vzacct-fi4"], "6.11: no counters, not usable");
        assert!(s.elements.is_empty());
        assert_eq!(s.untagged, [(Kind::ForwardIn, "10.0.0.1".parse().unwrap())]);
        let s = parse_save(include_str!(
            "../../tests/fixtures/oldtools/ipset-7.1-save.txt"
        ))
        .unwrap();
        assert!(s.present["vzacct-fi4"]);
        assert_eq!(s.elements.len(), 2);
        assert_eq!(
            (s.elements[0].counters.packets, s.elements[0].counters.bytes),
            (3, 384)
        );
        assert_eq!(s.elements[1].ctid.as_str(), "102");
        assert_eq!(s.untagged, [(Kind::ForwardIn, "10.0.0.3".parse().unwrap())]);
    }

    #[test]
    fn garbage_is_an_error_with_the_line() {
        let e = parse_save("create vzacct-fi4 hash:ip counters comment\nadd vzacct-fi4 nonsense\n")
            .unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_save("add vzacct-fi4 10.0.0.1 packets x\n").unwrap_err();
        assert_eq!(e.reason, "bad packet counter");
    }
}
