//! The one place vzacct runs other programs: an argument vector (never a shell), stdin fed
//! explicitly, stdout and stderr captured, a deadline on every run, and failures turned into
//! errors an operator can act on.
//!
//! Every program runs in a process group of its own, so that a deadline ends it together with
//! anything it started (a wrapper script and its `sleep`), and nothing else. The deadline of
//! one run is the per-program limit ([`set_limits`], `program_timeout` of the config), cut
//! short by the command's overall deadline when it has one (a hook's `hook_timeout`).

use std::io::Write;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long programs may take: per run, and for the whole command.
#[derive(Debug, Clone, Copy)]
struct Limits {
    per_program: Duration,
    deadline: Option<Instant>,
}

static LIMITS: Mutex<Limits> = Mutex::new(Limits {
    per_program: Duration::from_secs(120),
    deadline: None,
});

/// The process groups of the programs running now (a hook's watchdog ends them).
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Set how long one program may run, and the instant by which every program of this
/// command must have ended (`None`: no overall deadline).
pub fn set_limits(per_program: Duration, deadline: Option<Instant>) {
    let mut l = LIMITS.lock().unwrap_or_else(|p| p.into_inner());
    *l = Limits {
        per_program,
        deadline,
    };
}

/// Time left before the command's overall deadline, if it has one.
pub fn remaining() -> Option<Duration> {
    let l = *LIMITS.lock().unwrap_or_else(|p| p.into_inner());
    l.deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
}

/// How long a program started now may run.
pub fn limit_now() -> Duration {
    let l = *LIMITS.lock().unwrap_or_else(|p| p.into_inner());
    remaining().map_or(l.per_program, |left| left.min(l.per_program))
}

/// End every program this process started that is still running (its whole process
/// group). For a hook whose time is up, just before it exits.
pub fn end_all() {
    let groups = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).clone();
    groups.into_iter().for_each(kill_group);
}

/// SIGKILL to the process group `pgid`.
fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; the group is one
    // this process created for its own child and has not reaped yet.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Ends a child's process group if it runs past its time. Must be finished before the
/// child is reaped, so the group id cannot have been reused when the signal is sent.
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
    pgid: i32,
}

impl Watchdog {
    fn start(child: &Child, limit: Duration) -> Watchdog {
        let pgid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match rx.recv_timeout(limit) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Our child's own group, not yet reaped.
                kill_group(pgid);
                true
            }
            _ => false,
        });
        Watchdog { stop, thread, pgid }
    }

    /// Stop watching; whether the time ran out (and the group was killed).
    fn finish(self) -> bool {
        let _ = self.stop.send(());
        let fired = self.thread.join().unwrap_or(true);
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| *g != self.pgid);
        fired
    }
}

/// A command for `program` in a process group of its own.
fn command(program: &str, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    cmd
}

/// What a program that ran out of time was most likely waiting for.
fn waiting_for(program: &str) -> &'static str {
    let name = program.rsplit('/').next().unwrap_or(program);
    if name.starts_with("iptables") || name.starts_with("ip6tables") {
        " (it waits for the xtables lock while another program holds it: is an iptables \
         command or a firewall service hanging?)"
    } else if name.starts_with("ipset") {
        " (it waits for the kernel's ipset subsystem)"
    } else {
        ""
    }
}

/// A program that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {program}: not found (install it, or set its path in the config)")]
    NotFound { program: String },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed {
        program: String,
        args: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error(
        "{program} {args} did not finish within {after_secs} s and was stopped{}",
        waiting_for(program)
    )]
    Timeout {
        program: String,
        args: String,
        /// Whole seconds, rounded up.
        after_secs: u64,
    },
    #[error("{program} was not run: this command's time budget is used up")]
    NoTimeLeft { program: String },
}

impl ProcessError {
    /// `program` could not be started.
    fn spawn(program: &str, source: std::io::Error) -> ProcessError {
        match source.kind() {
            std::io::ErrorKind::NotFound => ProcessError::NotFound {
                program: program.to_string(),
            },
            _ => ProcessError::Spawn {
                program: program.to_string(),
                source,
            },
        }
    }

    /// `program` ran and exited with `status`, having printed `stderr`.
    pub fn failed(program: &str, args: &str, status: ExitStatus, stderr: String) -> ProcessError {
        ProcessError::Failed {
            program: program.to_string(),
            args: args.to_string(),
            status,
            stderr: if stderr.is_empty() {
                "(no error output)".into()
            } else {
                stderr
            },
        }
    }

    fn timeout(program: &str, args: &[&str], after: Duration) -> ProcessError {
        ProcessError::Timeout {
            program: program.to_string(),
            args: args.join(" "),
            after_secs: after.as_secs() + u64::from(after.subsec_nanos() > 0),
        }
    }

    /// Whether the program was stopped by its deadline (or never started for lack of time).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ProcessError::Timeout { .. } | ProcessError::NoTimeLeft { .. }
        )
    }
}

/// What a successful run printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// How long the next run may take; an error when the command's time is already up.
fn time_for(program: &str) -> Result<Duration, ProcessError> {
    let t = limit_now();
    if t.is_zero() {
        return Err(ProcessError::NoTimeLeft {
            program: program.to_string(),
        });
    }
    Ok(t)
}

/// Run `program` with `args`, feeding `stdin` (or /dev/null), and wait for it.
/// A non-zero exit is an error carrying the program, its arguments, status and stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, ProcessError> {
    checked(program, args, run_any(program, args, stdin)?)
}

/// [`run`] with its standard input written by `feed` as the program reads it, so that a
/// large input (a batch of megabytes) is never held whole.
pub fn run_fed(program: &str, args: &[&str], feed: Feed) -> Result<Output, ProcessError> {
    checked(
        program,
        args,
        run_within(program, args, Some(feed), time_for(program)?)?,
    )
}

/// What writes a program's standard input (through a buffer): its errors are ignored, as a
/// child that stops reading early tells the real story by its exit status.
pub type Feed<'a> = &'a mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>;

/// The output of a run that exited 0; any other exit is an error as with [`run`].
pub(super) fn checked(
    program: &str,
    args: &[&str],
    (status, out): (ExitStatus, Output),
) -> Result<Output, ProcessError> {
    if !status.success() {
        return Err(ProcessError::failed(
            program,
            &args.join(" "),
            status,
            out.stderr,
        ));
    }
    Ok(out)
}

/// [`run`], but any exit status is returned with the output (for batches in which some
/// commands are expected to fail). Running out of time is still an error.
pub fn run_any(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<(ExitStatus, Output), ProcessError> {
    run_any_for(program, args, stdin, Duration::MAX)
}

/// [`run_any`] for a quick question (a probe): it may take at most `max`, and less when the
/// command's own time runs out first.
pub fn run_any_for(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    max: Duration,
) -> Result<(ExitStatus, Output), ProcessError> {
    let mut feed = stdin.map(bytes);
    let limit = time_for(program)?.min(max);
    run_within(program, args, feed.as_mut().map(|f| f as _), limit)
}

/// A [`Feed`] of fixed bytes.
fn bytes(data: &[u8]) -> impl FnMut(&mut dyn Write) -> std::io::Result<()> + '_ {
    move |w| w.write_all(data)
}

/// Start `cmd`. A program file that is open for writing somewhere cannot be executed
/// (ETXTBSY): a package upgrade replacing it, or, in a threaded process, a file written a
/// moment ago whose descriptor another thread's child has not closed yet. That passes within
/// milliseconds, so it is tried again a few times before it counts as a failure.
fn spawn(cmd: &mut Command, program: &str) -> Result<Child, ProcessError> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10 * tries));
            }
            other => return other.map_err(|source| ProcessError::spawn(program, source)),
        }
    }
}

/// [`run_any`] with the time it may take; `stdin` written by a feed, or /dev/null.
fn run_within(
    program: &str,
    args: &[&str],
    stdin: Option<Feed>,
    limit: Duration,
) -> Result<(ExitStatus, Output), ProcessError> {
    let piped = if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let (mut child, dog) = start(program, args, piped, limit)?;
    // Both pipes are drained on threads (the watchdog's kill closes them) while this one
    // feeds stdin, so a child that writes a lot before reading cannot deadlock us, and the
    // input is written as it is made.
    let (pipe, out, err) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (stdout, stderr) = std::thread::scope(|scope| {
        let out = scope.spawn(move || read_all(out));
        let err = scope.spawn(move || read_all(err));
        if let (Some(feed), Some(pipe)) = (stdin, pipe) {
            // A broken pipe means the child exited early; its status tells the real story.
            // Dropping the writer closes the pipe: the child sees the end of its input.
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, pipe);
            let _ = feed(&mut w).and_then(|()| w.flush());
        }
        let joined = |t: std::thread::ScopedJoinHandle<'_, Vec<u8>>| t.join().unwrap_or_default();
        (joined(out), joined(err))
    });
    let status = reap(child, dog, program, args, limit)?;
    Ok((
        status,
        Output {
            stdout,
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        },
    ))
}

/// Start `program` with `args`, `stdin` as its standard input, stdout and stderr piped,
/// watched for `limit`.
fn start(
    program: &str,
    args: &[&str],
    stdin: Stdio,
    limit: Duration,
) -> Result<(Child, Watchdog), ProcessError> {
    let mut cmd = command(program, args);
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(&mut cmd, program)?;
    let dog = Watchdog::start(&child, limit);
    Ok((child, dog))
}

/// Reap `child` once it has exited, its watchdog stopped before (see [`exited`]): its exit
/// status, or the timeout error when the watchdog ended it.
fn reap(
    mut child: Child,
    dog: Watchdog,
    program: &str,
    args: &[&str],
    limit: Duration,
) -> Result<ExitStatus, ProcessError> {
    // Stop the watchdog before the child is reaped.
    exited(&child);
    let fired = dog.finish();
    let status = child.wait().map_err(|source| ProcessError::Spawn {
        program: program.to_string(),
        source,
    })?;
    if fired {
        return Err(ProcessError::timeout(program, args, limit));
    }
    Ok(status)
}

/// Start `program` with `args` and do not wait for it: a process group of its own, exactly
/// `env` as its environment, `stdin` as its standard input (a file it inherits, such as a
/// lock it holds for as long as it runs), stdout and stderr /dev/null, so that it goes on,
/// and can write nowhere that breaks, if this process dies. [`wait_for`] waits for it.
pub fn start_detached(
    program: &str,
    args: &[&str],
    env: &[(String, String)],
    stdin: std::fs::File,
) -> Result<Child, ProcessError> {
    let mut cmd = command(program, args);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn(&mut cmd, program)
}

/// Wait at most `limit` for a child of [`start_detached`]: its exit status, or `None` when
/// it still runs (it is left running, never killed).
pub fn wait_for(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until `child` has exited, without reaping it: until it is reaped its process
/// group id cannot be reused, so its watchdog may still signal the group safely.
fn exited(child: &Child) {
    let pid: libc::id_t = child.id();
    loop {
        // SAFETY: waitid(2) writes only into the siginfo_t we own; WNOWAIT leaves the child
        // to be reaped by `Child::wait`.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Read one of a child's pipes to its end.
fn read_all(pipe: Option<impl std::io::Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf);
    }
    buf
}

/// Run `program` with `args` (stdin /dev/null) and hand each line of its stdout to `each`
/// as it comes, so a large output is never held whole. A non-zero exit is an error as with
/// [`run`]; an error of `each` stops the reading (closing the pipe ends the child) and is
/// returned inside `Ok`.
pub fn run_lines<E>(
    program: &str,
    args: &[&str],
    each: impl FnMut(&str) -> Result<(), E>,
) -> Result<Result<(), E>, ProcessError> {
    lines_within(program, args, each, time_for(program)?)
}

/// [`run_lines`] with the time it may take.
fn lines_within<E>(
    program: &str,
    args: &[&str],
    mut each: impl FnMut(&str) -> Result<(), E>,
    limit: Duration,
) -> Result<Result<(), E>, ProcessError> {
    use std::io::BufRead;
    let (mut child, dog) = start(program, args, Stdio::null(), limit)?;
    // stderr is drained by a thread, so a chatty child cannot block on it.
    let err_reader = (child.stderr.take()).map(|e| std::thread::spawn(move || read_all(Some(e))));
    let mut outcome = Ok(());
    let mut read_error = None;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    if let Err(e) = each(line.trim_end_matches(['\n', '\r'])) {
                        outcome = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    read_error = Some(e);
                    break;
                }
            }
        }
    }
    // Reading stopped early: the closed pipe ends the child (SIGPIPE), or its deadline does.
    let status = reap(child, dog, program, args, limit)?;
    if let Some(source) = read_error {
        return Err(ProcessError::Spawn {
            program: program.to_string(),
            source,
        });
    }
    let stderr = err_reader
        .and_then(|t| t.join().ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    if outcome.is_ok() && !status.success() {
        return Err(ProcessError::failed(
            program,
            &args.join(" "),
            status,
            stderr,
        ));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_stdin_and_captures_stdout() {
        let out = run("cat", &[], Some(b"hello")).unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn a_fed_input_is_written_as_it_is_made_while_the_output_is_read() {
        // Far more than a pipe holds, both ways: neither side may wait for the other.
        let mut feed = |w: &mut dyn Write| {
            for i in 0..100_000 {
                writeln!(w, "line {i}")?;
            }
            Ok(())
        };
        let out = run_fed("cat", &[], &mut feed).unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 100_000);
        assert_eq!(text.lines().last(), Some("line 99999"));
        let e = run_fed("sh", &["-c", "head -c 10 >/dev/null; exit 3"], &mut feed).unwrap_err();
        assert!(e.to_string().contains("exit"), "{e}");
    }

    #[test]
    fn a_detached_program_gets_its_environment_and_input_and_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, "from stdin").unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {} && echo \"$X$HOME\" >> {}",
            out.display(),
            out.display()
        );
        let mut child = start_detached(
            "/bin/sh",
            &["-c", &script],
            &[("X".into(), "x".into())],
            std::fs::File::open(&input).unwrap(),
        )
        .unwrap();
        let status = wait_for(&mut child, Duration::from_secs(10)).unwrap();
        assert!(status.unwrap().success());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "from stdinx\n");
        let mut child = start_detached(
            "/bin/sleep",
            &["5"],
            &[],
            std::fs::File::open(&input).unwrap(),
        )
        .unwrap();
        assert_eq!(
            wait_for(&mut child, Duration::from_millis(100)).unwrap(),
            None
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn missing_program_is_named() {
        let e = run("vzacct-no-such-program", &[], None).unwrap_err();
        assert!(matches!(e, ProcessError::NotFound { .. }));
        assert!(e.to_string().contains("vzacct-no-such-program"));
    }

    #[test]
    fn failure_carries_args_and_stderr() {
        let e = run("sh", &["-c", "echo boom >&2; exit 3"], None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("boom") && msg.contains("exit status: 3"),
            "{msg}"
        );
    }

    #[test]
    fn lines_come_one_by_one_and_failures_are_reported() {
        let mut got = Vec::new();
        let r = run_lines("sh", &["-c", "printf 'a\\nb c\\n\\nd'"], |l| {
            got.push(l.to_string());
            Ok::<(), String>(())
        })
        .unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(got, ["a", "b c", "", "d"]);
        let r = run_lines("sh", &["-c", "yes | head -c 10000000"], |l| {
            if l == "y" { Err("stop") } else { Ok(()) }
        })
        .unwrap();
        assert_eq!(r, Err("stop"));
        let e = run_lines("sh", &["-c", "echo out; echo boom >&2; exit 4"], |_| {
            Ok::<(), ()>(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(matches!(
            run_lines("vzacct-no-such-program", &[], |_| Ok::<(), ()>(())),
            Err(ProcessError::NotFound { .. })
        ));
    }

    /// A program that never ends is stopped at its deadline, together with a child of its
    /// own that keeps the output pipe open, and the error names it.
    #[test]
    fn a_hanging_program_is_stopped_with_its_children() {
        let t = Duration::from_millis(600);
        for script in [
            "sleep 30",
            "sleep 30 & sleep 31",
            "trap '' PIPE TERM; sleep 30",
        ] {
            let started = Instant::now();
            let e = run_within("sh", &["-c", script], Some(&mut bytes(b"x")), t).unwrap_err();
            let took = started.elapsed();
            assert!(
                took >= t && took < Duration::from_secs(5),
                "{script}: {took:?}"
            );
            assert!(e.is_timeout(), "{e}");
            assert_eq!(
                e.to_string(),
                format!("sh -c {script} did not finish within 1 s and was stopped")
            );
            let started = Instant::now();
            let e = lines_within(
                "sh",
                &["-c", &format!("echo a; {script}")],
                |_| Ok::<(), ()>(()),
                t,
            )
            .unwrap_err();
            assert!(
                e.is_timeout() && started.elapsed() < Duration::from_secs(5),
                "{e}"
            );
        }
        // A reader that stops early is not left waiting for a child that ignores SIGPIPE.
        let started = Instant::now();
        let r = lines_within(
            "sh",
            &["-c", "trap '' PIPE; while :; do echo y || sleep 1; done"],
            |_| Err("enough"),
            t,
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(r, Err(ProcessError::Timeout { .. }) | Ok(Err("enough"))),
            "{r:?}"
        );
        assert!(waiting_for("/sbin/iptables-restore").contains("xtables lock"));
        assert_eq!(waiting_for("ip"), "");
    }
}
