//! vzacct: per-container traffic accounting for OpenVZ hardware nodes.
//!
//! The library holds every concern in its own module; `main.rs` only parses arguments and
//! hands over to [`cli::run`].

pub mod atomic;
pub mod cli;

pub mod commands;

pub mod backend;
pub mod export;
pub mod ledger;
pub mod vzctl;

pub mod clock;
pub mod config;
pub mod ctid;
pub mod model;
