//! A TCP link in front of a real server that loses one exchange on request: the test's way to
//! break a connection at the one moment that matters, which killing the server cannot aim at.
//!
//! Armed with a needle, the link watches what clients write. The first write containing it is
//! either never delivered ([`Loss::Request`]: the server never saw it) or delivered while the
//! server's answer is read and thrown away ([`Loss::Answer`]: the server did the work, the client
//! never hears so, as when a database's host dies between its COMMIT and its reply). Then the
//! connection is cut both ways. Or the write is held and the connection left hanging
//! ([`Loss::Stall`]). Everything else passes through untouched, and new connections
//! are served after the loss as before.
//!
//! The needle is looked for within one read (64 KiB): enough for the head of a SQL statement,
//! which is where tests aim. The server is real; only the wire between is scripted.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};

/// Which half of the exchange is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The matching write never reaches the server.
    Request,
    /// The matching write reaches the server; whatever it answers is dropped.
    Answer,
    /// The matching write never reaches the server, and the connection stays open, silent: a
    /// statement that hangs (for a test that kills its client meanwhile).
    Stall,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Option<(Vec<u8>, Loss)>>,
}

/// A listening link to `upstream`; dropped, it stops accepting (open connections end with the test).
pub struct LossyLink {
    port: u16,
    shared: Arc<Shared>,
    fired: watch::Receiver<u32>,
    /// Losses that had happened when the current one was armed.
    armed_after: u32,
    accept: tokio::task::JoinHandle<()>,
}

/// How long the server's answer may keep coming before the link cuts a [`Loss::Answer`]
/// connection: the answer is over once the server has been quiet this long.
const ANSWER_QUIET: Duration = Duration::from_millis(300);
/// The longest a [`Loss::Answer`] connection waits for the server's first byte.
const ANSWER_PATIENCE: Duration = Duration::from_secs(15);

impl LossyLink {
    /// Listens on a free loopback port and relays every connection to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> LossyLink {
        LossyLink::start_on(0, upstream).await
    }

    /// Listens on loopback `port` (0: any free one) and relays every connection to `upstream`.
    /// Unarmed, it is a plain forwarder: a server "appearing" at an address where nothing
    /// answered before (a store that starts after the service).
    pub async fn start_on(port: u16, upstream: &str) -> LossyLink {
        let upstream: SocketAddr = tokio::net::lookup_host(upstream)
            .await
            .unwrap_or_else(|e| panic!("lossy link: cannot resolve {upstream}: {e}"))
            .next()
            .unwrap_or_else(|| panic!("lossy link: {upstream} has no address"));
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("lossy link cannot listen on 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared::default());
        let (fire, fired) = watch::channel(0u32);
        let fire = Arc::new(fire);
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (shared, fire) = (shared.clone(), fire.clone());
                    tokio::spawn(async move {
                        match TcpStream::connect(upstream).await {
                            Ok(server) => relay(client, server, &shared, &fire).await,
                            Err(e) => eprintln!("lossy link: cannot reach {upstream}: {e}"),
                        }
                    });
                }
            })
        };
        LossyLink {
            port,
            shared,
            fired,
            armed_after: 0,
            accept,
        }
    }

    /// The loopback port clients connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Loses `loss` of the next client write that contains `needle` (once).
    pub fn arm(&mut self, needle: &[u8], loss: Loss) {
        self.armed_after = *self.fired.borrow();
        *self.shared.armed.lock().expect("lossy link lock") = Some((needle.to_vec(), loss));
    }

    /// Waits until the last armed loss happened (and the connection was cut); false after `within`.
    pub async fn wait_fired(&mut self, within: Duration) -> bool {
        let after = self.armed_after;
        tokio::time::timeout(within, self.fired.wait_for(|n| *n > after))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Takes the armed loss when `chunk` contains its needle.
fn triggered(shared: &Shared, chunk: &[u8]) -> Option<Loss> {
    let mut armed = shared.armed.lock().expect("lossy link lock");
    let hit = armed.as_ref().is_some_and(|(needle, _)| {
        !needle.is_empty() && chunk.windows(needle.len()).any(|w| w == needle.as_slice())
    });
    if hit {
        armed.take().map(|(_, loss)| loss)
    } else {
        None
    }
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    shared: &Shared,
    fire: &watch::Sender<u32>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cbuf, mut sbuf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    // Set once an answer is being swallowed: when to cut the connection.
    let mut cut_at: Option<Instant> = None;
    loop {
        let deadline = cut_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            read = client.read(&mut cbuf) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    let _ = server.shutdown().await;
                    return;
                }
                let chunk = &cbuf[..n];
                match triggered(shared, chunk) {
                    Some(Loss::Request) => {
                        fire.send_modify(|n| *n += 1);
                        return; // both streams dropped: the request never left the link
                    }
                    Some(Loss::Stall) => {
                        fire.send_modify(|n| *n += 1);
                        // Nothing more goes either way; the connection ends when the client's does.
                        while client.read(&mut cbuf).await.is_ok_and(|n| n > 0) {}
                        return;
                    }
                    Some(Loss::Answer) => {
                        if server.write_all(chunk).await.is_err() {
                            return;
                        }
                        cut_at = Some(Instant::now() + ANSWER_PATIENCE);
                    }
                    None => {
                        if server.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
            read = server.read(&mut sbuf) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    let _ = client.shutdown().await;
                    return;
                }
                if cut_at.is_some() {
                    // Swallowed; the answer is over once the server is quiet for a moment.
                    cut_at = Some(Instant::now() + ANSWER_QUIET);
                } else if client.write_all(&sbuf[..n]).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline), if cut_at.is_some() => {
                fire.send_modify(|n| *n += 1);
                return;
            }
        }
    }
}
