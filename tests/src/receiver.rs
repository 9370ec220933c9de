//! A tiny HTTP/1.1 webhook receiver for tests: it records every request
//! (headers and body) and answers 503 to the first connection and 200 to the
//! rest, so a sender's retry is exercised too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The requests the receiver got: headers (lower-case names) and body.
pub type Received = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

/// Starts a receiver at `<url>` (`/hooks/bowtie`); over TLS with `tls`.
/// Returns the URL, what it received and how many connections it served.
pub async fn receiver(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<(String, Received, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hooks/bowtie", listener.local_addr()?);
    let received: Received = Arc::default();
    let log = received.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut served = 0;
        while let Ok((socket, _)) = listener.accept().await {
            served += 1;
            counted.fetch_add(1, Ordering::SeqCst);
            match &tls {
                None => answer(socket, served, &log).await,
                Some(acceptor) => {
                    if let Ok(socket) = acceptor.accept(socket).await {
                        answer(socket, served, &log).await;
                    }
                }
            }
        }
    });
    Ok((url, received, connections))
}

/// Reads one request (the head, then the body by content-length), records
/// it and answers 503 to the first connection, 200 to the others.
async fn answer<S>(mut socket: S, served: usize, log: &Received)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, mut body) = loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            break (String::new(), Vec::new());
        };
        if n == 0 {
            break (String::new(), Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&buf[..pos]).into_owned(),
                buf[pos + 4..].to_vec(),
            );
        }
    };
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    while body.len() < length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let status = if served == 1 {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    if let Ok(mut log) = log.lock() {
        log.push((headers, body));
    }
    let _ = socket
        .write_all(
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let _ = socket.shutdown().await;
}
