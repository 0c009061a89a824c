//! The one place vzacct runs other programs: an argument vector (never a shell), stdin fed
//! explicitly, stdout and stderr captured, and failures turned into errors an operator can act on.

use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

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
}

/// What a successful run printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Run `program` with `args`, feeding `stdin` (or /dev/null), and wait for it.
/// A non-zero exit is an error carrying the program, its arguments, status and stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, ProcessError> {
    let (status, out) = run_any(program, args, stdin)?;
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
/// commands are expected to fail).
pub fn run_any(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<(ExitStatus, Output), ProcessError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|source| ProcessError::spawn(program, source))?;
    // Feed stdin from a thread so a child that writes a lot before reading cannot deadlock us.
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || pipe.write_all(&data)))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(|source| ProcessError::Spawn {
            program: program.to_string(),
            source,
        })?;
    // A broken pipe here means the child exited early; its status tells the real story.
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Ok((
        out.status,
        Output {
            stdout: out.stdout,
            stderr,
        },
    ))
}

/// Run `program` with `args` (stdin /dev/null) and hand each line of its stdout to `each`
/// as it comes, so a large output is never held whole. A non-zero exit is an error as with
/// [`run`]; an error of `each` stops the reading (closing the pipe ends the child) and is
/// returned inside `Ok`.
pub fn run_lines<E>(
    program: &str,
    args: &[&str],
    mut each: impl FnMut(&str) -> Result<(), E>,
) -> Result<Result<(), E>, ProcessError> {
    use std::io::{BufRead, Read};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProcessError::spawn(program, source))?;
    let spawn_err = |source| ProcessError::Spawn {
        program: program.to_string(),
        source,
    };
    // stderr is drained by a thread, so a chatty child cannot block on it.
    let err_reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = e.read_to_end(&mut buf);
            buf
        })
    });
    let mut outcome = Ok(());
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
                    let _ = child.wait();
                    return Err(spawn_err(e));
                }
            }
        }
    }
    let status = child.wait().map_err(spawn_err)?;
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
}
