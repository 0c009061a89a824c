//! Quotas and their thresholds at work: `vzacct set CTID --quota`, the threshold step of
//! every `vzacct dump`, the hidden `vzacct threshold-run` wrapper that runs the operator's
//! action program, and what `check` reports of it.
//!
//! Exactly once per container, threshold and period. The dump first records each attempt
//! in the ledger as `running` (one committed transaction), holding a per-threshold lock
//! file (`<state_dir>/thresholds/<ctid>.<period start>.<threshold>.lock`, flock) from
//! before that commit. It then starts `vzacct threshold-run` in a process group of its own
//! with that lock file as its standard input, so the wrapper holds the lock for as long as
//! it lives, whatever happens to the dump. The wrapper runs the program with its deadline
//! and, when it exits 0, writes the receipt (`.done`, atomically) before it exits; a failure
//! goes to `.failed`. A later dump that finds a `running` record marks it done when the
//! receipt exists, leaves it while the lock is held (the wrapper still runs), and otherwise
//! runs it again. So a kill of the dump, a reboot or a repeated dump never runs an action
//! twice; only a kill of the wrapper (or a crash of the node) between the program's exit
//! and its receipt can (RELIABILITY.md).

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::backend::process;
use crate::ledger::period::Span;
use crate::ledger::quota::{self, Direction};
use crate::ledger::thresholds::{self, Attempt, Quota, State};

/// The directory of the lock files, receipts and failure notes, in the state dir.
pub const DIR: &str = "thresholds";

/// How much longer than the program's deadline a dump waits for the wrapper.
const WRAPPER_MARGIN: Duration = Duration::from_secs(5);

/// What `set` does to a container's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaArg {
    /// `--quota 500GiB`
    Bytes(u64),
    /// `--quota none`
    None,
}

/// `--quota` as `set` takes it.
pub fn parse_quota(v: &str) -> Result<QuotaArg, String> {
    match v {
        "none" => Ok(QuotaArg::None),
        _ => quota::parse_bytes(v).map(QuotaArg::Bytes),
    }
}

/// `vzacct set CTID --quota Q [--quota-direction D]`, the quota part: only the ledger is
/// written; `who` names the container in what is said. The caller holds the exclusive lock.
pub(crate) fn set_quota(
    loaded: &Loaded,
    ctid: &Ctid,
    who: &str,
    arg: Option<QuotaArg>,
    direction: Option<Direction>,
) -> Result<String, Error> {
    let now = thresholds::quotas(loaded)?.remove(ctid);
    let new = match (arg, direction) {
        (Some(QuotaArg::None), Some(_)) => {
            return Err(Error::Invalid(
                "--quota none takes no --quota-direction".into(),
            ));
        }
        (Some(QuotaArg::None), None) => None,
        (Some(QuotaArg::Bytes(bytes)), d) => Some(Quota {
            bytes,
            direction: d.or(now.map(|q| q.direction)).unwrap_or(Direction::Total),
        }),
        (None, Some(d)) => match now {
            Some(q) => Some(Quota { direction: d, ..q }),
            None => {
                return Err(Error::Invalid(format!(
                    "container {ctid} has no quota: give one with --quota (e.g. --quota 500GiB)"
                )));
            }
        },
        (None, None) => return Ok(String::new()),
    };
    thresholds::set_quota(loaded, ctid, new)?;
    Ok(match new {
        None if now.is_none() => format!("{who} has no quota"),
        None => format!("{who}: quota taken away"),
        Some(q) => format!(
            "{who}: quota {} ({} bytes) of {} traffic per billing period",
            quota::format_bytes(q.bytes),
            q.bytes,
            q.direction
        ),
    })
}

/// Every container's period that holds today, with its figures (the closed days as saved
/// and the open day): for the quotas and the Prometheus gauges.
pub(crate) fn period_figures(
    ctx: &Ctx,
    ledger: &Ledger,
    loaded: &Loaded,
    wanted: &dyn Fn(&Ctid) -> bool,
) -> Result<BTreeMap<Ctid, (Span, Figures)>, Error> {
    let periods = super::billing::Periods::new(ctx, loaded, &[])?;
    let today = ctx.today();
    let mut out = BTreeMap::new();
    for (ctid, c) in ledger.containers.iter().filter(|(id, _)| wanted(id)) {
        let span = periods.schedule(ctid).period(today);
        out.insert(ctid.clone(), (span, periods.figures(ctid, c, span)?));
    }
    Ok(out)
}

/// The file of a threshold's lock, receipt (`done`) or failure note (`failed`).
fn file(state_dir: &Path, a: &Attempt, what: &str) -> PathBuf {
    state_dir.join(DIR).join(format!(
        "{}.{}.{}.{what}",
        a.ctid, a.period.start, a.threshold
    ))
}

/// Take a threshold's lock without waiting; `None` when someone holds it (its wrapper).
fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let f = crate::ledger::store::open_lock_file(path)?;
    match fs2::FileExt::try_lock_exclusive(&f) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => Ok(None),
        Err(e) => Err(e),
    }
}

/// An attempt recorded as `running`, with the lock it holds until its wrapper has it.
pub(crate) struct ToRun {
    attempt: Attempt,
    lock: File,
}

/// What the threshold step of a dump found and started.
#[derive(Default)]
pub(crate) struct Step {
    /// Attempts to run, in order (container, period, threshold).
    pub to_run: Vec<ToRun>,
    /// Lines for the dump's output.
    pub said: Vec<String>,
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Invalid(format!("cannot use {}: {e}", path.display()))
}

/// The threshold step of a dump, under the exclusive lock, after the ledger is written:
/// settle what earlier attempts left, find the thresholds crossed anew, and record every
/// attempt to make as `running` (one committed transaction, each holding its lock) before
/// anything runs. Thresholds crossed with no action program configured are done at once.
pub(crate) fn plan(
    ctx: &Ctx,
    loaded: &Loaded,
    quotas: &std::collections::HashMap<Ctid, thresholds::Quota>,
    periods: &BTreeMap<Ctid, (Span, Figures)>,
) -> Result<Step, Error> {
    let mut step = Step::default();
    let today = ctx.today();
    let records = thresholds::records(loaded, today)?;
    if quotas.is_empty() && records.is_empty() {
        return Ok(step);
    }
    let dir = ctx.config.state_dir.join(DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io_error(&dir, e))?;
    let now = ctx.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let state_dir = &ctx.config.state_dir;
    let mut write = Vec::new();
    let mut finished = Vec::new();
    let mut log = Vec::new();
    for (ctid, q) in quotas {
        let Some((span, figures)) = periods.get(ctid) else {
            continue;
        };
        let (inb, outb) = quota::billable(figures);
        let used = q.direction.of(inb, outb);
        let mine: Vec<&Attempt> = records
            .iter()
            .filter(|a| &a.ctid == ctid && a.period.start == span.start)
            .collect();
        let known = mine.iter().map(|a| a.threshold).collect();
        // Earlier attempts not done: settled below, once their lock is held.
        let mut again: Vec<Attempt> = if ctx.config.on_threshold.is_some() {
            mine.iter()
                .filter(|a| a.state != State::Done)
                .map(|a| (*a).clone())
                .collect()
        } else {
            Vec::new()
        };
        for threshold in quota::crossed(used, q.bytes, &ctx.config.thresholds, &known) {
            let a = Attempt {
                ctid: ctid.clone(),
                period: *span,
                threshold,
                direction: q.direction,
                used,
                quota: q.bytes,
                state: State::Running,
                attempts: 0,
                first_at: now.clone(),
                last_at: now.clone(),
                last_error: None,
            };
            log.push(format!(
                "{now} threshold ct={ctid} {threshold}% of quota {} ({} bytes, {}) crossed in \
                 period {}..{}: used {used} bytes ({}%); {}",
                quota::format_bytes(q.bytes),
                q.bytes,
                q.direction,
                span.start,
                span.end,
                quota::percent(used, q.bytes),
                match &ctx.config.on_threshold {
                    Some(p) => format!("running {}", p.display()),
                    None => "no on_threshold program configured".into(),
                }
            ));
            again.push(a);
        }
        again.sort_by_key(|a| a.threshold);
        for mut a in again {
            if ctx.config.on_threshold.is_none() {
                a.state = State::Done;
                a.last_at = now.clone();
                write.push(a);
                continue;
            }
            let lock_path = file(state_dir, &a, "lock");
            let Some(lock) = try_lock(&lock_path).map_err(|e| io_error(&lock_path, e))? else {
                // Its wrapper still runs (started by a dump that was killed, or is waiting).
                if a.state == State::Running && a.attempts > 0 {
                    step.said.push(format!(
                        "container {}: the action for threshold {}% still runs (attempt {})",
                        a.ctid, a.threshold, a.attempts
                    ));
                }
                continue;
            };
            // With the lock held no wrapper of this threshold runs: a receipt now is final.
            if a.attempts > 0 && file(state_dir, &a, "done").exists() {
                a.state = State::Done;
                a.last_error = None;
                finished.push(a.clone());
                write.push(a);
                continue;
            }
            if a.state == State::Running && a.attempts > 0 {
                a.last_error = Some(
                    std::fs::read_to_string(file(state_dir, &a, "failed"))
                        .map(|t| t.trim().to_string())
                        .unwrap_or_else(|_| {
                            "the attempt was interrupted (the dump or the node stopped) before \
                             the action finished"
                                .into()
                        }),
                );
            }
            for what in ["failed", "done"] {
                let p = file(state_dir, &a, what);
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_error(&p, e));
                    }
                    _ => {}
                }
            }
            a.state = State::Running;
            a.attempts += 1;
            a.last_at = now.clone();
            write.push(a.clone());
            step.to_run.push(ToRun { attempt: a, lock });
        }
    }
    // The hook log line goes first: a kill before the commit writes it again at the next
    // dump (at least once), never loses it.
    for line in log {
        if let Err(e) = super::hook::append_log(&ctx.config.hook_log, &line) {
            step.said.push(format!(
                "cannot write the hook log {}: {e}",
                ctx.config.hook_log.display()
            ));
        }
    }
    thresholds::record(loaded, &write)?;
    for a in &finished {
        step.said.push(format!(
            "container {}: the action for threshold {}% has run (attempt {})",
            a.ctid, a.threshold, a.attempts
        ));
        remove_files(state_dir, a);
    }
    for a in write
        .iter()
        .filter(|a| a.state == State::Done && a.attempts == 0)
    {
        step.said.push(format!(
            "container {}: threshold {}% of its quota crossed (logged; no on_threshold program)",
            a.ctid, a.threshold
        ));
    }
    Ok(step)
}

/// A done threshold's files go (best effort: a leftover is harmless).
fn remove_files(state_dir: &Path, a: &Attempt) {
    for what in ["done", "failed", "lock"] {
        let _ = std::fs::remove_file(file(state_dir, a, what));
    }
}

/// The environment of the action program.
fn environment(a: &Attempt) -> Vec<(String, String)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("CTID", a.ctid.as_str()),
        ("PERIOD_START", &a.period.start.to_string()),
        ("PERIOD_END", &a.period.end.to_string()),
        ("DIRECTION", a.direction.name()),
        ("USED_BYTES", &a.used.to_string()),
        ("QUOTA_BYTES", &a.quota.to_string()),
        ("PERCENT", &quota::percent(a.used, a.quota).to_string()),
        ("THRESHOLD", &a.threshold.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Run the attempts of a [`Step`], one after the other, each through `vzacct
/// threshold-run` within its deadline; the state lock is not held meanwhile. Then record
/// what came of them (under the lock again; if it cannot be had, the next dump finds out
/// from the receipts). Returns lines for the dump's output and warnings.
pub(crate) fn act(ctx: &Ctx, step: Step) -> Result<(Vec<String>, Vec<String>), Error> {
    let mut said = step.said;
    let mut warnings = Vec::new();
    if step.to_run.is_empty() {
        return Ok((said, warnings));
    }
    let Some(program) = ctx.config.on_threshold.clone() else {
        return Ok((said, warnings));
    };
    let me = std::env::current_exe()
        .map_err(|e| Error::Invalid(format!("cannot tell where this vzacct binary is: {e}")))?;
    let state_dir = &ctx.config.state_dir;
    let timeout = ctx.config.on_threshold_timeout;
    let mut outcomes = Vec::new();
    for ToRun { mut attempt, lock } in step.to_run {
        let receipt = file(state_dir, &attempt, "done");
        let timeout_text = timeout.to_string();
        let args = [
            "threshold-run",
            "--receipt",
            &receipt.to_string_lossy(),
            "--timeout",
            &timeout_text,
            "--",
            &program.to_string_lossy(),
        ]
        .map(str::to_string);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started =
            process::start_detached(&me.to_string_lossy(), &args, &environment(&attempt), lock);
        let outcome = match started {
            Err(e) => Err(chain(&e)),
            Ok(mut child) => {
                match process::wait_for(&mut child, Duration::from_secs(timeout) + WRAPPER_MARGIN) {
                    Ok(Some(_)) if receipt.exists() => Ok(true),
                    Ok(Some(status)) => {
                        Err(std::fs::read_to_string(file(state_dir, &attempt, "failed"))
                            .map(|t| t.trim().to_string())
                            .unwrap_or_else(|_| format!("vzacct threshold-run ended ({status})")))
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(format!("cannot wait for vzacct threshold-run: {e}")),
                }
            }
        };
        let who = format!(
            "container {}: the action for threshold {}% (attempt {})",
            attempt.ctid, attempt.threshold, attempt.attempts
        );
        match outcome {
            Ok(true) => {
                said.push(format!("{who} ran: {}", program.display()));
                attempt.state = State::Done;
                attempt.last_error = None;
                outcomes.push(attempt);
            }
            Ok(false) => warnings.push(format!(
                "{who} still runs after {timeout} s; the next dump records how it ended"
            )),
            Err(why) => {
                let why = why.replace('\n', " | ");
                warnings.push(format!(
                    "{who} failed: {why}; it is run again at the next dump"
                ));
                let line = format!(
                    "{} threshold ct={} {}% action failed (attempt {}): {why}; run again at the \
                     next dump",
                    ctx.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                    attempt.ctid,
                    attempt.threshold,
                    attempt.attempts
                );
                let _ = super::hook::append_log(&ctx.config.hook_log, &line);
                attempt.state = State::Failed;
                attempt.last_error = Some(why);
                outcomes.push(attempt);
            }
        }
    }
    if outcomes.is_empty() {
        return Ok((said, warnings));
    }
    let locked = match store::lock(state_dir, ctx.lock_wait) {
        Ok(l) => l,
        Err(e) => {
            warnings.push(format!(
                "the threshold actions' outcome is recorded by the next dump: {}",
                chain(&e)
            ));
            return Ok((said, warnings));
        }
    };
    let (_, loaded) = locked.load_scope(&Scope::Containers(Vec::new()))?;
    // Only where the record is still this attempt: a dump that ran meanwhile may have
    // settled it, or started the next attempt.
    let now_recorded = thresholds::records(&loaded, ctx.today())?;
    outcomes.retain(|o| {
        now_recorded.iter().any(|r| {
            r.ctid == o.ctid
                && r.period == o.period
                && r.threshold == o.threshold
                && r.attempts == o.attempts
                && r.state == State::Running
        })
    });
    thresholds::record(&loaded, &outcomes)?;
    drop(loaded);
    for a in outcomes.iter().filter(|a| a.state == State::Done) {
        remove_files(state_dir, a);
    }
    drop(locked);
    Ok((said, warnings))
}

/// `vzacct threshold-run --receipt FILE --timeout SECS -- PROGRAM` (hidden; started by a
/// dump): run PROGRAM with this process's environment, stdin /dev/null, within SECS; when
/// it exits 0, write FILE atomically; when it fails, write why into FILE's `.failed`
/// sibling. The exit status says which.
pub fn threshold_run(receipt: &Path, timeout: u64, program: &Path) -> Result<(), Error> {
    let (Some(dir), Some(name)) = (
        receipt.parent(),
        receipt.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(Error::Invalid(format!(
            "receipt {} names no file",
            receipt.display()
        )));
    };
    let failed_name = match name.strip_suffix(".done") {
        Some(stem) => format!("{stem}.failed"),
        None => format!("{name}.failed"),
    };
    process::set_limits(Duration::from_secs(timeout.max(1)), None);
    match process::run(&program.to_string_lossy(), &[], None) {
        Ok(_) => {
            crate::atomic::write_atomic(dir, name, b"done\n").map_err(|e| io_error(receipt, e))
        }
        Err(e) => {
            let why = chain(&e);
            let _ = crate::atomic::write_atomic(dir, &failed_name, format!("{why}\n").as_bytes());
            Err(Error::Invalid(why))
        }
    }
}

/// `check`'s line on thresholds: the actions of the current periods that failed or are
/// still to be settled.
pub(crate) fn check_item(ctx: &Ctx, loaded: &Loaded) -> Result<String, String> {
    let quotas = thresholds::quotas(loaded).map_err(|e| chain(&e))?;
    let records = thresholds::records(loaded, ctx.today()).map_err(|e| chain(&e))?;
    let failing: Vec<String> = records
        .iter()
        .filter(|a| a.state != State::Done && a.last_error.is_some())
        .map(|a| {
            format!(
                "container {} threshold {}% (period {}..{}): attempt {} failed at {}: {}",
                a.ctid,
                a.threshold,
                a.period.start,
                a.period.end,
                a.attempts,
                a.last_at,
                a.last_error.as_deref().unwrap_or("")
            )
        })
        .collect();
    let done = records.iter().filter(|a| a.state == State::Done).count();
    let pending = records.iter().filter(|a| a.state != State::Done).count();
    if failing.is_empty() {
        Ok(format!(
            "{} container(s) with a quota; {done} threshold action(s) done in the current \
             periods{}",
            quotas.len(),
            if pending > 0 {
                format!(", {pending} running")
            } else {
                String::new()
            }
        ))
    } else {
        Err(format!(
            "{} failing (run again at every dump): {}",
            failing.len(),
            failing.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_arguments() {
        assert_eq!(parse_quota("none"), Ok(QuotaArg::None));
        assert_eq!(parse_quota("1TB"), Ok(QuotaArg::Bytes(1_000_000_000_000)));
        assert!(parse_quota("lots").is_err());
        let f = Figures {
            in_bytes: 3,
            out_bytes: 4,
            ..Figures::default()
        };
        assert_eq!(quota::billable(&f), (3, 4));
    }

    /// The wrapper writes the receipt only when the program exits 0, and why it failed
    /// otherwise; a program past its deadline is stopped and counts as failed.
    #[test]
    fn the_wrapper_writes_its_receipt_only_on_success() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = dir.path().join("101.2027-02-01.80.done");
        let failed = dir.path().join("101.2027-02-01.80.failed");
        threshold_run(&receipt, 5, Path::new("/bin/true")).unwrap();
        assert_eq!(std::fs::read_to_string(&receipt).unwrap(), "done\n");
        std::fs::remove_file(&receipt).unwrap();
        assert!(threshold_run(&receipt, 5, Path::new("/bin/false")).is_err());
        assert!(!receipt.exists());
        assert!(
            std::fs::read_to_string(&failed)
                .unwrap()
                .contains("/bin/false")
        );
        let script = dir.path().join("slow");
        std::fs::write(&script, "#!/bin/sh\nsleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let started = std::time::Instant::now();
        let e = threshold_run(&receipt, 1, &script).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(!receipt.exists());
    }
}
