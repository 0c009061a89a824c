//! The accounting ruleset as pure data: the rules vzacct wants, the rules it finds in
//! `iptables-save -c` output (its own chains only), and the plan that turns one into the
//! other as one `iptables-restore --noflush` batch (and, when a chain is rebuilt, the batch
//! that finishes it). No I/O here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ctid::Ctid;
use crate::model::GENERATION_CHAIN;
pub use crate::model::{Accounted, Chain, Counted, CounterId, Counters, Family, Kind};

/// One counting rule: a container's IP, measured one way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub ctid: Ctid,
    pub ip: IpAddr,
    pub kind: Kind,
    /// The venet interface, for the node-local kinds; empty for forwarded ones.
    pub iface: String,
}

const COMMENT_PREFIX: &str = "ct:";

impl Rule {
    /// This rule's identity within its container's `seen` map.
    pub fn seen_key(&self) -> CounterId {
        CounterId::rule(self.kind, self.ip, &self.iface)
    }

    pub fn family(&self) -> Family {
        Family::of(&self.ip)
    }

    /// The rule's specification after `-A CHAIN`, exactly as iptables-save prints it.
    pub fn spec(&self) -> String {
        let addr = format!("{}/{}", self.ip, self.family().host_prefix());
        let comment = format!("-m comment --comment \"{COMMENT_PREFIX}{}\"", self.ctid);
        let addr = match (self.kind.is_in(), self.kind.chain()) {
            (true, Chain::Forward) => format!("-d {addr}"),
            (false, Chain::Forward) => format!("-s {addr}"),
            (true, _) => format!("-d {addr} -o {}", self.iface),
            (false, _) => format!("-s {addr} -i {}", self.iface),
        };
        match self.kind.is_free() {
            false => format!("{addr} {comment}"),
            true => format!("{addr} {} {comment}", free_match(self.kind, self.family())),
        }
    }
}

/// The ipset backend's fixed rule for one kind of traffic in one family: it matches the
/// kind's set, whose elements carry the per-IP counters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetMatch {
    pub kind: Kind,
    pub family: Family,
    /// The venet interface. Forwarded kinds name it too: a packet leaves towards a container
    /// (`-o`) or comes from one (`-i`) through it, so a packet passing through the node is
    /// looked up in one set, not two, and a packet with a container's source address that
    /// did not come from venet (spoofed) is not billed to the container.
    pub iface: String,
    /// A packet it counted goes on to its free twin's chain ([`Kind::free_chain`]).
    pub free_jump: bool,
}

impl SetMatch {
    /// The rule's specification after `-A CHAIN`, exactly as iptables-save prints it.
    pub fn spec(&self) -> String {
        let set = crate::model::set_name(self.kind, self.family);
        let (iface, dir) = match self.kind.is_in() {
            true => (format!("-o {}", self.iface), "dst"),
            false => (format!("-i {}", self.iface), "src"),
        };
        match self.kind.free_twin().and_then(Kind::free_chain) {
            Some(chain) if self.free_jump => {
                format!("{iface} -m set --match-set {set} {dir} -j {chain}")
            }
            _ => format!("{iface} -m set --match-set {set} {dir}"),
        }
    }
}

/// The rules of a free kind's chain ([`Kind::free_chain`]), ipset backend: one per covering
/// prefix of the free networks (the other end of the packet inside it), each looking the
/// packet up in the free-network set and counting it in the kind's set. The covers are
/// disjoint, so a packet is counted at most once. No covers: no rule.
pub fn free_chain_rules(kind: Kind, family: Family, covers: &[IpNet]) -> Vec<String> {
    let (addr, dir) = if kind.is_in() {
        ("-s", "dst")
    } else {
        ("-d", "src")
    };
    let set = crate::model::set_name(kind, family);
    let lookup = format!(
        "{} -m set --match-set {set} {dir}",
        free_match(kind, family)
    );
    covers
        .iter()
        .map(|c| match c.prefix_len() {
            0 => lookup.clone(),
            _ => format!("{addr} {c} {lookup}"),
        })
        .collect()
}

/// What the ipset backend wants in one family: the set-matching rules of the kinds in use
/// (base kinds; each jumps to its free twin's chain when that is in use and `covers` is
/// not empty), and the free kinds' chains.
pub fn set_rules(
    family: Family,
    venet: &str,
    kinds: &[Kind],
    covers: &[IpNet],
) -> (Vec<Wanted>, FreeChains) {
    let free: FreeChains = match covers.is_empty() {
        true => FreeChains::new(),
        false => (kinds.iter().copied())
            .filter(|k| k.is_free())
            .map(|k| (k, free_chain_rules(k, family, covers)))
            .collect(),
    };
    let wanted = (kinds.iter().copied())
        .filter(|k| !k.is_free())
        .map(|kind| {
            Wanted::Match(SetMatch {
                kind,
                family,
                iface: venet.to_string(),
                free_jump: kind.free_twin().is_some_and(|t| free.contains_key(&t)),
            })
        })
        .collect();
    (wanted, free)
}

/// The free kinds' chains and their rules, in order, as `iptables-save` prints them.
pub type FreeChains = BTreeMap<Kind, Vec<String>>;

/// The match of a free kind's rule on the free-network set: the other end of the packet
/// (the source of traffic towards the container, the destination of traffic from it).
fn free_match(kind: Kind, family: Family) -> String {
    let dir = if kind.is_in() { "src" } else { "dst" };
    format!(
        "-m set --match-set {} {dir}",
        crate::model::free_set_name(family)
    )
}

/// A rule vzacct wants in one of its chains: a per-IP counting rule (iptables backend) or a
/// set-matching rule (ipset backend).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Wanted {
    Count(Rule),
    Match(SetMatch),
}

impl Wanted {
    pub fn chain(&self) -> Chain {
        match self {
            Wanted::Count(r) => r.kind.chain(),
            Wanted::Match(m) => m.kind.chain(),
        }
    }

    pub fn spec(&self) -> String {
        match self {
            Wanted::Count(r) => r.spec(),
            Wanted::Match(m) => m.spec(),
        }
    }
}

/// The interface a counting rule of `kind` names: venet for the node's own traffic, none for
/// forwarded traffic (its set or chain already says which way).
pub fn rule_iface(kind: Kind, venet: &str) -> &str {
    match kind.chain() {
        Chain::Forward => "",
        _ => venet,
    }
}

/// Every rule vzacct wants in one family, one per kind in use and IP, in a stable order.
pub fn desired(accounted: &Accounted, family: Family, venet: &str, kinds: &[Kind]) -> Vec<Rule> {
    let mut cts: Vec<&Ctid> = accounted.keys().collect();
    cts.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut rules = Vec::new();
    for ctid in cts {
        for ip in accounted[ctid].iter().filter(|ip| Family::of(ip) == family) {
            for &kind in kinds {
                rules.push(Rule {
                    ctid: ctid.clone(),
                    ip: *ip,
                    kind,
                    iface: rule_iface(kind, venet).to_string(),
                });
            }
        }
    }
    rules
}

/// [`desired`] as wanted rules.
pub fn desired_rules(
    accounted: &Accounted,
    family: Family,
    venet: &str,
    kinds: &[Kind],
) -> Vec<Wanted> {
    desired(accounted, family, venet, kinds)
        .into_iter()
        .map(Wanted::Count)
        .collect()
}

/// A rule found in one of our chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRule {
    pub chain: Chain,
    /// The specification after `-A CHAIN`, as printed (used to delete it).
    pub spec: String,
    /// The counting rule it is, or None for something vzacct did not write.
    pub rule: Option<Rule>,
    /// The set-matching rule it is (ipset backend).
    pub set_match: Option<SetMatch>,
    pub counters: Counters,
}

impl SeenRule {
    /// What it is, if it is one of the rules vzacct writes.
    pub fn wanted(&self) -> Option<Wanted> {
        match (&self.rule, &self.set_match) {
            (Some(r), _) => Some(Wanted::Count(r.clone())),
            (None, Some(m)) => Some(Wanted::Match(m.clone())),
            _ => None,
        }
    }

    /// The counting rule it is, as counted traffic.
    fn counted(&self) -> Option<Counted> {
        let r = self.rule.as_ref()?;
        Some(Counted {
            ctid: r.ctid.clone(),
            key: r.seen_key(),
            counters: self.counters,
        })
    }
}

/// A rule in a built-in chain that jumps to one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenJump {
    pub chain: Chain,
    /// 1-based position in the built-in chain.
    pub position: usize,
    pub spec: String,
}

impl SeenJump {
    /// The op that deletes this jump.
    fn delete(&self) -> Op {
        Op::Delete {
            chain: self.chain.builtin(),
            spec: self.spec.clone(),
        }
    }
}

/// A built-in chain's policy line (`:FORWARD ACCEPT [packets:bytes]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub chain: String,
    pub policy: String,
    pub counters: Counters,
}

/// What the kernel holds of ours in one family's filter table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub chains: BTreeSet<Chain>,
    pub jumps: Vec<SeenJump>,
    pub rules: Vec<SeenRule>,
    /// The built-in chains' policies, to give back their counters on legacy iptables.
    pub policies: Vec<Policy>,
    /// Whether the ruleset came from the nf_tables back-end (its header says so).
    pub nf_tables: bool,
    /// The counting rules of a chain that a rebuild unhooked (its `-NEXT` copy counts in its
    /// place): they count no more, and their values are final.
    pub frozen: Vec<Counted>,
    /// What finishes a rebuild a killed command left half-done (the frozen chain removed,
    /// the copy renamed back) or removes a copy that never counted. Everything else here
    /// describes the table as it is once these have run, which [`crate::backend::Kernel`]
    /// does first.
    pub pending: Vec<Op>,
    /// How many rules the generation chain holds (`None`: no such chain), and the newest
    /// generation they name.
    pub generation_chain: Option<usize>,
    pub generation: Option<u64>,
    /// The free kinds' chains found (ipset backend), with their rules.
    pub free_chains: FreeChains,
}

/// `iptables-save` output that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line} of the saved ruleset: {reason}: {text}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Parse `iptables-save -c -t filter` output, keeping only what concerns our chains.
/// Foreign rules are only counted (to know where our jumps sit), never interpreted.
pub fn parse_save(text: &str) -> Result<Current, ParseError> {
    let mut cur = Current::default();
    let mut next = Next::default();
    let mut in_filter = false;
    let mut builtin_len: BTreeMap<String, usize> = BTreeMap::new();
    for (idx, line) in text.lines().enumerate() {
        let err = |reason| ParseError {
            line: idx + 1,
            reason,
            text: crate::ctid::escape_for_message(line),
        };
        let tokens = |spec| tokenize(spec).ok_or_else(|| err("unbalanced quotes"));
        let line = line.trim_end();
        if line.starts_with("# Generated by") && line.contains("(nf_tables)") {
            cur.nf_tables = true;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            continue;
        }
        if !in_filter || line == "COMMIT" {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let name = words.next().unwrap_or("");
            if name == GENERATION_CHAIN {
                cur.generation_chain.get_or_insert(0);
            } else if let Some(kind) = Kind::by_free_chain(name) {
                cur.free_chains.entry(kind).or_default();
            } else if let Some(chain) = Chain::by_name(name) {
                cur.chains.insert(chain);
            } else if let Some(chain) = Chain::by_next_name(name) {
                next.declared.insert(chain);
            } else if let Some(chain) = Chain::by_builtin(name) {
                let policy = words.next().unwrap_or("-");
                let (counters, _) = split_counters(words.next().unwrap_or(""))
                    .ok_or_else(|| err("bad policy counters"))?;
                cur.policies.push(Policy {
                    chain: chain.builtin().to_string(),
                    policy: policy.to_string(),
                    counters,
                });
            }
            continue;
        }
        let (counters, rest) = split_counters(line).ok_or_else(|| err("bad counters"))?;
        let Some(rest) = rest.strip_prefix("-A ") else {
            return Err(err("expected -A"));
        };
        let (chain_name, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        if chain_name == GENERATION_CHAIN {
            *cur.generation_chain.get_or_insert(0) += 1;
            if let ["-m", "comment", "--comment", c] = tokens(spec)?
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                cur.generation = cur.generation.max(crate::model::parse_generation(c));
            }
            continue;
        }
        if let Some(kind) = Kind::by_free_chain(chain_name) {
            cur.free_chains
                .entry(kind)
                .or_default()
                .push(spec.to_string());
            continue;
        }
        let ours = Chain::by_name(chain_name).map(|c| (c, false));
        if let Some((chain, is_next)) = ours.or(Chain::by_next_name(chain_name).map(|c| (c, true)))
        {
            let tokens = tokens(spec)?;
            let rule = recognise(chain, &tokens);
            let set_match = rule
                .is_none()
                .then(|| recognise_set(chain, &tokens))
                .flatten();
            let seen = SeenRule {
                chain,
                spec: spec.to_string(),
                rule,
                set_match,
                counters,
            };
            if is_next {
                next.rules.push(seen);
            } else {
                cur.rules.push(seen);
            }
        } else {
            let pos = builtin_len.entry(chain_name.to_string()).or_default();
            *pos += 1;
            if let Some(chain) = Chain::by_builtin(chain_name) {
                let tokens = tokens(spec)?;
                let jumps_to = |name: &str| {
                    (tokens.windows(2)).any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == name)
                };
                let jump = SeenJump {
                    chain,
                    position: *pos,
                    spec: spec.to_string(),
                };
                if jumps_to(chain.name()) {
                    cur.jumps.push(jump);
                } else if jumps_to(chain.next_name()) {
                    next.jumps.push(jump);
                }
            }
        }
    }
    next.settle(&mut cur);
    Ok(cur)
}

/// What a read found of the `-NEXT` copies of our chains (normally nothing).
#[derive(Default)]
struct Next {
    declared: BTreeSet<Chain>,
    jumps: Vec<SeenJump>,
    rules: Vec<SeenRule>,
}

impl Next {
    /// Describe the table as it is once a half-done rebuild is finished: a copy that is
    /// jumped to (and its old chain not, or only behind [`GUARD`]) is the live chain, the
    /// old one's counting rules are frozen; any other copy never counted and goes.
    fn settle(self, cur: &mut Current) {
        for chain in Chain::ALL.into_iter().filter(|c| self.declared.contains(c)) {
            let to_next = |j: &&SeenJump| j.chain == chain;
            let guarded =
                (cur.rules.iter().find(|r| r.chain == chain)).is_some_and(|r| r.spec == GUARD);
            let live = self.jumps.iter().any(|j| j.chain == chain)
                && (guarded || !cur.jumps.iter().any(|j| j.chain == chain));
            if !live {
                cur.pending
                    .extend(self.jumps.iter().filter(to_next).map(SeenJump::delete));
                cur.pending.push(Op::RemoveNext(chain));
                continue;
            }
            let old = cur.rules.extract_if(.., |r| r.chain == chain);
            cur.frozen.extend(old.filter_map(|r| r.counted()));
            // The old chain's jumps (behind its guard) go first.
            let old_jumps = cur.jumps.extract_if(.., |j| j.chain == chain);
            cur.pending.extend(old_jumps.map(|j| j.delete()));
            cur.rules
                .extend(self.rules.iter().filter(|r| r.chain == chain).cloned());
            if !cur.chains.insert(chain) {
                cur.pending.push(Op::RemoveChain(chain));
            }
            cur.pending.push(Op::Rename(chain));
            let renamed = |spec: &str| {
                let word = |w| {
                    if w == chain.next_name() {
                        chain.name()
                    } else {
                        w
                    }
                };
                spec.split(' ').map(word).collect::<Vec<_>>().join(" ")
            };
            cur.jumps
                .extend(self.jumps.iter().filter(to_next).map(|j| SeenJump {
                    spec: renamed(&j.spec),
                    ..j.clone()
                }));
        }
    }
}

fn split_counters(line: &str) -> Option<(Counters, &str)> {
    let Some(rest) = line.strip_prefix('[') else {
        return Some((Counters::default(), line));
    };
    let (inner, rest) = rest.split_once(']')?;
    let (p, b) = inner.split_once(':')?;
    Some((
        Counters {
            packets: p.parse().ok()?,
            bytes: b.parse().ok()?,
        },
        rest.trim_start(),
    ))
}

/// Split a rule specification into words, honouring iptables-save's double quotes.
fn tokenize(spec: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '\\' if quoted => word.push(chars.next()?),
                c if c.is_whitespace() && !quoted => break,
                c => word.push(c),
            }
        }
        if quoted {
            return None;
        }
        out.push(word);
    }
}

/// Recognise one of our counting rules; anything else in our chains is a stray.
fn recognise(chain: Chain, tokens: &[String]) -> Option<Rule> {
    let (mut src, mut dst, mut iin, mut iout, mut comment) = (None, None, None, None, None);
    let mut free = None;
    let mut it = tokens.iter().map(String::as_str);
    while let Some(tok) = it.next() {
        let slot = match tok {
            "-s" => &mut src,
            "-d" => &mut dst,
            "-i" => &mut iin,
            "-o" => &mut iout,
            "-m" => {
                match it.next()? {
                    "comment" => {}
                    "set" if free.is_none() => {
                        let ["--match-set", name, dir] = [it.next()?, it.next()?, it.next()?]
                        else {
                            return None;
                        };
                        free = Some((crate::model::parse_free_set_name(name)?, dir));
                    }
                    _ => return None,
                }
                continue;
            }
            "--comment" => &mut comment,
            _ => return None,
        };
        if slot.replace(it.next()?).is_some() {
            return None;
        }
    }
    let ctid: Ctid = comment?.strip_prefix(COMMENT_PREFIX)?.parse().ok()?;
    let host = |a: &str| -> Option<IpAddr> {
        let (ip, len) = a.split_once('/')?;
        let ip: IpAddr = ip.parse().ok()?;
        (len.parse::<u8>().ok()? == Family::of(&ip).host_prefix()).then_some(ip)
    };
    // Only a real interface name can be ours (and renders back the same).
    if [iin, iout]
        .iter()
        .flatten()
        .any(|i| !crate::model::valid_interface(i))
    {
        return None;
    }
    let (mut kind, ip, iface) = match (chain, src, dst, iin, iout) {
        (Chain::Forward, None, Some(d), None, None) => (Kind::ForwardIn, host(d)?, ""),
        (Chain::Forward, Some(s), None, None, None) => (Kind::ForwardOut, host(s)?, ""),
        (Chain::Output, None, Some(d), None, Some(o)) => (Kind::LocalIn, host(d)?, o),
        (Chain::Input, Some(s), None, Some(i), None) => (Kind::LocalOut, host(s)?, i),
        _ => return None,
    };
    if let Some((family, dir)) = free {
        kind = Kind::ALL
            .into_iter()
            .find(|k| k.is_free() && k.base() == kind)?;
        let wanted_dir = if kind.is_in() { "src" } else { "dst" };
        if family != Family::of(&ip) || dir != wanted_dir {
            return None;
        }
    }
    Some(Rule {
        ctid,
        ip,
        kind,
        iface: iface.to_string(),
    })
}

/// Recognise one of the ipset backend's set-matching rules (anything else in our chains,
/// such as a free rule of the layout before the free chains, is a stray).
fn recognise_set(chain: Chain, tokens: &[String]) -> Option<SetMatch> {
    let t: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let (opt, iface, rest) = match t.as_slice() {
        [opt @ ("-i" | "-o"), iface, rest @ ..] => (*opt, *iface, rest),
        _ => return None,
    };
    let (name, dir, jump) = match rest {
        ["-m", "set", "--match-set", name, dir] => (*name, *dir, None),
        ["-m", "set", "--match-set", name, dir, "-j", to] => (*name, *dir, Some(*to)),
        _ => return None,
    };
    let (kind, family) = crate::model::parse_set_name(name)?;
    let fits = matches!(
        (kind.is_in(), opt, dir),
        (true, "-o", "dst") | (false, "-i", "src")
    );
    let jump_fits = jump.is_none() || jump == kind.free_twin().and_then(Kind::free_chain);
    let ours = fits && jump_fits && !kind.is_free() && kind.chain() == chain;
    (ours && crate::model::valid_interface(iface)).then(|| SetMatch {
        kind,
        family,
        iface: iface.to_string(),
        free_jump: jump.is_some(),
    })
}

impl Current {
    /// The policy lines any batch must carry: legacy iptables zeroes the built-in chains'
    /// policy counters on every table replace, so they are given back as they were read.
    pub fn policies_to_give_back(&self) -> Vec<Policy> {
        if self.nf_tables {
            Vec::new()
        } else {
            self.policies.clone()
        }
    }

    /// The per-IP counting rules as counted traffic, for harvest and status.
    pub fn counted(&self) -> Vec<Counted> {
        self.rules.iter().filter_map(SeenRule::counted).collect()
    }
}

/// How many generation rules a chain may hold before a batch that deletes nothing else
/// flushes them (see [`Plan::render`]).
pub const GENERATION_RULES: usize = 16;

/// One change to the kernel's ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create one of our chains (only when it does not exist: a declaration flushes).
    NewChain(Chain),
    /// Delete a rule of ours (stray, stale or duplicate) by its specification.
    Delete { chain: &'static str, spec: String },
    /// Append one of our rules.
    Append(Wanted),
    /// Put our jump at the top of its built-in chain.
    InsertJump(Chain),
    /// Flush and delete one of our chains (its jumps deleted first): `uninstall --purge`, or
    /// the frozen old chain of a rebuild.
    RemoveChain(Chain),
    /// Rebuild one of our chains without stopping any counter that stays: its wanted rules
    /// (each carrying the counters its current copy was read with, or zero) go into the
    /// chain's `-NEXT` copy, which the same batch hooks in place of the old chain (whose
    /// jumps are deleted by the ops before). The old chain then counts no more: its final
    /// values are read, and [`Op::RemoveChain`] and [`Op::Rename`] finish the rebuild.
    Swap(Swap),
    /// The `-NEXT` copy takes its chain's name (jumps follow a rename).
    Rename(Chain),
    /// Flush and delete a `-NEXT` copy that is not in use.
    RemoveNext(Chain),
    /// Flush and delete the generation chain (`uninstall --purge`).
    RemoveGeneration,
}

/// A chain rebuilt under its `-NEXT` name: see [`Op::Swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub chain: Chain,
    /// The wanted rules in order, each with the counters it starts from.
    pub rules: Vec<(Wanted, Counters)>,
    /// Counting rules given to another container: (key, from, to). Each carries its
    /// counters over, so what it counts from the read on is charged to `to`.
    pub moved: Vec<(CounterId, Ctid, Ctid)>,
    /// How many of the rules are new (start from zero), and how many of the old chain's
    /// rules are not carried over.
    pub added: usize,
    pub removed: usize,
    /// The jumps to the old chain, which stay (behind [`GUARD`]) until the rebuild is
    /// finished.
    pub old_jumps: Vec<String>,
}

/// The rule a rebuild puts first in the old chain: in the batch that hooks the `-NEXT` copy,
/// it stops the old chain's rules from counting without deleting anything (with nf_tables a
/// batch that deletes a rule waits 10-20 ms for the kernel, one that only adds 2-3 ms); the
/// old jumps and chain go in the batch that finishes the rebuild.
pub const GUARD: &str = "-j RETURN";

/// A change to a free kind's chain (ipset backend). Its rules count nothing themselves (the
/// sets do), so a changed chain is flushed and filled again within the same batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeOp {
    /// Create the chain (`new`) or flush it, then append `rules`; it held `old` rules.
    Fill {
        kind: Kind,
        new: bool,
        rules: Vec<String>,
        old: usize,
    },
    /// Flush and delete it, at the end of the batch (no rule jumps to it by then).
    Remove { kind: Kind, old: usize },
}

/// The changes that make one family's kernel ruleset match what is accounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// The free kinds' chains.
    pub free: Vec<FreeOp>,
    /// The generation to write with the batch, and how many rules its chain holds (`None`:
    /// the chain must be created).
    pub generation: Option<(u64, Option<usize>)>,
    /// Policy lines to restore with the batch: legacy iptables zeroes the built-in chains'
    /// policy counters on every table replace, so they are given back as they were read.
    pub policies: Vec<Policy>,
}

impl Plan {
    /// Whether nothing of the accounting changes (a new generation alone is not a change).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.free.is_empty()
    }

    /// Write `generation` with this batch (the generation chain holds `rules`, if it
    /// exists).
    pub fn set_generation(&mut self, generation: u64, rules: Option<usize>) {
        self.generation = Some((generation, rules));
    }

    /// Whether the batch deletes a rule or chain. With nf_tables such a commit waits for
    /// the kernel's RCU grace period (10-20 ms), one that only adds does not (2-3 ms).
    fn deletes(&self) -> bool {
        !self.free.is_empty()
            || (self.ops.iter()).any(|o| {
                !matches!(
                    o,
                    Op::NewChain(_) | Op::Append(_) | Op::InsertJump(_) | Op::Swap(_)
                )
            })
    }

    pub fn added(&self) -> usize {
        self.ops
            .iter()
            .map(|o| match o {
                Op::Append(_) => 1,
                Op::Swap(s) => s.added,
                _ => 0,
            })
            .sum::<usize>()
            + (self.free.iter())
                .map(|f| match f {
                    FreeOp::Fill { rules, .. } => rules.len(),
                    FreeOp::Remove { .. } => 0,
                })
                .sum::<usize>()
    }

    pub fn deleted(&self) -> usize {
        self.ops
            .iter()
            .map(|o| match o {
                Op::Delete { chain, .. } if chain.starts_with("VZACCT-") => 1,
                Op::Swap(s) => s.removed,
                _ => 0,
            })
            .sum::<usize>()
            + (self.free.iter())
                .map(|f| match f {
                    FreeOp::Fill { old, .. } | FreeOp::Remove { old, .. } => *old,
                })
                .sum::<usize>()
    }

    /// The chains this plan rebuilds.
    pub fn swapped(&self) -> Vec<&Swap> {
        self.ops
            .iter()
            .filter_map(|o| match o {
                Op::Swap(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// What finishes the rebuilds of this plan once the old chains' final values are read.
    pub fn finish(&self) -> Plan {
        let ops: Vec<Op> = self
            .swapped()
            .iter()
            .flat_map(|s| {
                let jumps = s.old_jumps.iter().map(|spec| Op::Delete {
                    chain: s.chain.builtin(),
                    spec: spec.clone(),
                });
                jumps.chain([Op::RemoveChain(s.chain), Op::Rename(s.chain)])
            })
            .collect();
        let policies = if ops.is_empty() {
            Vec::new()
        } else {
            self.policies.clone()
        };
        Plan {
            ops,
            policies,
            ..Plan::default()
        }
    }

    /// The batch for `iptables-restore --noflush --counters`: new rules start at zero.
    pub fn render(&self) -> String {
        let mut out = String::from("*filter\n");
        for p in &self.policies {
            let c = p.counters;
            let _ = writeln!(out, ":{} {} [{}:{}]", p.chain, p.policy, c.packets, c.bytes);
        }
        for op in &self.ops {
            if let Op::NewChain(c) = op {
                let _ = writeln!(out, ":{} - [0:0]", c.name());
            }
        }
        // The free chains are filled first: the rules appended below may jump to them.
        for f in &self.free {
            if let FreeOp::Fill {
                kind, new, rules, ..
            } = f
            {
                let name = kind.free_chain().unwrap_or_default();
                let _ = writeln!(out, "{} {name}", if *new { "-N" } else { "-F" });
                for r in rules {
                    let _ = writeln!(out, "-A {name} {r}");
                }
            }
        }
        for op in &self.ops {
            let _ = match op {
                Op::NewChain(_) => Ok(()),
                Op::Delete { chain, spec } => writeln!(out, "-D {chain} {spec}"),
                Op::Append(w) => writeln!(out, "[0:0] -A {} {}", w.chain().name(), w.spec()),
                Op::InsertJump(c) => writeln!(out, "-I {} 1 -j {}", c.builtin(), c.name()),
                Op::RemoveChain(c) => writeln!(out, "-F {n}\n-X {n}", n = c.name()),
                Op::RemoveNext(c) => writeln!(out, "-F {n}\n-X {n}", n = c.next_name()),
                Op::Rename(c) => writeln!(out, "-E {} {}", c.next_name(), c.name()),
                Op::RemoveGeneration => writeln!(out, "-F {n}\n-X {n}", n = GENERATION_CHAIN),
                Op::Swap(sw) => {
                    let next = sw.chain.next_name();
                    let _ = writeln!(out, "-N {next}");
                    for (w, c) in &sw.rules {
                        let _ = writeln!(out, "[{}:{}] -A {next} {}", c.packets, c.bytes, w.spec());
                    }
                    let _ = writeln!(out, "-I {} 1 -j {next}", sw.chain.builtin());
                    writeln!(out, "-I {} 1 {GUARD}", sw.chain.name())
                }
            };
        }
        for f in &self.free {
            if let FreeOp::Remove { kind, .. } = f {
                let n = kind.free_chain().unwrap_or_default();
                let _ = writeln!(out, "-F {n}\n-X {n}");
            }
        }
        if let Some((g, rules)) = self.generation {
            // The new generation is appended: the newest a chain names counts. Older ones
            // go when the batch deletes anyway, or when GENERATION_RULES have piled up.
            let c = GENERATION_CHAIN;
            match rules {
                None => writeln!(out, "-N {c}"),
                Some(n) if n >= GENERATION_RULES || self.deletes() => writeln!(out, "-F {c}"),
                Some(_) => Ok(()),
            }
            .unwrap_or_default();
            let comment = crate::model::generation_comment(g);
            let _ = writeln!(out, "-A {c} -m comment --comment \"{comment}\"");
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// Everything of ours out of one family's table: every jump to our chains, then the chains
/// with their rules. Nothing else is touched.
pub fn teardown(current: &Current) -> Plan {
    let mut ops: Vec<Op> = current.jumps.iter().map(SeenJump::delete).collect();
    ops.extend(current.chains.iter().map(|c| Op::RemoveChain(*c)));
    if current.generation_chain.is_some() {
        ops.push(Op::RemoveGeneration);
    }
    let free: Vec<FreeOp> = (current.free_chains.iter())
        .map(|(kind, rules)| FreeOp::Remove {
            kind: *kind,
            old: rules.len(),
        })
        .collect();
    let policies = if (ops.is_empty() && free.is_empty()) || current.nf_tables {
        Vec::new()
    } else {
        current.policies.clone()
    };
    Plan {
        ops,
        free,
        policies,
        generation: None,
    }
}

/// Compare what is wanted with what is there. Rules already in place keep their counters;
/// missing ones are appended; strays, stale rules and duplicates are deleted; each of our
/// chains exists and is jumped to exactly once, from the top of its built-in chain. `free`:
/// the free kinds' chains wanted (ipset backend).
pub fn plan(desired: &[Wanted], free: &FreeChains, current: &Current) -> Plan {
    let mut ops = Vec::new();
    for chain in Chain::ALL {
        if !current.chains.contains(&chain) {
            ops.push(Op::NewChain(chain));
        }
    }
    let (keep, swapped) = kept(desired, current);
    // (A rebuilt chain's jumps go when the rebuild is finished: [`Plan::finish`].)
    for chain in Chain::ALL.into_iter().filter(|c| !swapped.contains(c)) {
        let jumps: Vec<&SeenJump> = current.jumps.iter().filter(|j| j.chain == chain).collect();
        let canonical = format!("-j {}", chain.name());
        let fine = matches!(jumps.as_slice(), [j] if j.position == 1 && j.spec == canonical);
        if !fine {
            ops.extend(jumps.into_iter().map(SeenJump::delete));
            ops.push(Op::InsertJump(chain));
        }
    }
    for chain in &swapped {
        ops.push(Op::Swap(swap(*chain, desired, current, &keep)));
    }
    let in_place = |c: Chain| !swapped.contains(&c);
    for (seen, _) in current.rules.iter().zip(&keep).filter(|(_, k)| !**k) {
        if in_place(seen.chain) {
            ops.push(Op::Delete {
                chain: seen.chain.name(),
                spec: seen.spec.clone(),
            });
        }
    }
    // Appends follow the desired order, skipping what is already in place.
    let mut wanted = counts(desired);
    for (seen, _) in current.rules.iter().zip(&keep).filter(|(_, k)| **k) {
        if let Some(n) = seen.wanted().as_ref().and_then(|w| wanted.get_mut(w)) {
            *n -= 1;
        }
    }
    for r in desired.iter().filter(|r| in_place(r.chain())) {
        if let Some(n) = wanted.get_mut(r).filter(|n| **n > 0) {
            *n -= 1;
            ops.push(Op::Append(r.clone()));
        }
    }
    Plan {
        free: plan_free_chains(free, current, !swapped.is_empty()),
        ops,
        policies: current.policies_to_give_back(),
        generation: None,
    }
}

/// The free chains that differ from `free`. One no longer wanted is deleted, unless a
/// chain is rebuilt in the same batch: its old copy may still jump there until the rebuild
/// is finished, so the free chain is only emptied, and goes at the next run.
fn plan_free_chains(free: &FreeChains, current: &Current, rebuilding: bool) -> Vec<FreeOp> {
    let mut ops = Vec::new();
    for (kind, rules) in free {
        let have = current.free_chains.get(kind);
        if have != Some(rules) {
            ops.push(FreeOp::Fill {
                kind: *kind,
                new: have.is_none(),
                rules: rules.clone(),
                old: have.map_or(0, Vec::len),
            });
        }
    }
    for (kind, have) in &current.free_chains {
        match (free.contains_key(kind), rebuilding) {
            (true, _) => {}
            (false, false) => ops.push(FreeOp::Remove {
                kind: *kind,
                old: have.len(),
            }),
            (false, true) if !have.is_empty() => ops.push(FreeOp::Fill {
                kind: *kind,
                new: false,
                rules: Vec::new(),
                old: have.len(),
            }),
            (false, true) => {}
        }
    }
    ops
}

/// How many copies of each rule are wanted.
fn counts(desired: &[Wanted]) -> HashMap<&Wanted, usize> {
    let mut wanted: HashMap<&Wanted, usize> = HashMap::with_capacity(desired.len());
    for r in desired {
        *wanted.entry(r).or_default() += 1;
    }
    wanted
}

/// Which of the current rules stay as they are, and which chains must be rebuilt: those
/// where a counting rule that is followed (no kept copy is the same rule) would go. Of
/// identical copies the LAST one is kept: `-D` by specification removes the first match,
/// so deleting the surplus copies in order leaves exactly the kept one in place.
fn kept(desired: &[Wanted], current: &Current) -> (Vec<bool>, BTreeSet<Chain>) {
    let mut wanted = counts(desired);
    let mut keep = vec![false; current.rules.len()];
    for (i, seen) in current.rules.iter().enumerate().rev() {
        if let Some(n) = seen
            .wanted()
            .as_ref()
            .and_then(|w| wanted.get_mut(w))
            .filter(|n| **n > 0)
        {
            *n -= 1;
            keep[i] = true;
        }
    }
    // The counting rules kept (`true`) or not.
    let rules = |kept: bool| {
        (current.rules.iter().zip(&keep))
            .filter(move |(_, k)| **k == kept)
            .filter_map(|(s, _)| s.rule.as_ref())
    };
    let kept_rules: HashSet<&Rule> = rules(true).collect();
    let swapped = (rules(false))
        .filter(|r| !kept_rules.contains(r))
        .map(|r| r.kind.chain())
        .collect();
    (keep, swapped)
}

/// The rebuild of `chain`: every wanted rule of it, carrying the counters of its current
/// copy (the one kept, or the rule of the same address and kind another container had).
fn swap(chain: Chain, desired: &[Wanted], current: &Current, keep: &[bool]) -> Swap {
    let in_chain = |s: &&SeenRule| s.chain == chain;
    let mut kept: HashMap<Wanted, Counters> = HashMap::new();
    let mut others: HashMap<CounterId, (Ctid, Counters)> = HashMap::new();
    for (seen, k) in current.rules.iter().zip(keep) {
        if seen.chain != chain {
            continue;
        }
        match (k, seen.wanted(), &seen.rule) {
            (true, Some(w), _) => {
                kept.insert(w, seen.counters);
            }
            (false, _, Some(r)) => {
                others.insert(r.seen_key(), (r.ctid.clone(), seen.counters));
            }
            _ => {}
        }
    }
    let mut sw = Swap {
        chain,
        rules: Vec::new(),
        moved: Vec::new(),
        added: 0,
        removed: current.rules.iter().filter(in_chain).count(),
        old_jumps: (current.jumps.iter())
            .filter(|j| j.chain == chain)
            .map(|j| j.spec.clone())
            .collect(),
    };
    for w in desired.iter().filter(|w| w.chain() == chain) {
        let counters = if let Some(c) = kept.remove(w) {
            sw.removed -= 1;
            c
        } else if let Wanted::Count(r) = w
            && let Some((from, c)) = others.remove(&r.seen_key())
            && from != r.ctid
        {
            sw.moved.push((r.seen_key(), from, r.ctid.clone()));
            sw.added += 1;
            c
        } else {
            sw.added += 1;
            Counters::default()
        };
        sw.rules.push((w.clone(), counters));
    }
    sw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(s: &str) -> Ctid {
        s.parse().unwrap()
    }

    fn accounted(list: &[(&str, &[&str])]) -> Accounted {
        list.iter()
            .map(|(c, ips)| (ct(c), ips.iter().map(|i| i.parse().unwrap()).collect()))
            .collect()
    }

    /// The IPv4 base rules of container 101 holding 10.0.0.1 on venet0.
    fn want_101() -> Vec<Wanted> {
        desired_rules(
            &accounted(&[("101", &["10.0.0.1"])]),
            Family::V4,
            "venet0",
            &Kind::BASE,
        )
    }

    /// A fixture of real tool output: `tests/fixtures/NAME.txt`.
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/", $name, ".txt"))
        };
    }

    const LEGACY_EMPTY: &str = fixture!("save/legacy-empty");
    const LEGACY_101: &str = fixture!("save/legacy-101");
    const NFT_101: &str = fixture!("save/nft-101");
    const NFT_V6_101: &str = fixture!("save/nft6-101");

    /// The rules of the free kinds (`[classes]`), as legacy and nft print them, read back
    /// as the kinds that wrote them, and in place against the same wanted rules.
    #[test]
    fn free_rules_read_back_on_both_variants() {
        let acc = accounted(&[("101", &["10.0.0.1"])]);
        for text in [
            fixture!("save/legacy-101-free"),
            fixture!("save/nft-101-free"),
        ] {
            let cur = parse_save(text).unwrap();
            let kinds: BTreeSet<Kind> = (cur.rules.iter())
                .filter_map(|r| r.rule.as_ref().map(|r| r.kind))
                .collect();
            assert_eq!(kinds, Kind::ALL.into_iter().collect(), "{text}");
            let want = desired_rules(&acc, Family::V4, "venet0", &Kind::ALL);
            assert!(plan(&want, &FreeChains::new(), &cur).is_empty(), "{text}");
            // Without classes, the free rules go (and the chain is rebuilt without them).
            let base = desired_rules(&acc, Family::V4, "venet0", &Kind::BASE);
            assert_eq!(plan(&base, &FreeChains::new(), &cur).deleted(), 4, "{text}");
        }
        // A free rule on the other family's set, or matching the wrong end, is a stray.
        for spec in [
            "-d 10.0.0.1/32 -m set --match-set vzacct-free6 src -m comment --comment \"ct:1\"",
            "-d 10.0.0.1/32 -m set --match-set vzacct-free4 dst -m comment --comment \"ct:1\"",
        ] {
            let t = tokenize(spec).unwrap();
            assert_eq!(recognise(Chain::Forward, &t), None, "{spec}");
            assert_eq!(recognise_set(Chain::Forward, &t), None, "{spec}");
        }
    }

    /// The ipset backend's free chains (sync with `free = 198.51.100.0/24 203.0.113.0/24`,
    /// saved by iptables-legacy and iptables-nft): each base rule jumps to its free twin's
    /// chain, which holds one rule per cover. Read back, they are in place; without classes
    /// the jumps and the chains go; the layout of before (free rules in the base chains) is
    /// replaced in one batch.
    #[test]
    fn free_chains_read_back_on_both_variants() {
        let covers: Vec<IpNet> = ["198.51.100.0/24", "203.0.113.0/24"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let (want, free) = set_rules(Family::V4, "venet0", &Kind::ALL, &covers);
        assert_eq!(
            free[&Kind::FreeForwardIn],
            [
                "-s 198.51.100.0/24 -m set --match-set vzacct-free4 src -m set --match-set vzacct-ffi4 dst",
                "-s 203.0.113.0/24 -m set --match-set vzacct-free4 src -m set --match-set vzacct-ffi4 dst",
            ]
        );
        assert_eq!(
            want.iter().map(Wanted::spec).collect::<Vec<_>>(),
            [
                "-o venet0 -m set --match-set vzacct-fi4 dst -j VZACCT-FFI",
                "-i venet0 -m set --match-set vzacct-fo4 src -j VZACCT-FFO",
                "-o venet0 -m set --match-set vzacct-li4 dst -j VZACCT-FLI",
                "-i venet0 -m set --match-set vzacct-lo4 src -j VZACCT-FLO",
            ]
        );
        let (base, none) = set_rules(Family::V4, "venet0", &Kind::BASE, &[]);
        assert!(none.is_empty());
        for text in [
            fixture!("save/legacy-101-free-sets"),
            fixture!("save/nft-101-free-sets"),
        ] {
            let cur = parse_save(text).unwrap();
            assert_eq!(cur.free_chains, free, "{text}");
            assert!(plan(&want, &free, &cur).is_empty(), "{text}");
            let off = plan(&base, &FreeChains::new(), &cur);
            assert_eq!((off.added(), off.deleted()), (4, 4 + 8), "{text}");
            let batch = off.render();
            let removals: Vec<&str> = batch
                .lines()
                .filter(|l| l.contains("FL") || l.contains("FF"))
                .collect();
            // The jumping rules go before the chains they jump to.
            assert_eq!(removals.len(), 4 + 8, "{batch}");
            assert!(
                removals[..4].iter().all(|l| l.starts_with("-D ")),
                "{batch}"
            );
            assert!(
                batch.ends_with("-F VZACCT-FLO\n-X VZACCT-FLO\nCOMMIT\n"),
                "{batch}"
            );
            // Other covers: the chains are flushed and filled again, the jumps stay.
            let fewer = set_rules(Family::V4, "venet0", &Kind::ALL, &covers[..1]).1;
            let p = plan(&want, &fewer, &cur);
            assert!(p.ops.is_empty(), "{:?}", p.ops);
            assert!(
                p.render()
                    .contains("-F VZACCT-FFI\n-A VZACCT-FFI -s 198.51.100.0/24 ")
            );
            assert_eq!((p.added(), p.deleted()), (4, 8));
        }
        for text in [
            fixture!("save/legacy-101-free-rules-in-chain"),
            fixture!("save/nft-101-free-rules-in-chain"),
        ] {
            let cur = parse_save(text).unwrap();
            let p = plan(&want, &free, &cur);
            // 4 free rules and 4 base rules without a jump out, 4 base rules with it in.
            assert_eq!((p.added(), p.deleted()), (4 + 8, 8), "{text}");
            let batch = p.render();
            let new = batch.find("-N VZACCT-FFI").unwrap();
            assert!(new < batch.find("-A VZACCT-FORWARD").unwrap(), "{batch}");
        }
        // Torn down: jumps, chains, then the free chains they jumped to.
        let cur = parse_save(fixture!("save/nft-101-free-sets")).unwrap();
        let batch = teardown(&cur).render();
        let forward = batch.find("-X VZACCT-FORWARD").unwrap();
        assert!(forward < batch.find("-X VZACCT-FFI").unwrap(), "{batch}");
    }

    #[test]
    fn teardown_removes_jumps_then_chains() {
        let current = parse_save(LEGACY_101).unwrap();
        let batch = teardown(&current).render();
        assert_eq!(
            batch
                .lines()
                .filter(|l| !l.starts_with(':'))
                .collect::<Vec<_>>(),
            [
                "*filter",
                "-D INPUT -j VZACCT-INPUT",
                "-D FORWARD -j VZACCT-FORWARD",
                "-D OUTPUT -j VZACCT-OUTPUT",
                "-F VZACCT-FORWARD",
                "-X VZACCT-FORWARD",
                "-F VZACCT-INPUT",
                "-X VZACCT-INPUT",
                "-F VZACCT-OUTPUT",
                "-X VZACCT-OUTPUT",
                "COMMIT",
            ]
        );
        assert!(teardown(&Current::default()).is_empty());
    }

    /// A generation is appended (an nf_tables commit that deletes nothing is 5x quicker);
    /// the older ones go with a batch that deletes anyway, or once 16 have piled up. A
    /// read takes the newest.
    #[test]
    fn generations_are_appended_and_flushed_with_deletions() {
        let stamp = |rules: Option<usize>, ops: Vec<Op>| {
            let mut p = Plan {
                ops,
                ..Plan::default()
            };
            p.set_generation(7, rules);
            p.render()
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let add = "-A VZACCT-GENERATION -m comment --comment \"generation:7\"";
        assert_eq!(stamp(None, vec![]), ["-N VZACCT-GENERATION", add, "COMMIT"]);
        assert_eq!(stamp(Some(1), vec![]), [add, "COMMIT"]);
        assert_eq!(stamp(Some(15), vec![Op::InsertJump(Chain::Input)]).len(), 3);
        assert_eq!(
            stamp(Some(16), vec![]),
            ["-F VZACCT-GENERATION", add, "COMMIT"]
        );
        let delete = Op::Delete {
            chain: "VZACCT-INPUT",
            spec: "-s 10.0.0.1/32 -i venet0".into(),
        };
        assert_eq!(
            stamp(Some(2), vec![delete])[1..],
            ["-F VZACCT-GENERATION", add, "COMMIT"]
        );
        let text = "*filter\n:VZACCT-GENERATION - [0:0]\n\
            [0:0] -A VZACCT-GENERATION -m comment --comment \"generation:5\"\n\
            [0:0] -A VZACCT-GENERATION -m comment --comment \"generation:6\"\nCOMMIT\n";
        let cur = parse_save(text).unwrap();
        assert_eq!((cur.generation_chain, cur.generation), (Some(2), Some(6)));
    }

    #[test]
    fn renders_the_exact_rules() {
        let rules = desired(
            &accounted(&[("101", &["10.0.0.1"])]),
            Family::V4,
            "venet0",
            &Kind::BASE,
        );
        let specs: Vec<String> = rules
            .iter()
            .map(|r| format!("-A {} {}", r.kind.chain().name(), r.spec()))
            .collect();
        assert_eq!(
            specs,
            [
                "-A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"",
                "-A VZACCT-FORWARD -s 10.0.0.1/32 -m comment --comment \"ct:101\"",
                "-A VZACCT-OUTPUT -d 10.0.0.1/32 -o venet0 -m comment --comment \"ct:101\"",
                "-A VZACCT-INPUT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"",
            ]
        );
    }

    #[test]
    fn desired_splits_families_and_orders_numerically() {
        let acc = accounted(&[("20", &["10.0.0.20"]), ("3", &["10.0.0.3", "2001:db8::3"])]);
        let v4 = desired(&acc, Family::V4, "venet0", &Kind::BASE);
        assert_eq!(v4.len(), 8);
        assert_eq!(v4[0].ctid.as_str(), "3");
        assert_eq!(v4[4].ctid.as_str(), "20");
        let v6 = desired(&acc, Family::V6, "venet0", &Kind::BASE);
        assert_eq!(v6.len(), 4);
        assert_eq!(
            v6[0].spec(),
            "-d 2001:db8::3/128 -m comment --comment \"ct:3\""
        );
    }

    #[test]
    fn empty_table_plans_chains_jumps_and_rules() {
        let cur = parse_save(LEGACY_EMPTY).unwrap();
        assert!(cur.chains.is_empty() && cur.jumps.is_empty() && cur.rules.is_empty());
        assert!(!cur.nf_tables);
        let want = want_101();
        let batch = plan(&want, &FreeChains::new(), &cur).render();
        assert_eq!(
            batch,
            "*filter\n\
             :INPUT ACCEPT [0:0]\n\
             :FORWARD ACCEPT [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n\
             :VZACCT-FORWARD - [0:0]\n\
             :VZACCT-INPUT - [0:0]\n\
             :VZACCT-OUTPUT - [0:0]\n\
             -I FORWARD 1 -j VZACCT-FORWARD\n\
             -I INPUT 1 -j VZACCT-INPUT\n\
             -I OUTPUT 1 -j VZACCT-OUTPUT\n\
             [0:0] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
             [0:0] -A VZACCT-FORWARD -s 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
             [0:0] -A VZACCT-OUTPUT -d 10.0.0.1/32 -o venet0 -m comment --comment \"ct:101\"\n\
             [0:0] -A VZACCT-INPUT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"\n\
             COMMIT\n"
        );
    }

    #[test]
    fn parses_real_legacy_and_nft_output_identically() {
        let legacy = parse_save(LEGACY_101).unwrap();
        let mut nft = parse_save(NFT_101).unwrap();
        assert!(nft.nf_tables && !legacy.nf_tables);
        nft.nf_tables = false;
        assert_eq!(legacy, nft);
        assert_eq!(legacy.chains.len(), 3);
        assert_eq!(legacy.jumps.len(), 3);
        assert!(legacy.jumps.iter().all(|j| j.position == 1));
        assert_eq!(legacy.rules.len(), 4);
        assert!(legacy.rules.iter().all(|r| r.rule.is_some()));
        let fwd_in = &legacy.rules[0];
        assert_eq!(fwd_in.rule.as_ref().unwrap().kind, Kind::ForwardIn);
        assert_eq!(
            fwd_in.counters,
            Counters {
                packets: 3,
                bytes: 384
            }
        );
    }

    /// The real output of the old iptables builds (tests/fixtures/oldtools): 1.4.7 ends
    /// every rule line in a space; all quote comments and escape `"` and `\`.
    #[test]
    fn parses_the_old_iptables_versions_output() {
        let want = want_101();
        for (name, text) in [
            ("1.4.7", fixture!("oldtools/iptables-1.4.7-101")),
            ("1.4.7-el6", fixture!("oldtools/iptables-1.4.7-el6-101")),
            ("1.4.21", fixture!("oldtools/iptables-1.4.21-101")),
            ("1.4.21-el7", fixture!("oldtools/iptables-1.4.21-el7-101")),
        ] {
            let cur = parse_save(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cur.chains.len(), 3, "{name}");
            // The foreign ACCEPT rule sits after our jump in FORWARD: ours stays first.
            assert!(
                cur.jumps
                    .iter()
                    .all(|j| j.position == 1 && j.spec.ends_with("VZACCT-FORWARD")
                        || j.chain != Chain::Forward),
                "{name}"
            );
            assert_eq!(cur.rules.len(), 4, "{name}");
            assert!(
                cur.rules
                    .iter()
                    .all(|r| r.rule.is_some() && !r.spec.ends_with(' ')),
                "{name}"
            );
            let c: Vec<(u64, u64)> = cur
                .rules
                .iter()
                .map(|r| (r.counters.packets, r.counters.bytes))
                .collect();
            assert_eq!(c, [(3, 384), (2, 256), (1, 128), (0, 0)], "{name}");
            assert!(
                plan(&want, &FreeChains::new(), &cur).is_empty(),
                "{name}: in place"
            );
        }
        for (name, text) in [
            ("1.4.7-el6", fixture!("oldtools/iptables-1.4.7-el6-sets")),
            ("1.4.21-el7", fixture!("oldtools/iptables-1.4.21-el7-sets")),
        ] {
            // The second rule matches the in-set by source: not one of ours, a stray.
            let cur = parse_save(text).unwrap();
            let m: Vec<Kind> = cur
                .rules
                .iter()
                .filter_map(|r| r.set_match.as_ref().map(|m| m.kind))
                .collect();
            assert_eq!(m, [Kind::ForwardIn], "{name}");
            assert_eq!(cur.rules[0].counters.bytes, 384, "{name}");
        }
    }

    #[test]
    fn in_place_rules_give_an_empty_plan_on_both_variants() {
        let want = want_101();
        for text in [LEGACY_101, NFT_101] {
            let p = plan(&want, &FreeChains::new(), &parse_save(text).unwrap());
            assert!(p.is_empty(), "{p:?}");
        }
        let want6 = desired_rules(
            &accounted(&[("101", &["2001:db8::1"])]),
            Family::V6,
            "venet0",
            &Kind::BASE,
        );
        assert!(plan(&want6, &FreeChains::new(), &parse_save(NFT_V6_101).unwrap()).is_empty());
    }

    #[test]
    fn foreign_rules_are_left_alone_and_our_jump_moves_to_the_top() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [7:700]\n:OUTPUT ACCEPT [0:0]\n\
                    :FOREIGN - [0:0]\n:VZACCT-FORWARD - [0:0]\n:VZACCT-INPUT - [0:0]\n:VZACCT-OUTPUT - [0:0]\n\
                    [1:100] -A INPUT -j VZACCT-INPUT\n\
                    [9:900] -A FORWARD -s 192.0.2.1/32 -j DROP\n\
                    [0:0] -A FORWARD -j VZACCT-FORWARD\n\
                    [0:0] -A FORWARD -j FOREIGN\n\
                    [0:0] -A OUTPUT -j VZACCT-OUTPUT\n\
                    [0:0] -A OUTPUT -j VZACCT-OUTPUT\n\
                    [5:5] -A FOREIGN -m comment --comment \"ct:101\" -j ACCEPT\n\
                    COMMIT\n";
        let cur = parse_save(text).unwrap();
        assert_eq!(cur.jumps.len(), 4);
        assert_eq!(cur.jumps[1].position, 2);
        let batch = plan(&[], &FreeChains::new(), &cur).render();
        assert_eq!(
            batch,
            "*filter\n\
             :INPUT ACCEPT [0:0]\n\
             :FORWARD DROP [7:700]\n\
             :OUTPUT ACCEPT [0:0]\n\
             -D FORWARD -j VZACCT-FORWARD\n\
             -I FORWARD 1 -j VZACCT-FORWARD\n\
             -D OUTPUT -j VZACCT-OUTPUT\n\
             -D OUTPUT -j VZACCT-OUTPUT\n\
             -I OUTPUT 1 -j VZACCT-OUTPUT\n\
             COMMIT\n"
        );
    }

    #[test]
    fn strays_stale_and_duplicates_are_deleted() {
        let text = "*filter\n:VZACCT-FORWARD - [0:0]\n:VZACCT-INPUT - [0:0]\n:VZACCT-OUTPUT - [0:0]\n\
                    [0:0] -A INPUT -j VZACCT-INPUT\n[0:0] -A FORWARD -j VZACCT-FORWARD\n[0:0] -A OUTPUT -j VZACCT-OUTPUT\n\
                    [3:300] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [1:100] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [2:200] -A VZACCT-FORWARD -d 10.0.0.9/32 -m comment --comment \"ct:109\"\n\
                    [0:0] -A VZACCT-FORWARD -p tcp -j ACCEPT\n\
                    [0:0] -A VZACCT-OUTPUT -d 10.0.0.1/32 -o eth7 -m comment --comment \"ct:101\"\n\
                    COMMIT\n";
        let cur = parse_save(text).unwrap();
        let want = want_101();
        let p = plan(&want, &FreeChains::new(), &cur);
        assert_eq!(p.deleted(), 4);
        assert_eq!(p.added(), 3);
        assert!(p.policies.is_empty(), "no policy lines were read");
        // Counting rules go (109's, and one on the wrong interface): their chains are
        // rebuilt, the kept rule (the last copy) carrying its counters over. The batch only
        // adds: the copies are hooked first, the old chains guarded (they count no more);
        // their jumps and rules go in the batch that finishes the rebuild.
        assert_eq!(
            p.render(),
            "*filter\n\
             -N VZACCT-FORWARD-NEXT\n\
             [1:100] -A VZACCT-FORWARD-NEXT -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
             [0:0] -A VZACCT-FORWARD-NEXT -s 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
             -I FORWARD 1 -j VZACCT-FORWARD-NEXT\n\
             -I VZACCT-FORWARD 1 -j RETURN\n\
             -N VZACCT-OUTPUT-NEXT\n\
             [0:0] -A VZACCT-OUTPUT-NEXT -d 10.0.0.1/32 -o venet0 -m comment --comment \"ct:101\"\n\
             -I OUTPUT 1 -j VZACCT-OUTPUT-NEXT\n\
             -I VZACCT-OUTPUT 1 -j RETURN\n\
             [0:0] -A VZACCT-INPUT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"\n\
             COMMIT\n"
        );
        assert!(!p.deletes());
        assert_eq!(
            p.finish().render(),
            "*filter\n-D FORWARD -j VZACCT-FORWARD\n-F VZACCT-FORWARD\n-X VZACCT-FORWARD\n\
             -E VZACCT-FORWARD-NEXT VZACCT-FORWARD\n\
             -D OUTPUT -j VZACCT-OUTPUT\n-F VZACCT-OUTPUT\n-X VZACCT-OUTPUT\n\
             -E VZACCT-OUTPUT-NEXT VZACCT-OUTPUT\nCOMMIT\n"
        );
        // Only a duplicate and a stray: deleted in place, nothing rebuilt.
        let text = "*filter\n:VZACCT-FORWARD - [0:0]\n:VZACCT-INPUT - [0:0]\n:VZACCT-OUTPUT - [0:0]\n\
                    [0:0] -A INPUT -j VZACCT-INPUT\n[0:0] -A FORWARD -j VZACCT-FORWARD\n[0:0] -A OUTPUT -j VZACCT-OUTPUT\n\
                    [3:300] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [1:100] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [0:0] -A VZACCT-FORWARD -p tcp -j ACCEPT\n\
                    COMMIT\n";
        let p = plan(&want, &FreeChains::new(), &parse_save(text).unwrap());
        assert_eq!(
            p.render(),
            "*filter\n\
             -D VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
             -D VZACCT-FORWARD -p tcp -j ACCEPT\n\
             [0:0] -A VZACCT-FORWARD -s 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
             [0:0] -A VZACCT-OUTPUT -d 10.0.0.1/32 -o venet0 -m comment --comment \"ct:101\"\n\
             [0:0] -A VZACCT-INPUT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"\n\
             COMMIT\n"
        );
        assert!(p.finish().is_empty());
    }

    /// An IP given to another container: its chain is rebuilt with the rule under the new
    /// owner, carrying the counters read, and the move is reported for the ledger.
    #[test]
    fn a_moved_rule_carries_its_counters() {
        let text = "*filter\n:VZACCT-FORWARD - [0:0]\n:VZACCT-INPUT - [0:0]\n:VZACCT-OUTPUT - [0:0]\n\
                    [0:0] -A INPUT -j VZACCT-INPUT\n[0:0] -A FORWARD -j VZACCT-FORWARD\n[0:0] -A OUTPUT -j VZACCT-OUTPUT\n\
                    [7:700] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    COMMIT\n";
        let want: Vec<Wanted> = desired(
            &accounted(&[("102", &["10.0.0.1"])]),
            Family::V4,
            "venet0",
            &Kind::BASE,
        )
        .into_iter()
        .filter(|r| r.kind == Kind::ForwardIn)
        .map(Wanted::Count)
        .collect();
        let p = plan(&want, &FreeChains::new(), &parse_save(text).unwrap());
        let sw = p.swapped();
        assert_eq!(sw.len(), 1);
        assert_eq!(
            sw[0].moved,
            [(
                CounterId::rule(Kind::ForwardIn, "10.0.0.1".parse().unwrap(), ""),
                ct("101"),
                ct("102")
            )]
        );
        assert_eq!(
            sw[0].rules[0].1,
            Counters {
                packets: 7,
                bytes: 700
            }
        );
    }

    /// A rebuild a killed command left half-done: the copy that is jumped to is the live
    /// chain (under the chain's name), the old chain's rules are frozen, and the pending
    /// ops finish the rebuild. A copy that nothing jumps to never counted: it just goes.
    #[test]
    fn a_half_done_rebuild_is_finished() {
        let text = "*filter\n:VZACCT-FORWARD - [0:0]\n:VZACCT-FORWARD-NEXT - [0:0]\n:VZACCT-INPUT - [0:0]\n\
                    :VZACCT-INPUT-NEXT - [0:0]\n:VZACCT-OUTPUT - [0:0]\n\
                    [0:0] -A INPUT -j VZACCT-INPUT\n[0:0] -A FORWARD -j VZACCT-FORWARD-NEXT\n[0:0] -A OUTPUT -j VZACCT-OUTPUT\n\
                    [9:900] -A VZACCT-FORWARD -d 10.0.0.9/32 -m comment --comment \"ct:109\"\n\
                    [5:500] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [6:600] -A VZACCT-FORWARD-NEXT -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [1:100] -A VZACCT-INPUT-NEXT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"\n\
                    COMMIT\n";
        let cur = parse_save(text).unwrap();
        let frozen: Vec<(String, u64)> = cur
            .frozen
            .iter()
            .map(|c| (c.key.to_string(), c.counters.bytes))
            .collect();
        assert_eq!(
            frozen,
            [
                ("forward_in 10.0.0.9".into(), 900),
                ("forward_in 10.0.0.1".into(), 500)
            ]
        );
        assert_eq!(cur.counted().len(), 1);
        assert_eq!(cur.counted()[0].counters.bytes, 600);
        assert_eq!(
            cur.pending,
            [
                Op::RemoveChain(Chain::Forward),
                Op::Rename(Chain::Forward),
                Op::RemoveNext(Chain::Input)
            ]
        );
        assert!(
            cur.jumps
                .iter()
                .all(|j| j.spec.ends_with(" VZACCT-FORWARD") || j.chain != Chain::Forward)
        );
        assert_eq!(
            Plan {
                ops: cur.pending.clone(),
                ..Plan::default()
            }
            .render(),
            "*filter\n-F VZACCT-FORWARD\n-X VZACCT-FORWARD\n-E VZACCT-FORWARD-NEXT VZACCT-FORWARD\n\
             -F VZACCT-INPUT-NEXT\n-X VZACCT-INPUT-NEXT\nCOMMIT\n"
        );
    }

    /// The same, as a rebuild leaves it now: the old chain still jumped to (after the
    /// copy), behind its guard. Its rules are frozen, its jump goes first; a chain whose
    /// first rule is a RETURN but that has no copy is not frozen (the rule is a stray).
    #[test]
    fn a_guarded_half_done_rebuild_is_finished() {
        let text = "*filter\n:VZACCT-FORWARD - [0:0]\n:VZACCT-FORWARD-NEXT - [0:0]\n:VZACCT-INPUT - [0:0]\n\
                    :VZACCT-OUTPUT - [0:0]\n\
                    [0:0] -A INPUT -j VZACCT-INPUT\n[0:0] -A FORWARD -j VZACCT-FORWARD-NEXT\n\
                    [0:0] -A FORWARD -j VZACCT-FORWARD\n[0:0] -A OUTPUT -j VZACCT-OUTPUT\n\
                    [3:300] -A VZACCT-FORWARD -j RETURN\n\
                    [5:500] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [6:600] -A VZACCT-FORWARD-NEXT -d 10.0.0.1/32 -m comment --comment \"ct:101\"\n\
                    [0:0] -A VZACCT-INPUT -j RETURN\n\
                    [1:100] -A VZACCT-INPUT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"\n\
                    COMMIT\n";
        let cur = parse_save(text).unwrap();
        let frozen: Vec<(String, u64)> = (cur.frozen.iter())
            .map(|c| (c.key.to_string(), c.counters.bytes))
            .collect();
        assert_eq!(frozen, [("forward_in 10.0.0.1".into(), 500)]);
        let live: Vec<u64> = cur.counted().iter().map(|c| c.counters.bytes).collect();
        assert_eq!(live, [100, 600]);
        assert_eq!(
            Plan {
                ops: cur.pending.clone(),
                ..Plan::default()
            }
            .render(),
            "*filter\n-D FORWARD -j VZACCT-FORWARD\n-F VZACCT-FORWARD\n-X VZACCT-FORWARD\n\
             -E VZACCT-FORWARD-NEXT VZACCT-FORWARD\nCOMMIT\n"
        );
        let forward: Vec<&str> = (cur.jumps.iter())
            .filter(|j| j.chain == Chain::Forward)
            .map(|j| j.spec.as_str())
            .collect();
        assert_eq!(forward, ["-j VZACCT-FORWARD"]);
        // The INPUT chain's RETURN is a stray of a live chain: deleted in place.
        let want = want_101();
        let p = plan(&want, &FreeChains::new(), &cur);
        assert!(
            p.render().contains("-D VZACCT-INPUT -j RETURN\n"),
            "{}",
            p.render()
        );
    }

    #[test]
    fn nf_tables_keeps_policy_counters_itself() {
        let text = NFT_101.replace(":FORWARD ACCEPT [0:0]", ":FORWARD ACCEPT [5:500]");
        let cur = parse_save(&text).unwrap();
        let p = plan(&[], &FreeChains::new(), &cur);
        assert!(!p.is_empty());
        assert!(p.policies.is_empty());
        let legacy =
            parse_save(&LEGACY_101.replace(":FORWARD ACCEPT [0:0]", ":FORWARD ACCEPT [5:500]"))
                .unwrap();
        assert!(
            plan(&[], &FreeChains::new(), &legacy)
                .render()
                .contains(":FORWARD ACCEPT [5:500]\n")
        );
    }

    #[test]
    fn lookalikes_are_not_ours() {
        for spec in [
            "-d 10.0.0.1/24 -m comment --comment \"ct:101\"",
            "-d 10.0.0.1/32 -m comment --comment \"ct:0\"",
            "-d 10.0.0.1/32 -m comment --comment \"ct:../x\"",
            "-d 10.0.0.1/32",
            "-d 10.0.0.1/32 -s 10.0.0.2/32 -m comment --comment \"ct:101\"",
            "-d 10.0.0.1/32 -m comment --comment \"ct:101\" -j DROP",
        ] {
            let toks = tokenize(spec).unwrap();
            assert_eq!(recognise(Chain::Forward, &toks), None, "{spec}");
        }
    }

    #[test]
    fn quoted_words_are_unescaped() {
        assert_eq!(
            tokenize(r#"-m comment --comment "a \"b\" c" -j X"#).unwrap(),
            ["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]
        );
        assert_eq!(tokenize("\"open"), None);
    }

    #[test]
    fn garbage_counters_are_an_error_with_the_line() {
        let e = parse_save("*filter\n[x:1] -A VZACCT-FORWARD -d 1.2.3.4/32\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
