//! A TCP proxy between a client and the relay that a test can break for real: reset every
//! connection (SO_LINGER 0, the kernel sends RST), close them (FIN), or stall them — stop
//! forwarding in both directions while keeping both sockets open, the half-open link of a
//! phone whose network vanished without a FIN or RST ever arriving. It can also be slow:
//! each chunk it forwards waits a random delay first (a jittery mobile link), order kept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the connections open at the moment it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Reset,
    Stall,
}

pub struct Link {
    pub url: String,
    faults: watch::Sender<(u64, Fault)>,
    accepted: watch::Sender<u64>,
    /// While set, new connections are stalled from the start (nothing is forwarded).
    stall_new: Arc<AtomicBool>,
    /// Each forwarded chunk waits up to this long (µs), uniformly at random; 0: none.
    delay_us: Arc<AtomicU64>,
}

impl Link {
    /// Listen on 127.0.0.1:0 and forward each connection to `upstream` (a `ws://` URL).
    pub async fn start(upstream: &str) -> Self {
        let target: SocketAddr = upstream
            .trim_start_matches("ws://")
            .parse()
            .expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let (faults, _) = watch::channel((0, Fault::Reset));
        let (accepted, _) = watch::channel(0);
        let stall_new = Arc::new(AtomicBool::new(false));
        let delay_us = Arc::new(AtomicU64::new(0));
        let (faults_tx, count, stalling, delay) = (
            faults.clone(),
            accepted.clone(),
            Arc::clone(&stall_new),
            Arc::clone(&delay_us),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let generation = faults_tx.borrow().0;
                if stalling.load(Ordering::SeqCst) {
                    tokio::spawn(async move {
                        let _keep = client;
                        std::future::pending::<()>().await;
                    });
                } else {
                    let faults = faults_tx.subscribe();
                    let delay = Arc::clone(&delay);
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(target).await {
                            splice(client, server, faults, generation, delay).await;
                        }
                    });
                }
                count.send_modify(|n| *n += 1);
            }
        });
        Self {
            url,
            faults,
            accepted,
            stall_new,
            delay_us,
        }
    }

    /// From now on, delay each forwarded chunk by up to `max`, at random (0: no delay).
    pub fn jitter(&self, max: Duration) {
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(micros, Ordering::SeqCst);
    }

    /// Reset every connection open now, both sides (TCP RST); nothing they read from now
    /// on is forwarded.
    pub fn reset_all(&self) {
        self.faults.send_modify(|f| *f = (f.0 + 1, Fault::Reset));
    }

    /// Stop forwarding on every connection open now, keeping its sockets open; nothing
    /// they read from now on is forwarded.
    pub fn stall_all(&self) {
        self.faults.send_modify(|f| *f = (f.0 + 1, Fault::Stall));
    }

    /// While `on`, stall each new connection from its first byte: its WebSocket handshake
    /// never completes (a network that accepts the SYN and then goes silent).
    pub fn stall_new(&self, on: bool) {
        self.stall_new.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        *self.accepted.borrow()
    }

    /// Wait until at least `count` connections have been accepted.
    pub async fn wait_accepted(&self, count: u64) {
        let mut accepted = self.accepted.subscribe();
        let _ = accepted.wait_for(|n| *n >= count).await;
    }
}

fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// A uniform draw in 0..=`max` (xorshift; the test needs jitter, not quality).
fn draw(state: &mut u64, max: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    if max == 0 { 0 } else { *state % (max + 1) }
}

/// Forward both ways until either side ends or a fault that postdates `generation` hits.
async fn splice(
    mut client: TcpStream,
    mut server: TcpStream,
    mut faults: watch::Receiver<(u64, Fault)>,
    generation: u64,
    delay_us: Arc<AtomicU64>,
) {
    let mut seed = 0x9e37_79b9_7f4a_7c15 ^ generation.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut wait = move || {
        let max = delay_us.load(Ordering::Relaxed);
        Duration::from_micros(draw(&mut seed, max))
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut a, mut b) = ([0u8; 16 << 10], [0u8; 16 << 10]);
    loop {
        tokio::select! {
            // The fault first: once `reset_all` or `stall_all` has returned, nothing read
            // afterwards is forwarded, so a test knows which messages were before the cut.
            biased;
            fault = async {
                // (The watch guard is not Send: drop it inside this future.)
                faults.wait_for(|(g, _)| *g > generation).await.map_or(Fault::Reset, |f| f.1)
            } => {
                if fault == Fault::Stall {
                    // Half-open: hold both sockets, forward nothing, until the test ends.
                    let _keep = (client, server);
                    std::future::pending::<()>().await;
                    return;
                }
                reset(&client);
                reset(&server);
                return;
            }
            read = client.read(&mut a) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::time::sleep(wait()).await;
                    if server.write_all(&a[..n]).await.is_err() { return }
                }
            },
            read = server.read(&mut b) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::time::sleep(wait()).await;
                    if client.write_all(&b[..n]).await.is_err() { return }
                }
            },
        }
    }
}
