//! Ethernet frames the tests send and look for: ARP, ICMP echo, and raw frames of a
//! local experimental EtherType.

use std::net::Ipv4Addr;

use super::super::MacAddr;

pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IP: u16 = 0x0800;
/// IEEE 802 local experimental EtherType 1: nothing in the kernel answers it.
pub const ETH_P_TEST: u16 = 0x88b5;

pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

pub fn dst(frame: &[u8]) -> MacAddr {
    MacAddr(frame[..6].try_into().unwrap())
}

pub fn src(frame: &[u8]) -> MacAddr {
    MacAddr(frame[6..12].try_into().unwrap())
}

/// "Who has `target`? Tell `ip` (`mac`)", broadcast.
pub fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&mac.octets());
    arp.extend_from_slice(&ip.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    eth(MacAddr([0xff; 6]), mac, ETH_P_ARP, &arp)
}

/// An ARP reply's sender (MAC, IP) and target (MAC, IP).
pub fn arp_reply(frame: &[u8]) -> Option<((MacAddr, Ipv4Addr), (MacAddr, Ipv4Addr))> {
    if frame.len() < 42 || ethertype(frame) != ETH_P_ARP || frame[20..22] != [0, 2] {
        return None;
    }
    let mac = |at: usize| MacAddr(frame[at..at + 6].try_into().unwrap());
    let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    Some(((mac(22), ip(28)), (mac(32), ip(38))))
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request from `src_ip` to `dst_ip`.
pub fn icmp_echo(
    (src_mac, src_ip): (MacAddr, Ipv4Addr),
    (dst_mac, dst_ip): (MacAddr, Ipv4Addr),
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src_ip.octets());
    ip.extend_from_slice(&dst_ip.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    eth(dst_mac, src_mac, ETH_P_IP, &ip)
}

/// An ICMP echo reply: its source address, id, sequence number and payload, once its
/// IP and ICMP checksums check out.
pub fn icmp_echo_reply(frame: &[u8]) -> Option<(Ipv4Addr, u16, u16, &[u8])> {
    if frame.len() < 14 + 28 || ethertype(frame) != ETH_P_IP {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 1 || total > ip.len() || checksum(&ip[..ihl]) != 0 {
        return None;
    }
    let icmp = &ip[ihl..total];
    if icmp[0] != 0 || checksum(icmp) != 0 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((src, id, seq, &icmp[8..]))
}
