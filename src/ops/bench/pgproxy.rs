//! `--pg-round-trips`: a loopback TCP proxy between a worker and Postgres that counts the
//! worker's round trips — every `Sync` and simple `Query` message it sends, each of which the
//! client follows by waiting for the server's `ReadyForQuery` (sqlx never pipelines past one).
//! Connection set-up (start-up, authentication) is not counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Counts the messages of the frontend (client → server) half of the protocol, fed in any
/// chunks. Before start-up, messages carry no type byte (`SSLRequest`, `GSSENCRequest`, then
/// the `StartupMessage`); after it, one type byte and a 4-byte length that counts itself.
#[derive(Debug, Default)]
pub struct FrontendCounter {
    started: bool,
    header: Vec<u8>,
    skip: usize,
    /// `Sync` and `Query` messages seen.
    pub round_trips: u64,
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

impl FrontendCounter {
    /// Feed the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let want = if self.started { 5 } else { 8 };
            let n = (want - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < want {
                return;
            }
            let h = std::mem::take(&mut self.header);
            if self.started {
                let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                if matches!(h[0], b'S' | b'Q') {
                    self.round_trips += 1;
                }
                self.skip = len.saturating_sub(4);
            } else {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let code = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                self.started = !matches!(code, SSL_REQUEST | GSSENC_REQUEST);
                self.skip = len.saturating_sub(8);
            }
        }
    }
}

/// A running proxy.
pub struct PgProxy {
    /// Where clients connect instead of Postgres.
    pub addr: SocketAddr,
    round_trips: Arc<AtomicU64>,
}

impl PgProxy {
    /// Listen on a free loopback port and forward every connection to `upstream` until `stop`.
    pub async fn start(upstream: String, stop: CancellationToken) -> std::io::Result<PgProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let round_trips = Arc::new(AtomicU64::new(0));
        let counted = round_trips.clone();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = stop.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((client, _)) = client else { continue };
                let (upstream, counted, stop) = (upstream.clone(), counted.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = forward(client, server, counted) => {}
                    }
                });
            }
        });
        Ok(PgProxy { addr, round_trips })
    }

    /// Round trips counted so far, over every connection.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

async fn forward(client: TcpStream, server: TcpStream, counted: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let mut counter = FrontendCounter::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let before = counter.round_trips;
            counter.feed(&buf[..n]);
            counted.fetch_add(counter.round_trips - before, Ordering::Relaxed);
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(up, down);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(payload.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn untyped(code: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = (payload.len() as u32 + 8).to_be_bytes().to_vec();
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    /// What sqlx sends: an SSLRequest (refused by the server), the start-up, a password, then
    /// a prepared statement (Parse/Describe/Sync, then Bind/Execute/Sync) and BEGIN / COMMIT
    /// as simple queries. A payload full of 'S' and 'Q' bytes is never read as a message.
    fn conversation() -> Vec<u8> {
        let mut c = untyped(SSL_REQUEST, b"");
        c.extend(untyped(196_608, b"user\0postgres\0database\0kycq\0\0"));
        c.extend(msg(b'p', b"SQSQSQ\0"));
        c.extend(msg(b'Q', b"BEGIN\0"));
        c.extend(msg(b'P', b"\0INSERT INTO t VALUES ('SSSS', 'QQQQ')\0\0\0"));
        c.extend(msg(b'D', b"S\0"));
        c.extend(msg(b'S', b""));
        c.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        c.extend(msg(b'E', b"\0\0\0\0\0"));
        c.extend(msg(b'S', b""));
        c.extend(msg(b'Q', b"COMMIT\0"));
        c.extend(msg(b'X', b""));
        c
    }

    #[test]
    fn counts_syncs_and_queries_after_start_up() {
        let mut whole = FrontendCounter::default();
        whole.feed(&conversation());
        assert_eq!(whole.round_trips, 4);
    }

    #[test]
    fn any_chunking_gives_the_same_count() {
        let c = conversation();
        for size in [1, 2, 3, 5, 7, 13, 64] {
            let mut counter = FrontendCounter::default();
            for chunk in c.chunks(size) {
                counter.feed(chunk);
            }
            assert_eq!(counter.round_trips, 4, "chunks of {size}");
        }
    }

    #[tokio::test]
    async fn forwards_both_ways_and_counts() {
        // A fake server that answers every byte it gets with the same byte.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => s.write_all(&buf[..n]).await.unwrap(),
                }
            }
        });
        let stop = CancellationToken::new();
        let proxy = PgProxy::start(upstream, stop.clone()).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let sent = conversation();
        c.write_all(&sent).await.unwrap();
        let mut echoed = vec![0u8; sent.len()];
        c.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, sent);
        assert_eq!(proxy.round_trips(), 4);
        stop.cancel();
    }
}
