//! The ledger's figures handed to the outside: the daily CSV files for billing and the
//! node_exporter textfile for Prometheus, written from the ledger, never read back.

pub mod csv;
pub mod prometheus;
