//! The error every command returns: one variant per concern, each carrying its cause, so
//! `main` can print the whole chain once.

use crate::backend::netfilter::NetfilterError;
use crate::config::ConfigError;
use crate::ctid::CtidError;
use crate::export::csv::CsvError;
use crate::ledger::store::StateError;
use crate::vzctl::ctconf::CtConfError;
use crate::vzctl::veinfo::VeinfoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ctid(#[from] CtidError),
    #[error(transparent)]
    CtConf(#[from] CtConfError),
    #[error(transparent)]
    Veinfo(#[from] VeinfoError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netfilter(#[from] NetfilterError),
    #[error(transparent)]
    Ipset(#[from] crate::backend::netfilter::IpsetError),
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error(transparent)]
    Prometheus(#[from] crate::export::prometheus::PrometheusError),
    #[error(transparent)]
    Clock(#[from] crate::clock::ClockError),
    #[error(transparent)]
    Install(#[from] crate::commands::install::InstallError),
    #[error("cannot read the kernel's boot id from {path}")]
    BootId {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config's time zone cannot be loaded.
    #[error("config file {path}: [storage] timezone = {value} cannot be used")]
    Timezone {
        path: std::path::PathBuf,
        value: String,
        #[source]
        source: crate::clock::ClockError,
    },
    /// A request that cannot be carried out as asked; the text says why and what to do.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl From<crate::backend::BackendError> for Error {
    fn from(e: crate::backend::BackendError) -> Error {
        match e {
            crate::backend::BackendError::Netfilter(e) => Error::Netfilter(e),
            crate::backend::BackendError::Ipset(e) => Error::Ipset(e),
        }
    }
}

/// Print an error and every cause below it, one per line, for an operator to read.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str("\n  caused by: ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
