//! Command-line interface: argument definitions (their doc comments are the `--help` text)
//! and the dispatch from a parsed command line to the commands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::commands::{self, Ctx};
use crate::config;
use crate::ctid::Ctid;
use crate::error::Error;

/// Per-container traffic accounting for OpenVZ hardware nodes.
///
/// vzacct counts every byte each container sends and receives with netfilter rules in its
/// own chains (VZACCT-FORWARD, VZACCT-INPUT, VZACCT-OUTPUT), keeps the list of accounted
/// containers in its state directory, and changes the kernel's rules in one
/// iptables-restore batch per address family. It never touches rules that are not its own.
#[derive(Debug, Parser)]
#[command(name = "vzacct", version)]
pub struct Cli {
    /// Config file (INI). Without it, VZACCT_CONFIG, else /etc/vz/vzacct.conf (a missing
    /// default file means all defaults).
    #[arg(long, global = true, value_name = "PATH", env = "VZACCT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Seconds to wait for another vzacct command to release the state lock.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60)]
    pub lock_timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Account a container's IPs: the ones given, or else those of IP_ADDRESS in its
    /// vzctl config (<conf_dir>/<CTID>.conf). Adding what is already accounted changes
    /// nothing; an IP accounted for another container moves to this one.
    Add {
        /// Container ID: a number 1..2147483644 or an OpenVZ 7 UUID.
        ctid: Ctid,
        /// IPv4 or IPv6 addresses (addr or addr/prefix).
        ips: Vec<String>,
    },
    /// Stop accounting the given IPs of a container, or all of them.
    Remove {
        /// Container ID.
        ctid: Ctid,
        /// The IPs to stop accounting; none means every IP of the container.
        ips: Vec<String>,
    },
    /// Make the kernel match what is accounted: recreate missing rules, chains and jumps,
    /// drop strays and duplicates. When the veinfo file exists, first account exactly its
    /// running containers and their live IPs.
    Sync,
    /// Show the accounted containers with their IPs, and whether their rules are in place.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Run a parsed command line.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Error> {
    // clap has already folded VZACCT_CONFIG into `config`.
    let config = config::load(cli.config.as_deref())?;
    let mut ctx = Ctx {
        config,
        lock_wait: Duration::from_secs(cli.lock_timeout),
        out,
        err,
    };
    match &cli.command {
        Command::Add { ctid, ips } => commands::add(&mut ctx, ctid, ips),
        Command::Remove { ctid, ips } => commands::remove(&mut ctx, ctid, ips),
        Command::Sync => commands::sync(&mut ctx),
        Command::Status { json } => commands::status(&mut ctx, *json),
    }
}
