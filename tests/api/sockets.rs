//! Connections that hold the gateway's sockets without sending requests or without reading
//! the answers: silent ones, ones with half an HTTP/2 preface, pipelining clients that never
//! read, many from one address, a flood past the listener's cap and past the process's file
//! descriptors. The ops listener must stay reachable through all of it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    eventually, free_port, fresh_database, serve, serve_with_fd_limit, spawn_sandbox, wait_until_up,
};

/// Opens `count` connections to `port` that send nothing.
async fn silent(port: u16, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    sockets
}

/// How long `/healthz` at `url` takes over a new connection, if it answers 200.
async fn healthz(url: &str) -> Option<Duration> {
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    answer.status().is_success().then(|| started.elapsed())
}

/// Waits for the server to close `socket`: true when it did within `within`.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(within, socket.read(&mut buffer)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn silent_sockets_are_closed_and_a_flood_leaves_the_ops_port_answering() {
    let sandbox = spawn_sandbox().await;
    let database = fresh_database().await;
    let (client_port, ops_port) = (free_port(), free_port());
    let settings = [
        ("BANKGATE__HTTP__HEADER_READ_TIMEOUT", "2s"),
        ("BANKGATE__HTTP__BODY_READ_TIMEOUT", "2s"),
        ("BANKGATE__HTTP__MAX_CONNECTIONS", "200"),
    ];
    let _gateway =
        serve_with_fd_limit(&sandbox, &database, (client_port, ops_port), &settings, 512);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let ops_url = format!("http://127.0.0.1:{ops_port}");
    wait_until_up(&ops_url).await;

    // A silent connection, and one that sends only part of the HTTP/2 preface, are closed
    // once the header read timeout has passed.
    let mut quiet = TcpStream::connect(("127.0.0.1", client_port))
        .await
        .unwrap();
    let mut half = TcpStream::connect(("127.0.0.1", client_port))
        .await
        .unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut quiet, Duration::from_secs(5)).await);
    assert!(closed_within(&mut half, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // A body that stops half-way is refused once the body read timeout has passed.
    let mut trickle = TcpStream::connect(("127.0.0.1", client_port))
        .await
        .unwrap();
    trickle
        .write_all(
            b"POST /v1/webhooks/psd2/dnb HTTP/1.1\r\nhost: gateway\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"event_id\":",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), trickle.read(&mut answer))
        .await
        .expect("an answer before the client gives up")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..read]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // 2 000 silent sockets, ten times the cap and four times the descriptors the process may
    // open: the ops port answers throughout.
    let flood = silent(client_port, 2000).await;
    for _ in 0..5 {
        let took = healthz(&ops_url).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(1)),
            "ops /healthz during the flood: {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(flood);
    // Once the flood is gone the client port serves again.
    crate::helpers::eventually(Duration::from_secs(10), || async {
        healthz(&client_url).await.map(|_| ())
    })
    .await;
}

/// Past the file descriptor limit, accepting fails (EMFILE): the gateway keeps serving the
/// connections it has, and accepts again once descriptors are free.
#[tokio::test]
async fn out_of_file_descriptors_the_gateway_serves_what_it_has() {
    let sandbox = spawn_sandbox().await;
    let database = fresh_database().await;
    let (client_port, ops_port) = (free_port(), free_port());
    let settings = [
        ("BANKGATE__HTTP__HEADER_READ_TIMEOUT", "2s"),
        ("BANKGATE__HTTP__MAX_CONNECTIONS", "5000"),
    ];
    let _gateway =
        serve_with_fd_limit(&sandbox, &database, (client_port, ops_port), &settings, 256);
    let ops_url = format!("http://127.0.0.1:{ops_port}");
    wait_until_up(&ops_url).await;
    // One kept-alive connection to the ops port, opened before the descriptors run out.
    let kept = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let answer = kept.get(format!("{ops_url}/healthz")).send().await.unwrap();
    assert!(answer.status().is_success());

    let flood = silent(client_port, 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let answer = kept
            .get(format!("{ops_url}/healthz"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        assert!(
            answer.is_ok_and(|a| a.status().is_success()),
            "the open connection is still served"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(flood);
    crate::helpers::eventually(Duration::from_secs(15), || async {
        healthz(&ops_url).await.map(|_| ())
    })
    .await;
}

/// A connection to `port` from the loopback address `from` (all of 127/8 is this machine).
async fn connect_from(from: &str, port: u16, receive_buffer: Option<u32>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap()
}

/// A client from `from` that pipelines requests for the OpenAPI document (24 KB each, far
/// more in all than the kernel buffers) and never reads an answer: the gateway's writes to
/// it stall. Returns what keeps the connection open.
async fn never_reads(
    from: &str,
    port: u16,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let stream = connect_from(from, port, Some(4096)).await;
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let request = b"GET /v1/openapi.yaml HTTP/1.1\r\nhost: gateway\r\n\r\n";
        for _ in 0..600 {
            if write.write_all(request).await.is_err() {
                return;
            }
        }
        // Held open, unread, until the test ends or the gateway closes it.
        std::future::pending::<()>().await;
    });
    (read, writer)
}

/// Clients that pipeline requests and never read the answers are closed once the gateway's
/// writes to them have stalled for the write timeout, so they cannot hold the listener's
/// connections (they did, past any idle timeout, before); and one address holds at most its
/// share of them, so others are served meanwhile.
#[tokio::test]
async fn clients_that_never_read_or_crowd_from_one_address_cannot_hold_the_listener() {
    let sandbox = spawn_sandbox().await;
    let database = fresh_database().await;
    let (client_port, ops_port) = (free_port(), free_port());
    let settings = [
        ("BANKGATE__HTTP__IDLE_TIMEOUT", "1s"),
        ("BANKGATE__HTTP__WRITE_TIMEOUT", "2s"),
        ("BANKGATE__HTTP__MAX_CONNECTIONS", "6"),
        ("BANKGATE__HTTP__MAX_CONNECTIONS_PER_PEER", "4"),
    ];
    let _gateway = serve(&sandbox, &database, client_port, ops_port, &settings, None);
    wait_until_up(&format!("http://127.0.0.1:{ops_port}")).await;

    // Four from one address, its share; a fifth from it is closed on arrival.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(never_reads("127.0.0.2", client_port).await);
    }
    let mut fifth = connect_from("127.0.0.2", client_port, None).await;
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await);
    // Two more from another address fill the listener: a third client is turned away.
    for _ in 0..2 {
        held.push(never_reads("127.0.0.3", client_port).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut turned_away = connect_from("127.0.0.4", client_port, None).await;
    assert!(closed_within(&mut turned_away, Duration::from_secs(1)).await);

    // Past the write timeout the stalled connections are gone and a new client is served.
    eventually(Duration::from_secs(15), || async {
        let mut client = connect_from("127.0.0.4", client_port, None).await;
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut answer))
            .await
            .ok()?
            .ok()?;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    drop(held);
}
