//! Names and hardware addresses of the links we create. Pure.

/// Host-side veth name: `veth` + 8 hex digits of a hash of (containerId, ifname), so a retried
/// ADD or a DEL finds the same link without any state.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a 64 over "<id>\0<ifname>", folded to 32 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain(std::iter::once(0)).chain(ifname.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("veth{:08x}", ((h >> 32) ^ h) as u32)
}

/// Turn random bytes into a locally administered unicast MAC.
pub fn local_unicast_mac(mut b: [u8; 6]) -> [u8; 6] {
    b[0] = (b[0] & 0xfe) | 0x02;
    b
}

pub fn mac_to_string(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_veth_name("0123456789abcdef", "eth1"));
        assert_ne!(a, host_veth_name("0123456789abcdeg", "eth0"));
        // The separator matters: ("ab","c") vs ("a","bc").
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        let names: std::collections::HashSet<_> = (0..10_000).map(|i| host_veth_name(&format!("ctr{i}"), "eth0")).collect();
        assert_eq!(names.len(), 10_000);
    }

    #[test]
    fn macs() {
        let m = local_unicast_mac([0xff; 6]);
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac_to_string(&[0x0a, 0x58, 0, 1, 0xab, 0xff]), "0a:58:00:01:ab:ff");
    }
}
