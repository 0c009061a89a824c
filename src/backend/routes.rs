//! Whether packets to an address would leave through the venet interface. With ipset, a
//! stopped container's set elements can count nothing once vzctl removed its routes, so a
//! hook may leave them for the next dump to harvest instead of reading every set now.

use std::net::IpAddr;

use crate::backend::process::{self, ProcessError};

/// The addresses of `ips` that the node routes through `iface` (one `ip -batch` run; an
/// unreachable address is simply not routed there).
pub fn routed_via(
    ip_program: &str,
    ips: &[IpAddr],
    iface: &str,
) -> Result<Vec<IpAddr>, ProcessError> {
    if ips.is_empty() {
        return Ok(Vec::new());
    }
    // The loopback interface always exists (up or not): without its line, `ip` itself
    // failed (the batch goes on past an unreachable address, and then exits 1).
    let mut batch = String::from("link show dev lo\n");
    for ip in ips {
        batch.push_str(&format!("route get {ip}\n"));
    }
    let (status, out) = process::run_any(
        ip_program,
        &["-o", "-force", "-batch", "-"],
        Some(batch.as_bytes()),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("lo:"))
    {
        return Err(ProcessError::failed(
            ip_program,
            "-o -force -batch - (route get)",
            status,
            out.stderr,
        ));
    }
    Ok(parse(&text, ips, iface))
}

/// Pure: read `ip -o route get` lines ("[TYPE] ADDR [from ...] dev IFACE ...").
fn parse(text: &str, ips: &[IpAddr], iface: &str) -> Vec<IpAddr> {
    let mut via = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // "ADDR ..." or "TYPE ADDR ..." (local, broadcast, unreachable...).
        let Some(addr) = words.iter().take(2).find_map(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        let dev = words.windows(2).find(|w| w[0] == "dev").map(|w| w[1]);
        if dev == Some(iface) && ips.contains(&addr) && !via.contains(&addr) {
            via.push(addr);
        }
    }
    via
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_program_that_answers_nothing_is_an_error() {
        let ips = ["10.0.0.1".parse().unwrap()];
        for prog in ["true", "false"] {
            assert!(routed_via(prog, &ips, "venet0").is_err(), "{prog}");
        }
        assert_eq!(
            routed_via("true", &[], "venet0").unwrap(),
            Vec::<IpAddr>::new()
        );
    }

    #[test]
    fn asks_the_real_ip() {
        // Read-only: `ip route get` changes nothing.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(routed_via("ip", &[lo], "lo").unwrap(), vec![lo]);
        assert_eq!(
            routed_via("ip", &[lo], "venet0").unwrap(),
            Vec::<IpAddr>::new()
        );
    }

    #[test]
    fn reads_route_get_lines() {
        let ips: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "10.0.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let text = "10.0.0.1 dev venet0 uid 0 \\    cache \n\
                    2001:db8::1 from :: dev venet0 src ::1 metric 1024 pref medium\n\
                    10.0.0.3 via 192.0.2.1 dev eth0 src 192.0.2.9 uid 0 \\    cache \n\
                    10.0.0.9 dev venet0 uid 0\n\
                    local 10.0.0.2 dev lo src 10.0.0.2 uid 0 \\    cache <local> \n";
        assert_eq!(parse(text, &ips, "venet0"), vec![ips[0], ips[2]]);
        assert_eq!(parse(text, &ips, "venet1"), Vec::<IpAddr>::new());
        assert_eq!(parse(text, &ips, "lo"), vec![ips[1]]);
    }
}
