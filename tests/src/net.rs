//! Free loopback ports, for configs that must name a port before the process binds it.

/// A UDP port and a TCP port free on 127.0.0.1 just now (both released on return).
pub fn free_ports() -> (u16, u16) {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let ports = (
        udp.local_addr().expect("addr").port(),
        tcp.local_addr().expect("addr").port(),
    );
    drop((udp, tcp));
    ports
}
