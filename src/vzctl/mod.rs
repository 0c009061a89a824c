//! What vzctl tells about the containers: their config files (which IPs each one is given)
//! and `/proc/vz/veinfo` (which are running, with which IPs), read but never written.

pub mod ctconf;
pub mod veinfo;
