//! Sockets cannot be held hostage: connections that never finish their HTTP/2 preface or
//! request headers are closed, the listeners cap their connections, and a gRPC peer that
//! stops answering PINGs is dropped; good clients keep being answered throughout.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

const MAGIC: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const HEADERS: u8 = 0x1;
const ACK: u8 = 0x1;

/// The whole client preface: the magic and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    [MAGIC.to_vec(), frame(SETTINGS, 0, 0, &[])].concat()
}

async fn connect(port: u16, sent: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // A connection over the cap may be closed already: then the test sees it closed.
    let _ = stream.write_all(sent).await;
    stream
}

/// When the server closed `stream` (end of stream or reset), reading and dropping whatever
/// it sent before; `None` if it is still open at `limit`. Also returns the bytes received.
async fn closed_at(mut stream: TcpStream, limit: Instant) -> (Option<Instant>, usize) {
    let mut received = 0;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(limit.into(), stream.read(&mut buf)).await {
            Err(_) => return (None, received),
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(Instant::now()), received),
            Ok(Ok(n)) => received += n,
        }
    }
}

/// Sends `sent` slowly, a byte at a time, while the server keeps the connection open.
async fn trickle(port: u16, sent: Vec<u8>, every: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let std = stream.into_std().unwrap();
    let writer = TcpStream::from_std(std.try_clone().unwrap()).unwrap();
    tokio::spawn(async move {
        let mut writer = writer;
        for byte in sent {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    TcpStream::from_std(std).unwrap()
}

fn alice() -> CheckBuilder {
    get("/users/current.json").header("X-Redmine-API-Key", demo_key("alice"))
}

#[tokio::test]
async fn connections_that_never_finish_their_preface_or_headers_are_closed_in_time() {
    let timeout = Duration::from_secs(1);
    let app = spawn_app(&[
        "--header-read-timeout-secs",
        "1",
        "--admin-max-connections",
        "200",
    ])
    .await;
    let (grpc, admin) = (app.port, app.admin_port.unwrap());
    let opened = Instant::now();
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(("grpc silent", connect(grpc, b"").await));
        held.push(("admin silent", connect(admin, b"").await));
    }
    for _ in 0..20 {
        let half_settings = [&MAGIC[..], &frame(SETTINGS, 0, 0, &[0; 6])[..12]].concat();
        held.push(("grpc part of the magic", connect(grpc, &MAGIC[..16]).await));
        held.push(("grpc half a SETTINGS", connect(grpc, &half_settings).await));
        let half_request = b"GET /healthz HTTP/1.1\r\nHost: gate\r\n";
        held.push(("admin half the headers", connect(admin, half_request).await));
    }
    // A byte every 200 ms does not move the deadline.
    let every = Duration::from_millis(200);
    for _ in 0..5 {
        held.push(("grpc trickle", trickle(grpc, preface(), every).await));
        let request = b"GET /healthz HTTP/1.1\r\nHost: gate\r\n\r\n".to_vec();
        held.push(("admin trickle", trickle(admin, request, every).await));
    }

    // Meanwhile a new client is answered, on both ports.
    app.check(alice()).await.assert_user("alice", "api-key");
    assert_eq!(http_status(admin, "/healthz").await, Some(200));

    let limit = opened + timeout + Duration::from_secs(3);
    let count = held.len();
    let (kinds, streams): (Vec<_>, Vec<_>) = held.into_iter().unzip();
    let closes = futures::future::join_all(streams.into_iter().map(|s| closed_at(s, limit))).await;
    let mut open: Vec<&str> = Vec::new();
    let mut earliest = Duration::MAX;
    for (kind, (closed, _)) in kinds.iter().zip(&closes) {
        match closed {
            Some(at) => earliest = earliest.min(*at - opened),
            None => open.push(kind),
        }
    }
    open.sort();
    open.dedup();
    assert!(open.is_empty(), "of {count}, still open: {open:?}");
    assert!(
        earliest >= timeout - Duration::from_millis(100),
        "closed before the timeout: {earliest:?}"
    );
    // And the gate still answers.
    app.check(alice()).await.assert_user("alice", "api-key");
}

/// `authz_connections` and `authz_connections_refused_total` for `listener`.
async fn connection_metrics(admin: u16, listener: &str) -> (String, String) {
    let text = http_get(admin, "/metrics").await;
    let value = |name: &str| {
        let prefix = format!("{name}{{listener=\"{listener}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or("absent")
            .to_owned()
    };
    (
        value("authz_connections"),
        value("authz_connections_refused_total"),
    )
}

#[tokio::test]
async fn over_the_cap_new_connections_are_closed_while_existing_clients_keep_working() {
    let app = spawn_app(&[
        "--max-connections",
        "10",
        "--admin-max-connections",
        "3",
        "--header-read-timeout-secs",
        "30",
    ])
    .await;
    let (grpc, admin) = (app.port, app.admin_port.unwrap());
    // A good client holds one of the ten; nine silent ones take the rest.
    app.check(alice()).await.assert_user("alice", "api-key");
    let mut silent = Vec::new();
    for _ in 0..9 {
        silent.push(connect(grpc, b"").await);
    }
    // Each silent one is sent the server's SETTINGS once it is accepted.
    for stream in &mut silent {
        let mut buf = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("accepted under the cap")
            .unwrap();
    }

    let refused_at = Instant::now() + Duration::from_secs(2);
    for _ in 0..5 {
        let (closed, received) = closed_at(connect(grpc, &preface()).await, refused_at).await;
        assert!(closed.is_some(), "a connection over the cap stays open");
        assert_eq!(received, 0, "a connection over the cap was served");
    }
    let fresh = client_for(grpc)
        .check(alice().build())
        .await
        .expect_err("no room for a new client");
    // tonic reports a connection closed before its handshake as cancelled.
    assert!(
        matches!(
            fresh.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "{fresh:?}"
    );
    // The good client's connection is untouched.
    app.check(alice()).await.assert_user("alice", "api-key");
    let (open, refused) = connection_metrics(admin, "grpc").await;
    assert_eq!(open, "10");
    // The five above and the new client's attempts.
    assert!(refused.parse::<u64>().is_ok_and(|n| n >= 6), "{refused}");

    // The admin port has its own cap: the gRPC one being full does not close it, and its
    // own being full does not touch gRPC.
    let mut admin_silent = Vec::new();
    for _ in 0..3 {
        admin_silent.push(connect(admin, b"").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http_status(admin, "/healthz").await, None);
    app.check(alice()).await.assert_user("alice", "api-key");

    // Slots come back as soon as their connections close.
    drop(silent);
    drop(admin_silent);
    let until = Instant::now() + Duration::from_secs(5);
    while http_status(admin, "/healthz").await != Some(200) {
        assert!(Instant::now() < until, "admin slots not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Err(status) = client_for(grpc).check(alice().build()).await {
        assert!(
            Instant::now() < until,
            "no room again for a new client: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the server's frames, answering its PINGs when `answer` (and acknowledging its
/// SETTINGS), until it closes the connection or `limit`; returns when it closed, if it did,
/// and the PINGs seen.
async fn h2_peer(mut stream: TcpStream, answer: bool, limit: Instant) -> (Option<Instant>, usize) {
    let mut pings = 0;
    loop {
        let mut header = [0u8; 9];
        let read = tokio::time::timeout_at(limit.into(), stream.read_exact(&mut header)).await;
        match read {
            Err(_) => return (None, pings),
            Ok(Err(_)) => return (Some(Instant::now()), pings),
            Ok(Ok(_)) => {}
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).await.is_err() {
            return (Some(Instant::now()), pings);
        }
        let (kind, flags) = (header[3], header[4]);
        if kind == PING && flags & ACK == 0 {
            pings += 1;
            if answer {
                stream
                    .write_all(&frame(PING, ACK, 0, &payload))
                    .await
                    .unwrap();
            }
        }
        if kind == SETTINGS && flags & ACK == 0 && answer {
            stream
                .write_all(&frame(SETTINGS, ACK, 0, &[]))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped_one_that_answers_is_kept() {
    let app = spawn_app(&[
        "--keepalive-interval-secs",
        "2",
        "--keepalive-timeout-secs",
        "1",
        "--header-read-timeout-secs",
        "1",
    ])
    .await;
    let port = app.port;
    let started = Instant::now();
    let limit = started + Duration::from_secs(7);
    // A client gone without a word after its preface; one stalled in a request's headers
    // (a HEADERS frame without END_HEADERS, `:method GET` only); a live but idle one.
    let gone = connect(port, &preface()).await;
    let stalled = connect(port, &[preface(), frame(HEADERS, 0, 1, &[0x82])].concat()).await;
    let live = connect(port, &preface()).await;
    let (gone, stalled, live) = tokio::join!(
        h2_peer(gone, false, limit),
        h2_peer(stalled, false, limit),
        h2_peer(live, true, limit),
    );
    for (name, (closed, pings)) in [("gone", gone), ("stalled", stalled)] {
        let after = closed.map(|at| at - started);
        // Pinged after 2 s of silence, closed 1 s later: not by the header deadline (1 s).
        assert!(
            after.is_some_and(|a| a >= Duration::from_millis(2500)),
            "{name}: {after:?}"
        );
        assert_eq!(pings, 1, "{name}");
    }
    let (closed, pings) = live;
    assert_eq!(closed, None, "a peer that answers PINGs was dropped");
    assert!(pings >= 2, "{pings}");
    app.check(alice()).await.assert_user("alice", "api-key");
}
