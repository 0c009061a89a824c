//! vzacct: per-container traffic accounting for OpenVZ hardware nodes.
//!
//! The library holds every concern in its own module; `main.rs` only parses arguments and
//! hands over to [`cli::run`].

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod csvlog;
pub mod ctconf;
pub mod ctid;
pub mod db;
pub mod error;
pub mod hooks;
pub mod install;
pub mod ipset;
pub mod kernel;
pub mod ledger;
pub mod model;
pub mod netfilter;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod routes;
pub mod ruleset;
pub mod store;
pub mod veinfo;
