//! HAProxy (Debian's `haproxy`) in front of the sandbox's PSD2 listener, configured as an
//! operator would: health checks of the bank's consent service, retries on connection
//! failures and empty answers, keep-alive to the server. The peer a gateway is measured
//! against for the latency it adds.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Haproxy {
    process: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Haproxy {
    /// Proxies `127.0.0.1:<free port>` to `upstream`, waiting until it accepts connections.
    pub async fn start(upstream: SocketAddr) -> Haproxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = format!(
            "global
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 3s
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch

frontend psd2
    bind 127.0.0.1:{port}
    default_backend sandbox

backend sandbox
    option httpchk
    http-check send meth GET uri /dnb/v1/consents/haproxy-health-check/status hdr X-Request-ID 00000000-0000-4000-8000-000000000000
    http-check expect status 403
    server psd2 {upstream} check inter 2s fall 3 rise 2
"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("haproxy.cfg");
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .status()
            .expect("haproxy runs (apt-get install haproxy)");
        assert!(check.success(), "the HAProxy configuration is valid");
        let process = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Haproxy {
            process,
            addr,
            _dir: dir,
        }
    }
}
